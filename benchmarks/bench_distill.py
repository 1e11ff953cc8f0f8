"""Seconds per item of a student at 1, 2 and 4 consistency steps (a student of K jumps: K)
against its teacher at 50 solver steps: the network's time only (``DiffusionModule.generate``, in process, after a
warm-up), same batch, same threads.

    python benchmarks/bench_distill.py --student runs/distill_fsdd/checkpoints/last.ckpt --teacher fsdd-digits \
        --condition digit=7 --n 100 --batch 50 --out docs/bench_distill.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch
import yaml

from multidiff.build import load_any
from multidiff.sampling import jumps_of, named_request


def seconds_per_item(module, sampler: str, steps: int, n: int, batch: int, condition: dict) -> float:
    request = named_request(sampler, steps)
    module.generate(min(batch, 2), request, condition=condition, progress=False)  # warm-up
    start = time.perf_counter()
    for k in range(0, n, batch):
        module.generate(min(batch, n - k), request, seed=k, condition=condition, progress=False)
    return (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="the student's checkpoint")
    p.add_argument("--teacher", required=True, help="the teacher: a .ckpt, a shipped/exported model or a URL")
    p.add_argument("--condition", nargs="*", default=[], help="KEY=VALUE")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    condition = {k: yaml.safe_load(v) for k, v in (c.split("=", 1) for c in args.condition)}  # typed as on the CLI
    student, teacher = load_any(args.student), load_any(args.teacher)
    teacher50 = seconds_per_item(teacher, "dpmpp_2m", 50, args.n, args.batch, condition)
    rows = {"teacher dpmpp_2m 50": teacher50}
    jumps = jumps_of(student.distilled)
    counts = (1, 2, 4) if jumps is None else (jumps,)
    for steps in counts:
        rows[f"student consistency {steps}"] = seconds_per_item(
            student, "consistency", steps, args.n, args.batch, condition
        )
    result = {
        "seconds_per_item": rows,
        f"speedup_at_{counts[-1]}": teacher50 / rows[f"student consistency {counts[-1]}"],
        "threads": args.threads,
        "n": args.n,
        "batch": args.batch,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
