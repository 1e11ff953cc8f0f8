"""Infill real FSDD test clips with a trained audio model and score them (SC09 protocol): the classifier's
accuracy on the original digit and FID, next to the same clips with the gap filled by silence and by noise.

python benchmarks/infill_audio.py --ckpt runs/audio/checkpoints/last.ckpt --n 100 --gap 0.3 0.7 --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.build import load_checkpoint  # noqa: E402
from multidiff.core.state import State  # noqa: E402
from multidiff.domains.audio.data import fsdd_files  # noqa: E402
from multidiff.domains.audio.io import fix_length, load_clip, write_wav  # noqa: E402
from multidiff.domains.audio.metrics import evaluate_folder  # noqa: E402
from multidiff.module import OBSERVE_WITH  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "datasets" / "fsdd")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--gap", type=float, nargs=2, default=(0.3, 0.7), help="the generated span, as fractions")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--resample", type=int, default=1)
    ap.add_argument(
        "--observe-with", default="auto", choices=OBSERVE_WITH, help="the trained conditional or replacement"
    )
    ap.add_argument("--out", type=Path, default=Path("quality/infill"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    module = load_checkpoint(a.ckpt, domain="audio")
    rate, length = int(module.domain.info["sample_rate"]), int(module.domain.info["length"])
    test = fsdd_files(a.data_root)["test"]
    test = test[:: max(1, len(test) // a.n)][: a.n]
    folders = {name: a.out / name for name in ("observed", "infilled", "silence", "noise")}
    gen = torch.Generator().manual_seed(0)
    for i, (path, digit) in enumerate(test):
        clip = fix_length(load_clip(path, rate, length)[..., :length], length)  # the model's window, as in training
        observed = folders["observed"] / f"{digit}_clip_{i:04d}.wav"
        write_wav(observed, clip, rate)
        lo, hi = (round(f * length) for f in a.gap)
        obs = module.domain.observe(1, observed, keep=[[0, a.gap[0]], [a.gap[1], 1]])
        request = named_request(a.sampler, a.steps, observe_with=a.observe_with, resample=a.resample)
        state = module.generate(1, request, seed=i, observation=obs, progress=False)
        item = module.domain.decode(State(state.x, state.cond, state.ctx), obs)[0]
        write_wav(folders["infilled"] / f"{digit}_sample_{i:04d}.wav", item["wav"], rate)
        silence, noise = clip.clone(), clip.clone()
        silence[..., lo:hi] = 0
        rms = clip.pow(2).mean().sqrt()
        noise[..., lo:hi] = rms * torch.randn(hi - lo, generator=gen)
        write_wav(folders["silence"] / f"{digit}_sample_{i:04d}.wav", silence, rate)
        write_wav(folders["noise"] / f"{digit}_sample_{i:04d}.wav", noise, rate)
        print(f"\r{i + 1}/{len(test)} clips", end="", flush=True)
    print()
    rows = {}
    gap = f"{100 * a.gap[0]:.0f}-{100 * a.gap[1]:.0f} %"
    print(f"| clips (gap {gap} of the window) | FID | accuracy on the original digit | IS |")
    print("|---|---|---|---|")
    for name in ("observed", "infilled", "silence", "noise"):
        m = evaluate_folder(folders[name], data_root=a.data_root, progress=False)
        rows[name] = m
        label = f"infilled ({module.observed_by(a.observe_with)})" if name == "infilled" else name
        print(f"| {label} | {m['fid']['samples']:.2f} | {m['accuracy']['samples']:.3f} | {m['is']['samples']:.2f} |")
    (a.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
