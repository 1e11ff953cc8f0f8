"""Molecule domain throughput: EGNN training molecules/s, sampling time, peak memory, metric speed.

Defaults are EDM's QM9 model (256 hidden, 9 layers) at batch 64 with QM9-like molecule sizes.

    python benchmarks/bench_molecule.py --threads 2 --train-steps 3 --sample-steps 10
    python benchmarks/bench_molecule.py --device cuda --train-steps 20 --sample-steps 50
    python benchmarks/bench_molecule.py --metrics 3000 --data-root datasets/qm9
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import numpy as np
import torch

from multidiff.domains.molecule.net import EGNN


def qm9_like_sizes(n: int, gen: torch.Generator) -> torch.Tensor:
    """Atom counts with QM9's mean (18.0) and spread (~3), clipped to QM9's range 3..29."""
    return (torch.randn(n, generator=gen) * 3.0 + 18.0).round().clamp(3, 29).long()


def make_batch(batch: int, device: str, gen: torch.Generator, features: int = 6):
    sizes = qm9_like_sizes(batch, gen)
    idx = torch.repeat_interleave(torch.arange(batch), sizes).to(device)
    x = torch.randn(int(sizes.sum()), 3 + features, generator=gen).to(device)
    return x, idx


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_train(net: EGNN, args, gen: torch.Generator) -> dict[str, float]:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times, cpu = [], []
    for step in range(args.warmup + args.train_steps):
        x, idx = make_batch(args.batch, args.device, gen)
        sync(args.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = net(x, torch.randn(args.batch, device=args.device), batch=idx, num_items=args.batch)
        loss = (out - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(args.device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    per_step = sum(times) / len(times)
    # CPU time tells apart a slow machine from a shared one: wall >> cpu / threads means waiting for a core
    return {
        "train_step_s": per_step,
        "train_molecules_per_s": args.batch / per_step,
        "train_cpu_s_per_step": sum(cpu) / len(cpu),
    }


@torch.no_grad()
def bench_sample(net: EGNN, args, gen: torch.Generator) -> dict[str, float]:
    """One network evaluation per step (DPM-Solver++ 2M / DDIM cost; Heun needs about twice)."""
    x, idx = make_batch(args.sample_batch, args.device, gen)
    net.eval()
    sync(args.device)
    t0 = time.perf_counter()
    for k in range(args.sample_steps):
        out = net(
            x,
            torch.full((args.sample_batch,), 1.0 - k / args.sample_steps, device=args.device),
            batch=idx,
            num_items=args.sample_batch,
        )
        x = x + 0.01 * out
    sync(args.device)
    total = time.perf_counter() - t0
    return {
        "sample_s": total,
        "sample_s_per_step": total / args.sample_steps,
        "sample_molecules": args.sample_batch,
        "sample_steps": args.sample_steps,
    }


def bench_metrics(args) -> dict[str, float]:
    from multidiff.domains.molecule import QM9DataModule
    from multidiff.domains.molecule.metrics import evaluate_molecules
    from multidiff.domains.molecule.reference import molecules_from_arrays

    arrays = QM9DataModule(root=args.data_root).load()
    every = np.arange(len(arrays["ptr"]) - 1)
    indices = arrays["splits"]["test"] if args.metrics_split == "test" else every
    mols = molecules_from_arrays(arrays, indices[: args.metrics])
    t0 = time.perf_counter()
    out = evaluate_molecules(mols, list(arrays["elements"]), arrays["stats"], strain=True, strain_max_molecules=1000)
    return {
        "metrics_molecules": len(mols),
        "metrics_s": time.perf_counter() - t0,
        **{k: out[k] for k in ("atom_stable", "mol_stable", "validity", "mmff_strain_mean")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--metrics", type=int, default=0, help="also time the metrics on N QM9 test molecules")
    p.add_argument(
        "--metrics-split",
        choices=("test", "all"),
        default="test",
        help="molecules for --metrics: the test split or all 130,831 in index order",
    )
    p.add_argument("--data-root", default="datasets/qm9")
    p.add_argument("--checkpointing", action="store_true", help="EGNN activation checkpointing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = EGNN(5, charges=True, hidden=args.hidden, layers=args.layers, checkpointing=args.checkpointing).to(
        args.device
    )
    result: dict[str, object] = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads,
        "batch": args.batch,
        "hidden": args.hidden,
        "layers": args.layers,
        "checkpointing": args.checkpointing,
        "parameters": sum(q.numel() for q in net.parameters()),
    }
    if args.train_steps:
        result.update(bench_train(net, args, gen))
    if args.sample_steps:
        result.update(bench_sample(net, args, gen))
    result["peak_memory_mb"] = peak_memory_mb(args.device)
    if args.metrics:
        result.update(bench_metrics(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
