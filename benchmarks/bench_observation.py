"""Generating from observations: the bias of training-free replacement against the closed-form conditional of
a Gaussian mixture, and the cost of an observation per sampling step on the audio model.

python benchmarks/bench_observation.py --mixture     # errors of x2 | x1 = 0.2 vs the exact conditional
python benchmarks/bench_observation.py --fragment    # zero centre of mass: atoms around a given fragment
python benchmarks/bench_observation.py --trained     # an MLP trained with observation masks vs replacement
python benchmarks/bench_observation.py --speed [--batch 8 --steps 20 --threads 2]
python benchmarks/bench_observation.py --speed-ckpt CKPT --observe FILE [--keep SPANS --batch 16 --steps 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gmm import FragmentGaussian, GaussianMixture, conditional_denoiser, conditional_errors  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from multidiff.build import build_module, load_checkpoint  # noqa: E402
from multidiff.config import compose_run  # noqa: E402
from multidiff.core.domain import Domain  # noqa: E402
from multidiff.core.embeddings import NoiseEmbedding, known_input, per_item  # noqa: E402
from multidiff.core.observation import Observation, replacement_denoiser, sample_with_resampling  # noqa: E402
from multidiff.core.processes import EDMProcess  # noqa: E402
from multidiff.core.samplers import sample_ddpm, sample_dpmpp_2m  # noqa: E402
from multidiff.core.schedules import KarrasSchedule  # noqa: E402
from multidiff.core.space import TensorSpace  # noqa: E402
from multidiff.core.state import State  # noqa: E402
from multidiff.module import DiffusionModule  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402

N, A = 20_000, 0.2
MIX = GaussianMixture(
    [0.6, 0.4], [[0.0, -1.5], [0.4, 1.5]], [[[0.5, 0.35], [0.35, 0.5]], [[0.4, -0.25], [-0.25, 0.45]]]
)


def mixture_table() -> None:
    print("| method | steps | resample r | network evaluations | weight error | mean error | variance error |")
    print("|---|---|---|---|---|---|---|")
    for steps in (50, 200):
        rows = [("exact conditional denoiser (DPM-Solver++ 2M)", None)] + [
            ("replacement (DDPM)", r) for r in (1, 3, 10)
        ]
        for label, r in rows:
            gen = torch.Generator().manual_seed(1)
            sigmas = KarrasSchedule().sigmas(steps, "karras").double()
            x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
            noise = lambda *_, gen=gen: torch.randn(N, 2, generator=gen, dtype=torch.float64)  # noqa: E731
            if r is None:
                out, nfe = sample_dpmpp_2m(conditional_denoiser(MIX, A), x, sigmas), steps
            else:
                values = torch.zeros(N, 2, dtype=torch.float64)
                values[:, 0] = A
                obs = Observation(values, torch.tensor([True, False]).expand(N, 2))
                denoise = replacement_denoiser(MIX.denoise, obs, lambda _, noise=noise: noise())
                out, nfe = sample_with_resampling(sample_ddpm, denoise, x, sigmas, r, noise), steps * r
            e = conditional_errors(MIX, out, A)
            print(
                f"| {label} | {steps} | {r or '-'} | {nfe} | {e['weight']:.4f} | {e['mean']:.4f} | {e['var']:.4f} |",
                flush=True,
            )


def fragment_table(steps: int = 50) -> None:
    frag = FragmentGaussian(4000)
    print("| sampler | resample r | fragment shape error | other atoms: mean error (s.e.) | variance / exact |")
    print("|---|---|---|---|---|")
    for sampler in (sample_ddpm, sample_dpmpp_2m):
        for r in (1, 10):
            gen = torch.Generator().manual_seed(0)
            sigmas = KarrasSchedule().sigmas(steps, "karras").double()
            x = frag.space.noise(frag.rows, frag.ctx, gen) * (sigmas[0] ** 2 + frag.tau**2) ** 0.5
            obs = frag.observation()
            fresh = lambda like, gen=gen: frag.space.noise(like, frag.ctx, gen)  # noqa: E731
            denoise = replacement_denoiser(frag.denoise, obs, fresh, frag.space, frag.ctx)
            noise = lambda *_, f=fresh, like=x: f(like)  # noqa: E731
            out = sample_with_resampling(sampler, denoise, x, sigmas, r, noise_sampler=noise)
            e = frag.errors(obs.impose(out, frag.space, frag.ctx))
            name = sampler.__name__.removeprefix("sample_")
            print(f"| {name} | {r} | {e['shape']:.1e} | {e['mean']:.2f} | {e['var']:.3f} |", flush=True)


class Points(Domain):
    """2-D points, for training a small model on the mixture."""

    name = "points"

    def __init__(self) -> None:
        super().__init__()
        self.space = TensorSpace()

    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        return State(torch.zeros(n, 2))


class ObservedX1:
    """x1 known for a fraction ``p`` of the items, nothing for the others."""

    domain = "points"

    def __init__(self, p: float = 0.8):
        self.p = p

    def __call__(self, state: State, generator: torch.Generator | None = None) -> Tensor:
        known = torch.zeros_like(state.x, dtype=torch.bool)
        known[:, 0] = torch.rand(len(known), generator=generator) < self.p
        return known


class MLP(nn.Module):
    conditional, observable, equivariance = False, True, None

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.embed = NoiseEmbedding(hidden)
        self.inp = nn.Linear(4, hidden)
        self.body = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    def forward(self, x: Tensor, c_noise: Tensor, *, cond=None, cond_drop=None, known=None) -> Tensor:
        mask = known_input(self, known, x)
        return self.body(self.inp(torch.cat([x, mask], 1)) + self.embed(per_item(c_noise, len(x))))


def trained_table(train_steps: int = 6000, batch: int = 2048) -> None:
    """One network trained with observation masks (x1 known for 80 % of the items), sampled two ways."""
    torch.manual_seed(0)
    module = DiffusionModule(Points(), MLP(), EDMProcess(KarrasSchedule()), torch.optim.Adam, masks=ObservedX1())
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, train_steps)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(train_steps):
        losses, _ = module.diffusion_loss(State(MIX.sample(batch, gen).float()))
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
        sched.step()
        if (step + 1) % 1000 == 0:
            print(f"step {step + 1}: loss {losses.mean().item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    module.eval()
    values = torch.zeros(N, 2)
    values[:, 0] = A
    obs = Observation(values, torch.tensor([True, False]).expand(N, 2))
    print(f"MLP 4 -> 256 x 3 -> 2, {train_steps} steps of {batch}; {N} samples of x2 | x1 = {A}")
    print("| method | sampler, steps | weight error | mean error | variance error |")
    print("|---|---|---|---|---|")
    for label, sampler, observe_with in (
        ("trained with observations (observe_with=model)", "dpmpp_2m", "model"),
        ("trained with observations (observe_with=model)", "ddpm", "model"),
        ("same network, replacement", "dpmpp_2m", "replacement"),
        ("same network, replacement", "ddpm", "replacement"),
    ):
        request = named_request(sampler, 50, observe_with=observe_with)
        out = module.generate(N, request, seed=1, observation=obs, progress=False)
        e = conditional_errors(MIX, out.x, A)
        print(f"| {label} | {sampler}, 50 | {e['weight']:.4f} | {e['mean']:.4f} | {e['var']:.4f} |", flush=True)


def speed_ckpt(
    ckpt: Path, observe: Path, batch: int, steps: int, sampler: str, keep: list | None, repeats: int = 3
) -> None:
    """Seconds per item of a trained checkpoint at ``steps`` with and without an observation, each way."""
    module = load_checkpoint(ckpt).eval()
    seeded = module.domain.name == "molecule"  # atom counts drawn per batch, as sample.py does
    options = {"seed": 0} if seeded else {"keep": keep} if keep is not None else {}
    obs = module.domain.observe(batch, observe, **options)
    print(f"{module.domain.name}: {ckpt}, batch {batch}, {sampler} {steps} steps, {torch.get_num_threads()} threads")
    # (label, observation, how it is honoured)
    runs: list[tuple[str, Observation | None, str]] = [
        ("no observation", None, "auto"),
        ("observation, replacement", obs, "replacement"),
    ]
    if module.observed_by() == "model":
        runs.append(("observation, trained conditional", obs, "model"))
    for _, given, how in runs:  # warm-up: every path once
        module.generate(batch, named_request(sampler, 2, observe_with=how), observation=given, progress=False)
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    sizes: dict[str, float] = {}
    for _ in range(repeats):  # alternated, medians: the machine's drift hits every run alike
        for label, given, how in runs:
            t0 = time.perf_counter()
            request = named_request(sampler, steps, observe_with=how)
            state = module.generate(batch, request, observation=given, progress=False)
            times[label].append((time.perf_counter() - t0) / batch)
            sizes[label] = len(state.x) / batch
    print(f"| run (median of {repeats}) | s per item | relative to no observation |")
    print("|---|---|---|")
    base = statistics.median(times["no observation"])
    for label, _, _ in runs:
        per = statistics.median(times[label])
        size = f" ({sizes[label]:.1f} atoms per molecule)" if seeded else ""
        print(f"| {label}{size} | {per:.3f} | {per / base:.2f}x |", flush=True)


def speed(batch: int, steps: int) -> None:
    cfg = compose_run("train", ["domain=audio", "paths.data_dir=."], Path("/tmp/multidiff-bench-observation"))
    module = build_module(cfg, {"sample_rate": 8000, "length": 8192, "num_classes": 0}).eval()
    mask = torch.zeros(1, 1, 8192, dtype=torch.bool)
    mask[..., :4096] = True
    obs = Observation(0.1 * torch.randn(batch, 1, 8192), mask.expand(batch, 1, 8192))
    module.generate(batch, named_request(steps=2), progress=False)  # warm-up
    print(
        f"audio U-Net (default config), batch {batch} x 8192 samples, {steps} steps, {torch.get_num_threads()} threads"
    )
    print("| run | s per item | relative to no observation |")
    print("|---|---|---|")
    base = None
    for label, given, resample in (
        ("no observation", None, 1),
        ("observation (replacement)", obs, 1),
        ("observation, resample=2", obs, 2),
    ):
        t0 = time.perf_counter()
        module.generate(batch, named_request(steps=steps, resample=resample), observation=given, progress=False)
        per = (time.perf_counter() - t0) / batch
        base = base or per
        print(f"| {label} | {per:.3f} | {per / base:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixture", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--fragment", action="store_true")
    ap.add_argument("--trained", action="store_true")
    ap.add_argument("--speed-ckpt", type=Path, help="a trained checkpoint to time with --observe FILE")
    ap.add_argument("--observe", type=Path)
    ap.add_argument("--keep", type=json.loads, help="audio: the kept spans, e.g. [[0,0.3],[0.7,1]]")
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mixture:
        mixture_table()
    if a.fragment:
        fragment_table()
    if a.trained:
        trained_table()
    if a.speed:
        speed(a.batch, a.steps)
    if a.speed_ckpt:
        if a.observe is None:
            ap.error("--speed-ckpt needs --observe FILE")
        speed_ckpt(a.speed_ckpt, a.observe, a.batch, a.steps, a.sampler, a.keep)


if __name__ == "__main__":
    main()
