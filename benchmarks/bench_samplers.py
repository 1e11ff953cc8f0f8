"""Samplers: the fewest steps at which each reproduces a Gaussian mixture with its exact denoiser, and each
sampler's overhead beyond the network evaluations on the audio model.

python benchmarks/bench_samplers.py --mixture            # markdown table: fewest steps within Monte-Carlo error
python benchmarks/bench_samplers.py --overhead [--batch 8 --length 8192 --steps 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gmm import GaussianMixture  # noqa: E402

from multidiff.build import build_module  # noqa: E402
from multidiff.config import compose_run, sampler_config  # noqa: E402
from multidiff.core.noise import make_noise  # noqa: E402
from multidiff.core.samplers import SAMPLERS  # noqa: E402
from multidiff.core.schedules import KarrasSchedule, LinearSchedule  # noqa: E402
from multidiff.core.space import TensorSpace  # noqa: E402
from multidiff.sampling import (  # noqa: E402
    named_request,  # noqa: E402
)

# the test suite's Monte-Carlo bands for N = 20,000 samples (tests/test_samplers.py)
N, TOL = 20_000, {"weight": 0.015, "mean": 0.035, "cov": 0.03}
GRID = (5, 10, 15, 20, 30, 50, 100, 200)


def mixture_errors(name: str, steps: int, schedule, seed: int = 0) -> tuple[dict[str, float], int]:
    gmm = GaussianMixture.default()
    gen = torch.Generator().manual_seed(seed)
    sigmas = schedule.sigmas(steps, "karras").double()
    x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
    kind = sampler_config(name).noise
    calls = [0]

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return gmm.denoise(x, sigma)

    out = SAMPLERS[name](denoise, x, sigmas, noise_sampler=make_noise(kind, TensorSpace(), x, {}, sigmas, gen, seed))
    return gmm.moment_errors(out), calls[0]


def mixture_table() -> None:
    print(
        "| sampler | noise | fewest steps (karras / linear schedule) | network evaluations | worst error / tolerance |"
    )
    print("|---|---|---|---|---|")
    for name in SAMPLERS:
        kind = sampler_config(name).noise
        found = None
        for steps in GRID:
            runs = [mixture_errors(name, steps, s) for s in (KarrasSchedule(), LinearSchedule())]
            worst = max(e[k] / TOL[k] for e, _ in runs for k in TOL)
            if worst < 1:
                found = (steps, runs[0][1], worst)
                break
        cells = ("> 200", "-", "-") if found is None else (found[0], found[1], f"{found[2]:.2f}")
        print(f"| {name} | {kind} | {cells[0]} | {cells[1]} | {cells[2]} |", flush=True)


def overhead(batch: int, length: int, steps: int) -> None:
    """Time inside the network vs the whole sampling call: the rest is the sampler's own arithmetic (and the
    noise draws), measured in the same run so that machine load affects both alike."""
    cfg = compose_run("train", ["domain=audio", "paths.data_dir=."], Path("/tmp/multidiff-bench-samplers"))
    module = build_module(cfg, {"sample_rate": 8000, "length": length, "num_classes": 0}).eval()
    net = module.model.net
    forward = net.forward
    inside = {"calls": 0, "seconds": 0.0}

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = forward(*args, **kwargs)
        inside["calls"] += 1
        inside["seconds"] += time.perf_counter() - t0
        return out

    net.forward = timed
    module.generate(batch, named_request(steps=2), progress=False)  # warm-up
    print(f"audio U-Net (default config), batch {batch} x {length} samples, {torch.get_num_threads()} threads")
    print("| sampler | steps | network evaluations | s per evaluation | sampler overhead |")
    print("|---|---|---|---|---|")
    for name in SAMPLERS:
        inside.update(calls=0, seconds=0.0)
        t0 = time.perf_counter()
        module.generate(batch, named_request(name, steps), progress=False)
        total = time.perf_counter() - t0
        rest = total - inside["seconds"]
        print(
            f"| {name} | {steps} | {inside['calls']} | {inside['seconds'] / inside['calls']:.3f} | "
            f"{100 * rest / inside['seconds']:.2f} % |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixture", action="store_true")
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mixture:
        mixture_table()
    if a.overhead:
        overhead(a.batch, a.length, a.steps)


if __name__ == "__main__":
    main()
