"""Embeddings every denoiser shares: noise level and (droppable) condition.

The denoiser contract is :class:`multidiff.core.protocols.DenoiserNet`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def per_item(c_noise: Tensor, n: int) -> Tensor:
    """``c_noise`` as a (n,) vector: one shared noise level (a scalar) is broadcast to every item."""
    c = c_noise.reshape(-1)
    if c.numel() == 1:
        return c.expand(n)
    if c.numel() != n:
        raise ValueError(f"c_noise holds {c.numel()} noise levels for {n} items; give one or one per item")
    return c


def reject_condition(net: nn.Module, cond: Tensor | None) -> None:
    """An unconditional net given a condition raises (it would otherwise be silently ignored)."""
    if cond is not None and not getattr(net, "conditional", False):
        raise ValueError(
            f"{type(net).__name__} was built without a condition (unconditional) but received one; "
            "train with a conditional data config (e.g. num_classes > 0) or sample without a condition"
        )


def known_input(net: nn.Module, known: Tensor | None, x: Tensor) -> Tensor | None:
    """The observation mask as a float input feature shaped like ``x`` (zeros: nothing known), or None for a net
    built without ``observable``, which raises when given a mask (it would otherwise be silently ignored)."""
    if not getattr(net, "observable", False):
        if known is not None:
            raise ValueError(
                f"{type(net).__name__} was built without observable=true but received an observation mask; "
                "train with a mask config (mask=...) for observation-conditioned sampling, or observe by replacement"
            )
        return None
    if known is None:
        return x.new_zeros(x.shape)
    if known.shape != x.shape:
        raise ValueError(f"observation mask of shape {tuple(known.shape)} for input of shape {tuple(x.shape)}")
    return known.to(x.dtype)


def guidance_input(net: nn.Module, guidance: Tensor | None, n: int) -> Tensor | None:
    """The embedding of the guidance scale for a net built with ``guidance_input`` (a guidance-distilled student),
    to add to its noise embedding; None when no scale is given (a plain call). A net built without it raises when
    given a scale (it would otherwise be silently ignored)."""
    embed = getattr(net, "guidance_embed", None)
    if guidance is None:
        return None
    if embed is None:
        raise ValueError(
            f"{type(net).__name__} was built without guidance_input but received a guidance scale; only a "
            "guidance-distilled student (distill.guidance=[lo,hi]) takes the scale as an input"
        )
    return embed(per_item(guidance, n))


class GuidanceEmbedding(nn.Module):
    """The classifier-free guidance scale ``w`` as an input (guidance-conditioned distillation, Meng et al. 2023):
    sinusoidal features of ``w`` through an MLP whose last layer starts at zero, so a student initialised from its
    teacher starts as the teacher, whatever ``w``."""

    def __init__(self, dim: int, freq_dim: int = 64):
        super().__init__()
        self.features = NoiseEmbedding(dim, freq_dim, max_period=1_000.0)
        nn.init.zeros_(self.features.mlp[-1].weight)
        nn.init.zeros_(self.features.mlp[-1].bias)

    def forward(self, w: Tensor) -> Tensor:
        # NoiseEmbedding scales its input by 1000: w / 100 keeps scales up to ~10 within its fastest frequencies
        return self.features(w / 100.0)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` followed by an MLP."""

    def __init__(self, dim: int, freq_dim: int = 128, max_period: float = 10_000.0):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=c_noise.device) / half)
        # c_noise is O(1) (e.g. log(sigma)/4); scale so the fastest frequencies still resolve it
        args = 1000.0 * c_noise.float()[:, None] * freqs[None]
        return self.mlp(
            torch.cat([args.cos(), args.sin()], dim=-1).to(
                c_noise.dtype if c_noise.is_floating_point() else torch.float32
            )
        )


class ConditionEmbedding(nn.Module):
    """Class labels (``num_classes``) or continuous properties (``num_features``) -> ``dim``.

    Dropped or absent conditions map to a learned null vector, which is what the
    unconditional branch of classifier-free guidance uses.
    """

    def __init__(self, dim: int, num_classes: int = 0, num_features: int = 0):
        super().__init__()
        if (num_classes > 0) == (num_features > 0):
            raise ValueError("ConditionEmbedding needs exactly one of num_classes or num_features > 0")
        self.num_classes = num_classes
        self.embed = (
            nn.Embedding(num_classes, dim)
            if num_classes
            else nn.Sequential(nn.Linear(num_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        )
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, cond: Tensor | None, n: int, cond_drop: Tensor | None = None) -> Tensor:
        if cond is None:
            return self.null.expand(n, -1)
        e = self.embed(cond.long() if self.num_classes else cond.float().reshape(n, -1))
        if cond_drop is not None:
            e = torch.where(cond_drop[:, None], self.null.expand_as(e), e)
        return e
