"""Observation masks for training audio models to infill and continue (the ``mask`` config group)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multidiff.core.masks import check_fraction_range, check_probabilities, kinds, uniform
from multidiff.core.state import State


class SpanMasks:
    """Per clip of a ``(B, C, T)`` batch: nothing known (``p_unconditional``), a kept prefix of a fraction drawn
    from ``prefix`` (continuation, ``p_continuation``), or else everything but one gap whose length is a
    fraction drawn from ``gap`` at a uniform position (infilling). Spans cover all channels."""

    domain = "audio"

    def __init__(
        self,
        p_unconditional: float = 0.1,
        p_continuation: float = 0.3,
        gap: Sequence[float] = (0.1, 0.6),
        prefix: Sequence[float] = (0.2, 0.8),
    ):
        check_probabilities(type(self).__name__, p_unconditional=p_unconditional, p_continuation=p_continuation)
        self.p_unconditional, self.p_continuation = p_unconditional, p_continuation
        self.gap = check_fraction_range("gap", gap, type(self).__name__)
        self.prefix = check_fraction_range("prefix", prefix, type(self).__name__)

    def __call__(self, state: State, generator: torch.Generator | None = None) -> Tensor:
        x = state.x
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} masks (B, C, T) audio batches, got shape {tuple(x.shape)}")
        b, _, t = x.shape
        kind = kinds(b, [self.p_unconditional, self.p_continuation], generator)
        pos = (torch.arange(t) + 0.5) / t
        length = uniform(b, self.gap, generator)
        start = torch.rand(b, generator=generator) * (1 - length)
        gap = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        prefix = pos < uniform(b, self.prefix, generator)[:, None]
        known = torch.where((kind == 1)[:, None], prefix, ~gap) & (kind != 0)[:, None]
        return known[:, None, :].to(x.device)
