"""Every configured sampler (with its noise kind) runs in every domain: shapes, finiteness, the domain's space."""

import pytest
import torch
from helpers import ROOT, compose
from test_net_contract import NETS

import sample
from multidiff.build import build_module
from multidiff.sampling import SamplingRequest, build_sampler, named_request

SAMPLERS = sorted(f.stem for f in (ROOT / "conf" / "sampler").glob("*.yaml"))
INFO = {
    "audio": {"sample_rate": 8000, "length": 256, "num_classes": 0},
    "molecule": {"elements": ["H", "C", "N", "O", "F"], "node_counts": {"values": [3, 6], "counts": [1, 2]}},
    "pointcloud": {"n_points": 64, "num_classes": 0},
}
NET = {"audio": "unet1d", "molecule": "egnn", "pointcloud": "point_rin"}


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    out = {}
    for domain, net in NET.items():
        small = [o for o in NETS[net][1] if not o.startswith("net.num_atom_types")]
        uncond = ["net.cond_features=null", "data.condition=null"] if domain == "molecule" else ["net.num_classes=0"]
        cfg = compose("train", [f"domain={domain}", *small, *uncond], tmp_path_factory.mktemp(domain))
        torch.manual_seed(0)
        out[domain] = build_module(cfg, INFO[domain]).eval()
    return out


@pytest.mark.parametrize("domain", list(NET))
@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_runs_in_domain(modules, domain, name, tmp_path):
    module = modules[domain]
    sampling = build_sampler(compose("sample", ["ckpt=x", f"sampler={name}"], tmp_path).sampler, steps=4)
    if name == "restart":
        sampling = build_sampler(
            compose("sample", ["ckpt=x", "sampler=restart", "sampler.restart_steps=2"], tmp_path).sampler, steps=4
        )
    if name == "consistency":  # a student's sampler: the module stands in for a student of itself
        module.distilled = {"method": "consistency", "teacher": "itself"}
    try:
        state = module.generate(2, SamplingRequest(sampling), progress=False)
        again = module.generate(2, SamplingRequest(sampling), progress=False)
    finally:
        module.distilled = None
    assert torch.isfinite(state.x).all() and state.x.abs().sum() > 0
    if domain == "molecule":  # the sample stays in the zero centre-of-mass subspace
        batch = state.ctx["batch"]
        for b in range(2):
            assert state.x[batch == b, :3].mean(0).abs().max() < 1e-4
    assert torch.equal(state.x, again.x)  # reproducible from the seed, Brownian noise included


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dpmpp_3m_sde", "unipc", "restart", "euler_ancestral"])
def test_sample_cli_with_new_samplers(tiny_audio_ckpt, name, tmp_path):
    out = tmp_path / "out"
    sample.sample(
        compose("sample", [f"ckpt={tiny_audio_ckpt}", f"sampler={name}", "steps=5", "n=2", f"out={out}"], tmp_path)
    )
    assert len(list(out.glob("*.wav"))) == 2


def test_autoguidance_with_the_model_itself_is_the_plain_model(modules):
    module = modules["pointcloud"]
    plain = module.generate(2, named_request(steps=4), progress=False)
    guided = module.generate(2, named_request(steps=4, guidance=2.0, guide=module), progress=False)
    torch.testing.assert_close(guided.x, plain.x)
    with pytest.raises(ValueError, match="audio"):
        module.generate(2, named_request(steps=4, guidance=2.0, guide=modules["audio"]), progress=False)
    with pytest.raises(ValueError, match="guide"):
        module.generate(2, named_request(steps=4, guidance=2.0), progress=False)  # unconditional and no guide
    with pytest.raises(ValueError, match="observation only"):
        module.generate(2, named_request(steps=4, resample=3), progress=False)


@pytest.mark.slow
def test_sample_cli_guide_ckpt_and_interval(tiny_audio_ckpt, tmp_path):
    import soundfile as sf

    runs = {
        "plain": [],
        "self_guided": [f"guide_ckpt={tiny_audio_ckpt}", "guidance=2.0"],
        "cfg_outside": ["+condition.digit=3", "guidance=3.0", "guidance_interval=[500,1000]"],
        "cond": ["+condition.digit=3"],
    }
    wavs = {}
    for name, extra in runs.items():
        out = tmp_path / name
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", "steps=5", "n=2", f"out={out}", *extra], tmp_path))
        wavs[name] = [sf.read(p)[0] for p in sorted(out.glob("*.wav"))]
    for a, b in zip(wavs["self_guided"], wavs["plain"]):
        assert abs(a - b).max() < 1e-3
    for a, b in zip(wavs["cfg_outside"], wavs["cond"]):  # an interval outside the grid changes nothing
        assert (a == b).all()
    with pytest.raises(ValueError, match="only when guidance"):  # a guide at guidance 1 would do nothing
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"guide_ckpt={tiny_audio_ckpt}"], tmp_path))
