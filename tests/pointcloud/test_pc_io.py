"""Point-cloud readers and writers on real files and on hand-made good and bad files."""

import struct

import numpy as np
import pytest
from pypcd4 import Encoding, PointCloud

from multidiff.domains.pointcloud.io import (
    PointCloudReadError,
    read_off,
    read_pcd,
    read_ply,
    read_points,
    write_pcd,
    write_ply,
)
from multidiff.domains.pointcloud.modelnet import sample_surface


@pytest.fixture
def cloud():
    return np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)


def test_real_shapenet_npy(shared_datasets):
    files = sorted((shared_datasets / "shapenet_airplane" / "02691156" / "train").glob("*.npy"))
    assert len(files) == 2290
    pts = read_points(files[0])
    assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 3
    assert 1653 <= len(pts) <= 2907 and np.abs(pts).max() < 1.0


def test_real_modelnet_binary_pcd(shared_datasets):
    f = sorted((shared_datasets / "modelnet10_pcd" / "chair" / "train").glob("*.pcd"))[0]
    pts = read_pcd(f)
    assert pts.shape == (1024, 3) and np.isfinite(pts).all()
    # not normalised: raw ModelNet units, far beyond a unit sphere for most shapes
    assert np.abs(pts).max() > 1.0


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip_and_standard_header(tmp_path, cloud, binary):
    path = write_ply(tmp_path / "a.ply", cloud, binary=binary, comments=["hello"])
    head = path.read_bytes().split(b"end_header\n")[0].decode()
    assert head.startswith("ply\nformat " + ("binary_little_endian" if binary else "ascii") + " 1.0\n")
    assert "element vertex 100\nproperty float x\nproperty float y\nproperty float z" in head
    np.testing.assert_allclose(read_points(path), cloud, rtol=1e-6, atol=1e-6)


def test_ply_with_faces_and_extra_properties(tmp_path):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    header = (
        "ply\nformat binary_big_endian 1.0\nelement vertex 4\nproperty double x\nproperty double y\n"
        "property double z\nproperty uchar red\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    body = b"".join(struct.pack(">dddB", *p, 7) for p in pts) + struct.pack(">B3i", 3, 0, 1, 2)
    (tmp_path / "m.ply").write_bytes(header.encode() + body)
    np.testing.assert_array_equal(read_ply(tmp_path / "m.ply"), pts)


@pytest.mark.parametrize("binary", [True, False])
def test_pcd_round_trip(tmp_path, cloud, binary):
    path = write_pcd(tmp_path / "a.pcd", cloud, binary=binary)
    np.testing.assert_allclose(read_points(path), cloud, rtol=1e-6, atol=1e-6)


def test_pcd_binary_compressed(tmp_path):
    # fields are stored one after the other; the LZF stream holds a literal run and a back reference
    pts = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3]], dtype="<f4")
    raw = pts.T.tobytes()  # x x x y y y z z z
    first = raw[:4]  # one literal float, then copy the 4 previous bytes... as 8 more bytes
    lzf = bytes([len(first) - 1]) + first + bytes([(6 << 5) | 0, 3])  # back ref: length 8, offset 4
    lzf += bytes([len(raw[12:]) - 1]) + raw[12:]
    header = (
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS 3\n"
        "DATA binary_compressed\n"
    )
    (tmp_path / "c.pcd").write_bytes(header.encode() + struct.pack("<II", len(lzf), len(raw)) + lzf)
    np.testing.assert_array_equal(read_points(tmp_path / "c.pcd"), pts)


def test_pcd_binary_compressed_with_extra_field(tmp_path):
    # repeated rows compress, so the file really is binary_compressed; the intensity field is dropped
    xyzi = np.repeat(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), 16, axis=0)
    PointCloud.from_xyzi_points(xyzi).save(tmp_path / "i.pcd", encoding=Encoding.BINARY_COMPRESSED)
    assert b"DATA binary_compressed\n" in (tmp_path / "i.pcd").read_bytes()
    np.testing.assert_array_equal(read_points(tmp_path / "i.pcd"), xyzi[:, :3])


def test_text_formats_keep_xyz_of_wider_rows(tmp_path, cloud):
    normals = np.ones_like(cloud)
    np.savetxt(tmp_path / "a.xyz", np.hstack([cloud, normals]))
    np.savetxt(tmp_path / "b.pts", cloud, delimiter=",", header="x,y,z")
    np.testing.assert_allclose(read_points(tmp_path / "a.xyz"), cloud, atol=1e-6)
    np.testing.assert_allclose(read_points(tmp_path / "b.pts"), cloud, atol=1e-6)


