"""The number a run is judged by: a metric logged in training, or the domain's own quality score of items
generated from the model (FID for audio, 1-NNA-CD for point clouds, molecule stability for molecules).
Shared by train.py (what it returns to a sweeper) and tune_sampling.py (what it optimises)."""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from multidiff.core.options import accepted_keywords, call_strict, check_keys
from multidiff.core.state import State
from multidiff.sampling import SamplingRequest

SAMPLE_QUALITY = "sample_quality"
LOGGED_PREFIXES = ("val/", "train/", "samples/")  # what the module and its callbacks log


def check_objective(name: str | None, domain: Any, evaluate_options: Mapping[str, Any]) -> None:
    """Before training: a misspelt objective, or an evaluation option the domain does not take, fails now
    rather than after the run."""
    if not name:
        return
    if name == SAMPLE_QUALITY:
        first = next(iter(inspect.signature(domain.evaluate).parameters))  # the samples folder
        valid = accepted_keywords(domain.evaluate, [first])
        if valid is not None:
            check_keys(evaluate_options, valid, f"{domain.name} evaluation option (sample_quality.evaluate)")
    elif not name.startswith(LOGGED_PREFIXES):
        raise ValueError(
            f"optimized_metric={name!r}: valid are {SAMPLE_QUALITY} or a metric the run logs, such as val/loss, "
            "train/loss or val/loss_sigma_1e-1_1e0"
        )


def generate_items(
    module: Any,
    request: SamplingRequest,
    n: int,
    seed: int,
    batch_size: int,
    condition: Mapping[str, Any] | None = None,
) -> tuple[list[Any], int]:
    """``n`` decoded items in batches, item ``i`` seeded by ``seed + i``'s batch start (the same items for the
    same seed whatever else changes); returns the items and the number of batches."""
    items: list[Any] = []
    batches = 0
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        state = module.generate(count, request, seed=seed + start, condition=dict(condition or {}), progress=False)
        batches += 1
        items += module.domain.decode(State(state.x.cpu(), state.cond, state.ctx))
    return items, batches


def score_items(domain: Any, items: list[Any], options: Mapping[str, Any], workdir: Path) -> tuple[float, str, dict]:
    """Export ``items`` to a temporary folder under ``workdir`` and score them with the domain's evaluator
    (``options`` are its evaluation options); returns (quality, what the quality is, all metrics)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        domain.export(items, Path(folder), {})
        metrics = call_strict(domain.evaluate, f"{domain.name} evaluation option", dict(options), Path(folder))
    quality, meaning = domain.quality(metrics)
    return quality, meaning, metrics


def logged_metric(trainer: pl.Trainer, name: str) -> float:
    """A metric the run logged (e.g. ``val/loss``), as a float; an unknown name is an error listing the known."""
    metrics = trainer.callback_metrics
    if name not in metrics:
        known = ", ".join(sorted(k for k in metrics if not k.endswith("_step"))) or "none (did validation run?)"
        raise ValueError(f"optimized_metric={name!r} was not logged by this run; logged: {known}, or {SAMPLE_QUALITY}")
    value = float(metrics[name])
    return value if math.isfinite(value) else math.nan
