"""What multidiff's Lightning modules share: the optimizer set-up and the checkpoint's own metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

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

    def make_optimizer(self, *, mixed_precision: bool) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters (frozen ones, such as a latent model's autoencoder, are
        left out), with its fused step where it may take one (:func:`fused_step`)."""
        params = [p for p in self.parameters() if p.requires_grad]
        fused = fused_step(self.optimizer_factory, params, mixed_precision=mixed_precision)
        opt = self.optimizer_factory(params=params, **({"fused": True} if fused else {}))
        opt.register_load_state_dict_pre_hook(_keep_step_kind)
        return opt

    def configure_optimizers(self) -> Any:
        """:meth:`make_optimizer` at the trainer's precision, with a per-step scheduler when one is configured."""
        mixed = self._trainer is not None and isinstance(self.trainer.precision_plugin, MixedPrecision)
        opt = self.make_optimizer(mixed_precision=mixed)
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


#: optimizers with a fused step, and the devices it runs on (torch 2.11: Adagrad's on the CPU alone)
FUSED_ON = {torch.optim.Adam: ("cpu", "cuda"), torch.optim.SGD: ("cpu", "cuda"), torch.optim.Adagrad: ("cpu",)}


def fused_step(
    optimizer: Callable[..., torch.optim.Optimizer], params: Sequence[torch.Tensor], *, mixed_precision: bool
) -> bool:
    """Whether ``optimizer`` (a class or a partial of one) may take ``fused=True``: one kernel over all tensors
    instead of the loop over tensors torch picks on a CPU (AdamW of the 9.3M audio U-Net: 8.8 against 29.5 ms
    per step on one thread; ``foreach`` is no faster there). Where it has a fused step on the parameters' device,
    but not under mixed precision, where Lightning unscales and clips the gradients itself and refuses an
    optimizer that would, and not where the user set ``fused`` or ``foreach``, whose choice stands."""
    if {"fused", "foreach"} & getattr(optimizer, "keywords", {}).keys() or mixed_precision or not params:
        return False
    cls = getattr(optimizer, "func", optimizer)
    devices = next((d for base, d in FUSED_ON.items() if isinstance(cls, type) and issubclass(cls, base)), ())
    return all(p.is_floating_point() and p.device.type in devices for p in params)


def _keep_step_kind(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's groups carry the step kind (fused, foreach) of the run that wrote them, at its precision on
    its machine; this run's holds. Set before loading, where torch places the step counts by it."""
    for saved, built in zip(state_dict["param_groups"], optimizer.param_groups):
        saved.update({key: built[key] for key in ("fused", "foreach") if key in built})
    return state_dict
