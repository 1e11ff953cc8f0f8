"""Numeric precision of the network: ``32-true`` or ``bf16-mixed`` (Lightning's names), or ``auto``.

``auto`` is bf16-mixed where the hardware computes bfloat16 natively (CUDA GPUs that support it; CPUs with
AVX512-BF16 or AMX, or ARM's BF16 extension) and 32-true elsewhere: on CPUs without it oneDNN emulates bfloat16,
slower than float32. Mixed precision runs the network's matrix products and convolutions in bfloat16 and keeps
the weights, the optimizer state, the loss and the sampler's arithmetic in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PRECISIONS = ("auto", "32-true", "bf16-mixed")


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 products natively (Linux: its flags in /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no way to tell, so float32
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 | ARM
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``precision`` for ``device``, with ``auto`` decided (see the module's doc); anything else unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = kind == "cpu" and cpu_has_native_bf16()
    return "bf16-mixed" if native else "32-true"


def with_precision(
    fn: Callable[[Tensor, Tensor], Tensor], precision: str, device: str | torch.device
) -> Callable[[Tensor, Tensor], Tensor]:
    """A denoiser ``fn(x, sigma)`` whose network runs at ``precision`` (decided, not ``auto``); its output comes
    back in the input's dtype, so a sampler's arithmetic stays in float32."""
    if precision == "32-true":
        return fn
    if precision != "bf16-mixed":
        raise ValueError(f"precision={precision!r}: use 32-true or bf16-mixed (resolve auto first)")
    kind = torch.device(device).type

    def run(x: Tensor, sigma: Tensor) -> Tensor:
        with torch.autocast(kind, dtype=torch.bfloat16):
            out = fn(x, sigma)
        return out.to(x.dtype)

    return run


def resolve_trainer_precision(trainer: MutableMapping[str, Any]) -> str:
    """A Lightning trainer config's ``precision``, with ``auto`` decided for its accelerator and written back;
    Lightning's other values pass unchanged."""
    precision = str(trainer.get("precision", "32-true"))
    if precision == "auto":
        accelerator = str(trainer.get("accelerator", "auto"))
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        precision = resolve_precision("auto", "cuda" if gpu else "cpu")
        trainer["precision"] = precision
    return precision


def sampling_precision(trainer_precision: str) -> str:
    """The precision :meth:`DiffusionModule.generate` takes for a Lightning trainer ``precision``: bf16-mixed for
    the bfloat16 modes, float32 for the others (16-mixed, 64-true, ...), whose loss scaling or width sampling
    does not need."""
    return "bf16-mixed" if str(trainer_precision).startswith("bf16") else "32-true"
