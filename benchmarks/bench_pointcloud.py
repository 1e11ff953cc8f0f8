"""Point-cloud benchmarks: training and sampling speed, metric timing at PointFlow size, EMD bias.

    python benchmarks/bench_pointcloud.py --all                       # everything, full sizes
    python benchmarks/bench_pointcloud.py --train --sample --threads 1
    python benchmarks/bench_pointcloud.py --metrics --metrics-shapes 100   # measured, then projected
    python benchmarks/bench_pointcloud.py --emd-bias --emd-pairs 40 [--emd-points 2048]

Wall-clock and process CPU time are both reported: on a shared machine the CPU time shows what the
code costs, the wall time what a user waits. Real shapes come from ../shared/datasets (or --data).
OpenMP's idle workers wait as multidiff's entry points have them (``multidiff.env``; the environment's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` stands); the JSON records the setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

from multidiff.env import openmp_setting  # OpenMP's waiting, set before torch loads

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.core.processes import EDMProcess  # noqa: E402
from multidiff.core.schedules import KarrasSchedule  # noqa: E402
from multidiff.domains.pointcloud import PointCloudDomain, PointRINDenoiser  # noqa: E402
from multidiff.domains.pointcloud.chamfer import pairwise_chamfer  # noqa: E402
from multidiff.domains.pointcloud.emd import emd_auction, emd_exact, emd_multiscale  # noqa: E402
from multidiff.domains.pointcloud.io import read_points  # noqa: E402
from multidiff.domains.pointcloud.metrics import one_nn_accuracy  # noqa: E402
from multidiff.domains.pointcloud.normalize import resample  # noqa: E402
from multidiff.module import DiffusionModule  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402

POINTFLOW_SHAPES = 405  # PointFlow's airplane test set size: 405 samples vs 405 references


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def net_config(overrides: list[str]) -> dict:
    cfg = OmegaConf.load(ROOT / "conf" / "net" / "point_rin.yaml")
    cfg.num_classes = 0
    cfg.merge_with_dotlist(overrides)
    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("_target_")
    return d


def build_module(args) -> DiffusionModule:
    domain = PointCloudDomain()
    domain.bind({"n_points": args.points, "num_classes": 0, "normalization": {"mode": "global"}})
    net = PointRINDenoiser(**net_config(args.net))
    process = EDMProcess(KarrasSchedule(sigma_min=0.002, sigma_max=80.0, rho=7.0), sigma_data=0.5)
    return DiffusionModule(domain, net, process, optimizer=partial(torch.optim.AdamW, lr=2e-4))


def bench_train(args) -> dict:
    module = build_module(args)
    opt = module.configure_optimizers()
    params = sum(p.numel() for p in module.parameters())
    x = torch.randn(args.batch, args.points, 3) * 0.5
    walls, cpus = [], []
    for i in range(args.train_steps + 1):
        with Clock() as c:
            loss = module.diffusion_loss(module.domain.unpack({"points": x}))[0].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if i:  # the first step warms up allocators
            walls.append(c.wall)
            cpus.append(c.cpu)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    res = {
        "params_M": params / 1e6,
        "batch": args.batch,
        "points": args.points,
        "shapes_per_s_wall": args.batch / wall,
        "shapes_per_s_cpu": args.batch / cpu,
    }
    print(
        f"train: {params / 1e6:.2f}M params, batch {args.batch} x {args.points}: "
        f"{res['shapes_per_s_wall']:.1f} shapes/s (wall), {res['shapes_per_s_cpu']:.1f} (CPU time)"
    )
    return res


def bench_sample(args) -> dict:
    module = build_module(args).eval()
    module.generate(2, named_request(args.sampler, 2), progress=False)  # warm-up
    with Clock() as c:
        state = module.generate(args.sample_n, named_request(args.sampler, args.steps), progress=False)
    assert torch.isfinite(state.x).all()
    res = {
        "sampler": args.sampler,
        "steps": args.steps,
        "n": args.sample_n,
        "s_per_shape_wall": c.wall / args.sample_n,
        "s_per_shape_cpu": c.cpu / args.sample_n,
    }
    print(
        f"sample: {args.sampler}, {args.steps} steps, {args.sample_n} shapes: "
        f"{res['s_per_shape_wall']:.3f} s/shape (wall), {res['s_per_shape_cpu']:.3f} (CPU time)"
    )
    return res


def load_real(folder: Path, n: int, points: int, seed: int) -> torch.Tensor:
    files = sorted(folder.glob("*.npy"))
    if len(files) < n:
        raise SystemExit(f"need {n} shapes in {folder}, found {len(files)}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([resample(read_points(f), points, rng)[0] for f in files[:n]]))


def bench_metrics(args) -> dict:
    n = args.metrics_shapes
    root = args.data / "shapenet_airplane" / "02691156"
    refs = load_real(root / "test", min(n, 400), args.points, 0)
    if n > 400:  # the local test split has 400 shapes; top up from train
        refs = torch.cat([refs, load_real(root / "train", n - 400, args.points, 1)])
    samples = load_real(root / "train", n, args.points, 2)  # real shapes stand in for samples
    pairs = n * n + n * (n + 1)  # cross matrix + two symmetric ones (each pair once)
    with Clock() as warm:  # compiles the fused kernel once (cached on disk for later runs)
        pairwise_chamfer(samples[:16], refs[:16], backend="compiled" if args.backend == "auto" else args.backend)
    print(f"Chamfer kernel warm-up (compilation): {warm.wall:.1f} s")
    with Clock() as c:
        m_sr = pairwise_chamfer(samples, refs, backend=args.backend)
        m_ss = pairwise_chamfer(samples, backend=args.backend)
        m_rr = pairwise_chamfer(refs, backend=args.backend)
        acc = one_nn_accuracy(m_ss, m_sr, m_rr)["acc"]
    full = POINTFLOW_SHAPES**2 + POINTFLOW_SHAPES * (POINTFLOW_SHAPES + 1)
    res = {
        "shapes_per_set": n,
        "points": args.points,
        "pairs": pairs,
        "backend": args.backend,
        "wall_s": c.wall,
        "cpu_s": c.cpu,
        "pairs_per_s": pairs / c.wall,
        "1-NNA-CD": acc,
        "projected_wall_s_pointflow_size": c.wall * full / pairs,
    }
    print(
        f"1-NNA-CD on {n}+{n} shapes x {args.points} points ({pairs:,} pairs, {args.backend}): "
        f"{c.wall:.1f} s wall, {c.cpu:.1f} s CPU -> {res['pairs_per_s']:.0f} pairs/s; "
        f"PointFlow size ({full:,} pairs): {res['projected_wall_s_pointflow_size'] / 60:.1f} min; "
        f"1-NNA (train vs test airplanes) = {acc:.3f}"
    )
    return res


def bench_emd(args) -> dict:
    k = args.emd_pairs
    root = args.data / "shapenet_airplane" / "02691156" / "test"
    a = load_real(root, 2 * k, args.emd_points, 3)
    x, y = a[:k], a[k:]
    with Clock() as ce:
        exact = np.array([emd_exact(p.numpy(), q.numpy()) for p, q in zip(x, y)])
    res = {
        "pairs": k,
        "points": args.emd_points,
        "exact_mean": float(exact.mean()),
        "exact_ms_per_pair": ce.wall / k * 1e3,
    }
    print(
        f"EMD on {k} pairs of {args.emd_points}-point airplanes (data units, mean exact EMD "
        f"{exact.mean():.4f}): exact {res['exact_ms_per_pair']:.0f} ms/pair"
    )
    for method in args.emd_methods:
        with Clock() as c:
            if method == "auction":
                approx = emd_auction(x, y, eps=args.emd_eps).numpy()
            else:
                approx = np.array([emd_multiscale(p.numpy(), q.numpy()) for p, q in zip(x, y)])
        rel = (approx - exact) / exact
        res[method] = {
            "rel_bias_mean": float(rel.mean()),
            "rel_bias_min": float(rel.min()),
            "rel_bias_max": float(rel.max()),
            "ms_per_pair": c.wall / k * 1e3,
        }
        extra = f"(eps={args.emd_eps}, batched)" if method == "auction" else "(leaf 4, window 128, 3 passes)"
        print(
            f"  {method} {extra}: bias {rel.mean() * 100:+.3f} % (min {rel.min() * 100:+.3f}, "
            f"max {rel.max() * 100:+.3f}), {res[method]['ms_per_pair']:.0f} ms/pair"
        )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all", action="store_true")
    p.add_argument("--train", action="store_true", help="training throughput")
    p.add_argument("--sample", action="store_true", help="sampling time per shape")
    p.add_argument("--metrics", action="store_true", help="Chamfer 1-NNA timing")
    p.add_argument("--emd-bias", action="store_true", help="approximate EMD vs exact assignment")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--net", nargs="*", default=[], help="net overrides, e.g. num_latents=64")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sample-n", type=int, default=32)
    p.add_argument("--metrics-shapes", type=int, default=POINTFLOW_SHAPES)
    p.add_argument("--backend", default="auto", choices=["auto", "compiled", "eager"])
    p.add_argument("--emd-pairs", type=int, default=40)
    p.add_argument("--emd-points", type=int, default=512)
    p.add_argument("--emd-eps", type=float, default=1e-3, help="auction epsilon (distance units)")
    p.add_argument("--emd-methods", nargs="*", default=["multiscale", "auction"], choices=["multiscale", "auction"])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {
        "threads": args.threads,
        "openmp": openmp_setting(),
        "torch": torch.__version__,
    }
    if args.all or args.train:
        results["train"] = bench_train(args)
    if args.all or args.sample:
        results["sample"] = bench_sample(args)
    if args.all or args.metrics:
        results["metrics"] = bench_metrics(args)
    if args.all or args.emd_bias:
        results["emd"] = bench_emd(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
