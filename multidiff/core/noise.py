"""Noise samplers ``noise(sigma, sigma_next)`` for the samplers, drawn in a domain's space.

``gaussian``: a fresh draw per call from a seeded generator. ``brownian``: increments of one Brownian motion
over the noise level (``torchsde.BrownianTree``), so the noise a sampler sees between two levels is the same
whatever the number of steps taken between them (Song et al. 2021; as k-diffusion's SDE samplers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .parts import Parts, parts_of
from .protocols import Space

NOISE_KINDS = ("gaussian", "brownian")


class GaussianNoise:
    def __init__(self, space: Space, x: Tensor, ctx: dict[str, Any], generator: torch.Generator):
        self.space, self.x, self.ctx, self.generator = space, x, ctx, generator

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return self.space.noise(self.x, self.ctx, generator=self.generator)


class BrownianNoise:
    """Unit-variance increments ``(W(b) - W(a)) / sqrt(b - a)`` of a Brownian tree over log-sigma in
    [log sigma_min, log sigma_max]: log time gives every noise level the same relative resolution and a
    shallower tree (faster queries) than sigma itself. The tree is exact in distribution at any resolution; its
    tolerance (1e-3 in log-sigma, 0.1 % in sigma) is how close two query points may be and still be consistent
    across query patterns, far finer than any sampling grid, and half the cost per step of 1e-5."""

    def __init__(self, space: Space, x: Tensor, ctx: dict[str, Any], sigma_min: float, sigma_max: float, seed: int):
        import torchsde

        self.space, self.ctx = space, ctx
        self.lo, self.hi = math.log(sigma_min), math.log(sigma_max)
        self.several = isinstance(x, Parts)
        # one tree per part of a multi-tensor state (e.g. atoms and atom pairs), each with its own stream
        self.trees = {
            name: torchsde.BrownianTree(
                t0=self.lo, w0=torch.zeros_like(part), t1=self.hi, entropy=seed + k, tol=1e-3, pool_size=24
            )
            for k, (name, part) in enumerate(parts_of(x).items())
        }

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = sorted((math.log(float(sigma)), math.log(float(sigma_next))))
        a, b = min(max(a, self.lo), self.hi), min(max(b, self.lo), self.hi)
        if b <= a:
            raise ValueError(f"Brownian noise between equal or out-of-range levels {sigma} and {sigma_next}")
        # an interval query: cheaper than two point evaluations, which torchsde warns against
        draws = {name: tree(a, b) / (b - a) ** 0.5 for name, tree in self.trees.items()}
        return self.space.project(Parts(draws) if self.several else draws["x"], self.ctx)


def make_noise(
    kind: str,
    space: Space,
    x: Tensor,
    ctx: dict[str, Any],
    sigmas: Tensor,
    generator: torch.Generator,
    seed: int,
    extra_levels: tuple[float, ...] = (),
) -> Callable[[Tensor, Tensor], Tensor]:
    """The noise sampler of ``kind`` (:data:`NOISE_KINDS`) for a run over the grid ``sigmas``."""
    if kind == "gaussian":
        return GaussianNoise(space, x, ctx, generator)
    if kind == "brownian":
        positive = sigmas[sigmas > 0]
        levels = [float(positive.min()), float(positive.max()), *extra_levels]
        return BrownianNoise(space, x, ctx, min(levels) * 0.5, max(levels) * 2.0, seed)
    raise ValueError(f"unknown noise {kind!r}; valid: {', '.join(NOISE_KINDS)}")
