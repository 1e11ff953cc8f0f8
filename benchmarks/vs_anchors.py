"""multidiff's defaults against the anchors' own code on this machine: training throughput, sampling cost, and
how much of multidiff's sampling time is spent outside the network, each with its target.

    python benchmarks/vs_anchors.py [--domains audio pointcloud molecule] [--rounds 2] [--threads 2]
    python benchmarks/vs_anchors.py --summarise RESULTS.json      # the table of an earlier run

The side-by-side workers are ../shared/anchors-bench's (BENCH_DIR or --bench-dir; they build each anchor's model
from ANCHORS_DIR, see that README on getting the anchors); each runs in its own process, anchor and multidiff
alternated (A B | B A) so a drift of the machine's speed cancels in the medians. Without them the script says so
and exits. Sizes: audio 8,192 samples (training batch 8, sampling batch 16, 50 steps; the anchor is
audio-diffusion-pytorch's UNetV0 at 11.0M parameters against the default `net=unet1d`), point clouds 2,048
points (training batch 32, sampling batch 16; DPM its 100 steps, multidiff 50), molecules EDM's 256 x 9 EGNN
(batch 64; EDM's 1,000-step sampling extrapolated from a few of its steps, multidiff 50 dpmpp_2m steps).

multidiff's side runs at its default precision (``--precision auto``: bf16-mixed where the CPU computes bfloat16
natively, as train.py's hardware=cpu and sample.py decide; the anchors' code at its own float32): the workers'
multidiff code runs under the autocast that Lightning's precision plugin and sample.py apply.

The sampling-overhead rows time the network calls inside one multidiff sample (the same batch and steps) and
divide the whole sampling time by them: 1.00 means sampling costs the network and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "anchors-bench"))
sys.path.insert(0, str(ROOT))
import multidiff.env  # noqa: E402,F401  (OpenMP waiting for every worker, anchors' included)

SAMPLE_BATCH = {"audio": 16, "pointcloud": 16, "molecule": 64}
# each row's target: a multidiff/anchor throughput ratio, or a bound on multidiff's own figure
TARGETS = {
    "audio train clips/s": (2.0, "ratio"),
    "pc train shapes/s": (2.0, "ratio"),
    "mol train molecules/s": (2.0, "ratio"),
    "audio sample s/clip": (0.6, "max"),
    "pc sample s/shape": (0.4, "max"),
    "mol sample s/molecule": (1.0, "max"),
    "audio sampling / network time": (1.05, "max"),
    "pc sampling / network time": (1.05, "max"),
    "mol sampling / network time": (1.05, "max"),
}


def jobs(domain: str, threads: int, precision: str) -> list[list[tuple[str, list[str]]]]:
    """Groups of (label, worker argv) compared with each other, anchor first; multidiff's at ``precision``."""
    t = ["--threads", str(threads)]
    me = [sys.executable, str(Path(__file__).resolve())]
    return [
        [(label, argv if argv[0] == sys.executable or label.split("/")[-1] in ANCHOR_SIDES
                 else [*me, "--in-precision", precision, *argv])
         for label, argv in group]
        for group in _jobs(domain, t, [*me, "--overhead", domain, "--precision", precision, *t])
    ]  # fmt: skip


ANCHOR_SIDES = ("adp_small", "dpm", "edm")


def _jobs(domain: str, t: list[str], me: list[str]) -> list[list[tuple[str, list[str]]]]:
    if domain == "audio":
        return [
            [(f"audio/train/{m}", ["audio.py", "--model", m, "--task", "train", "--warmup", "2", "--iters", "8", *t])
             for m in ("adp_small", "unet1d")],
            [(f"audio/sample/{m}", ["audio.py", "--model", m, "--task", "sample", "--batch", "16", "--steps", "50", *t])
             for m in ("adp_small", "unet1d")],
            [("audio/overhead/project", me)],
        ]  # fmt: skip
    if domain == "pointcloud":
        return [
            [(f"pointcloud/train/{s}",
              ["pointcloud.py", "--side", s, "--task", "train", "--warmup", "2", "--iters", "4", *t])
             for s in ("dpm", "project")],
            [(f"pointcloud/sample/{s}", ["pointcloud.py", "--side", s, "--task", "sample", "--sample-n", "16", *t])
             for s in ("dpm", "project")],
            [("pointcloud/overhead/project", me)],
        ]  # fmt: skip
    if domain == "molecule":
        return [
            [(f"molecule/train/{s}",
              ["molecule.py", "--side", s, "--task", "train", "--warmup", "1", "--iters", it, *t])
             for s, it in (("edm", "3"), ("project", "5"))],
            [(f"molecule/sample/{s}", ["molecule.py", "--side", s, "--task", "sample", *t, *extra])
             for s, extra in (("edm", ["--warmup", "1", "--iters", "3"]), ("project", ["--steps", "50"]))],
            [("molecule/overhead/project", me)],
        ]  # fmt: skip
    raise SystemExit(f"unknown domain {domain!r}: audio, pointcloud or molecule")


