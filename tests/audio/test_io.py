"""WAV input/output: 16-bit round trip, clear errors, the clip convention."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from multidiff.domains.audio.io import fix_length, load_clip, read_wav, write_wav


@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_16bit(tmp_path, channels):
    wav = torch.rand(channels, 1000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = write_wav(tmp_path / "a.wav", wav, 8000)
    assert sf.info(str(path)).subtype == "PCM_16"
    back, sr = read_wav(path)
    assert sr == 8000 and back.dtype == torch.float32 and back.shape == wav.shape
    assert (back - wav).abs().max() <= 1.0 / 32767 + 1e-6  # one 16-bit quantisation step
    assert back.abs().max() <= 1.0


def test_write_clips_out_of_range_and_accepts_1d(tmp_path):
    back, _ = read_wav(write_wav(tmp_path / "loud.wav", torch.tensor([2.0, -3.0, 0.5]), 8000))
    assert back.shape == (1, 3)
    assert back[0, 0] == pytest.approx(1.0, abs=1e-4) and back[0, 1] == pytest.approx(-1.0, abs=1e-4)


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file")
    with pytest.raises(ValueError, match="broken.wav"):
        read_wav(bad)
    with pytest.raises(FileNotFoundError, match="absent.wav"):
        read_wav(tmp_path / "absent.wav")


def test_load_clip_pads_at_end_and_crops_from_start(tmp_path):
    wav = torch.linspace(-0.5, 0.5, 300)[None]
    path = write_wav(tmp_path / "short.wav", wav, 8000)
    clip = load_clip(path, 8000, 512)
    assert clip.shape == (1, 512)
    assert torch.allclose(clip[:, :300], wav, atol=1e-4) and clip[:, 300:].abs().max() == 0
    crop = load_clip(path, 8000, 100)
    assert torch.allclose(crop, wav[:, :100], atol=1e-4)
    assert torch.equal(fix_length(torch.ones(2, 5), 3), torch.ones(2, 3))


def test_load_clip_resamples_and_mixes_down(tmp_path):
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)
    path = write_wav(tmp_path / "stereo16k.wav", torch.stack([tone, torch.zeros_like(tone)]), 16000)
    clip = load_clip(path, 8000, 8192)
    assert clip.shape == (1, 8192)
    expected = 0.25 * torch.sin(2 * math.pi * 440 * torch.arange(8000) / 8000)
    # away from the edges the resampled mixdown is the same tone at half amplitude
    assert (clip[0, 100:7900] - expected[100:7900]).abs().max() < 0.01
    assert clip[0, 8000:].abs().max() == 0
