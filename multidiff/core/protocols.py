"""Typed seams of the core: what a space and a denoiser network must provide."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Space(Protocol):
    """What "noise", "per item" and "mean over an item" mean for a domain's state (see :mod:`.space`)."""

    def num_items(self, x: Tensor, ctx: dict[str, Any]) -> int: ...

    def per_item(self, v: Tensor, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Broadcast a per-item vector ``(B,)`` against ``x``."""
        ...

    def noise(self, x: Tensor, ctx: dict[str, Any], generator: torch.Generator | None = None) -> Tensor: ...

    def project(self, z: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Map standard normal noise of ``x``'s shape into the space (a linear projection)."""
        ...

    def item_mean(self, e: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Mean of an elementwise tensor over each item: ``(B,)``."""
        ...

    def align(self, values: Tensor, x: Tensor, mask: Tensor, ctx: dict[str, Any]) -> Tensor:
        """Observed ``values`` (known where ``mask``) moved into ``x``'s frame where the space leaves one free
        (a translation for zero centre of mass), so that replacing ``x``'s known part keeps it in the space."""
        ...


@runtime_checkable
class DenoiserNet(Protocol):
    """A domain's network F: ``net(x, c_noise, *, cond=None, cond_drop=None, known=None, **ctx) -> like x``.

    ``c_noise``: the process's noise conditioning, per item ``(B,)``. ``cond``: the per-item condition or
    None; a net built without a condition raises when given one. ``cond_drop``: ``(B,)`` bool, items to treat
    as unconditional (classifier-free guidance). ``known``: None, or a boolean tensor of ``x``'s shape, True
    where ``x`` holds observed clean values instead of noisy ones (observation-conditioned training, see
    :mod:`.observation`); a net built without ``observable`` raises when given one. ``ctx``: the state's
    context tensors, as keyword arguments the net names explicitly (e.g. ``batch`` and ``num_items`` for
    graphs); a net of a domain without context takes none. ``conditional`` says whether the net accepts a
    condition, ``observable`` whether it accepts ``known``; ``equivariance`` names the symmetry the net
    guarantees (``"E(3)"``, ``"permutation"``) or is None. A net built with ``guidance_input`` (a
    guidance-distilled student) also takes ``guidance``, the classifier-free guidance scale per item ``(B,)``, and
    is called with it only then (:func:`~multidiff.core.embeddings.guidance_input`).
    """

    conditional: bool
    observable: bool
    equivariance: str | None

    def __call__(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        cond: Tensor | None = None,
        cond_drop: Tensor | None = None,
        known: Tensor | None = None,
        **ctx: Any,
    ) -> Tensor: ...


@runtime_checkable
class MaskSampler(Protocol):
    """A distribution of observation masks for observation-conditioned training (the ``mask`` config group).

    ``masks(state, generator)``: a boolean mask broadcastable to ``state.x``, True where a value counts as
    observed, drawn per item; an item may be left with nothing known (so the model also learns to generate
    unconditionally), never with everything known. ``domain`` names the domain whose state layout it knows.
    """

    domain: str

    def __call__(self, state: Any, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Autoencoder(Protocol):
    """A domain's autoencoder for latent diffusion (stage one, ``train.py stage=autoencoder``).

    ``encode(state)``: the latent mean of a data state as a :class:`~multidiff.core.state.State` of ``space``
    (deterministic; the regulariser's noise is the training module's business), keeping ``cond`` and ``ctx``.
    ``decode(latent)``: back to a data state the domain's ``decode`` understands. ``latent_template(state)``: zeros
    shaped like the latent of a data template. ``reconstruction_loss(state, recon)``: the training loss (scalar)
    and its named parts. ``net_inputs()``: the denoiser config keys that make a domain net take this latent (e.g.
    ``{"in_channels": 8}``); ``data_keys``: the data ``info`` keys the latent's shape depends on, which a stage-two
    run's data must share. ``latent_scale``: a buffer, the factor that standardises latents, measured on the
    training data when a diffusion model is trained on them (1 in stage one). ``domain`` names the domain.
    """

    domain: str
    space: Space
    data_keys: tuple[str, ...]
    latent_scale: Tensor

    def encode(self, state: Any) -> Any: ...

    def decode(self, latent: Any) -> Any: ...

    def latent_template(self, state: Any) -> Any: ...

    def reconstruction_loss(self, state: Any, recon: Any) -> tuple[Tensor, dict[str, Tensor]]: ...

    def net_inputs(self) -> dict[str, Any]: ...

    def latent_mask(self, mask: Tensor) -> Tensor:
        """The latent entries an observation mask (of a data state) determines: True where they depend on
        observed values only."""
        ...
