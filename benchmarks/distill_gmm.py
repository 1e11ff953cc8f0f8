"""Consistency distillation against the exact answer: a student distilled from the exact denoiser of the 2-D
Gaussian mixture of the sampler tests, sampled in 1, 2 and 4 evaluations, beside DPM-Solver++(2M) on the exact
denoiser at the same counts and at 30 (the solver's passing count in tests/test_samplers.py). Worst moment errors
over the components, N = 20,000 samples; tolerances 0.015 / 0.035 / 0.03 (weight / mean / covariance).
``--labelled``: the component is part of each sample as a label that follows the discrete process (a graph's
atom types beside its coordinates; tests/gmm.py LabelledMixture), moved by its chain in every sampler; the
labels' worst frequency error and how often a label disagrees with its point's component are added.

    python benchmarks/distill_gmm.py --steps 16000 --levels 120 --out docs/distill_gmm.json
    python benchmarks/distill_gmm.py --labelled --steps 16000 --levels 120 --out docs/distill_gmm_labelled.json
    python benchmarks/distill_gmm.py --trajectories 20000 --segments 4 --teacher-steps 12 --steps 1500

``--trajectories N``: a student of ``--segments`` jumps learned from N stored DPM-Solver++(2M) solves of the exact
denoiser on segments x teacher-steps + 1 Karras levels (``distill.method=trajectory``) instead of consistency
distillation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gmm import (  # noqa: E402
    GaussianMixture,
    LabelledMixture,
    distill_mixture,
    sample_mixture,
    sample_student,
    trajectory_mixture,
)

from multidiff.core.samplers import sample_dpmpp_2m  # noqa: E402
from multidiff.core.schedules import KarrasSchedule  # noqa: E402

N = 20_000
TOL = {"weight": 0.015, "mean": 0.035, "cov": 0.03}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16000, help="distillation steps (batches of 2,048)")
    parser.add_argument("--levels", type=int, default=120, help="Karras levels of the distillation grid")
    parser.add_argument("--target-decay", type=float, default=0.95)
    parser.add_argument("--labelled", action="store_true", help="the component as a discrete label beside the point")
    parser.add_argument(
        "--label-scale", type=float, default=1.0, help="--labelled: the label block's scale (larger: decided earlier)"
    )
    parser.add_argument(
        "--segments", type=int, default=1, help="multistep consistency in K segments (sampled in exactly K steps)"
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=1,
        help="the teacher's Heun steps per pair of levels (with --levels = --segments + 1: direct distillation)",
    )
    parser.add_argument("--huber", type=float, default=None, help="the pseudo-Huber constant (default: squared)")
    parser.add_argument(
        "--trajectories",
        type=int,
        default=None,
        help="learn from this many stored teacher solves (method=trajectory; --teacher-steps: per jump)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    g = GaussianMixture.default()
    data = LabelledMixture(g, scale=args.label_scale) if args.labelled else g
    errors = data.errors if args.labelled else g.moment_errors
    start = time.perf_counter()
    if args.trajectories:
        if args.huber is not None or args.teacher_steps < 2:
            parser.error("--trajectories: the squared distance, --teacher-steps >= 2")
        student = trajectory_mixture(
            data, args.steps, args.trajectories, args.segments, args.teacher_steps, log_every=1000
        )
    else:
        student = distill_mixture(
            data,
            steps=args.steps,
            levels=args.levels,
            target_decay=args.target_decay,
            log_every=1000,
            segments=args.segments,
            teacher_steps=args.teacher_steps,
            huber=args.huber,
        )
    seconds = time.perf_counter() - start
    rows = []
    method = (
        "consistency student" if args.segments == 1 else f"multistep consistency student ({args.segments} segments)"
    )
    if args.teacher_steps > 1:
        direct = args.levels == args.segments + 1  # every pair ends its run: the teacher's own solution, no target
        method = "direct segments" if direct else method
        method += f" ({args.segments} segments, {args.teacher_steps} teacher steps per pair)"
    if args.huber is not None:
        method += f", pseudo-Huber c = {args.huber:g}"
    if args.trajectories:
        method = (
            f"trajectory student ({args.trajectories} stored solves, {args.segments} jumps, "
            f"{args.teacher_steps} solver steps per jump)"
        )
    jumps = args.segments > 1 or args.trajectories
    for evals in (args.segments,) if jumps else (1, 2, 4):
        out = sample_student(student, N, evals, segments=args.segments).double()
        rows.append({"method": method, "evaluations": evals, **errors(out)})
    for evals in (1, 2, 4, 30):  # DPM-Solver++(2M) evaluates once per step
        if args.labelled:
            out = sample_mixture(data.denoise_items, sample_dpmpp_2m, N, evals, data.dims, data.discrete, seed=2)
        else:
            sigmas = KarrasSchedule().sigmas(evals).double()
            gen = torch.Generator().manual_seed(2)
            x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
            out = sample_dpmpp_2m(g.denoise, x, sigmas)
        rows.append({"method": "DPM-Solver++(2M), exact denoiser", "evaluations": evals, **errors(out.double())})
    # the labels' frequencies are held to the weights' tolerance
    tolerance = {**TOL, "label_weight": TOL["weight"]} if args.labelled else TOL
    for r in rows:
        r["within_tolerance"] = all(r[k] < t for k, t in tolerance.items())
    extra = ["label_weight", "disagree"] if args.labelled else []
    lines = [
        "| method | evaluations | weight | mean | cov | " + "".join(f"{k} | " for k in extra) + "within tolerance |",
        "|---|---|---|---|---|" + "---|" * len(extra) + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['evaluations']} | {r['weight']:.4f} | {r['mean']:.4f} | {r['cov']:.4f} | "
            + "".join(f"{r[k]:.4f} | " for k in extra)
            + f"{'yes' if r['within_tolerance'] else 'no'} |"
        )
    print("\n".join(lines))
    result = {
        "labelled": args.labelled,
        "label_scale": args.label_scale if args.labelled else None,
        "distill_steps": args.steps,
        "levels": args.levels,
        "segments": args.segments,
        "teacher_steps": args.teacher_steps,
        "target_decay": args.target_decay,
        "huber": args.huber,
        "trajectories": args.trajectories,
        "seconds": seconds,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
