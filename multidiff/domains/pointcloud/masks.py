"""Observation masks for training point-cloud models to complete partial shapes (the ``mask`` config group)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multidiff.core.masks import check_fraction_range, check_probabilities, kinds, uniform
from multidiff.core.state import State


class HalfSpaceMasks:
    """Per cloud of a ``(B, N, 3)`` batch: nothing known (``p_unconditional``), or the points on one side of a
    plane with a random normal, placed so that a fraction drawn from ``keep`` of the points is known (a
    half-space cut: the partial inputs of the completion benchmark)."""

    domain = "pointcloud"

    def __init__(self, p_unconditional: float = 0.1, keep: Sequence[float] = (0.2, 0.8)):
        check_probabilities(type(self).__name__, p_unconditional=p_unconditional)
        self.p_unconditional = p_unconditional
        self.keep = check_fraction_range("keep", keep, type(self).__name__)

    def __call__(self, state: State, generator: torch.Generator | None = None) -> Tensor:
        x = state.x
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} masks (B, N, D) point batches, got shape {tuple(x.shape)}")
        b, n, d = x.shape
        normal = torch.randn(b, d, generator=generator)
        height = torch.einsum("bnd,bd->bn", x.detach().float().cpu(), normal)
        rank = height.argsort(1).argsort(1)  # 0 for the lowest point along the normal
        count = (uniform(b, self.keep, generator) * n).round().clamp(1, n - 1)
        known = (rank < count[:, None]) & (kinds(b, [self.p_unconditional], generator) != 0)[:, None]
        return known[..., None].to(x.device)
