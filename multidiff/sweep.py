"""The report of a sweep: every job's objective (``objective.json``, written by train.py) gathered at the end of
a multirun into ``trials.csv`` and ``trials.png`` in the sweep directory, whatever the sweeper and launcher."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def read_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """Each job's ``objective.json`` under ``sweep_dir``, ordered by job, with its overrides as a dict."""
    rows = []
    for path in sweep_dir.rglob("objective.json"):
        record = json.loads(path.read_text())
        params = dict(o.split("=", 1) for o in record.get("overrides", []) if "=" in o)
        rows.append({"job": str(path.parent.relative_to(sweep_dir)), "value": record.get("value"), "params": params})
    return sorted(rows, key=lambda r: (len(r["job"]), r["job"]))


def write_report(sweep_dir: Path, direction: str = "minimize", metric: str = "objective") -> list[dict[str, Any]]:
    """``trials.csv`` (one row per job: the parameters that vary across jobs and the objective) and
    ``trials.png`` (the objective per trial and the best so far). Returns the rows; nothing written without."""
    rows = read_trials(sweep_dir)
    if not rows:
        return rows
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    with (sweep_dir / "trials.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", *varying, metric])
        for r in rows:
            writer.writerow([r["job"], *(r["params"].get(k, "") for k in varying), r["value"]])
    plot_trials(rows, direction, metric, sweep_dir / "trials.png")
    finite = [r for r in rows if r["value"] is not None and math.isfinite(r["value"])]
    if finite:
        best = (min if direction == "minimize" else max)(finite, key=lambda r: r["value"])
        log.info(
            "sweep: %d jobs, best %s = %.6g (job %s: %s)",
            len(rows),
            metric,
            best["value"],
            best["job"],
            " ".join(f"{k}={best['params'].get(k)}" for k in varying),
        )
    return rows


def plot_trials(rows: list[dict[str, Any]], direction: str, metric: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    xs = list(range(len(rows)))
    ys = [math.nan if r["value"] is None else r["value"] for r in rows]
    ax.plot(xs, ys, "o", label="trial")
    best, running = [], math.nan
    for y in ys:
        if math.isfinite(y) and (math.isnan(running) or (y < running if direction == "minimize" else y > running)):
            running = y
        best.append(running)
    ax.step(xs, best, where="post", color="k", lw=1, label="best so far")
    failed = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
    if failed:
        ax.plot(failed, [min((y for y in ys if math.isfinite(y)), default=0)] * len(failed), "rx", label="failed")
    ax.set(xlabel="trial (job)", ylabel=f"{metric} ({direction})", title=f"sweep {path.parent.name}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, :func:`write_report` in the sweep directory."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # resolved now: the sweep directory's ${now:...} is cached per process, so it matches the jobs' folder
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(config.hydra.sweep.dir)
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
        metric = OmegaConf.select(config, "optimized_metric", default=None) or "objective"
        if sweep_dir.is_dir():
            write_report(sweep_dir, str(direction), str(metric))
