"""Latent diffusion for audio end to end: train.py stage=autoencoder, then train.py latent=..., then sample.py
(plain, guided and from an observation), and the refusals that name the file and what it holds."""

import numpy as np
import pytest
import soundfile as sf
from helpers import TINY_AUDIO, compose

import sample
import train
from multidiff.build import load_checkpoint

pytestmark = pytest.mark.slow  # trains two stages and samples

TINY_AE = ["autoencoder.net.channels=[4,8,8]", "autoencoder.net.factors=[4,8]", "autoencoder.net.latent_channels=2"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory, shared_datasets):
    root = tmp_path_factory.mktemp("latent_audio")
    base = [f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    train.train(compose("train", [*base, "stage=autoencoder", *TINY_AE, "trainer.max_steps=3"], root / "ae"))
    ae = root / "ae" / "checkpoints" / "last.ckpt"
    # the default U-Net's input width follows the latent's (2 channels), no net override needed
    train.train(compose("train", [*base, f"latent={ae}", "net.factors=[2]", "trainer.max_steps=3"], root / "ld"))
    return ae, root / "ld" / "checkpoints" / "last.ckpt", base


def test_two_stages_then_sample_writes_wavs(stages, tmp_path):
    ae, ld, _ = stages
    module = load_checkpoint(ld)
    assert module.model.net.in_channels == 2 and module.domain.template(1, None, None).x.shape == (1, 2, 32)
    scale = float(module.autoencoder.latent_scale)
    assert scale != 1.0 and np.isfinite(scale)  # measured on the training data and restored from the file
    out = tmp_path / "out"
    sample.sample(compose("sample", [f"ckpt={ld}", "n=3", "steps=4", f"out={out}"], tmp_path / "s"))
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 3
    data, rate = sf.read(wavs[0])
    assert data.shape == (1024,) and rate == 8000 and np.isfinite(data).all()
    # autoguidance with the model itself as its guide: the same latent space is accepted
    sample.sample(
        compose(
            "sample",
            [f"ckpt={ld}", "n=2", "steps=4", f"out={tmp_path / 'g'}", f"guide_ckpt={ld}", "guidance=2"],
            tmp_path / "g2",
        )
    )
    assert len(list((tmp_path / "g").glob("*.wav"))) == 2


def test_continuation_from_a_latent_model_keeps_the_observed_samples(stages, shared_datasets, tmp_path):
    _, ld, _ = stages
    data, rate = sf.read(shared_datasets / "fsdd" / "recordings" / "3_theo_0.wav", dtype="float32")
    clip = tmp_path / "clip.wav"
    sf.write(clip, data[500:1524], rate, subtype="FLOAT")
    out = tmp_path / "out"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={ld}", "n=2", "steps=4", f"out={out}", f"observe={clip}", "+observe_options.keep=[0,0.5]"],
            tmp_path / "s",
        )
    )
    got, _ = sf.read(sorted(out.glob("*.wav"))[0], dtype="float32")
    kept = data[500:1012]
    assert np.abs(got[:512] - kept).max() < 2e-3 * np.abs(kept).max() + 1e-4  # WAV rounding only
    assert np.abs(got[600:] - data[1100:1524]).max() > 1e-3  # the rest is generated


def test_refusals_name_the_file_and_what_it_holds(stages, tmp_path):
    ae, ld, base = stages
    with pytest.raises(ValueError, match="holds an autoencoder of audio data .* not a diffusion model"):
        sample.sample(compose("sample", [f"ckpt={ae}", "n=1", f"out={tmp_path / 'x'}"], tmp_path / "s"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="holds a diffusion model of audio data, not an autoencoder"):
        train.train(compose("train", [*base, f"latent={ld}", "trainer.max_steps=1"], tmp_path / "a"))
    with pytest.raises(ValueError, match="trained on data with length=1024; this run's data has length=2048"):
        train.train(
            compose("train", [*base, "data.length=2048", f"latent={ae}", "trainer.max_steps=1"], tmp_path / "b")
        )
    with pytest.raises(ValueError, match="latent= trains a diffusion model"):
        train.train(compose("train", [*base, "stage=autoencoder", f"latent={ae}"], tmp_path / "c"))
    with pytest.raises(ValueError, match="stage=decoder; valid: diffusion, autoencoder"):
        train.train(compose("train", [*base, "stage=decoder"], tmp_path / "d"))
    with pytest.raises(ValueError, match="guide model must denoise the same space"):
        sample.sample(
            compose(
                "sample",
                [
                    f"ckpt={ld}",
                    "n=1",
                    f"out={tmp_path / 'e'}",
                    f"guide_ckpt={_data_model(base, tmp_path)}",
                    "guidance=2",
                ],
                tmp_path / "s2",
            )
        )


def _data_model(base, tmp_path):
    train.train(compose("train", [*base, "net.factors=[2]", "trainer.max_steps=1"], tmp_path / "data_model"))
    return tmp_path / "data_model" / "checkpoints" / "last.ckpt"
