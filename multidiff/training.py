"""Training helpers configured from Hydra: learning-rate warm-up, EMA with a warm-up, periodic samples,
loss curves."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.callbacks.weight_averaging import WeightAveraging
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from multidiff.loggers import log_media
from multidiff.precision import sampling_precision
from multidiff.sampling import SamplingRequest, build_sampler
from multidiff.threads import ThreadGovernor

log = logging.getLogger(__name__)


class Warmup:
    """Linear learning-rate warm-up for ``LambdaLR`` (a class, so its state is checkpointed)."""

    def __init__(self, steps: int = 500):
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / max(1, self.steps))


class ramped_ema:  # noqa: N801  (used as a function: ``multi_avg_fn=ramped_ema(decay, warmup)``)
    """``multi_avg_fn`` for ``AveragedModel``: EMA whose decay after ``n`` updates is
    ``min(decay, (1 + n) / (warmup + n))``, so the weights the average started from fade out within
    a few hundred steps instead of lingering (at 0.999, 15 % of them are still in after 1,900 updates).
    One ``_foreach_lerp_`` over all tensors of a dtype: a loop over the tensors took 31 ms per step for the
    9.3M audio U-Net on a 2-core CPU, the foreach update 4 ms. Integer buffers are copied. :meth:`one` is the
    same update for one tensor (``avg_fn``), for an average whose dtypes differ from the model's.
    A class, not a closure, so that it pickles (ddp_spawn sends the callbacks to its processes)."""

    def __init__(self, decay: float, warmup: float = 10.0):
        self.decay, self.warmup = decay, warmup

    def weight(self, num_averaged: torch.Tensor) -> float:
        """The weight of the current model: 1 - the decay after ``num_averaged`` updates."""
        n = float(num_averaged)
        return 1.0 - min(self.decay, (1.0 + n) / (self.warmup + n))

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, self.weight(num_averaged))

    @torch.no_grad()
    def one(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        w = self.weight(num_averaged)
        return (1.0 - w) * averaged + w * current


class EMA(EMAWeightAveraging):
    """Lightning's EMA weight averaging with a decay warm-up (:func:`ramped_ema`); long runs reach
    ``decay`` after about ``warmup / (1 - decay)`` updates (10,000 at the defaults)."""

    def __init__(
        self,
        decay: float = 0.999,
        warmup: float = 10.0,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self._ramp = ramped_ema(decay, warmup)
        WeightAveraging.__init__(self, device=device, use_buffers=use_buffers, multi_avg_fn=self._ramp)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a true half or double precision converts the module after the average was copied from it: tensors of two
        # dtypes, which the foreach update cannot pair, so those are averaged one by one (in the wider dtype)
        average = self._average_model
        if average is None:
            return
        pairs = zip(_tensors(average.module, self._use_buffers), _tensors(pl_module, self._use_buffers))
        if any(a.dtype != b.dtype for a, b in pairs):
            average.multi_avg_fn, average.avg_fn = None, self._ramp.one

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        average = self._average_model
        if average is not None and int(average.n_averaged) == 0:
            # until averaging starts (update_starting_at_step) the average is the model itself: Lightning keeps the
            # copy made at the start, which a shorter run would save, and sample from, as its trained weights
            with torch.no_grad():
                for mine, theirs in zip(
                    _tensors(average.module, self._use_buffers), _tensors(pl_module, self._use_buffers)
                ):
                    mine.copy_(theirs)


def _tensors(module: torch.nn.Module, buffers: bool) -> list[torch.Tensor]:
    return [*module.parameters(), *(module.buffers() if buffers else [])]


class SampleCallback(pl.Callback):
    """Every ``every_n_steps`` optimizer steps: generate ``n`` items, export them (files + PNG)
    under ``<run dir>/samples/step_<k>``, show them in the run's loggers (:mod:`multidiff.loggers`: clips, point
    clouds, pictures) and log the domain's quick metrics. Training an autoencoder: the
    current batch and its reconstruction under ``<run dir>/reconstructions/step_<k>``."""

    def __init__(self, sampler: Mapping[str, Any], every_n_steps: int = 5000, n: int = 8):
        self.every_n_steps, self.n = every_n_steps, n
        # the run's sampler config group, built as sample.py builds it (same function, same options)
        self.request = SamplingRequest(build_sampler(sampler))

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        if not hasattr(module, "generate"):  # an autoencoder (stage one): this batch and its reconstruction
            out = Path(trainer.default_root_dir) / "reconstructions" / f"step_{step:07d}"
            module.export_reconstructions(batch, out, self.n)
            log.info("step %d: reconstructions in %s", step, out)
            return
        # at the precision the run trains in
        request = replace(self.request, precision=sampling_precision(trainer.precision))
        items = module.domain.decode(module.generate(self.n, request, seed=step, progress=False))
        out = Path(trainer.default_root_dir) / "samples" / f"step_{step:07d}"
        files = module.domain.export(items, out, {"step": step, **request.sampler.record()})
        log_media(trainer.loggers, module.domain.media(items, files), step)
        metrics = module.domain.quick_metrics(items)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for k, v in metrics.items():
            module.log(f"samples/{k}", float(v), rank_zero_only=True)
        log.info("step %d: samples in %s %s", step, out, metrics)


class FollowLoad(pl.Callback):
    """Between training steps, let the thread governor (:class:`~multidiff.threads.ThreadGovernor`) follow the
    machine's load: fewer threads while other processes hold cores, all of them back when they leave."""

    def __init__(self, governor: ThreadGovernor):
        self.governor = governor

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        self.governor.update()


class LossCurves(pl.Callback):
    """Plot the training loss (per noise-level bucket too) and the validation loss to ``<run dir>/loss.png``,
    refreshed after every validation and at the end of training. (Validation runs with the EMA weights,
    so its curve stays flat until the average starts updating.)"""

    def __init__(self, every_n_steps: int = 10, filename: str = "loss.png"):
        self.every_n_steps, self.filename = every_n_steps, filename
        self.history: dict[str, list[tuple[int, float]]] = {}

    # the curves so far travel in checkpoints, so a resumed run plots them from its start
    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict.get("history", {}).items()}

    def _record(self, trainer: pl.Trainer, keep) -> None:
        for key, value in trainer.callback_metrics.items():
            if keep(key) and not key.endswith("_epoch") and value.numel() == 1:
                self.history.setdefault(key.removesuffix("_step"), []).append((trainer.global_step, float(value)))

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._record(trainer, lambda k: k.startswith("train/"))

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record(trainer, lambda k: k == "val/loss")
        if trainer.is_global_zero:
            self.plot(Path(trainer.default_root_dir) / self.filename)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.plot(Path(trainer.default_root_dir) / self.filename)

    def plot(self, path: Path) -> Path | None:
        if not self.history:
            return None
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in any thread or process

        fig = Figure(figsize=(11, 4))
        axes = fig.subplots(1, 2)
        for key, points in sorted(self.history.items()):
            steps, values = zip(*points)
            ax = axes[1] if "sigma" in key else axes[0]
            ax.plot(steps, values, label=key.split("/", 1)[1] if "sigma" in key else key, lw=1)
        for ax, title in zip(axes, ("loss", "training loss by noise level")):
            ax.set(xlabel="step", title=title, yscale="log")
            if ax.lines:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        return path


class ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping an existing ``metrics.csv`` (its rows and header) instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger that continues ``metrics.csv`` when a run resumes in its own folder (after a
    preemption, or ``ckpt_path=auto``): Lightning's starts the file afresh, losing the curves before the stop."""

    @property
    @rank_zero_experiment  # other ranks get a no-op writer, as with Lightning's
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
