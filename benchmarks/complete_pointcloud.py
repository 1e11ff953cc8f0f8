"""Shape completion on the ShapeNet test split (PVD's protocol, half-space partials): Chamfer and EMD between
the completed cloud and the complete ground-truth shape, beside the same for unconditional samples.

Each partial is the half of a test shape on one side of a random plane through its centroid (seeded), with at
most half the model's points; completion is training-free replacement (sample.py observe=). Distances are in
the data's units (the model's global normalisation inverted), Chamfer with squared distances (mean over points,
both directions summed), EMD by the multiscale matching on ``--emd-points`` points.

python benchmarks/complete_pointcloud.py --ckpt runs/pc/checkpoints/last.ckpt --n 50 --steps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.build import load_checkpoint  # noqa: E402
from multidiff.core.state import State  # noqa: E402
from multidiff.domains.pointcloud.chamfer import chamfer  # noqa: E402
from multidiff.domains.pointcloud.emd import emd_multiscale  # noqa: E402
from multidiff.domains.pointcloud.normalize import resample  # noqa: E402
from multidiff.module import OBSERVE_WITH  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--test", type=Path, default=ROOT.parent / "shared/datasets/shapenet_airplane/02691156/test")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--emd-points", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--observe-with", default="auto", choices=OBSERVE_WITH, help="the trained conditional or replacement"
    )
    ap.add_argument("--out", type=Path, default=Path("quality/completion"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    module = load_checkpoint(a.ckpt, domain="pointcloud")
    total = int(module.domain.info["n_points"])
    files = sorted(a.test.glob("*.npy"))[: a.n]
    rng = np.random.default_rng(a.seed)
    rows = {"completion": [], "unconditional": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(files):
            shape = np.load(path).astype(np.float32)
            normal = rng.normal(size=3)
            side = (shape - shape.mean(0)) @ normal > 0
            half = shape[side]
            partial = half[rng.choice(len(half), min(len(half), total // 2), replace=False)]
            partial_path = Path(tmp) / f"partial_{i}.npy"
            np.save(partial_path, partial)
            obs = module.domain.observe(1, partial_path)
            truth = torch.from_numpy(resample(shape, total, rng)[0])[None]
            for name, observation in (("completion", obs), ("unconditional", None)):
                request = named_request(a.sampler, a.steps, observe_with=a.observe_with)
                state = module.generate(1, request, seed=a.seed + i, observation=observation, progress=False)
                cloud = module.domain.decode(State(state.x, state.cond, state.ctx), observation)[0]["points"]
                if observation is not None:
                    assert np.array_equal(cloud[: len(partial)], partial)  # the partial is kept exactly
                k = a.emd_points
                emd = emd_multiscale(resample(cloud, k, rng)[0], resample(truth[0].numpy(), k, rng)[0], seed=a.seed)
                rows[name].append({"cd": float(chamfer(torch.from_numpy(cloud)[None], truth)[0]), "emd": emd})
            print(f"\r{i + 1}/{len(files)} shapes", end="", flush=True)
    print()
    print(f"| {len(files)} test airplanes, half-space partials of <= {total // 2} points | Chamfer (squared) | EMD |")
    print("|---|---|---|")
    for name, values in rows.items():
        cd, emd = np.mean([v["cd"] for v in values]), np.mean([v["emd"] for v in values])
        label = f"completion ({module.observed_by(a.observe_with)})" if name == "completion" else name
        print(f"| {label} | {cd:.4g} | {emd:.4g} |")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
