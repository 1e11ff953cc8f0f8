"""DiffWave denoiser: contract shape, conditioning, config, and that it can learn."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from multidiff.domains.audio.nets.diffwave import DiffWave

CONF = Path(__file__).resolve().parents[2] / "conf" / "net" / "diffwave.yaml"


def small(num_classes: int = 0) -> DiffWave:
    torch.manual_seed(0)
    net = DiffWave(residual_channels=8, layers=4, dilation_cycle=2, num_classes=num_classes, embed_dim=32)
    torch.nn.init.normal_(net.output.weight, std=0.5)  # the zero-initialised output would hide the condition
    return net


def test_output_shape_and_zero_init():
    net = DiffWave(residual_channels=8, layers=3, dilation_cycle=2, embed_dim=16)
    x = torch.randn(3, 1, 1000)
    out = net(x, torch.randn(3))
    assert out.shape == x.shape
    assert out.abs().max() == 0  # starts as the zero function
    assert net.receptive_field == 1 + 2 * (1 + 2 + 1)


def test_condition_changes_output_and_drop_means_null():
    net = small(num_classes=10)
    x, c_noise = torch.randn(4, 1, 256), torch.zeros(4)
    digits = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        a = net(x, c_noise, cond=digits)
        b = net(x, c_noise, cond=(digits + 5) % 10)
        uncond = net(x, c_noise)
        dropped = net(x, c_noise, cond=digits, cond_drop=torch.ones(4, dtype=torch.bool))
        other_noise = net(x, c_noise + 1.0, cond=digits)
    assert a.shape == x.shape
    assert (a - b).abs().max() > 1e-4
    assert (a - other_noise).abs().max() > 1e-4
    assert torch.allclose(dropped, uncond, atol=1e-6)


def test_unconditional_net_rejects_condition():
    with pytest.raises(ValueError, match="unconditional"):
        small()(torch.randn(2, 1, 64), torch.zeros(2), cond=torch.tensor([1, 2]))


def test_config_instantiates_with_data_num_classes():
    cfg = OmegaConf.create({"data": {"num_classes": 10}, "net": OmegaConf.load(CONF)})
    cfg.net.layers, cfg.net.residual_channels = 2, 8
    net = hydra.utils.instantiate(cfg.net)
    assert isinstance(net, DiffWave) and net.num_classes == 10
    assert net(torch.randn(2, 1, 128), torch.zeros(2), cond=torch.tensor([0, 9])).shape == (2, 1, 128)


def test_learns_a_conditional_target():
    net = small(num_classes=2)
    x = torch.randn(8, 1, 64, generator=torch.Generator().manual_seed(1))
    cond = torch.arange(8) % 2
    target = torch.where(cond[:, None, None] == 1, x, -x)  # only solvable through the condition
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, most of all on a shared CPU
    try:
        for _ in range(40):
            loss = (net(x, torch.zeros(8), cond=cond) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.3 * losses[0]
