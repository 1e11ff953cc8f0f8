"""Stage one of latent diffusion: the Lightning module that trains a domain's autoencoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multidiff.base_module import TrainedModule
from multidiff.core.domain import Domain
from multidiff.core.protocols import Autoencoder
from multidiff.core.state import State


class AutoencoderModule(TrainedModule):
    """Trains ``autoencoder`` (a domain's :class:`~multidiff.core.protocols.Autoencoder`) on ``domain``'s data.

    The latent is regularised lightly, as latent diffusion's autoencoders are: the encoder gives the mean of a
    Gaussian posterior of fixed standard deviation ``latent_noise`` (the decoder sees a draw from it), and the
    loss adds ``kl_weight`` times its KL divergence to a standard normal (``mean^2 / 2`` per latent entry, up to
    a constant). ``latent_noise=0`` with a small ``kl_weight`` is a plain autoencoder with a weight on latent size.
    """

    kind = "autoencoder"

    def __init__(
        self,
        domain: Domain,
        autoencoder: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        kl_weight: float = 1e-4,
        latent_noise: float = 0.0,
        run_config: dict | None = None,
    ):
        super().__init__(domain, optimizer, lr_scheduler, run_config)
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(f"{type(autoencoder).__name__} does not provide the Autoencoder protocol")
        if autoencoder.domain != domain.name:
            raise ValueError(
                f"autoencoder {type(autoencoder).__name__} is for {autoencoder.domain!r} data; this run's domain "
                f"is {domain.name!r}"
            )
        if kl_weight < 0 or latent_noise < 0:
            raise ValueError(f"kl_weight and latent_noise must be >= 0, got {kl_weight} and {latent_noise}")
        self.autoencoder = autoencoder
        self.kl_weight, self.latent_noise = kl_weight, latent_noise

    def losses(self, state: State, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss and its parts (reconstruction terms, ``kl``)."""
        space = self.autoencoder.space
        z = self.autoencoder.encode(state)
        kl = 0.5 * space.item_mean(z.x.float() ** 2, z.ctx).mean()
        x = z.x
        if self.latent_noise > 0:
            x = x + self.latent_noise * space.noise(x, z.ctx, generator=generator)
        recon = self.autoencoder.decode(State(x, z.cond, z.ctx))
        loss, parts = self.autoencoder.reconstruction_loss(state, recon)
        return loss + self.kl_weight * kl, {**parts, "kl": kl.detach()}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        state = self.domain.unpack(batch)
        loss, parts = self.losses(state)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite autoencoder loss ({loss.item()}) at step {self.global_step}; the run stops here and the "
                "last good checkpoint is kept. Lower the learning rate or enable gradient clipping."
            )
        n = self.domain.space.num_items(state.x, state.ctx)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        state = self.domain.unpack(batch)
        loss, parts = self.losses(state, generator=torch.Generator().manual_seed(batch_idx))
        n = self.domain.space.num_items(state.x, state.ctx)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in parts.items():
            self.log(f"val/{k}", v, batch_size=n, sync_dist=True)

    @torch.no_grad()
    def reconstruct(self, state: State) -> State:
        """Encode and decode (the posterior mean, no noise)."""
        return self.autoencoder.decode(self.autoencoder.encode(state))

    def export_reconstructions(self, batch: Any, out_dir: Path, n: int = 8) -> list[Path]:
        """Files of one batch's first ``n`` items and their reconstructions (``original/``, ``reconstructed/``)."""
        state = self.domain.unpack(batch)
        was = self.training
        self.eval()
        try:
            recon = self.reconstruct(state)
        finally:
            self.train(was)
        paths = []
        for name, s in (("original", state), ("reconstructed", recon)):
            items = self.domain.decode(s.to("cpu"))[:n]
            paths += self.domain.export(items, out_dir / name, {"autoencoder": name})
        return paths
