"""Categorical features denoised as class probabilities.

A one-hot block scaled by ``s`` (atom types, bond orders) relaxed into a continuous state (JODO, Huang et al.
2023) has an exact denoiser of a known form: E[x0 | x] = s * p(class | x), the posterior class probabilities
times the scale. :class:`Categorical` builds that form into the model: the network's outputs on a block are read
as logits, the denoiser returns ``s * softmax(logits)`` there, and training takes the cross-entropy against the
true class, whose minimiser is exactly the posterior.

The logits carry the block's own evidence in closed form: with ``x = s e_c + sigma n`` the likelihood of class
``c`` is proportional to ``exp(s x_c / sigma^2)``, so the posterior logits are ``s x_c / sigma^2`` plus the log
prior of ``c`` given everything else. The network supplies the second term only (the class given the rest of the
molecule); near sigma = 0 the first decides, as it should, and far from it the network's prior does.

So the model's estimate is a probability vector times the scale at every noise level (an eps-parameterised
estimate ``x - sigma eps`` can leave the simplex by orders of magnitude at high noise; guidance may still
extrapolate beyond it), and the loss keeps its signal where the squared error of a nearly clean one-hot has none.
The process's loss weight multiplies the cross-entropy as it does the squared errors. Samplers see a denoiser like
any other and run unchanged; the process (schedule, scalings) still governs every other column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .parts import Parts


@dataclass(frozen=True)
class Block:
    """Columns ``start:stop`` of part ``part`` (``None`` for a plain-tensor state) hold a one-hot times
    ``scale``; ``weight`` multiplies its cross-entropy in the loss."""

    part: str | None
    start: int
    stop: int
    scale: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop - 1:
            raise ValueError(f"categorical block {self}: needs at least two classes (start < stop - 1)")
        if self.scale <= 0 or self.weight < 0:
            raise ValueError(f"categorical block {self}: scale must be > 0 and weight >= 0")


def _get(x: Any, part: str | None) -> Tensor:
    return x if part is None else x[part]


def _put(x: Any, part: str | None, value: Tensor) -> Any:
    return value if part is None else x.replace(**{part: value})


def _splice(t: Tensor, start: int, stop: int, block: Tensor) -> Tensor:
    """``t`` with columns ``start:stop`` replaced, out of place (autograd-safe)."""
    return torch.cat([t[:, :start], block.to(t.dtype), t[:, stop:]], dim=1)


class Categorical:
    """The one-hot blocks of a state, denoised as probabilities and trained by cross-entropy."""

    def __init__(self, blocks: list[Block]):
        self.blocks = list(blocks)

    def __repr__(self) -> str:
        return f"Categorical({self.blocks})"

    @staticmethod
    def logits(b: Block, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts) -> Tensor:
        """Block ``b``'s posterior logits: its likelihood ``scale x / sigma^2`` (``sigma`` per row, as the space's
        ``per_item`` broadcasts it) plus the network's log prior, in at least float32."""
        dtype = torch.promote_types(_get(x, b.part).dtype, torch.float32)  # float64 stays float64
        own = _get(x, b.part)[:, b.start : b.stop].to(dtype)
        s2 = _get(sigma, b.part).to(dtype).clamp(min=1e-4) ** 2
        return _get(raw, b.part)[:, b.start : b.stop].to(dtype) + b.scale * own / s2

    def denoise(
        self, d: Tensor | Parts, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts
    ) -> Tensor | Parts:
        """The estimate ``d`` with each block replaced by ``scale * softmax(logits)``."""
        for b in self.blocks:
            probs = torch.softmax(self.logits(b, raw, x, sigma), dim=1)
            d = _put(d, b.part, _splice(_get(d, b.part), b.start, b.stop, b.scale * probs))
        return d

    def loss(
        self, err: Tensor | Parts, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts, x0: Tensor | Parts
    ) -> Tensor | Parts:
        """The elementwise loss ``err`` with each block's columns replaced by its weighted cross-entropy (the
        true class is the argmax of ``x0``'s block), so item means count it once per column as they count a
        squared error."""
        for b in self.blocks:
            logits = self.logits(b, raw, x, sigma)
            target = _get(x0, b.part)[:, b.start : b.stop].argmax(1)
            ce = F.cross_entropy(logits, target, reduction="none") if len(target) else logits.sum(1)
            block = (b.weight * ce).unsqueeze(1).expand(-1, b.stop - b.start)
            err = _put(err, b.part, _splice(_get(err, b.part), b.start, b.stop, block))
        return err


def categorical_of(space: object) -> Categorical | None:
    """The space's :class:`Categorical` blocks, if it declares any (``space.categorical``)."""
    cat = getattr(space, "categorical", None)
    return cat if cat is not None and cat.blocks else None