def in_precision(precision: str, argv: list[str]) -> None:
    """Run an anchors-bench worker (``argv``: its file and arguments) with multidiff's code under ``precision``:
    the autocast that Lightning's precision plugin puts around a training step and sample.py around the network."""
    import runpy

    import torch

    sys.path.insert(0, str(BENCH))
    sys.argv = argv
    _accept_worker_generate(precision)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        runpy.run_path(str(BENCH / argv[0]), run_name="__main__")


def _accept_worker_generate(precision: str) -> None:
    """The workers call ``generate(n, sampler=, steps=, spacing=, progress=)``; multidiff's takes one
    :class:`~multidiff.sampling.SamplingRequest`: build it from the sampler's config (refusing another spacing)."""
    from multidiff.config import sampler_config
    from multidiff.module import DiffusionModule
    from multidiff.sampling import named_request

    generate = DiffusionModule.generate

    def call(
        self: DiffusionModule,
        n: int,
        request: object = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        spacing: str | None = None,
        **options: object,  # generate's own keywords (progress, seed, ...): it rejects unknown ones
    ) -> object:
        if request is not None:
            if sampler is not None or steps is not None or spacing is not None:
                raise TypeError("generate(n, request) takes its sampler, steps and spacing from the request")
            return generate(self, n, request, **options)
        sampler = sampler or "dpmpp_2m"
        if spacing is not None and spacing != sampler_config(sampler).spacing:
            raise ValueError(f"worker asks {sampler} with spacing={spacing}; its config has another")
        return generate(self, n, named_request(sampler, steps, precision=precision), **options)

    DiffusionModule.generate = call


def run_worker(label: str, argv: list[str]) -> dict | None:
    # both sides wait for work as multidiff's entry points do (multidiff.env, imported above, set it here)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MULTIDIFF_MAIN": str(ROOT)}
    cmd = argv if argv[0] == sys.executable else [sys.executable, *argv]  # workers run in BENCH
    t0 = time.time()
    p = subprocess.run(cmd, cwd=BENCH, env=env, capture_output=True, text=True)
    results = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode or not results:
        print(f"  {label}: FAILED (exit {p.returncode})\n{p.stderr[-3000:]}", flush=True)
        return None
    print(f"  {label}: {time.time() - t0:.0f} s", flush=True)
    return {**results[-1], "label": label}


def overhead(domain: str, threads: int, precision: str, steps: int = 50) -> None:
    """One multidiff sample of the domain's default model, timing the network calls inside it."""

    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCH))
    from _common import QM9_N_NODES, emit, qm9_sizes  # the anchors-bench's QM9 size histogram

    from multidiff.build import build_module
    from multidiff.config import compose_run
    from multidiff.sampling import named_request

    torch.set_num_threads(threads)
    sizes = sorted(QM9_N_NODES)
    overrides, info = {
        "audio": (["domain=audio"], {"sample_rate": 8000, "length": 8192, "num_classes": 10,
                                     "class_names": [str(i) for i in range(10)]}),
        "pointcloud": (["experiment=shapenet_airplane_cpu"], {"n_points": 2048, "num_classes": 0,
                                                             "normalization": {"mode": "global"}}),
        "molecule": (["experiment=qm9_edm"], {"elements": ["H", "C", "N", "O", "F"], "charge_range": [-1, 1],
                                              "node_counts": {"values": sizes,
                                                              "counts": [QM9_N_NODES[v] for v in sizes]}}),
    }[domain]  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="vs_anchors_"))
    try:
        module = build_module(compose_run("train", overrides, run_dir), info)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    n = SAMPLE_BATCH[domain]
    atoms = qm9_sizes(n, 11) if domain == "molecule" else None  # the molecule worker's sampling sizes
    net_s, calls = [0.0], [0]
    forward = module.model.forward

    def timed_forward(*args, **kwargs):
        t = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            net_s[0] += time.perf_counter() - t
            calls[0] += 1

    module.model.forward = timed_forward
    if atoms is not None:
        module.domain.num_atoms = atoms[:4]
    module.generate(min(n, 4), named_request("dpmpp_2m", 2, precision=precision), progress=False)  # warm-up
    if atoms is not None:
        module.domain.num_atoms = atoms
    net_s[0], calls[0] = 0.0, 0
    t0 = time.perf_counter()
    module.generate(n, named_request("dpmpp_2m", steps, precision=precision), progress=False)
    total = time.perf_counter() - t0
    emit({"batch": n, "steps": steps, "calls": calls[0], "sample_s": total, "network_s": net_s[0],
          "sampling_over_network": total / net_s[0], "precision": precision})  # fmt: skip


