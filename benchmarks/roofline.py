"""The machine's peak and how close each domain's training step comes to it.

    python benchmarks/roofline.py [--threads 2] [--steps 6] [--out docs]

Peaks, measured here: a 2,048 x 2,048 matrix product in float32 and in bfloat16 (GFLOP/s), and memory bandwidth
(a 256 MiB tensor copied: bytes read + written per second). Then each domain's default training step (the train
config with ``domain=NAME``: audio U-Net 16 x 8,192, point network 32 x 2,048, EGNN 64 QM9 molecules), on a real
batch of its data, at its default precision (``precision=auto``): FLOPs of forward + backward
(``torch.utils.flop_counter``), the median time of a whole step (forward, backward, AdamW), the achieved fraction
of the matrix-product peak of that precision, and the operators that take the most self time (``torch.profiler``),
and the bytes every operator reads and writes (its arguments and results) per step against the copy bandwidth: the
fraction of memory bandwidth a step reaches if nothing stays in cache between operators (views excluded), the
ceiling of the EGNN's and the point network's elementwise work over edges and points. Each fraction is taken
against the peak probed between that domain's timed steps (a product and a copy after every step): a shared
machine's speed drifts. Writes ``roofline.json`` and ``roofline.png`` into ``--out``. Reads ../shared/datasets
(FSDD, ShapeNet airplanes) and QM9 from ``qm9pack`` (processed into a cache on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import multidiff.env  # noqa: E402, F401  (before torch)

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from multidiff.build import build_module  # noqa: E402
from multidiff.config import compose_run  # noqa: E402
from multidiff.precision import resolve_precision  # noqa: E402

DATA = Path(os.environ.get("MULTIDIFF_SHARED", ROOT.parent / "shared")) / "datasets"
QM9 = Path(tempfile.gettempdir()) / f"multidiff-test-cache-{os.getuid()}" / "qm9"
DOMAINS = {
    "audio": ["domain=audio", "data.download=false"],
    "pointcloud": ["domain=pointcloud"],
    "molecule": ["domain=molecule", f"data.root={QM9}"],
}


def probes(n: int = 2048) -> dict[str, Callable[[], float]]:
    """Each probe runs its operation once and returns its rate: an n x n matrix product in each precision
    (GFLOP/s), a 256 MiB copy (GB/s, read + written)."""

    def rate(fn: Callable[[], object], work: float) -> float:
        t0 = time.perf_counter()
        fn()
        return work / (time.perf_counter() - t0)

    out: dict[str, Callable[[], float]] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"matmul_{name}_gflops"] = lambda a=a, b=b: rate(lambda: a @ b, 2 * n**3 / 1e9)
    src = torch.empty(64 * 2**20, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    out["copy_gb_per_s"] = lambda: rate(lambda: dst.copy_(src), 2 * src.numel() * 4 / 1e9)
    return out


def peaks(probe: dict[str, Callable[[], float]], repeats: int = 5) -> dict[str, float]:
    """Medians of ``repeats`` runs of each probe after a warm-up; a precision the CPU only emulates (a matrix
    product slower than 1 s) is measured once."""
    out = {}
    for name, fn in probe.items():
        first = fn()  # the warm-up, and the measure of an emulated precision
        emulated = name.startswith("matmul") and first < 2 * 2048**3 / 1e9  # GFLOP/s: over a second per product
        out[name] = first if emulated else statistics.median(fn() for _ in range(repeats))
    return out


class BytesCounter(TorchDispatchMode):
    """Bytes each operator reads and writes (its tensor arguments and results), summed over a step: the traffic
    the step would move if nothing stayed in cache between operators, which is what a memory-bound step pays."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        out = func(*args, **(kwargs or {}))
        if func.is_view or func in _NO_TRAFFIC:  # views alias their input: nothing is read or written
            return out
        seen: set[int] = set()  # an out= result is both an argument and the result: count it once
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                self.total += t.numel() * t.element_size()
        return out


_NO_TRAFFIC = {torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default}


def training_setup(domain: str, n_batches: int = 1) -> tuple[torch.nn.Module, list, Callable[[object], None], str]:
    """The domain's default module in training mode, its first ``n_batches`` training batches (seeded order), a
    whole training step on one batch (forward, backward, AdamW, under the autocast ``precision=auto`` picks) and
    that precision."""
    with tempfile.TemporaryDirectory() as run:
        cfg = compose_run("train", [*DOMAINS[domain], f"paths.data_dir={DATA}"], Path(run))
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        torch.manual_seed(0)
        batches = [b for _, b in zip(range(n_batches), datamodule.train_dataloader())]
        module = build_module(cfg, datamodule.info()).train()
    precision = resolve_precision("auto", "cpu")
    if hasattr(module, "make_optimizer"):
        opt = module.make_optimizer(mixed_precision=precision == "bf16-mixed")
    else:  # a checkout before it (ab_step.py --baseline): the optimizer as configured
        opt = module.optimizer_factory(params=[p for p in module.parameters() if p.requires_grad])
    gen = torch.Generator().manual_seed(0)

    def step(batch: object) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            losses, _ = module.diffusion_loss(module.domain.unpack(batch), generator=gen)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return module, batches, step, precision


