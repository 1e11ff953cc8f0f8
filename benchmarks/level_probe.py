"""Sample quality on noise levels of one's choosing: ``quality.py`` run with the model's grid replaced, to see where
items are decided and which few levels a solver (or a student's jumps, ``distill.jumps_at``) should take.

``--tail S``: the sampler's own grid down to the first level above S, then S and 0: the teacher's solve to S, then
one jump to the data from its estimate there (for DPM-Solver++(2M), whose last step is the estimate itself).
``--levels A,B,C``: the prior's level, then A, B, C and 0 (e.g. Euler in 4 steps on levels of one's choosing).
Everything after ``--`` goes to ``quality.py`` (whose ``--cells`` name the sampler and a step count: give the
probed grid's, as the labels' step and evaluation counts are the cell's, not the grid's). A student that samples on
levels of its own (``distill.jumps_at``) is refused: there is no grid of the sampler's to replace.

    python benchmarks/level_probe.py --tail 0.49 -- --ckpt runs/t7_mol_discrete/checkpoints/last.ckpt \\
        --cells dpmpp_2m:49 --n 128 --batch-size 64 --eval novelty=false strain=false --out runs/probe_tail_0.49
    python benchmarks/level_probe.py --levels 6,1.5,0.5 -- --ckpt runs/t7_mol_discrete/checkpoints/last.ckpt \\
        --cells euler:4 --n 128 --batch-size 64 --eval novelty=false strain=false --out runs/probe_euler4
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import torch

from multidiff import module
from multidiff.core.schedules import Schedule
from multidiff.sampling import Sampling

QUALITY = Path(__file__).resolve().with_name("quality.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = p.add_mutually_exclusive_group(required=True)
    grid.add_argument("--tail", type=float, help="solve to this level, then one jump to the data")
    grid.add_argument("--levels", help="comma-separated levels after the prior's, descending (0 is appended)")
    args, rest = p.parse_known_args()
    if rest[:1] == ["--"]:
        rest = rest[1:]
    levels = None if args.levels is None else [float(v) for v in args.levels.split(",")]
    if levels is not None and (min(levels) <= 0 or any(a <= b for a, b in zip(levels, levels[1:]))):
        raise SystemExit(f"--levels {args.levels}: give positive levels in descending order")
    if args.tail is not None and args.tail <= 0:
        raise SystemExit(f"--tail {args.tail}: give a level > 0")
    grid_of, levels_of = Schedule.sigmas, module.sampling_levels

    def probed(self: Schedule, steps: int, spacing: str = "karras", rho: float = 7.0) -> torch.Tensor:
        if levels is not None:
            if levels[0] >= self.sigma_max:
                raise SystemExit(f"--levels {args.levels}: the first must lie below the prior's {self.sigma_max:.4g}")
            return torch.tensor([self.sigma_max, *levels, 0.0], dtype=torch.float64).float()
        full = grid_of(self, steps, spacing, rho)
        return torch.cat([full[full > args.tail], torch.tensor([args.tail, 0.0])]).float()

    def own_levels_refused(sampler: Sampling, schedule: Schedule, distilled: Mapping[str, Any] | None) -> torch.Tensor:
        if (distilled or {}).get("jumps_at") is not None:
            raise SystemExit(
                f"a student with its own levels (distill.jumps_at={distilled['jumps_at']}): nothing to probe"
            )
        return levels_of(sampler, schedule, distilled)

    # every grid the model samples on (quality.py's sample.py runs in this process) goes through the probe
    Schedule.sigmas, module.sampling_levels = probed, own_levels_refused
    sys.argv = [str(QUALITY), *rest]
    runpy.run_path(str(QUALITY), run_name="__main__")


if __name__ == "__main__":
    main()
