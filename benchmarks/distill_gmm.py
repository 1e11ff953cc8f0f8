"""Consistency distillation against the exact answer: a student distilled from the exact denoiser of the 2-D
Gaussian mixture of the sampler tests, sampled in 1, 2 and 4 evaluations, beside DPM-Solver++(2M) on the exact
denoiser at the same counts and at 30 (the solver's passing count in tests/test_samplers.py). Worst moment errors
over the components, N = 20,000 samples; tolerances 0.015 / 0.035 / 0.03 (weight / mean / covariance).

    python benchmarks/distill_gmm.py --steps 16000 --levels 120 --out docs/distill_gmm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gmm import GaussianMixture, distill_mixture, sample_student  # noqa: E402

from multidiff.core.samplers import sample_dpmpp_2m  # noqa: E402
from multidiff.core.schedules import KarrasSchedule  # noqa: E402

N = 20_000
TOL = {"weight": 0.015, "mean": 0.035, "cov": 0.03}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16000, help="distillation steps (batches of 2,048)")
    parser.add_argument("--levels", type=int, default=120, help="Karras levels of the distillation grid")
    parser.add_argument("--target-decay", type=float, default=0.95)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    g = GaussianMixture.default()
    start = time.perf_counter()
    student = distill_mixture(g, steps=args.steps, levels=args.levels, target_decay=args.target_decay)
    seconds = time.perf_counter() - start
    rows = []
    for evals in (1, 2, 4):
        rows.append(
            {
                "method": "consistency student",
                "evaluations": evals,
                **g.moment_errors(sample_student(student, N, evals).double()),
            }
        )
    for evals in (1, 2, 4, 30):
        sigmas = KarrasSchedule().sigmas(evals).double()
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
        # DPM-Solver++(2M) evaluates once per step
        rows.append(
            {
                "method": "DPM-Solver++(2M), exact denoiser",
                "evaluations": evals,
                **g.moment_errors(sample_dpmpp_2m(g.denoise, x, sigmas)),
            }
        )
    for r in rows:
        r["within_tolerance"] = all(r[k] < t for k, t in TOL.items())
    lines = ["| method | evaluations | weight | mean | cov | within tolerance |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['evaluations']} | {r['weight']:.4f} | {r['mean']:.4f} | {r['cov']:.4f} | "
            f"{'yes' if r['within_tolerance'] else 'no'} |"
        )
    print("\n".join(lines))
    result = {
        "distill_steps": args.steps,
        "levels": args.levels,
        "target_decay": args.target_decay,
        "seconds": seconds,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
