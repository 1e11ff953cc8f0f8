"""Molecule quality against training wall clock: every saved checkpoint of one or more runs sampled and scored.

Each ``step_*.ckpt`` of each run goes through ``benchmarks/quality.py`` (one cell: ``--cell SAMPLER:STEPS``, ``--n``
molecules, novelty and strain off); its wall-clock minute is the checkpoint file's time since the run's first log
line. Cells already scored (their ``results.json``) are kept, so an interrupted run picks up where it stopped.
Writes ``--out/curve.json`` and ``--out/curve.png`` (molecule stability and validity against minutes).

    python benchmarks/stability_curve.py --run points=runs/eb_mol_points --run graph=runs/eb_mol_graph \\
        --cell points=euler_ancestral:50 --cell graph=dpmpp_2m_sde:50 --n 128 --out docs/graph_vs_points
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = {
    "atom_stable": "atom stability",
    "mol_stable": "molecule stability",
    "validity": "validity (largest fragment)",
}


def started(run: Path) -> dt.datetime:
    """The run's start: the time stamp of its log's first line (Hydra's ``[YYYY-mm-dd HH:MM:SS,mmm]``)."""
    first = (run / "train.log").read_text().splitlines()[0]
    return dt.datetime.strptime(first[1:20], "%Y-%m-%d %H:%M:%S")


def score(ckpt: Path, cell: str, n: int, out: Path, threads: int) -> dict | None:
    """The cell's metrics, or None when sampling failed (e.g. the model's samples were not finite)."""
    results = out / "results.json"
    if not results.exists() and not (out / "failed.txt").exists():
        cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--ckpt", str(ckpt), "--cells", cell,
               "--n", str(n), "--batch-size", str(min(n, 64)), "--threads", str(threads), "--out", str(out),
               "--eval", "novelty=false", "strain=false"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "failed.txt").write_text(proc.stderr.strip().splitlines()[-1] + "\n")
    if not results.exists():
        return None
    return json.loads(results.read_text())[-1]["metrics"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    p.add_argument("--cell", action="append", default=[], help="NAME=SAMPLER:STEPS per run (default dpmpp_2m:50)")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", help="score only this run (to run runs side by side), then plot what exists")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    runs = dict(item.split("=", 1) for item in a.run)
    cells = dict(item.split("=", 1) for item in a.cell)
    curve: dict[str, list[dict]] = {}
    for name, run in runs.items():
        run, cell = Path(run), cells.get(name, "dpmpp_2m:50")
        t0 = started(run)
        points = []
        for ckpt in sorted((run / "checkpoints").glob("step_*.ckpt")):
            cell_dir = a.out / name / ckpt.stem
            if a.only not in (None, name) and not (cell_dir / "results.json").exists():
                continue
            metrics = score(ckpt, cell, a.n, cell_dir, a.threads)
            if metrics is None:  # listed with the reason, left out of the plot
                failed = (cell_dir / "failed.txt").read_text().strip()
                points.append({"step": int(ckpt.stem.split("_")[1]), "cell": cell, "failed": failed})
                continue
            minutes = (dt.datetime.fromtimestamp(ckpt.stat().st_mtime) - t0).total_seconds() / 60
            step = int(ckpt.stem.split("_")[1])
            points.append({"step": step, "minutes": round(minutes, 2), "cell": cell, "n": a.n,
                           **{k: metrics.get(k) for k in ("atom_stable", "mol_stable", "validity",
                                                          "validity_connected", "valid_unique", "bonds")}})  # fmt: skip
        curve[name] = points
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "curve.json").write_text(json.dumps(curve, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    for ax, (key, label) in zip(axes, METRICS.items()):
        for name, points in curve.items():
            points = [q for q in points if "failed" not in q]
            if points:
                ax.plot([q["minutes"] for q in points], [q[key] or 0 for q in points], "o-",
                        label=f"{name} ({points[0]['cell']})")  # fmt: skip
        ax.set_xlabel("training wall clock (minutes, one thread)")
        ax.set_ylabel(label)
        # small fractions (a few stable molecules in 128) would sit on the axis of a 0-1 scale
        top = max((q[key] or 0 for points in curve.values() for q in points if "failed" not in q), default=0)
        ax.set_ylim(0, 1 if top > 0.25 else max(0.05, 1.2 * top))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"QM9, {a.n} molecules per point")
    fig.tight_layout()
    fig.savefig(a.out / "curve.png", dpi=120)
    print(json.dumps(curve, indent=1))


if __name__ == "__main__":
    main()
