"""The state the diffusion core noises and denoises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class State:
    """What the diffusion core sees: the tensor it noises, the condition, and extra context.

    ``x``: ``(B, ...)`` for fixed-size items, ``(num_nodes, F)`` for graphs.
    ``cond``: per-item condition (class indices ``(B,)`` long, or properties ``(B, P)``) or None.
    ``ctx``: tensors the denoiser and the space need (``batch``, ``num_items``, masks, ...);
    passed to the denoiser as keyword arguments.
    """

    x: Tensor
    cond: Tensor | None = None
    ctx: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> State:
        ctx = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.ctx.items()}
        cond = None if self.cond is None else self.cond.to(device)
        return State(self.x.to(device), cond, ctx)