_PCD_XYZ = (
    "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA {data}\n"
)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("nan.npy", np.array([[0, 0, 0], [np.nan, 1, 2]], dtype=np.float32), "NaN or infinite"),
        ("inf.npy", np.array([[0, 0, np.inf]]), "NaN or infinite"),
        ("two_cols.npy", np.zeros((5, 2)), "at least 3 columns"),
        ("empty.npy", np.zeros((0, 3)), "zero points"),
        ("flat.npy", np.zeros(9), "2-D"),
        ("ragged.xyz", "1 2 3\n4 5 6\n7 8\n", "columns"),
        ("empty.xyz", "# nothing\n", "zero points"),
        (
            "trunc.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
            b"property float y\nproperty float z\nend_header\n" + b"\0" * 12,
            "truncated",
        ),
        (
            "noxyz.pcd",
            b"VERSION 0.7\nFIELDS a b\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nWIDTH 1\nPOINTS 1\nDATA ascii\n1 2\n",
            "x y z",
        ),
        ("noply.ply", b"PLY?\n", "'ply' header"),
        ("novertex.ply", b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int v\nend_header\n", "'vertex'"),
        ("trunc.pcd", _PCD_XYZ.format(n=10, data="binary").encode() + b"\0" * 100, "truncated: 10 points need 120"),
        ("short.pcd", _PCD_XYZ.format(n=3, data="ascii").encode() + b"1 2 3\n4 5 6\n", "truncated"),
        ("cut_row.pcd", _PCD_XYZ.format(n=2, data="ascii").encode() + b"1 2 3\n4 5\n", "2 rows of 3"),
        ("lzf.pcd", _PCD_XYZ.format(n=2, data="binary_compressed").encode() + b"\x05\0\0\0\x18\0\0\0\x1f", "LZF"),
        ("nosize.pcd", b"FIELDS x y z\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nPOINTS 1\nDATA ascii\n1 2 3\n", "SIZE"),
        ("nodata.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nPOINTS 1\n", "no DATA"),
        ("nan.pcd", _PCD_XYZ.format(n=2, data="ascii").encode() + b"1 2 3\nnan 5 6\n", "NaN or infinite"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(PointCloudReadError, match=reason) as e:
        read_points(path)
    assert name in str(e.value)


def test_unknown_suffix(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\n")
    with pytest.raises(PointCloudReadError, match="unsupported suffix"):
        read_points(tmp_path / "a.obj")


def test_off_reader_and_area_weighted_sampling(tmp_path):
    # ModelNet's malformed header: counts glued to "OFF"; a quad (split in two) and a triangle
    (tmp_path / "m.off").write_text("OFF4 2 0\n0 0 0\n3 0 0\n3 1 0\n0 1 0\n4 0 1 2 3\n3 0 1 2\n")
    verts, faces = read_off(tmp_path / "m.off")
    assert verts.shape == (4, 3) and sorted(sorted(f) for f in faces.tolist()) == [[0, 1, 2], [0, 1, 2], [0, 2, 3]]
    pts = sample_surface(verts, faces, 20_000, np.random.default_rng(0))
    assert pts.dtype == np.float32 and pts.shape == (20_000, 3)
    assert np.allclose(pts[:, 2], 0) and (pts[:, 0] >= -1e-6).all() and (pts[:, 0] <= 3 + 1e-6).all()
    # the triangle [0,1,2] appears twice: the lower-right half gets 2/3 of the points
    below = (pts[:, 1] <= pts[:, 0] / 3).mean()
    assert abs(below - 2 / 3) < 0.02
    # reproducible from the generator's seed, different for another seed
    again = sample_surface(verts, faces, 20_000, np.random.default_rng(0))
    other = sample_surface(verts, faces, 20_000, np.random.default_rng(1))
    assert np.array_equal(pts, again) and not np.array_equal(pts, other)


@pytest.mark.parametrize(
    "content, reason",
    [
        ("solid cube\n", "not a valid OFF mesh"),
        ("OFF\n4 1 0\n0 0 0\n1 0 0\n", "not a valid OFF mesh"),  # 4 vertices announced, 2 present
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "face index"),
    ],
)
def test_bad_off_raises_naming_the_file(tmp_path, content, reason):
    (tmp_path / "bad.off").write_text(content)
    with pytest.raises(PointCloudReadError, match=reason) as e:
        read_off(tmp_path / "bad.off")
    assert "bad.off" in str(e.value)


def test_sampling_a_flat_mesh_is_an_error():
    verts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=np.float64)  # collinear: zero area
    with pytest.raises(ValueError, match="positive, finite area"):
        sample_surface(verts, np.array([[0, 1, 2]]), 10, np.random.default_rng(0))
