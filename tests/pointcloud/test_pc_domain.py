"""PointCloudDomain: unpack/template/condition/decode, PLY + PNG export round trip, evaluate()."""

import numpy as np
import pytest
import torch
import trimesh
from helpers import compose

import evaluate
from multidiff.core.state import State
from multidiff.domains.pointcloud import PointCloudDomain
from multidiff.domains.pointcloud.io import PointCloudReadError, read_ply, write_ply

INFO = {
    "n_points": 64,
    "num_classes": 2,
    "class_names": ["chair", "table"],
    "up_axis": "z",
    "normalization": {"mode": "global", "mean": [1.0, 2.0, 3.0], "std": 0.5},
}


@pytest.fixture
def domain():
    d = PointCloudDomain()
    d.bind(INFO)
    return d


def test_unpack_template_condition(domain):
    batch = {"points": torch.randn(4, 64, 3), "label": torch.tensor([0, 1, 1, 0])}
    state = domain.unpack(batch)
    assert state.x.shape == (4, 64, 3) and torch.equal(state.cond, batch["label"])
    assert domain.template(3, None, torch.Generator()).x.shape == (3, 64, 3)
    assert domain.condition(2, label="table").tolist() == [1, 1]
    assert domain.condition(2) is None
    with pytest.raises(ValueError, match="chair, table"):
        domain.condition(2, label="sofa")
    unconditional = PointCloudDomain()
    unconditional.bind({**INFO, "num_classes": 0})
    assert unconditional.unpack(batch).cond is None


def test_decode_inverts_global_normalisation(domain):
    x = torch.zeros(2, 64, 3)
    items = domain.decode(State(x, torch.tensor([1, 0])))
    assert np.allclose(items[0]["points"], [1.0, 2.0, 3.0]) and items[0]["label"] == "table"


@pytest.mark.parametrize("binary", [True, False])
def test_export_round_trip(domain, tmp_path, binary):
    domain.ply_binary = binary
    rng = np.random.default_rng(0)
    items = [{"points": rng.normal(size=(64, 3)).astype(np.float32), "label": lab} for lab in ("chair", None, "table")]
    paths = domain.export(items, tmp_path, {"sampler": "heun", "steps": 5})
    plys = sorted(tmp_path.glob("*.ply"))
    assert [p.name for p in plys] == ["chair_sample_0000.ply", "sample_0001.ply", "table_sample_0002.ply"]
    assert set(plys) < set(paths) and (tmp_path / "preview.png").stat().st_size > 5000
    for p, it in zip(plys, items):
        np.testing.assert_allclose(read_ply(p), it["points"], rtol=1e-6, atol=1e-6)
        header = p.read_bytes().split(b"end_header")[0]
        assert b"comment sampler: heun" in header


def test_export_readable_by_trimesh(domain, tmp_path):
    pts = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    domain.export([{"points": pts, "label": None}], tmp_path, {})
    np.testing.assert_allclose(trimesh.load(tmp_path / "sample_0000.ply").vertices, pts, rtol=1e-6)


def test_evaluate_folders_records_protocol(shared_datasets, tmp_path):
    ref = shared_datasets / "shapenet_airplane" / "02691156" / "test"
    files = sorted(ref.glob("*.npy"))[:6]
    for f in files:  # "samples": real shapes written as PLY, plus one bad file that is skipped
        write_ply(tmp_path / f"{f.stem}.ply", np.load(f))
    np.save(tmp_path / "broken.npy", np.zeros((0, 3)))
    d = PointCloudDomain()
    res = d.evaluate(
        tmp_path,
        reference=ref,
        normalize="bbox",
        n_points=256,
        max_shapes=12,
        emd="exact",
        emd_points=64,
        progress=False,
    )
    assert res["normalization"] == "bbox" and res["protocol"]["normalization"] == "bbox"
    assert res["protocol"]["num_samples"] == 6 and res["protocol"]["num_reference"] == 12
    assert res["protocol"]["skipped_files"] == {"samples": 1, "reference": 0}
    for k in ("MMD-CD", "COV-CD", "1-NNA-CD", "MMD-EMD", "COV-EMD", "1-NNA-EMD", "JSD"):
        assert np.isfinite(res[k])
    with pytest.raises(ValueError, match="reference"):
        d.evaluate(tmp_path)


def _clouds(folder, n=3):
    folder.mkdir()
    for i in range(n):
        np.save(folder / f"good_{i}.npy", np.random.default_rng(i).normal(size=(64, 3)))
    return folder


def _unreadable(folder):
    folder.mkdir()
    np.save(folder / "nan.npy", np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 2.0]]))
    (folder / "short.xyz").write_text("1 2\n3 4\n")
    return folder


@pytest.mark.parametrize("bad_set", ["samples", "reference"])
def test_evaluate_without_a_readable_cloud_names_the_folder_and_files(tmp_path, bad_set):
    folders = {
        "samples": (_unreadable if bad_set == "samples" else _clouds)(tmp_path / "samples"),
        "reference": (_unreadable if bad_set == "reference" else _clouds)(tmp_path / "reference"),
    }
    with pytest.raises(PointCloudReadError, match="no readable point cloud found") as e:
        PointCloudDomain().evaluate(folders["samples"], reference=folders["reference"], emd="none", progress=False)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and msg.startswith(str(folders[bad_set]))
    assert "nan.npy: 1 of 2 points are NaN or infinite" in msg
    assert "short.xyz: expected at least 3 columns (x y z), got 2" in msg


def test_evaluate_script_on_unreadable_samples(tmp_path):
    cfg = compose(
        "evaluate",
        [
            "domain=pointcloud",
            f"samples={_unreadable(tmp_path / 'samples')}",
            f"reference={_clouds(tmp_path / 'reference')}",
            "+options.emd=none",
            "+options.progress=false",
        ],
        tmp_path / "e",
    )
    with pytest.raises(ValueError, match="no readable point cloud found in this folder \\(samples: 2 file"):
        evaluate.evaluate(cfg)


def test_quick_metrics(domain):
    items = [{"points": np.random.default_rng(i).normal(size=(64, 3)).astype(np.float32)} for i in range(3)]
    m = domain.quick_metrics(items)
    assert abs(m["coord_std"] - 1) < 0.2 and m["nn_dist_512"] > 0 and m["non_finite"] == 0
