"""What multidiff's Lightning modules share: the optimizer set-up and the checkpoint's own metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from multidiff.checkpoint import CHECKPOINT_KEY
from multidiff.core.domain import Domain


class TrainedModule(pl.LightningModule):
    """A module trained on ``domain``'s data. ``optimizer`` and ``lr_scheduler`` are partials (Hydra
    ``_partial_: true``) taking the parameters / the optimizer; ``run_config`` is the resolved run configuration,
    stored in every checkpoint with the domain's ``info`` so that a checkpoint alone rebuilds the module.
    ``kind``: the checkpoint kind (:data:`multidiff.checkpoint.KINDS`)."""

    kind: str

    def __init__(
        self,
        domain: Domain,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        run_config: dict | None = None,
    ):
        super().__init__()
        self.domain = domain
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.run_config = run_config or {}

    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters (frozen ones, such as a latent model's autoencoder, are
        left out), with a per-step scheduler when one is configured."""
        opt = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler_factory is None:
            return opt
        scheduler = self.lr_scheduler_factory(optimizer=opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "kind": self.kind,
            "domain": self.domain.name,
            "domain_info": self.domain.info,
            "config": self.run_config,
        }
