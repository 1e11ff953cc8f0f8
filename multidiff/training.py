"""Training helpers configured from Hydra: learning-rate warm-up and periodic sample generation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class Warmup:
    """Linear learning-rate warm-up for ``LambdaLR`` (a class, so its state is checkpointed)."""

    def __init__(self, steps: int = 500):
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / max(1, self.steps))


class SampleCallback(pl.Callback):
    """Every ``every_n_steps`` optimizer steps: generate ``n`` items, export them (files + PNG)
    under ``<run dir>/samples/step_<k>`` and log the domain's quick metrics."""

    def __init__(
        self, every_n_steps: int = 5000, n: int = 8, sampler: str = "dpmpp_2m", steps: int = 50, spacing: str = "karras"
    ):
        self.every_n_steps, self.n = every_n_steps, n
        self.kwargs = {"sampler": sampler, "steps": steps, "spacing": spacing}

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        state = module.generate(self.n, seed=step, progress=False, **self.kwargs)
        items = module.domain.decode(state)
        out = Path(trainer.default_root_dir) / "samples" / f"step_{step:07d}"
        module.domain.export(items, out, {"step": step, **self.kwargs})
        metrics = module.domain.quick_metrics(items)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for k, v in metrics.items():
            module.log(f"samples/{k}", float(v), rank_zero_only=True)
        log.info("step %d: samples in %s %s", step, out, metrics)
