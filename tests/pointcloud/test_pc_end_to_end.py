"""train.py -> checkpoint -> sample.py -> evaluate.py on real ShapeNet and ModelNet10 with a tiny net."""

import json

import numpy as np
import pytest
from helpers import TINY_PC, compose

import evaluate
import sample
import train
from multidiff.domains.pointcloud.io import read_ply

pytestmark = pytest.mark.slow  # end to end: trains, samples or runs the CLI


def _train(shared_datasets, tmp_path, *overrides):
    run = tmp_path / "run"
    cfg = compose("train", [f"paths.data_dir={shared_datasets}", *TINY_PC, *overrides], run)
    trainer = train.train(cfg)
    return trainer, run / "checkpoints" / "last.ckpt"


def test_shapenet_train_sample_evaluate(shared_datasets, tmp_path):
    trainer, ckpt = _train(shared_datasets, tmp_path, "data=shapenet", "trainer.max_steps=20")
    assert trainer.global_step == 20 and ckpt.is_file()

    out = tmp_path / "samples"
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=8", "steps=50", f"out={out}"], tmp_path / "s"))
    plys = sorted(out.glob("*.ply"))
    assert len(plys) == 8 and (out / "preview.png").is_file()
    pts = read_ply(plys[0])
    assert pts.shape == (256, 3) and np.isfinite(pts).all()
    # samples come back in data units (global normalisation inverted): airplanes span about [-0.5, 0.5]
    assert 0.01 < np.abs(pts).max() < 50

    ref = shared_datasets / "shapenet_airplane" / "02691156" / "test"
    cfg = compose(
        "evaluate",
        [
            "domain=pointcloud",
            f"samples={out}",
            f"reference={ref}",
            "+options.max_shapes=8",
            "+options.emd=none",
            "+options.progress=false",
        ],
        tmp_path / "e",
    )
    res = evaluate.evaluate(cfg)
    json.dumps(res)
    assert res["normalization"] == "none" and res["protocol"]["n_points"] == 2048
    assert 0.5 <= res["1-NNA-CD"] <= 1.0 and res["protocol"]["num_reference"] == 8


def test_modelnet10_class_conditional(shared_datasets, tmp_path):
    _, ckpt = _train(shared_datasets, tmp_path, "data=modelnet10", "trainer.max_steps=4")
    out = tmp_path / "samples"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={ckpt}", "n=3", "steps=5", f"out={out}", "+condition.label=chair", "guidance=2.0"],
            tmp_path / "s",
        )
    )
    assert sorted(p.name for p in out.glob("*.ply")) == [f"chair_sample_{i:04d}.ply" for i in range(3)]
    with pytest.raises(ValueError, match="unknown shape class"):
        sample.sample(
            compose(
                "sample",
                [f"ckpt={ckpt}", "n=1", "steps=2", f"out={out}", "+condition.label=boat"],
                tmp_path / "s2",
            )
        )
