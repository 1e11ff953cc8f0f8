"""Models that travel: a checkpoint exported as safetensors weights, a config and a model card; sampled by
folder or, for the shipped models, by name."""

import filecmp

import pytest
import torch
from helpers import compose
from safetensors.torch import load_file

import sample
from multidiff.build import load_checkpoint, load_model, shipped_models
from multidiff.checkpoint import UntrustedCheckpointError
from multidiff.export import export_model, main


@pytest.fixture
def exported(tiny_audio_ckpt, tmp_path):
    main([f"ckpt={tiny_audio_ckpt}", f"out={tmp_path / 'model'}", "dtype=float32"])
    return tmp_path / "model"


def test_export_writes_weights_config_and_card_and_loads_back_exactly(tiny_audio_ckpt, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["MODEL_CARD.md", "config.yaml", "weights.safetensors"]
    original = load_checkpoint(tiny_audio_ckpt)
    weights = load_file(exported / "weights.safetensors")  # plain tensors: no pickle involved
    assert weights.keys() == original.state_dict().keys()
    back = load_model(exported)
    for k, v in original.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    card = (exported / "MODEL_CARD.md").read_text()
    assert "python sample.py pretrained=" in card
    # the run's logged validation metrics, last values, from its CSV log
    header = (tiny_audio_ckpt.parents[1] / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    logged = [k for k in header if k == "train/loss" or k.startswith(("val/", "samples/"))]
    assert "train/loss" in logged and all(f"| `{k}` |" in card for k in logged)


def test_sampling_an_exported_model_gives_the_checkpoints_files(tiny_audio_ckpt, exported, tmp_path):
    args = ["n=3", "steps=3", "seed=2"]
    sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"out={tmp_path / 'a'}", *args], tmp_path / "h1"))
    sample.sample(compose("sample", [f"pretrained={exported}", f"out={tmp_path / 'b'}", *args], tmp_path / "h2"))
    wavs = sorted(p.name for p in (tmp_path / "a").glob("*.wav"))
    assert len(wavs) == 3 and filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", wavs, shallow=False)[0] == wavs


def test_half_precision_export_is_half_the_size_and_close(tiny_audio_ckpt, exported, tmp_path):
    half = export_model(load_checkpoint(tiny_audio_ckpt), tmp_path / "half")
    size = (half / "weights.safetensors").stat().st_size
    assert size < 0.6 * (exported / "weights.safetensors").stat().st_size
    a, b = load_model(exported), load_model(half)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=1e-3, rtol=1e-3)


def test_bad_requests_are_refused(tiny_audio_ckpt, exported, tmp_path):
    with pytest.raises(ValueError, match="give ckpt=PATH.* or pretrained=NAME"):
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"pretrained={exported}"], tmp_path / "h"))
    with pytest.raises(FileNotFoundError, match="pretrained=nonesuch: neither a shipped model"):
        load_model("nonesuch")
    with pytest.raises(ValueError, match="ema_length=0.1 needs ckpt= a local training checkpoint"):
        sample.sample(compose("sample", [f"pretrained={exported}", "ema_length=0.1"], tmp_path / "h"))
    config = exported / "config.yaml"
    net = "_target_: multidiff.domains.audio.nets.UNet1d"
    config.write_text(config.read_text().replace(net, "_target_: os.system"))
    with pytest.raises(UntrustedCheckpointError, match="os.system"):
        load_model(exported)


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_models_sample_on_a_fresh_clone(name, tmp_path):
    out = tmp_path / "out"
    sample.sample(compose("sample", [f"pretrained={name}", "n=2", "steps=4", f"out={out}"], tmp_path / "h"))
    assert len([p for p in out.iterdir() if p.suffix in (".wav", ".ply", ".sdf")]) >= 1


def test_model_equals_points_to_pretrained():
    assert "pretrained=fsdd-digits" in sample.moved_option(["model=fsdd-digits", "n=2"])
    assert "+observe_options.keep=[0,1]" in sample.moved_option(["keep=[0,1]"])
    assert sample.moved_option(["pretrained=fsdd-digits", "n=2", "sampler=ddim", "+condition.digit=3"]) is None
