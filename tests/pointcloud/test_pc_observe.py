"""sample.py observe=partial.ply: shape completion keeps the observed points unchanged."""

import json

import numpy as np
import pytest
from helpers import TINY_PC, compose

import sample
import train
from multidiff.domains.pointcloud.io import read_points, write_ply

pytestmark = pytest.mark.slow  # trains a tiny model and samples it through sample.py


@pytest.fixture(scope="module")
def ckpt(shared_datasets, tmp_path_factory):
    run = tmp_path_factory.mktemp("pc_observe") / "run"
    train.train(compose("train", [f"paths.data_dir={shared_datasets}", *TINY_PC, "trainer.max_steps=2"], run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def masked_ckpt(shared_datasets, tmp_path_factory):
    """The tiny model trained with half-space observation masks (mask=halfspace)."""
    run = tmp_path_factory.mktemp("pc_observe_masked") / "run"
    overrides = [f"paths.data_dir={shared_datasets}", *TINY_PC, "mask=halfspace", "trainer.max_steps=2"]
    train.train(compose("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def partial(shared_datasets, tmp_path):
    """A half-space cut of a real test airplane (the points with z above the median), 100 of them."""
    shape = np.load(sorted((shared_datasets / "shapenet_airplane" / "02691156" / "test").glob("*.npy"))[0])
    cut = shape[shape[:, 2] > np.median(shape[:, 2])]
    pts = cut[np.random.default_rng(0).choice(len(cut), 100, replace=False)].astype(np.float32)
    return write_ply(tmp_path / "partial.ply", pts), pts


@pytest.mark.parametrize(
    "model, by", [("ckpt", "replacement"), ("masked_ckpt", "model")], ids=["replacement", "trained"]
)
def test_completion_keeps_the_observed_points(model, by, partial, tmp_path, request):
    path, pts = partial
    out, ckpt = tmp_path / "out", request.getfixturevalue(model)
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=2", "steps=5", f"out={out}", f"observe={path}"], tmp_path))
    assert json.loads((out / "sampling.json").read_text())["observe_with"] == by
    clouds = [read_points(p) for p in sorted(out.glob("*.ply"))]
    assert len(clouds) == 2
    for cloud in clouds:
        assert cloud.shape == (256, 3) and np.isfinite(cloud).all()
        assert np.array_equal(cloud[:100], pts)  # unchanged, to the bit
    assert not np.array_equal(clouds[0][100:], clouds[1][100:])


def test_too_large_or_broken_partials_are_refused(ckpt, partial, tmp_path):
    path, pts = partial
    big = write_ply(tmp_path / "big.ply", np.tile(pts, (3, 1)))
    broken = tmp_path / "broken.npy"
    np.save(broken, np.full((10, 3), np.nan, np.float32))
    for bad, match in ((big, "model generates 256"), (broken, "NaN")):
        with pytest.raises(ValueError, match=match):
            sample.sample(compose("sample", [f"ckpt={ckpt}", "n=1", f"out={tmp_path}/o", f"observe={bad}"], tmp_path))
    with pytest.raises(ValueError, match="keep"):  # an audio option is not a point-cloud one
        sample.sample(
            compose(
                "sample",
                [f"ckpt={ckpt}", "n=1", f"out={tmp_path}/o", f"observe={path}", "+observe_options.keep=[0,1]"],
                tmp_path,
            )
        )
    assert not (tmp_path / "o").exists()
