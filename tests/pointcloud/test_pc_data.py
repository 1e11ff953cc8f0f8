"""Datamodules on the real shared data and on generated folders with bad files; normalisation."""

import json
import logging

import numpy as np
import pytest
import torch

from multidiff.domains.pointcloud import FolderDataModule, ModelNetDataModule, ShapeNetDataModule
from multidiff.domains.pointcloud.files import load_shapes
from multidiff.domains.pointcloud.io import PointCloudReadError, write_pcd, write_ply
from multidiff.domains.pointcloud.normalize import Normalizer, resample


def test_shapenet_airplanes(shared_datasets):
    dm = ShapeNetDataModule(
        shared_datasets / "shapenet_airplane",
        categories=["airplane"],
        n_points=2048,
        limit_shapes=40,
        batch_size=8,
    )
    info = dm.info()
    json.dumps(info)  # JSON-able, as checkpoints store it
    assert info["categories"] == ["02691156"] and info["num_classes"] == 0
    assert info["num_shapes"] == {"train": 40, "test": 40}
    norm = info["normalization"]
    assert norm["mode"] == "global" and len(norm["mean"]) == 3 and 0.05 < norm["std"] < 0.5
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (8, 2048, 3) and batch["points"].dtype == torch.float32
    # global standardisation: the training points have mean ~0 and std ~1
    train = torch.stack([dm.datasets["train"][i]["points"] for i in range(40)])
    assert train.mean((0, 1)).abs().max() < 0.1 and abs(train.std() - 1) < 0.1
    # fixed subsets for evaluation, fresh ones for training
    val = dm.datasets["test"]
    assert torch.equal(val[3]["points"], val[3]["points"])
    assert not torch.equal(dm.datasets["train"][3]["points"], dm.datasets["train"][3]["points"])


def test_shapenet_missing_category_is_a_clear_error(shared_datasets):
    dm = ShapeNetDataModule(shared_datasets / "shapenet_airplane", categories=["chair"])
    with pytest.raises(FileNotFoundError, match="03001627"):
        dm.setup()


def test_modelnet10_pcd_classes(shared_datasets):
    dm = ModelNetDataModule(
        shared_datasets / "modelnet10_pcd", n_points=1024, num_classes=10, limit_shapes=60, batch_size=16
    )
    info = dm.info()
    assert info["class_names"][:3] == ["bathtub", "bed", "chair"] and info["num_classes"] == 10
    assert info["normalization"] == {"mode": "unit_sphere"} and info["up_axis"] == "z"
    batch = next(iter(dm.train_dataloader()))
    pts, label = batch["points"], batch["label"]
    assert pts.shape == (16, 1024, 3) and label.dtype == torch.long and 0 <= label.min() and label.max() < 10
    # unit sphere per shape: centroid at 0, farthest point at radius 1
    assert pts.mean(1).abs().max() < 1e-4
    assert torch.allclose(pts.norm(dim=-1).amax(1), torch.ones(16), atol=1e-5)


def test_modelnet_num_classes_mismatch(shared_datasets):
    with pytest.raises(ValueError, match="num_classes=4"):
        ModelNetDataModule(shared_datasets / "modelnet10_pcd", num_classes=4).setup()


def test_modelnet_missing_root_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=true"):
        ModelNetDataModule(tmp_path / "nothing").setup()


def test_modelnet_off_meshes_are_sampled_and_cached(tmp_path):
    quad = "OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n"
    for cls in ("a", "b"):
        for split in ("train", "test"):
            (tmp_path / cls / split).mkdir(parents=True)
            (tmp_path / cls / split / f"{cls}_0001.off").write_text(quad)
    dm = ModelNetDataModule(tmp_path, n_points=64, surface_points=256, num_classes=2, batch_size=2)
    assert dm.info()["num_shapes"] == {"train": 2, "test": 2}
    cached = sorted((tmp_path / ".surface_256").rglob("*.npy"))
    assert len(cached) == 4 and np.load(cached[0]).shape == (256, 3)


