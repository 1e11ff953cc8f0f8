"""Latent diffusion for point clouds end to end: latent points (stage one), a diffusion model on them, sample.py
to PLY and evaluate.py."""

import numpy as np
import pytest
from helpers import TINY_PC, compose

import evaluate
import sample
import train
from multidiff.build import load_checkpoint
from multidiff.domains.pointcloud.io import read_ply

pytestmark = pytest.mark.slow  # trains two stages and samples


def test_two_stages_sample_evaluate(shared_datasets, tmp_path):
    base = [f"paths.data_dir={shared_datasets}", *TINY_PC, "data=shapenet"]
    ae_overrides = ["stage=autoencoder", "autoencoder.net.hidden=16", "autoencoder.net.layers=1", "trainer.max_steps=3"]
    train.train(compose("train", [*base, *ae_overrides], tmp_path / "ae"))
    ae = tmp_path / "ae" / "checkpoints" / "last.ckpt"
    train.train(compose("train", [*base, f"latent={ae}", "trainer.max_steps=3"], tmp_path / "ld"))
    ld = tmp_path / "ld" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ld).model.net.in_dim == 3 + 4  # a position and 4 features per latent point

    out = tmp_path / "out"
    sample.sample(compose("sample", [f"ckpt={ld}", "n=4", "steps=4", f"out={out}"], tmp_path / "s"))
    plys = sorted(out.glob("*.ply"))
    assert len(plys) == 4
    pts = read_ply(plys[0])
    assert pts.shape == (256, 3) and np.isfinite(pts).all()
    ref = shared_datasets / "shapenet_airplane" / "02691156" / "test"
    opts = ["+options.max_shapes=4", "+options.emd=none", "+options.progress=false"]
    res = evaluate.evaluate(
        compose("evaluate", ["domain=pointcloud", f"samples={out}", f"reference={ref}", *opts], tmp_path / "e")
    )
    assert 0.5 <= res["1-NNA-CD"] <= 1.0
