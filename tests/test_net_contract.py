"""Every denoiser under conf/net/ honours the one network contract (multidiff.core.protocols.DenoiserNet)."""

import pytest
import torch
from helpers import ROOT, compose
from hydra.utils import instantiate

from multidiff.core.protocols import DenoiserNet

# each net, the domain it belongs to, small sizes, and how to make it conditional
NETS = {
    "unet1d": (
        "audio",
        ["net.channels=[8,16]", "net.factors=[4]", "net.attn_levels=[1]", "net.heads=2", "net.emb_dim=16"],
        ["net.num_classes=3"],
    ),
    "diffwave": (
        "audio",
        ["net.residual_channels=8", "net.layers=3", "net.dilation_cycle=2", "net.embed_dim=16"],
        ["net.num_classes=3"],
    ),
    "egnn": (
        "molecule",
        ["net.hidden=16", "net.layers=2", "net.num_atom_types=4", "net.time_dim=8"],
        ["net.cond_features=2"],
    ),
    "point_rin": (
        "pointcloud",
        [
            "net.point_dim=16",
            "net.latent_dim=16",
            "net.num_latents=4",
            "net.depth=1",
            "net.latent_layers=1",
            "net.heads=2",
            "net.point_heads=1",
        ],
        ["net.num_classes=3"],
    ),
}


def test_every_configured_net_is_covered():
    assert {f.stem for f in (ROOT / "conf" / "net").glob("*.yaml")} == set(NETS)


