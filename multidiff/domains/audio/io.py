"""WAV reading and writing with soundfile, and fixed-length clips for models.

torchaudio's own load/save need an extra decoding backend; soundfile reads and writes PCM WAV
directly, so every audio file in the project goes through these three functions.

Clip convention (used by the data module, the classifier and the metrics alike): a clip is
aligned at its start; shorter clips are zero-padded at the end, longer ones keep their first
``length`` samples. FSDD recordings start with the spoken digit and trail off into silence,
so cropping from the start keeps the speech (a centre crop would cut the few long clips'
words).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor


def read_wav(path: str | Path) -> tuple[Tensor, int]:
    """Read an audio file: ``(wav (C, T) float32 in [-1, 1], sample_rate)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError by format
        raise ValueError(f"cannot read audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    if bad := int((~np.isfinite(data)).sum()):  # a float WAV can hold them; every use of the clip would spread them
        raise ValueError(f"audio file {path} holds {bad} NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def write_wav(path: str | Path, wav: Tensor, sr: int) -> Path:
    """Write ``wav`` ((T,) or (C, T), float in [-1, 1]; clipped) as 16-bit PCM WAV; returns the path."""
    path = Path(path)
    wav = torch.as_tensor(wav).detach().float().cpu()
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"write_wav expects a (T,) or (C, T) waveform, got shape {tuple(wav.shape)} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # quantise here, rounding to nearest: libsndfile's float conversion can land one step low, and a sample
    # read from a 16-bit file (k / 32768) must be written back as exactly k
    pcm = (wav.double() * 32768.0).round().clamp(-32768, 32767).to(torch.int16)
    sf.write(str(path), pcm.numpy().T, int(sr), subtype="PCM_16", format="WAV")
    return path


def fix_length(wav: Tensor, length: int) -> Tensor:
    """Zero-pad at the end or keep the first ``length`` samples along the last axis."""
    t = wav.shape[-1]
    if t >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - t))


def load_clip(path: str | Path, sample_rate: int, length: int) -> Tensor:
    """A ``(1, length)`` mono clip at ``sample_rate``: mixdown, resample, then pad/crop (see module doc)."""
    wav, sr = read_wav(path)
    wav = wav.mean(dim=0, keepdim=True)
    if sr != sample_rate:
        wav = AF.resample(wav, sr, sample_rate)
    return fix_length(wav, length)
