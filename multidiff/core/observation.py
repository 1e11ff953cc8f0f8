"""Generating from a partial observation: known values plus a mask, in the domain's own state layout.

Training-free, for any trained model and any sampler: replacement with resampling (RePaint, Lugmayr et al.
2022). At every network evaluation the known part of ``x`` is set to the observation noised to the current
level, and the denoiser's estimate of the known part is the observation itself, so every sampler's last step
lands on the observation exactly. With ``r > 1`` each step is taken ``r`` times, noising back up in between,
which lets the unknown part agree better with the known part (replacement alone is biased).

Trained for it: observation-conditioned training draws a mask per item (the ``mask`` config group, a
:class:`~.protocols.MaskSampler`), gives the network the clean observed values in place of the noisy ones
together with the mask (:func:`observed_input`), and scores the prediction on the unknown part only
(:func:`masked_item_mean`). Such a network estimates the conditional denoiser itself, so sampling with it
(:func:`conditioned_denoiser`) is exact where the network is, with no resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .protocols import Space

Denoiser = Callable[[Tensor, Tensor], Tensor]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Observation:
    """``values`` (shaped like the state's ``x``; anything where ``mask`` is False) and a boolean ``mask``
    broadcastable to it: True where the value is known. ``ctx``: the state context the values are laid out in,
    for domains whose items vary in size (the atom counts of molecules grown from a fragment); None lets the
    domain's template draw it. ``meta``: what the domain needs to map samples back to the user's file (a scale,
    a frame); the core never reads it."""

    values: Tensor
    mask: Tensor
    meta: dict = field(default_factory=dict)
    ctx: dict | None = None

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise ValueError(f"observation mask must be boolean, got {self.mask.dtype}")
        known = self.mask.expand_as(self.values)
        if not known.any():
            raise ValueError("the observation mask is empty: nothing is known, sample without observe=")
        if known.all():
            raise ValueError("the observation mask is full: everything is known, there is nothing to generate")
        if not torch.isfinite(torch.where(known, self.values, 0)).all():
            raise ValueError("the observed values hold NaN or infinity")

    def to(self, device: torch.device | str) -> Observation:
        ctx = None if self.ctx is None else {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.ctx.items()}
        return Observation(self.values.to(device), self.mask.to(device), self.meta, ctx)

    def aligned(self, x: Tensor, space: Space | None = None, ctx: dict | None = None) -> Tensor:
        """The observed values in ``x``'s frame: as they are for plain tensors; in a space with a free frame
        (zero centre of mass) moved so that the known part sits where ``x`` has it (:meth:`Space.align`)."""
        values = self.values.to(x.dtype)
        return values if space is None else space.align(values, x, self.mask, ctx or {})

    def impose(self, x: Tensor, space: Space | None = None, ctx: dict | None = None) -> Tensor:
        """``x`` with its known part replaced by the observation (in ``x``'s frame, see :meth:`aligned`)."""
        return torch.where(self.mask, self.aligned(x, space, ctx), x)


def replacement_denoiser(
    denoise: Denoiser,
    obs: Observation,
    noise: Callable[[Tensor], Tensor],
    space: Space | None = None,
    ctx: dict | None = None,
) -> Denoiser:
    """``D'(x, sigma)``: the known part of ``x`` replaced by the observation plus ``sigma`` times fresh noise
    (``noise(x)``), then the denoiser, whose estimate of the known part is the observation. ``space``: for a
    space with a free frame (molecules' zero centre of mass) the observation is aligned to the state first and
    the replaced state projected back into the space; None for plain tensors (audio, point clouds)."""

    def wrapped(x: Tensor, sigma: Tensor) -> Tensor:
        noisy = torch.where(obs.mask, obs.aligned(x, space, ctx) + sigma * noise(x), x)
        if space is not None:
            noisy = space.project(noisy, ctx or {})
        return obs.impose(denoise(noisy, sigma), space, ctx)

    return wrapped


def observed_input(x0: Tensor, x: Tensor, known: Tensor, space: Space, ctx: dict) -> Tensor:
    """The network's input in observation-conditioned training: ``x`` (noisy) with its known part replaced by
    the clean ``x0`` there, moved into ``x``'s frame (:meth:`Space.align`) as at sampling time."""
    return torch.where(known, space.align(x0, x, known, ctx), x)


def masked_item_mean(e: Tensor, known: Tensor, space: Space, ctx: dict) -> Tensor:
    """Mean of ``e`` over each item's unknown entries: the loss of observation-conditioned training (the known
    part is given, there is nothing to learn there). Items with nothing unknown would divide by zero, and masks
    never produce them."""
    free = (~known).to(e.dtype)
    return space.item_mean(e * free, ctx) / space.item_mean(free, ctx)


def conditioned_denoiser(denoise: Denoiser, obs: Observation, space: Space | None = None, ctx: dict | None = None):
    """For a model trained with observations (``denoise`` already given the mask): it sees the clean observation
    in ``x``'s frame where it is known, as in training. Wrap the result in :func:`replacement_denoiser`, which
    keeps the state's known part on the noised observation and the estimate's on the observation."""

    def wrapped(x: Tensor, sigma: Tensor) -> Tensor:
        return denoise(obs.impose(x, space, ctx), sigma)

    return wrapped


def sample_with_resampling(
    sampler: Callable[..., Tensor],
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    resample: int,
    noise_sampler: NoiseSampler,
    callback: Callable | None = None,
) -> Tensor:
    """Run ``sampler`` one interval of ``sigmas`` at a time, each ``resample`` times: after a step to
    ``sigma_next`` the state is noised back up to ``sigma`` and the step is taken again (RePaint's jumps of one
    step). Multistep samplers restart their history every interval. ``resample=1`` is the sampler as is."""
    if resample < 1:
        raise ValueError(f"resample={resample}: a positive number of times to take each step")
    if resample == 1:
        return sampler(model, x, sigmas, noise_sampler=noise_sampler, callback=callback)
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        passes = resample if s_next > 0 else 1  # the last step lands on a clean sample: nothing to redo
        for j in range(passes):
            x = sampler(model, x, sigmas[i : i + 2], noise_sampler=noise_sampler)
            if j < passes - 1:
                up = noise_sampler(s_next, s)
                x = x + up * (s**2 - s_next**2).sqrt()
        if callback is not None:
            callback(i, x, s, x)
    return x
