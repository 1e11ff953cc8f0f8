"""Training throughput on a shared machine: alone, beside a busy process, beside a second training job.

    python benchmarks/contended.py [--steps 20] [--rounds 2] [--threads 2]

Each measurement is a fresh process timing training steps of the default CPU audio recipe
(``experiment=fsdd_unet_cpu``: the 9.3M-parameter U-Net, batch 16 x 8,192 samples, AdamW) at its default
precision (``precision=auto``: bf16-mixed where the CPU computes bfloat16 natively), on random clips (speed
does not depend on values), after two warm-up steps. Scenarios, alternated over ``--rounds`` so a drift of the
machine's speed hits them alike, medians reported:

- alone, with ``--threads`` threads and with ``threads=auto``;
- beside one busy single-threaded process (a Python loop), with ``--threads`` threads (what a run did before
  ``threads=auto``) and with ``threads=auto``;
- two training jobs at once, each with ``--threads`` threads and each with ``threads=auto``.

The figure of merit is the fraction of the solo throughput kept (target: at least 45 % beside one busy process).
The workers wait for work as multidiff's entry points do (``multidiff.env``: a short spin, then sleep) unless
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set in this environment (``OMP_WAIT_POLICY=PASSIVE`` alone: sleep
at once); ``--json`` records the setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.env import openmp_setting  # noqa: E402  (sets multidiff's default OpenMP waiting, which workers inherit)


def worker(threads: str, steps: int) -> None:
    """Time ``steps`` training steps in this process; prints ``RESULT {json}``."""
    import torch

    from multidiff.build import build_module
    from multidiff.config import compose_run
    from multidiff.precision import resolve_precision
    from multidiff.threads import ThreadGovernor

    governor = ThreadGovernor(int(threads) if threads.isdigit() else threads)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_run("train", ["experiment=fsdd_unet_cpu", "data.num_classes=0"], Path(run_dir))
    info = {"sample_rate": 8000, "length": cfg.data.length, "num_classes": 0, "class_names": []}
    module = build_module(cfg, info).train()
    precision = resolve_precision("auto", "cpu")
    opt = module.make_optimizer(mixed_precision=precision == "bf16-mixed")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.data.batch_size, 1, cfg.data.length, generator=gen) * 0.3
    y = torch.zeros(cfg.data.batch_size, dtype=torch.long)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            losses, _ = module.diffusion_loss(module.domain.unpack((x, y)), generator=gen)
        opt.zero_grad(set_to_none=True)
        losses.mean().backward()
        opt.step()

    for _ in range(2):
        step()
        governor.update()  # as train.py's FollowLoad callback does after every step
    used, t0 = [], time.perf_counter()
    for _ in range(steps):
        step()
        used.append(governor.update())
    wall = time.perf_counter() - t0
    record = {"threads": max(set(used), key=used.count), "precision": precision, "it_per_s": steps / wall}
    print("RESULT " + json.dumps(record), flush=True)


def launch(threads: str, steps: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", threads, "--steps", str(steps)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker failed (exit {proc.returncode}):\n{out[-2000:]}")
    return json.loads(lines[-1][7:])


def scenario(kind: str, threads: str, steps: int) -> list[dict]:
    """Throughput of the worker(s) in one scenario: ``alone``, ``busy`` (beside a busy loop) or ``pair``."""
    busy = None
    if kind == "busy":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)  # running before the worker looks for idle cores
    try:
        procs = [launch(threads, steps) for _ in range(2 if kind == "pair" else 1)]
        return [result(p) for p in procs]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="the fixed thread count compared with auto")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.steps)
        return
    fixed = str(a.threads)
    cases = [(k, t) for k in ("alone", "busy", "pair") for t in (fixed, "auto")]
    runs: dict[tuple[str, str], list[list[dict]]] = {c: [] for c in cases}
    for r in range(a.rounds):
        for case in cases if r % 2 == 0 else cases[::-1]:
            runs[case].append(scenario(*case, a.steps))
            speeds = [round(w["it_per_s"], 2) for w in runs[case][-1]]
            print(f"round {r + 1}: {case[0]:5s} threads={case[1]:4s} {speeds}", flush=True)
    solo = statistics.median(w["it_per_s"] for run in runs[("alone", fixed)] for w in run)
    rows = []
    print(f"\n| scenario | threads | it/s per job (median) | of solo ({solo:.2f} it/s, {fixed} threads) |")
    print("|---|---|---|---|")
    for kind, threads in cases:
        per_job = statistics.median(w["it_per_s"] for run in runs[(kind, threads)] for w in run)
        used = sorted({w["threads"] for run in runs[(kind, threads)] for w in run})
        label = {"alone": "alone", "busy": "beside a busy process", "pair": "two training jobs at once"}[kind]
        shown = f"{threads} ({', '.join(map(str, used))})" if threads == "auto" else threads
        print(f"| {label} | {shown} | {per_job:.2f} | {100 * per_job / solo:.0f} % |")
        rows.append(
            {"scenario": kind, "threads": threads, "used": used, "it_per_s": per_job, "of_solo": per_job / solo}
        )
    if a.json:
        record = {"steps": a.steps, "rounds": a.rounds, "openmp": openmp_setting(), "rows": rows}
        a.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
