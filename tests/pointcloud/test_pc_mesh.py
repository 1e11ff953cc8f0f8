"""Surfaces from point clouds: the reconstruction against a sphere's known area, and sample.py mesh=true end to end."""

import numpy as np
import pytest
from helpers import compose

import sample
from multidiff.domains.pointcloud.files import folder_files
from multidiff.domains.pointcloud.mesh import MESH_SUFFIX, Surface, read_mesh, reconstruct, write_mesh

pytest.importorskip("open3d")


def sphere(n: int, radius: float, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * p / np.linalg.norm(p, axis=1, keepdims=True)


@pytest.mark.parametrize("radius", [0.5, 1.0])
def test_the_surface_of_a_sphere_has_its_area(radius, tmp_path):
    surface = reconstruct(sphere(2048, radius))
    assert surface.area == pytest.approx(4 * np.pi * radius**2, rel=0.05)
    assert np.abs(np.linalg.norm(surface.vertices, axis=1) - radius).max() < 0.05 * radius
    back = read_mesh(write_mesh(tmp_path / f"s{MESH_SUFFIX}", surface))
    np.testing.assert_array_equal(back.faces, surface.faces)
    np.testing.assert_allclose(back.vertices, surface.vertices)


def test_a_half_sphere_is_cut_back_to_its_points():
    points = sphere(4096, 1.0)
    half = reconstruct(points[points[:, 2] > 0])
    # Poisson closes the open half into a blob; trimming keeps what the points hold: about 2 pi, not 4 pi
    assert half.area == pytest.approx(2 * np.pi, rel=0.1)
    assert Surface(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]])).area == pytest.approx(np.sqrt(3) / 2)


def test_too_few_points_or_no_volume_is_an_error():
    with pytest.raises(ValueError, match="a surface needs at least 20 points, got 5"):
        reconstruct(sphere(5, 1.0))
    line = np.c_[np.linspace(0, 1, 100), np.zeros(100), np.zeros(100)]
    repeated = np.repeat(sphere(10, 1.0), 20, axis=0)  # zero spacing: every triangle is cut away
    for points in (np.zeros((100, 3)), line, repeated):
        with pytest.raises(ValueError, match="no surface through these points"):
            reconstruct(points)


def test_sample_py_mesh_true_writes_a_surface_per_shape(tiny_points_ckpt, tiny_audio_ckpt, tmp_path):
    out = tmp_path / "out"
    args = [f"ckpt={tiny_points_ckpt}", "n=2", "steps=2", "mesh=true", f"out={out}"]
    sample.sample(compose("sample", args, tmp_path))
    meshes = sorted(out.glob(f"*{MESH_SUFFIX}"))
    assert [m.name.removesuffix(MESH_SUFFIX) for m in meshes] == ["sample_0000", "sample_0001"]
    assert all(len(read_mesh(m).faces) > 0 for m in meshes)
    files, _ = folder_files(out)  # evaluation reads the shapes, not their surfaces
    assert sorted(p.name for p, _ in files) == ["sample_0000.ply", "sample_0001.ply"]
    with pytest.raises(ValueError, match="mesh=true: the audio domain has no surfaces"):
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", "mesh=true", f"out={tmp_path / 'a'}"], tmp_path))
    assert not (tmp_path / "a").exists()
