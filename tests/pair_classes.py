"""A categorical pair part whose exact denoiser is known: each atom pair's class k in {0..3} has probability
``P[k]`` and sits at the scaled one-hot vertex ``SCALE e_k`` (a continuous relaxation, as a graph model's bond
orders), observed as ``x = SCALE e_k + sigma n``. Shared by tests/test_parts.py and tests/test_categorical.py."""

from __future__ import annotations

from collections.abc import Callable

import torch

from multidiff.config import sampler_config
from multidiff.core.noise import make_noise
from multidiff.core.parts import Parts
from multidiff.core.samplers import sampler_named
from multidiff.core.schedules import KarrasSchedule
from multidiff.core.space import PairGraphSpace

P = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
SCALE = 0.5
VERTICES = SCALE * torch.eye(4, dtype=torch.float64)
#: steps per sampler where the default 30 is not enough (first-order stochastic steps, as in test_samplers)
STEPS = {"euler_ancestral": 100, "ddpm": 100, "ddim": 60, "euler": 60, "restart": 10}


def exact_pair(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``SCALE * p(class | x)`` from the mixture's own densities."""
    logits = P.log() - ((x.double()[:, None, :] - VERTICES) ** 2).sum(-1) / (2 * sigma.double() ** 2)
    return torch.softmax(logits, 1) @ VERTICES


def run_sampler(name: str, denoise: Callable, space: PairGraphSpace, ctx: dict, template: Parts, seed: int) -> Parts:
    """Sampler ``name`` from the prior to the data on a Karras grid (sigma_max 20), noise drawn per part."""
    sigmas = KarrasSchedule(sigma_max=20.0).sigmas(STEPS.get(name, 30)).double()
    gen = torch.Generator().manual_seed(seed)
    x = space.noise(template, ctx, generator=gen) * (sigmas[0] ** 2 + 1) ** 0.5
    noise = make_noise(sampler_config(name).noise, space, template, ctx, sigmas, gen, seed=seed)
    return sampler_named(name)(denoise, x, sigmas, noise_sampler=noise)


def assert_class_marginals(pair: torch.Tensor, name: str) -> torch.Tensor:
    """The class frequencies (argmax per pair row) match ``P`` within 4 standard errors; returns the classes."""
    classes = pair.argmax(1)
    freq = torch.bincount(classes, minlength=4).double() / len(classes)
    se = (P * (1 - P) / len(classes)).sqrt()
    assert ((freq - P).abs() < 4 * se).all(), (name, freq.tolist())
    return classes
