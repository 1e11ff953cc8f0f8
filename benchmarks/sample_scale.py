"""Sampling at scale: peak memory of ``sample.py`` against the number of items, and sharded sampling's throughput.

    python benchmarks/sample_scale.py [--ns 1000 4000 10000] [--length 8192] [--steps 2] [--out DIR]
    python benchmarks/sample_scale.py --compare OTHER_CHECKOUT     # the same runs of another version's sample.py

A tiny audio model (the tests' U-Net, trained one step on FSDD clips of ``--length`` samples; what it generates
does not matter here) samples ``n`` clips in batches of 64 with dpmpp_2m. Each run is its own process, and its
peak resident memory is the kernel's figure for that child (``wait4``'s ``ru_maxrss``). Then the same request
as one job, and as two shards run by Hydra's joblib launcher (``-m shard=0,1 num_shards=2``, two worker
processes of one thread each), timed end to end: items per second. Writes ``sample_scale.json`` and
``sample_scale.png`` (memory against n) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MULTIDIFF_SHARED", ROOT.parent / "shared")) / "datasets"
sys.path.insert(0, str(ROOT / "tests"))
from helpers import TINY_AUDIO  # noqa: E402  (the tests' tiny U-Net)

# its clips at --length samples instead
TINY = ["domain=audio", *(o for o in TINY_AUDIO if not o.startswith("data.length=")), "trainer.max_steps=1"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` to completion; its wall time (s) and its own peak resident memory (MiB)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nothing reads it while the child runs
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--length", type=int, default=8192, help="samples per clip")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--shard-n", type=int, default=4000, help="items of the sharding comparison")
    parser.add_argument("--compare", type=Path, help="another checkout whose sample.py is measured the same way")
    parser.add_argument("--compare-label", default="other checkout", help="its name in the plot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"FSDD not found under {DATA} (set MULTIDIFF_SHARED)")
    work = Path(tempfile.mkdtemp(prefix="sample_scale_"))
    env = dict(os.environ)  # each checkout's own OpenMP waiting (its multidiff.env)
    try:
        print("training a tiny model ...", flush=True)
        overrides = [*TINY, f"data.length={args.length}", f"paths.data_dir={DATA}", f"hydra.run.dir={work / 'run'}"]
        run([sys.executable, "train.py", *overrides], ROOT, env)
        ckpt = work / "run" / "checkpoints" / "last.ckpt"
        common = [f"ckpt={ckpt}", f"steps={args.steps}", "batch_size=64"]

        versions = {"this": ROOT, **({"compare": args.compare.resolve()} if args.compare else {})}
        memory: dict[str, dict[int, float]] = {v: {} for v in versions}
        for n in args.ns:
            for version, checkout in versions.items():
                out = work / f"{version}_{n}"
                wall, peak = run(
                    [sys.executable, "sample.py", *common, f"n={n}", f"out={out}", f"hydra.run.dir={out}_h"],
                    checkout,
                    env,
                )
                memory[version][n] = peak
                print(f"{version:8s} n={n:6d}: peak {peak:7.0f} MiB, {wall:6.1f} s", flush=True)
                shutil.rmtree(out, ignore_errors=True)

        n = args.shard_n
        one, _ = run(
            [sys.executable, "sample.py", *common, f"n={n}", f"out={work / 'one'}", f"hydra.run.dir={work / 'h1'}"],
            ROOT,
            env,
        )
        sharded = [
            sys.executable, "sample.py", "-m", *common, f"n={n}", f"out={work / 'two'}", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "shard=0,1", "num_shards=2", f"hydra.sweep.dir={work / 'sweep'}",
        ]  # fmt: skip
        two, _ = run(sharded, ROOT, env)
        same = sorted(p.name for p in (work / "one").iterdir()) == sorted(p.name for p in (work / "two").iterdir())
        throughput = {"n": n, "one_job_items_per_s": n / one, "two_shards_items_per_s": n / two, "same_files": same}
        print(f"one job: {n / one:.1f} items/s; 2 joblib shards: {n / two:.1f} items/s ({one / two:.2f}x)")

        args.out.mkdir(parents=True, exist_ok=True)
        record = {"length": args.length, "steps": args.steps, "peak_mib": memory, "sharding": throughput}
        (args.out / "sample_scale.json").write_text(json.dumps(record, indent=2))
        plot(memory, args.out / "sample_scale.png", args.length, args.compare_label)
        print(f"wrote {args.out / 'sample_scale.json'} and sample_scale.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(memory: dict[str, dict[int, float]], path: Path, length: int, other: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for version, peaks in memory.items():
        ax.plot(
            list(peaks), list(peaks.values()), "o-", label="streamed (this version)" if version == "this" else other
        )
    ax.set_xlabel("clips sampled (n)")
    ax.set_ylabel("peak memory of sample.py (MiB)")
    ax.set_title(f"sample.py, tiny audio model, {length}-sample clips", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