# (row, anchor worker, its key, multidiff worker, its key, higher is better (None: no ratio), anchor scale)
ROWS = [
    ("audio parameters (M)", "audio/train/adp_small", "params_M", "audio/train/unet1d", "params_M", None, 1),
    ("audio train clips/s", "audio/train/adp_small", "clips_per_s", "audio/train/unet1d", "clips_per_s", True, 1),
    ("audio sample s/clip", "audio/sample/adp_small", "s_per_clip", "audio/sample/unet1d", "s_per_clip", False, 1),
    ("audio sampling / network time", None, None, "audio/overhead/project", "sampling_over_network", None, 1),
    ("pc parameters (M)", "pointcloud/train/dpm", "params_M", "pointcloud/train/project", "params_M", None, 1),
    ("pc train shapes/s", "pointcloud/train/dpm", "shapes_per_s", "pointcloud/train/project", "shapes_per_s", True, 1),
    ("pc sample s/shape", "pointcloud/sample/dpm", "s_per_shape", "pointcloud/sample/project", "s_per_shape", False, 1),
    ("pc sampling / network time", None, None, "pointcloud/overhead/project", "sampling_over_network", None, 1),
    ("mol parameters (M)", "molecule/train/edm", "params_M", "molecule/train/project", "params_M", None, 1),
    ("mol train molecules/s", "molecule/train/edm", "molecules_per_s", "molecule/train/project", "molecules_per_s",
     True, 1),
    # EDM's 1,000-step time for its 64 molecules, extrapolated from a few of its steps by its worker
    ("mol sample s/molecule", "molecule/sample/edm", "sample_batch_s_extrapolated", "molecule/sample/project",
     "sample_s_per_molecule", False, 1 / 64),
    ("mol sampling / network time", None, None, "molecule/overhead/project", "sampling_over_network", None, 1),
]  # fmt: skip


def table(results: list[dict]) -> str:
    """Markdown table of the medians over rounds, the ratio in multidiff's favour and each target."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["label"], []).append(r)

    def med(label: str | None, key: str | None) -> float | None:
        vals = [r[key] for r in by.get(label, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def f(x: float | None) -> str:
        return "-" if x is None else (f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}")

    lines = ["| figure | anchor | multidiff | multidiff advantage | target | met |", "|---|---|---|---|---|---|"]
    for name, a_label, a_key, p_label, p_key, higher_better, scale in ROWS:
        if p_label not in by:
            continue
        a, p = med(a_label, a_key), med(p_label, p_key)
        a = None if a is None else a * scale
        ratio = None if a is None or p is None or higher_better is None else (p / a if higher_better else a / p)
        bound, kind = TARGETS.get(name, (None, None))
        target, ok = "", None
        if kind == "ratio":
            target, ok = f">= {bound}x", None if ratio is None else ratio >= bound
        elif kind == "max":
            target, ok = f"<= {bound}", None if p is None else p <= bound
        mark = "" if ok is None else ("yes" if ok else "no")
        lines.append(f"| {name} | {f(a)} | {f(p)} | {f(ratio) + 'x' if ratio else '-'} | {target} | {mark} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--in-precision"]:  # a multidiff worker: the rest of the line is its own
        return in_precision(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", nargs="*", default=["audio", "pointcloud", "molecule"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bench-dir", type=Path, default=None, help="the anchors-bench folder (default: BENCH_DIR)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: a file in the temp folder)")
    p.add_argument("--summarise", type=Path, default=None, help="print the table of an earlier results JSON")
    p.add_argument("--precision", default="auto", help="multidiff's: auto (its default), 32-true or bf16-mixed")
    p.add_argument("--overhead", choices=["audio", "pointcloud", "molecule"], help=argparse.SUPPRESS)
    a = p.parse_args()
    global BENCH
    BENCH = (a.bench_dir or BENCH).resolve()
    sys.path.insert(0, str(ROOT))
    from multidiff.precision import resolve_precision

    precision = resolve_precision(a.precision, "cpu")
    if a.overhead:
        return overhead(a.overhead, a.threads, precision)
    if a.summarise:
        print(table(json.loads(a.summarise.read_text())["results"]))
        return
    if not (BENCH / "_common.py").is_file():
        raise SystemExit(f"anchors-bench not found at {BENCH}: pass --bench-dir or set BENCH_DIR")
    out = a.out or Path(tempfile.gettempdir()) / f"vs_anchors_{time.strftime('%Y%m%d-%H%M%S')}.json"
    results: list[dict] = []
    print(f"multidiff at {precision}; anchors at their own precision (float32)", flush=True)
    for domain in a.domains:
        print(f"[{domain}]", flush=True)
        for rnd in range(a.rounds):
            for group in jobs(domain, a.threads, precision):
                for label, argv in group if rnd % 2 == 0 else reversed(group):
                    r = run_worker(label, argv)
                    if r is not None:
                        results.append({**r, "round": rnd})
                    record = {"precision": precision, "openmp": multidiff.env.openmp_setting(), "results": results}
                    out.write_text(json.dumps(record, indent=1))
    print(f"\nresults: {out}\n")
    print(table(results))


if __name__ == "__main__":
    main()