def test_folder_with_bad_files(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(tmp_path / f"good_{i}.npy", rng.normal(size=(300, 3)))
    write_ply(tmp_path / "good.ply", rng.normal(size=(300, 3)))
    write_pcd(tmp_path / "good.pcd", rng.normal(size=(10, 3)))  # fewer points than n_points
    np.savetxt(tmp_path / "good.xyz", rng.normal(size=(300, 3)))
    np.save(tmp_path / "bad_nan.npy", np.full((5, 3), np.nan))
    np.save(tmp_path / "bad_cols.npy", np.zeros((5, 2)))
    np.save(tmp_path / "bad_empty.npy", np.zeros((0, 3)))
    dm = FolderDataModule(tmp_path, n_points=128, val_fraction=0.0001, batch_size=4)
    with caplog.at_level(logging.WARNING):
        info = dm.info()
    skipped = sum(info["skipped_files"].values())
    assert skipped == 3 and sum(info["num_shapes"].values()) == 9
    for name in ("bad_nan.npy", "bad_cols.npy", "bad_empty.npy"):
        assert name in caplog.text
    assert "skipped 3 bad file(s)" in caplog.text or "skipped 2 bad file(s)" in caplog.text
    assert sum(info["resampled_with_replacement"].values()) == 1
    assert next(iter(dm.train_dataloader()))["points"].shape == (4, 128, 3)


def test_load_shapes_require_any(tmp_path):
    items = []
    for i in range(12):
        np.save(tmp_path / f"bad_{i:02d}.npy", np.zeros((0, 3)))
        items.append((tmp_path / f"bad_{i:02d}.npy", 0))
    res = load_shapes(items)  # by default an all-bad set is an empty result, every file recorded
    assert res.shapes == [] and len(res.skipped) == 12
    with pytest.raises(PointCloudReadError, match="no readable point cloud") as e:
        load_shapes(items, require_any=True)
    msg = str(e.value)
    assert e.value.path == tmp_path and "12 file(s)" in msg and "bad_00.npy: zero points" in msg
    assert "bad_09.npy" in msg and "bad_10.npy" not in msg and "... and 2 more" in msg
    np.save(tmp_path / "good.npy", np.ones((4, 3)))
    assert len(load_shapes([*items, (tmp_path / "good.npy", 0)], require_any=True).shapes) == 1


def test_folder_empty_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no point-cloud files"):
        FolderDataModule(tmp_path).setup()


def test_folder_classes_from_subfolders(tmp_path):
    for cls in ("cube", "ball"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            np.save(tmp_path / cls / f"{i}.npy", np.random.default_rng(i).normal(size=(50, 3)))
    dm = FolderDataModule(tmp_path, classes_from_subfolders=True, num_classes=2, n_points=32)
    assert dm.info()["class_names"] == ["ball", "cube"]


@pytest.mark.parametrize("mode", ["unit_sphere", "bbox", "shape_std", "global", "none"])
def test_normalisation_modes(mode):
    rng = np.random.default_rng(1)
    shapes = [rng.normal(size=(200, 3)) * rng.uniform(1, 50) + rng.uniform(-100, 100, size=3) for _ in range(4)]
    norm = Normalizer(mode).fit(shapes)
    out = [norm(s) for s in shapes]
    if mode == "unit_sphere":
        assert all(np.isclose(np.linalg.norm(o - o.mean(0), axis=1).max(), 1, atol=1e-5) for o in out)
    elif mode == "bbox":
        assert all(
            np.isclose((o.max(0) - o.min(0)).max(), 2, atol=1e-5) and np.allclose(o.max(0), -o.min(0), atol=1e-5)
            for o in out
        )
    elif mode == "shape_std":
        assert all(np.isclose(o.std(), 1, atol=1e-4) for o in out)
    elif mode == "global":
        raw = np.concatenate(shapes)
        # PointFlow: per-axis mean, one std over all coordinates
        assert np.allclose(norm.mean, raw.mean(0)) and np.isclose(norm.std, raw.reshape(-1).std())
        assert np.allclose(np.concatenate(out).mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(norm.inverse(out[0]), shapes[0], rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_allclose(out[0], shapes[0], rtol=1e-6)
    assert Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))).to_dict() == norm.to_dict()


def test_unknown_normalisation():
    with pytest.raises(ValueError, match="unit_sphere"):
        Normalizer("sphere")


def test_resample_counts_replacement():
    rng = np.random.default_rng(0)
    pts = np.arange(30, dtype=np.float32).reshape(10, 3)
    big, replaced = resample(pts, 25, rng)
    assert replaced and big.shape == (25, 3) and len(np.unique(big[:, 0])) == 10  # every point kept
    small, replaced = resample(pts, 4, rng)
    assert not replaced and len(np.unique(small[:, 0])) == 4
