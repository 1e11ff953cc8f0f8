"""What every domain's mask distribution shares: checked options and the per-item choice of a mask kind."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_fraction_range(name: str, value: Sequence[float], owner: str) -> tuple[float, float]:
    """``[lo, hi]`` with 0 < lo <= hi < 1, else an error naming the option and what would be valid."""
    lo_hi = tuple(float(v) for v in value)
    if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] < 1:
        raise ValueError(f"{owner}: {name}={list(value)}; expected [lo, hi] with 0 < lo <= hi < 1")
    return lo_hi  # type: ignore[return-value]


def check_probabilities(owner: str, **probs: float) -> None:
    for name, p in probs.items():
        if not 0 <= p <= 1:
            raise ValueError(f"{owner}: {name}={p}; expected a probability in [0, 1]")
    if sum(probs.values()) > 1:
        raise ValueError(f"{owner}: {' + '.join(probs)} = {sum(probs.values())} exceeds 1")


def uniform(n: int, lo_hi: tuple[float, float], generator: torch.Generator | None) -> Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def kinds(n: int, probs: Sequence[float], generator: torch.Generator | None) -> Tensor:
    """A kind index per item: ``i`` with probability ``probs[i]``, ``len(probs)`` with what is left."""
    u = torch.rand(n, generator=generator)
    edges = torch.tensor(list(probs), dtype=u.dtype).cumsum(0)
    return (u[:, None] >= edges).sum(1)