def example(domain: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    if domain == "audio":
        return torch.randn(n, 1, 64, generator=gen), {}
    if domain == "pointcloud":
        return torch.randn(n, 32, 3, generator=gen), {}
    sizes = torch.tensor([5, 3, 7][:n])
    batch = torch.repeat_interleave(torch.arange(n), sizes)
    x = torch.randn(len(batch), 3 + 4 + 1, generator=gen)  # positions, 4 atom types, charge
    return x, {"batch": batch, "num_items": n}


def condition(net, n: int, gen: torch.Generator) -> torch.Tensor:
    if getattr(net, "num_classes", 0) or type(net).__name__ != "EGNN":
        return torch.randint(0, 3, (n,), generator=gen)
    return torch.randn(n, 2, generator=gen)


def build(name: str, conditional: bool, tmp_path, extra: tuple[str, ...] = ()):
    domain, small, cond = NETS[name]
    uncond = ["net.cond_features=null"] if name == "egnn" else ["net.num_classes=0"]
    overrides = [f"domain={domain}", f"net={name}", *small, *(cond if conditional else uncond), *extra]
    cfg = compose("train", overrides, tmp_path)
    torch.manual_seed(0)
    net = instantiate(cfg.net).eval()
    with torch.no_grad():  # zero-initialised output layers would hide every effect checked below
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return domain, net


@pytest.mark.parametrize("name", list(NETS))
def test_unconditional_net_contract(name, tmp_path):
    domain, net = build(name, False, tmp_path)
    gen = torch.Generator().manual_seed(1)
    x, ctx = example(domain, 3, gen)
    c_noise = torch.randn(3, generator=gen)
    assert isinstance(net, DenoiserNet) and net.conditional is False
    with torch.no_grad():
        out = net(x, c_noise, **ctx)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
        # the noise level reaches the output; one shared level broadcasts like a vector of it
        assert not torch.allclose(out, net(x, c_noise + 1.0, **ctx))
        torch.testing.assert_close(net(x, c_noise[:1].expand(3), **ctx), net(x, c_noise[:1], **ctx))
        # dropping the condition of an unconditional net changes nothing
        torch.testing.assert_close(net(x, c_noise, cond_drop=torch.ones(3, dtype=torch.bool), **ctx), out)
    with pytest.raises(ValueError, match="unconditional"):
        net(x, c_noise, cond=condition(net, 3, gen), **ctx)
    with pytest.raises(TypeError):
        net(x, c_noise, conditon=None, **ctx)  # a misspelt keyword is an error, never ignored


@pytest.mark.parametrize("name", list(NETS))
def test_conditional_net_contract(name, tmp_path):
    domain, net = build(name, True, tmp_path)
    gen = torch.Generator().manual_seed(2)
    x, ctx = example(domain, 3, gen)
    c_noise = torch.randn(3, generator=gen)
    cond = condition(net, 3, gen)
    assert net.conditional is True
    with torch.no_grad():
        with_cond = net(x, c_noise, cond=cond, **ctx)
        assert with_cond.shape == x.shape
        other = cond.roll(1, 0) if cond.dim() == 1 and len(set(cond.tolist())) > 1 else cond + 1
        assert not torch.allclose(with_cond, net(x, c_noise, cond=other, **ctx))
        # a dropped condition is the learned null condition, the same as none at all
        dropped = net(x, c_noise, cond=cond, cond_drop=torch.ones(3, dtype=torch.bool), **ctx)
        torch.testing.assert_close(dropped, net(x, c_noise, **ctx))
        kept = net(x, c_noise, cond=cond, cond_drop=torch.zeros(3, dtype=torch.bool), **ctx)
        torch.testing.assert_close(kept, with_cond)


def _rotation(gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
    return q


@pytest.mark.parametrize("name", [n for n in NETS])
def test_declared_equivariance_holds(name, tmp_path):
    domain, net = build(name, False, tmp_path)
    gen = torch.Generator().manual_seed(3)
    x, ctx = example(domain, 3, gen)
    c_noise = torch.randn(3, generator=gen)
    with torch.no_grad():
        out = net(x, c_noise, **ctx)
        if net.equivariance == "E(3)":  # rotate + reflect + translate each item: coordinates follow, features not
            rot, batch = _rotation(gen), ctx["batch"]
            x2 = x.clone()
            x2[:, :3] = x[:, :3] @ rot.T + torch.randn(3, 3, generator=gen)[batch]
            out2 = net(x2, c_noise, **ctx)
            torch.testing.assert_close(out2[:, :3], out[:, :3] @ rot.T, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out2[:, 3:], out[:, 3:], atol=1e-4, rtol=1e-4)
        elif net.equivariance == "permutation":  # permuting points permutes the output
            perm = torch.randperm(x.shape[1], generator=gen)
            torch.testing.assert_close(net(x[:, perm], c_noise, **ctx), out[:, perm], atol=1e-5, rtol=1e-4)
        else:
            assert net.equivariance is None


def known_mask(domain: str, x: torch.Tensor, ctx: dict, gen: torch.Generator) -> torch.Tensor:
    """A mask in the domain's layout, whole points / atoms / time steps at a time, broadcast to ``x``."""
    if domain == "audio":
        return (torch.rand(x.shape[0], 1, x.shape[2], generator=gen) < 0.5).expand_as(x)
    if domain == "pointcloud":
        return (torch.rand(*x.shape[:2], 1, generator=gen) < 0.5).expand_as(x)
    return (torch.rand(x.shape[0], 1, generator=gen) < 0.5).expand_as(x)


@pytest.mark.parametrize("name", list(NETS))
def test_observable_net_contract(name, tmp_path):
    """mask=...: the net takes the observation mask; nothing known is the same as no mask; symmetries hold."""
    domain, net = build(name, False, tmp_path, ("net.observable=true",))
    gen = torch.Generator().manual_seed(4)
    x, ctx = example(domain, 3, gen)
    c_noise = torch.randn(3, generator=gen)
    known = known_mask(domain, x, ctx, gen)
    assert net.observable is True
    with torch.no_grad():
        out = net(x, c_noise, known=known, **ctx)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, net(x, c_noise, **ctx))  # the mask reaches the output
        torch.testing.assert_close(net(x, c_noise, known=torch.zeros_like(known), **ctx), net(x, c_noise, **ctx))
        if net.equivariance == "E(3)":
            rot = _rotation(gen)
            x2 = x.clone()
            x2[:, :3] = x[:, :3] @ rot.T + torch.randn(3, 3, generator=gen)[ctx["batch"]]
            out2 = net(x2, c_noise, known=known, **ctx)
            torch.testing.assert_close(out2[:, :3], out[:, :3] @ rot.T, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out2[:, 3:], out[:, 3:], atol=1e-4, rtol=1e-4)
        elif net.equivariance == "permutation":
            perm = torch.randperm(x.shape[1], generator=gen)
            permuted = net(x[:, perm], c_noise, known=known[:, perm], **ctx)
            torch.testing.assert_close(permuted, out[:, perm], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="observation mask of shape"):
        net(x, c_noise, known=known[:1], **ctx)
    _, plain = build(name, False, tmp_path)
    with pytest.raises(ValueError, match="without observable=true"):
        plain(x, c_noise, known=known, **ctx)


@pytest.mark.parametrize("name", list(NETS))
def test_guidance_input_net_contract(name, tmp_path):
    """guidance_input=true (a guidance-distilled student): the scale per item reaches the output, per item; the
    embedding starts at zero (the student starts as its teacher); a net without it refuses a scale."""
    domain, net = build(name, True, tmp_path, ("+net.guidance_input=true",))
    gen = torch.Generator().manual_seed(3)
    x, ctx = example(domain, 3, gen)
    c_noise, cond = torch.randn(3, generator=gen), condition(net, 3, gen)
    w = torch.tensor([0.0, 1.0, 3.0])
    with torch.no_grad():
        out = net(x, c_noise, cond=cond, guidance=w, **ctx)
        assert out.shape == x.shape and not torch.allclose(out, net(x, c_noise, cond=cond, guidance=w + 1, **ctx))
        # item by item: changing one item's scale leaves the other items as they were
        moved = net(x, c_noise, cond=cond, guidance=torch.tensor([0.0, 1.0, 4.0]), **ctx)
        first = slice(0, 8) if domain == "molecule" else slice(0, 2)  # molecule: the first two molecules' atoms
        torch.testing.assert_close(moved[first], out[first])
        assert not torch.allclose(moved, out)
    fresh = instantiate(compose("train", [f"domain={domain}", f"net={name}", *NETS[name][1], *NETS[name][2],
                                          "+net.guidance_input=true"], tmp_path / "fresh").net).eval()  # fmt: skip
    plain = instantiate(compose("train", [f"domain={domain}", f"net={name}", *NETS[name][1], *NETS[name][2]],
                                tmp_path / "plain").net).eval()  # fmt: skip
    plain.load_state_dict({k: v for k, v in fresh.state_dict().items() if "guidance_embed" not in k})
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, c_noise, cond=cond, guidance=w, **ctx), plain(x, c_noise, cond=cond, **ctx))
    with pytest.raises(ValueError, match="built without guidance_input but received a guidance scale"):
        plain(x, c_noise, cond=cond, guidance=w, **ctx)
