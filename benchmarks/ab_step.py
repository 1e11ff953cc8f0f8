"""One domain's default training step in two checkouts, alternated: the measure for keeping a change.

    python benchmarks/ab_step.py --baseline ../old-checkout --domain molecule [--rounds 2] [--steps 12]
    python benchmarks/ab_step.py --baseline ../old-checkout --domain audio --loop [--steps 40]

Each round times the baseline checkout and this one, each in its own process (the order reversed every other
round: A B | B A, so a drift of the machine's speed cancels), on the same first 4 batches of the domain's
training data, bf16 autocast where ``precision=auto`` picks it, forward + backward + AdamW per step, one warm-up
step. Prints every process's median and the medians of each side; ``--json`` writes them. A checkout to compare
against: ``git worktree add ../old-checkout REV``.

``--loop``: each side's own ``train.py`` (the domain's default recipe, its callbacks, logging and data loading;
no validation or preview samples; the EMA updated from the first step, as through most of a long run), run for
10 and for 10 + ``--steps`` steps: the difference of the two wall times over ``--steps`` is the seconds per step
of the whole training loop, start-up and the final checkpoint cancelling out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import statistics, sys, time
root, bench, domain, steps, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path[:0] = [root]
import multidiff.env  # noqa: F401  (before torch)
import multidiff
import torch
torch.set_num_threads(threads)
sys.path.insert(1, bench)
from roofline import training_setup  # this checkout's setup, run on the checkout's multidiff (imported above)
assert multidiff.__file__.startswith(root), multidiff.__file__
module, batches, step, _ = training_setup(domain, 4)
step(batches[0])
times = []
for k in range(steps):
    t0 = time.perf_counter()
    step(batches[k % len(batches)])
    times.append(time.perf_counter() - t0)
print("MEDIAN", statistics.median(times))
"""


def time_checkout(root: Path, domain: str, steps: int, threads: int) -> float:
    """Both checkouts are built and stepped by this checkout's ``roofline.training_setup`` (its overrides of the
    domain), so only the package differs."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(root.resolve()), str(ROOT / "benchmarks"), domain, str(steps), str(threads)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("MEDIAN ")]
    if out.returncode or not lines:
        raise SystemExit(f"timing {root} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return float(lines[-1].split()[1])


LOOP_WARMUP = 10


def time_loop(root: Path, domain: str, steps: int, threads: int) -> float:
    """Seconds per step of ``root``'s whole ``train.py`` loop (see ``--loop``)."""
    from roofline import DATA, DOMAINS  # this script's folder, first on sys.path

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    walls = []
    for n in (LOOP_WARMUP, LOOP_WARMUP + steps):
        with tempfile.TemporaryDirectory() as run:
            # no validation or previews; the EMA updated from the first step on, as through most of a long run
            quiet = ["trainer.limit_val_batches=0", "callbacks.samples=null", "optimized_metric=null"]
            quiet.append("callbacks.ema.update_starting_at_step=0")
            args = [*DOMAINS[domain], f"paths.data_dir={DATA}", f"trainer.max_steps={n}", *quiet]
            args += [f"threads={threads}", f"hydra.run.dir={run}"]
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "train.py", *args], cwd=root, capture_output=True, text=True, env=env)
            walls.append(time.perf_counter() - t0)
        if out.returncode:
            raise SystemExit(f"train.py in {root} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return (walls[1] - walls[0]) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout (A); this one is B")
    p.add_argument("--domain", choices=["audio", "pointcloud", "molecule"], required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=12, help="timed steps per process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--loop", action="store_true", help="time each side's whole train.py loop instead of the step")
    a = p.parse_args()
    if not (a.baseline / "multidiff").is_dir():
        raise SystemExit(f"--baseline {a.baseline}: no multidiff package there (git worktree add PATH REV)")
    sides = {"baseline": a.baseline, "this": ROOT}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(a.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            timer = time_loop if a.loop else time_checkout
            times[name].append(timer(sides[name], a.domain, a.steps, a.threads))
            print(f"round {r + 1} {name}: {times[name][-1]:.4f} s/step", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{a.domain}: baseline {medians['baseline']:.4f} s/step, this {medians['this']:.4f} s/step, "
          f"{medians['baseline'] / medians['this']:.2f}x")  # fmt: skip
    if a.json:
        record = {"domain": a.domain, "threads": a.threads, "loop": a.loop, "times": times, "medians": medians}
        a.json.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
