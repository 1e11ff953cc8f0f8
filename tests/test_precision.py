"""The network's precision: auto decided from the CPU's flags, bf16-mixed sampling in bfloat16 with float32 out."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from multidiff.base_module import fused_step
from multidiff.precision import (
    cpu_has_native_bf16,
    resolve_precision,
    resolve_trainer_precision,
    sampling_precision,
    with_precision,
)
from multidiff.sampling import named_request

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw{}\n"


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (X86.format(" avx512_bf16 avx512_vnni"), True),
        (X86.format(" amx_tile amx_bf16"), True),
        (X86.format(""), False),  # AVX-512 alone: oneDNN emulates bfloat16, slower than float32
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),  # ARM
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    ],
)
def test_native_bf16_from_cpu_flags(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_has_native_bf16(str(path)) is native


def test_unreadable_cpuinfo_means_float32(tmp_path):
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False


def test_auto_follows_the_cpu_and_other_values_pass():
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
    assert resolve_precision("32-true", "cpu") == "32-true"
    trainer = {"accelerator": "cpu", "precision": "auto"}
    assert resolve_trainer_precision(trainer) == trainer["precision"] == resolve_precision("auto", "cpu")
    assert resolve_trainer_precision({"precision": "16-mixed"}) == "16-mixed"  # Lightning's own values untouched
    # what train.py samples with at the end of a run, for each of Lightning's precisions
    assert [sampling_precision(p) for p in ("bf16-mixed", "bf16-true", "16-mixed", "32-true", "64-true")] == [
        "bf16-mixed",
        "bf16-mixed",
        "32-true",
        "32-true",
        "32-true",
    ]
    with pytest.raises(ValueError, match="precision='fp8'.*auto, 32-true, bf16-mixed"):
        resolve_precision("fp8", "cpu")


def test_bf16_mixed_runs_the_network_in_bfloat16_and_returns_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.SiLU(), torch.nn.Linear(64, 16))
    seen = []
    net[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    denoise = lambda x, sigma: x + sigma * net(x)  # noqa: E731  (preconditioning in float32 around the net)
    x, sigma = torch.randn(8, 16), torch.tensor(0.5)
    exact = denoise(x, sigma)
    mixed = with_precision(denoise, "bf16-mixed", "cpu")(x, sigma)
    assert seen == [torch.float32, torch.bfloat16]
    assert mixed.dtype == torch.float32
    err = (mixed - exact).abs().max() / exact.abs().max()
    assert 0 < err < 2e-2  # bfloat16's 8-bit mantissa: close, not equal
    assert with_precision(denoise, "32-true", "cpu") is denoise
    with pytest.raises(ValueError, match="resolve auto first"):
        with_precision(denoise, "auto", "cpu")


def test_generate_in_bf16_mixed_matches_float32(tiny_audio_ckpt):
    from multidiff.build import load_checkpoint

    module = load_checkpoint(tiny_audio_ckpt)
    seen = []
    module.model.net.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    exact = module.generate(2, named_request(steps=4), progress=False, seed=3).x
    mixed = module.generate(2, named_request(steps=4, precision="bf16-mixed"), progress=False, seed=3).x
    assert set(seen) == {torch.float32, torch.bfloat16} and mixed.dtype == torch.float32
    assert torch.isfinite(mixed).all()
    assert (mixed - exact).abs().max() / exact.abs().max() < 2e-2


def test_the_optimizer_fuses_its_step_where_lightning_lets_it_clip_gradients():
    """AdamW takes its one-kernel step everywhere but under mixed precision (where Lightning clips the gradients
    around the step and refuses an optimizer that unscales them); a user's own fused / foreach setting stands, and
    an optimizer without a fused step, or without one on the parameters' device, is left as it is."""
    params = [torch.nn.Parameter(torch.randn(3))]
    adamw = partial(torch.optim.AdamW, lr=1e-3)
    assert fused_step(adamw, params, mixed_precision=False) is True
    assert fused_step(adamw, params, mixed_precision=True) is False
    assert fused_step(torch.optim.Adam, params, mixed_precision=False) is True  # a class, not a partial
    assert fused_step(partial(torch.optim.AdamW, fused=False), params, mixed_precision=False) is False
    assert fused_step(partial(torch.optim.AdamW, foreach=True), params, mixed_precision=False) is False
    assert fused_step(partial(torch.optim.RMSprop, lr=1e-3), params, mixed_precision=False) is False  # has none
    assert (
        fused_step(torch.optim.Adagrad, [torch.nn.Parameter(torch.randn(3, device="meta"))], mixed_precision=False)
        is False
    )
    before = params[0].detach().clone()
    params[0].grad = torch.ones(3)
    adamw(params=params, fused=fused_step(adamw, params, mixed_precision=False)).step()
    assert torch.allclose(params[0].detach(), before - 1e-3 * (1 + 0.01 * before), atol=1e-6)  # AdamW's first step
