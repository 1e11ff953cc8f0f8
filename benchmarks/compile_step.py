"""Does ``torch.compile`` speed up a domain's default training step on this machine?

    python benchmarks/compile_step.py --domain audio --mode eager|static|dynamic [--steps 6] [--threads 2]

The step of ``benchmarks/roofline.py`` (forward, backward, AdamW on real batches at the default precision), with
the network compiled in place (``nn.Module.compile``: the checkpoint's keys stay as they are) or eager; prints the
time of the first three steps (compilation included) and the median of the next ``--steps``, each on a new batch
(molecule batches differ in size, so a static compile recompiles; ``dynamic`` marks sizes dynamic). Run the modes
one after another on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import multidiff.env  # noqa: E402, F401  (before torch)

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from roofline import DATA, DOMAINS  # noqa: E402

from multidiff.build import build_module  # noqa: E402
from multidiff.config import compose_run  # noqa: E402
from multidiff.precision import resolve_precision  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", choices=list(DOMAINS), required=True)
    p.add_argument("--mode", choices=["eager", "static", "dynamic"], required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as run:
        cfg = compose_run("train", [*DOMAINS[a.domain], f"paths.data_dir={DATA}"], Path(run))
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        batches = iter(datamodule.train_dataloader())
        batches = [next(batches) for _ in range(a.steps + 3)]
        module = build_module(cfg, datamodule.info()).train()
    if a.mode != "eager":
        module.model.net.compile(dynamic=True if a.mode == "dynamic" else None)
    bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"
    opt = module.make_optimizer(mixed_precision=bf16)  # as training builds it
    gen = torch.Generator().manual_seed(0)

    def step(batch) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses, _ = module.diffusion_loss(module.domain.unpack(batch), generator=gen)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    first = sum(step(b) for b in batches[:3])
    times = [step(b) for b in batches[3:]]
    print(f"{a.domain} {a.mode}: first 3 steps {first:.1f} s, then median {statistics.median(times):.3f} s per step "
          f"({', '.join(f'{t:.3f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
