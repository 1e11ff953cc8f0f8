"""Latent diffusion (Rombach et al. 2022): a data domain seen through a trained autoencoder.

A :class:`LatentDomain` is one more domain to the diffusion core: its states are the autoencoder's latents,
standardised by the autoencoder's ``latent_scale`` (measured on the training data, see
:func:`measure_latent_scale`), in the latent's own space (zero centre of mass positions plus invariant features
for molecules, so the latent keeps the data's symmetry). Batches are encoded on the fly; samples are decoded
and handed to the data domain, so requests, files and metrics are the data domain's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .categorical import categorical_of
from .domain import Domain
from .observation import Observation
from .options import call_strict
from .protocols import Autoencoder
from .state import State


class LatentDomain(Domain):
    """The data domain ``data`` in the latent space of ``autoencoder`` (same name, info, requests and files)."""

    def __init__(self, data: Domain, autoencoder: Autoencoder):
        super().__init__()
        if autoencoder.domain != data.name:
            raise ValueError(f"a {autoencoder.domain!r} autoencoder cannot encode {data.name!r} data")
        self.data, self.autoencoder = data, autoencoder
        self.name, self.space, self.info_spec = data.name, autoencoder.space, data.info_spec
        self.info = data.info
        # what users ask for and get back is the data domain's: the same bound methods, signatures included
        self.condition, self.export, self.evaluate = data.condition, data.export, data.evaluate
        self.concatenated = data.concatenated
        self.quality, self.quick_metrics, self.media = data.quality, data.quick_metrics, data.media
        self.signature = data.signature
        self._refuse_categorical()

    def bind(self, info: dict[str, Any]) -> None:
        self.data.bind(info)
        self.info = self.data.info
        self._refuse_categorical()

    def _refuse_categorical(self) -> None:
        if categorical_of(self.data.space) is not None:
            raise ValueError(
                f"the {self.name} domain denoises one-hot blocks as probabilities (categorical=softmax|discrete); a "
                "latent model denoises the autoencoder's latents, which have none: use categorical=gaussian with "
                "latent="
            )

    @property
    def scale(self) -> Tensor:
        return self.autoencoder.latent_scale

    @torch.no_grad()
    def encode(self, state: State) -> State:
        """A data state as a standardised latent state."""
        z = self.autoencoder.encode(state)
        return State(z.x * self.scale.to(z.x.dtype), z.cond, z.ctx)

    @torch.no_grad()
    def to_data(self, latent: State) -> State:
        """A (standardised) latent state decoded into a data state, on the autoencoder's device."""
        device = self.scale.device
        latent = latent.to(device)
        return self.autoencoder.decode(State(latent.x / self.scale.to(latent.x.dtype), latent.cond, latent.ctx))

    def unpack(self, batch: Any) -> State:
        return self.encode(self.data.unpack(batch))

    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        return self.autoencoder.latent_template(self.data.template(n, cond, generator))

    def decode(self, state: State, observation: Observation | None = None) -> list[Any]:
        """Latents -> data state -> the data domain's items. Generated from an observation, the decoded items keep
        the observed values exactly (the decoder alone would reproduce them only approximately)."""
        device = state.x.device
        data = self.to_data(state).to(device)
        given = None if observation is None else observation.meta["data_observation"]
        if given is not None:
            space, ctx = self.data.space, data.ctx
            data = State(given.to(device).impose(data.x, space, ctx), data.cond, ctx)
        return self.data.decode(data, given)

    def observe(self, n: int, path: Path, **options: Any) -> Observation:
        """The data domain's observation of ``path`` (its options, checked strictly against its ``observe``),
        encoded: the latent of the observed values, known where the autoencoder's ``latent_mask`` says a latent
        entry depends on observed values only; the decoded samples then get the observed values back exactly
        (:meth:`decode`)."""
        given = call_strict(self.data.observe, f"{self.name} observation option (observe_options)", options, n, path)
        known = torch.broadcast_to(given.mask, given.values.shape)
        ctx = {} if given.ctx is None else given.ctx
        latent = self.encode(State(torch.where(known, given.values, 0), None, ctx))
        mask = self.autoencoder.latent_mask(known)
        return Observation(latent.x, mask, {**given.meta, "data_observation": given}, given.ctx)


@torch.no_grad()
def measure_latent_scale(autoencoder: Autoencoder, data: Domain, batches: Iterable[Any], limit: int = 20) -> float:
    """``1 / std`` of the latents of up to ``limit`` training batches: the factor that standardises them to unit
    variance (Rombach et al.'s scale factor). One number for the whole latent, so that rotating a molecule's
    latent positions still commutes with scaling them."""
    total, square, count = 0.0, 0.0, 0
    for i, batch in enumerate(batches):
        if i >= limit:
            break
        z = autoencoder.encode(data.unpack(batch)).x.double()
        total, square, count = total + float(z.sum()), square + float((z**2).sum()), count + z.numel()
    if count == 0:
        raise ValueError("no training batches to measure the latent scale on")
    mean = total / count
    std = max(square / count - mean**2, 0.0) ** 0.5
    if not std > 1e-8:
        raise ValueError(f"the autoencoder's latents are constant (std {std:.3g}): it cannot have been trained")
    return 1.0 / std
