"""The graph model's cost against the point-cloud model's, on real QM9 batches at EDM's size (256 x 9, batch 64).

Training: one full step each (unpack, loss, backward, AdamW step) on the same QM9 batches, the two models
alternated per round (A, B, B, A, ...), medians of the timed steps after a warm-up; molecules per second and the
ratio graph / points. Sampling: one ``generate`` of --sample-n molecules at --steps dpmpp_2m steps per model, and
the time its network calls took (a timer around the denoiser network); the ratio generate / network calls says
what sampling costs besides the network.

    python benchmarks/bench_graph.py --threads 2 --rounds 4 --steps 10 --out docs/bench_graph.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch
from hydra.utils import instantiate

from multidiff.build import build_module
from multidiff.config import compose_run
from multidiff.sampling import named_request

MODELS = {"points": ["domain=molecule"], "graph": ["domain=molecule", "domain.bonds=true"]}


def build(domain: list[str], data_root: str, hidden: int, layers: int, batch: int):
    run = Path(tempfile.mkdtemp(prefix="bench_graph_"))
    overrides = ["experiment=qm9_edm", *domain, f"net.hidden={hidden}", f"net.layers={layers}",
                 f"data.root={data_root}", f"data.batch_size={batch}", "+data.shuffle=false"]  # fmt: skip
    cfg = compose_run("train", overrides, run)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    module = build_module(cfg, datamodule.info())
    return module, datamodule


def _timed(forward, spent: list[float]):
    """``forward`` adding its wall time to ``spent[0]``."""

    def run(*args, **kwargs):
        t0 = time.perf_counter()
        out = forward(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return out

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="datasets/qm9")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4, help="timed training steps per model (after one warm-up)")
    p.add_argument("--sample-n", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    built = {name: build(d, a.data_root, a.hidden, a.layers, a.batch) for name, d in MODELS.items()}
    batches = [b for _, b in zip(range(a.rounds + 1), built["points"][1].train_dataloader())]
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, (m, _) in built.items()}
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    order = list(MODELS)
    for r, batch in enumerate(batches):
        for name in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            module = built[name][0].train()
            t0 = time.perf_counter()
            losses, _ = module.diffusion_loss(module.domain.unpack(batch))
            optims[name].zero_grad()
            losses.mean().backward()
            optims[name].step()
            if r > 0:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    result: dict = {"threads": a.threads, "size": f"{a.hidden} x {a.layers}", "batch": a.batch, "train": {}}
    for name in MODELS:
        med = statistics.median(times[name])
        result["train"][name] = {"step_s": times[name], "median_s": med, "molecules_per_s": a.batch / med}
    ratio = result["train"]["graph"]["molecules_per_s"] / result["train"]["points"]["molecules_per_s"]
    result["train"]["graph_over_points"] = ratio

    result["sample"] = {}
    for name, (module, _) in built.items():
        module.eval()
        net, spent = module.model.net, [0.0]
        forward = net.forward
        net.forward = _timed(forward, spent)
        t0 = time.perf_counter()
        module.generate(a.sample_n, named_request("dpmpp_2m", steps=a.steps, precision="32-true"), progress=False)
        total = time.perf_counter() - t0
        net.forward = forward
        result["sample"][name] = {"total_s": total, "network_s": spent[0], "total_over_network": total / spent[0]}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
