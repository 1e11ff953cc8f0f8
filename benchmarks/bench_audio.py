"""Audio model speed on this machine: training clips/s, sampling time per step and per clip, peak memory.

python benchmarks/bench_audio.py [--batch 8] [--length 8192] [--steps 50] [net overrides, e.g. net.blocks=2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.core.processes import EDMProcess  # noqa: E402
from multidiff.core.schedules import KarrasSchedule  # noqa: E402
from multidiff.core.state import State  # noqa: E402
from multidiff.domains.audio import AudioDomain  # noqa: E402
from multidiff.module import DiffusionModule  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="unet1d")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"net={a.net}", "paths.root_dir=.", *a.overrides])
    net = instantiate(cfg.net)
    domain = AudioDomain()
    domain.bind(
        {"sample_rate": 8000, "length": a.length, "num_classes": 10, "class_names": [str(i) for i in range(10)]}
    )
    module = DiffusionModule(domain, net, EDMProcess(KarrasSchedule()), optimizer=torch.optim.AdamW)
    opt = torch.optim.AdamW(module.parameters(), 2e-4)
    x = torch.randn(a.batch, 1, a.length) * 0.3
    y = torch.randint(0, 10, (a.batch,))
    params = sum(p.numel() for p in net.parameters()) / 1e6

    def step() -> None:
        losses, _ = module.diffusion_loss(State(x, y))
        opt.zero_grad()
        losses.mean().backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.train_iters):
        step()
    train_s = (time.perf_counter() - t0) / a.train_iters

    module.eval()
    t0 = time.perf_counter()
    module.generate(a.batch, named_request("dpmpp_2m", a.steps), progress=False)
    sample_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"net={a.net} params={params:.2f}M batch={a.batch} length={a.length} threads={a.threads}")
    print(f"train: {a.batch / train_s:.2f} clips/s ({train_s:.3f} s/step)")
    per_step = sample_s / a.steps * 1000
    print(f"sample: {per_step:.1f} ms/step for the batch, {sample_s / a.batch:.3f} s/clip with {a.steps} steps")
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
