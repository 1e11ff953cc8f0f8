"""One domain's default training step in two checkouts, alternated: the measure for keeping a change.

    python benchmarks/ab_step.py --baseline ../old-checkout --domain molecule [--rounds 2] [--steps 12]

Each round times the baseline checkout and this one, each in its own process (the order reversed every other
round: A B | B A, so a drift of the machine's speed cancels), on the same first 4 batches of the domain's
training data, bf16 autocast where ``precision=auto`` picks it, forward + backward + AdamW per step, one warm-up
step. Prints every process's median and the medians of each side; ``--json`` writes them. A checkout to compare
against: ``git worktree add ../old-checkout REV``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout (A); this one is B")
    p.add_argument("--domain", choices=["audio", "pointcloud", "molecule"], required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=12, help="timed steps per process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if not (a.baseline / "multidiff").is_dir():
        raise SystemExit(f"--baseline {a.baseline}: no multidiff package there (git worktree add PATH REV)")
    sides = {"baseline": a.baseline, "this": ROOT}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(a.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            times[name].append(time_checkout(sides[name], a.domain, a.steps, a.threads))
            print(f"round {r + 1} {name}: {times[name][-1]:.4f} s/step", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{a.domain}: baseline {medians['baseline']:.4f} s/step, this {medians['this']:.4f} s/step, "
          f"{medians['baseline'] / medians['this']:.2f}x")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"domain": a.domain, "threads": a.threads, "times": times, "medians": medians}))


if __name__ == "__main__":
    main()