def training_step(domain: str, steps: int, probe: dict[str, Callable[[], float]]) -> dict:
    """The step's FLOPs, bytes and median time; the matrix-product peak of its precision and the copy bandwidth
    are probed between its timed steps, so that both sides of the fraction see the machine at the same speed
    (a shared machine's speed drifts by a third within minutes)."""
    module, (batch,), train_step, precision = training_setup(domain)

    def step() -> None:
        train_step(batch)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    with BytesCounter() as moved:
        step()
    matmul = matmul_key(precision)
    step()  # warm-up
    times, nearby = [], {matmul: [], "copy_gb_per_s": []}
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        for name, rates in nearby.items():
            rates.append(probe[name]())
    seconds = statistics.median(times)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:8]]
    params = sum(p.numel() for p in module.model.net.parameters()) / 1e6
    return {
        "domain": domain,
        "net": type(module.model.net).__name__,
        "params_M": params,
        "precision": precision,
        "gflop_per_step": flops / 1e9,
        "s_per_step": seconds,
        "gflops": flops / seconds / 1e9,
        "gb_per_step": moved.total / 1e9,
        "gb_per_s": moved.total / seconds / 1e9,
        "top_ops": top,
        "peak_nearby": {name: statistics.median(rates) for name, rates in nearby.items()},
    }


def matmul_key(precision: str) -> str:
    """bf16-mixed computes its matrix products in bfloat16."""
    return "matmul_bfloat16_gflops" if precision == "bf16-mixed" else "matmul_float32_gflops"


def ceiling_of(row: dict, peak: dict[str, float], name: str = "matmul") -> float:
    """The matrix-product peak of the row's precision, or (``name="copy"``) the copy bandwidth, as probed between
    the row's steps where it was."""
    key = "copy_gb_per_s" if name == "copy" else matmul_key(row["precision"])
    return row.get("peak_nearby", {}).get(key, peak[key])


def plot(rows: list[dict], peak: dict[str, float], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    flops_ax, bytes_ax = fig.subplots(1, 2)
    names = [f"{r['domain']}\n{r['net']}\n{r['precision']}" for r in rows]
    x = range(len(rows))
    panels = (
        (flops_ax, [r["gflops"] for r in rows], [ceiling_of(r, peak) for r in rows], "GFLOP/s",
         "matrix-product peak of that precision, probed between its steps",
         "training step: forward + backward FLOPs / step time"),
        (bytes_ax, [r["gb_per_s"] for r in rows], [ceiling_of(r, peak, "copy") for r in rows], "GB/s",
         "copy bandwidth (read + written), probed likewise",
         "training step: bytes operators read and write / step time"),
    )  # fmt: skip
    for ax, achieved, ceilings, unit, ceiling_label, achieved_label in panels:
        ax.bar(x, ceilings, color="lightgray", label=ceiling_label)
        ax.bar(x, achieved, color="tab:blue", label=achieved_label)
        for i, (a, c) in enumerate(zip(achieved, ceilings)):
            ax.text(i, a, f"{100 * a / c:.0f} %", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), names, fontsize=7)
        ax.set_ylabel(unit)
        ax.set_ylim(0, 1.3 * max(ceilings))
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"each domain's default training step against this machine, {torch.get_num_threads()} threads", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed training steps per domain (median)")
    p.add_argument("--domains", nargs="+", default=list(DOMAINS))
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    probe = probes()
    peak = peaks(probe)
    print(json.dumps(peak), flush=True)
    rows = []
    for domain in a.domains:
        rows.append(training_step(domain, a.steps, probe))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "top_ops"}), flush=True)
    header = [
        "domain",
        "net",
        "precision",
        "GFLOP per step",
        "s per step",
        "GFLOP/s",
        "matmul peak beside it (GFLOP/s)",
        "of the matmul peak",
        "GB moved per step",
        "GB/s",
        "of the copy bandwidth",
        "top operators",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        ceiling = ceiling_of(r, peak)
        ops = ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in r["top_ops"][:4])
        cells = [
            r["domain"],
            f"{r['net']} {r['params_M']:.1f}M",
            r["precision"],
            f"{r['gflop_per_step']:.1f}",
            f"{r['s_per_step']:.3f}",
            f"{r['gflops']:.0f}",
            f"{ceiling:.0f}",
            f"{100 * r['gflops'] / ceiling:.0f} %",
            f"{r['gb_per_step']:.1f}",
            f"{r['gb_per_s']:.1f}",
            f"{100 * r['gb_per_s'] / ceiling_of(r, peak, 'copy'):.0f} %",
            ops,
        ]
        print("| " + " | ".join(cells) + " |")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "roofline.json").write_text(json.dumps({"threads": a.threads, "peak": peak, "steps": rows}, indent=1))
    plot(rows, peak, a.out / "roofline.png")


if __name__ == "__main__":
    main()
