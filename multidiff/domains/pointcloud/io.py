"""Point-cloud file readers and writers: .npy/.npz, .pts/.xyz/.txt, .ply, .pcd, and .off meshes.

Every reader returns an ``(N, 3)`` float32 array of x y z. Extra columns (normals, colours,
intensity) are dropped: the first three columns, or the ``x``/``y``/``z`` fields of PLY and
PCD files, are the coordinates. A file that cannot be read, holds non-finite values, has fewer
than three columns or no points raises :class:`PointCloudReadError` naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import plyfile
from pypcd4 import Encoding, MetaData, PointCloud

POINT_SUFFIXES = (".npy", ".npz", ".pts", ".xyz", ".txt", ".ply", ".pcd")


class PointCloudReadError(ValueError):
    """A point-cloud file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def validate_points(points: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Check an array is ``(N, >=3)``, non-empty and finite; return its xyz as float32."""
    arr = np.asarray(points)
    if arr.ndim != 2:
        raise PointCloudReadError(path, f"expected a 2-D (N, 3) array, got shape {arr.shape}")
    if arr.shape[1] < 3:
        raise PointCloudReadError(path, f"expected at least 3 columns (x y z), got {arr.shape[1]}")
    if arr.shape[0] == 0:
        raise PointCloudReadError(path, "zero points")
    if not np.issubdtype(arr.dtype, np.number):
        raise PointCloudReadError(path, f"non-numeric dtype {arr.dtype}")
    xyz = arr[:, :3].astype(np.float32)
    bad = ~np.isfinite(xyz).all(1)
    if bad.any():
        raise PointCloudReadError(path, f"{int(bad.sum())} of {len(xyz)} points are NaN or infinite")
    return np.ascontiguousarray(xyz)


def read_points(path: Path | str) -> np.ndarray:
    """Read any supported point-cloud file into a validated ``(N, 3)`` float32 array."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {
        ".npy": _read_npy,
        ".npz": _read_npy,
        ".pts": read_text,
        ".xyz": read_text,
        ".txt": read_text,
        ".ply": read_ply,
        ".pcd": read_pcd,
    }
    if suffix not in readers:
        raise PointCloudReadError(path, f"unsupported suffix {suffix!r}; valid: {', '.join(POINT_SUFFIXES)}")
    try:
        pts = readers[suffix](path)
    except PointCloudReadError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
        raise PointCloudReadError(path, f"unreadable ({type(e).__name__}: {e})") from e
    return validate_points(pts, path)


def _read_npy(path: Path) -> np.ndarray:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = [k for k in ("points", "pc", "xyz") if k in data.files] or data.files
            if not keys:
                raise PointCloudReadError(path, "empty .npz archive")
            return data[keys[0]]
    return data


def read_text(path: Path | str) -> np.ndarray:
    """Whitespace- or comma-separated rows ``x y z [...]``; '#' or '//' lines are comments."""
    rows = []
    width = None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(("#", "//")):
                continue
            vals = line.replace(",", " ").split()
            if width is None:
                width = len(vals)
            elif len(vals) != width:
                raise PointCloudReadError(path, f"line {lineno} has {len(vals)} columns, earlier lines {width}")
            rows.append(vals)
    if not rows:
        raise PointCloudReadError(path, "zero points")
    return np.asarray(rows, dtype=np.float64)


# -- PLY -------------------------------------------------------------------------------------
def read_ply(path: Path | str) -> np.ndarray:
    """The x y z of a PLY file's ``vertex`` element (ascii or binary, any endianness, other elements ignored)."""
    try:
        ply = plyfile.PlyData.read(str(path), mmap=False)  # no memory map: the file is not held open afterwards
    except plyfile.PlyParseError as e:
        raise PointCloudReadError(path, _ply_problem(e)) from e
    if "vertex" not in ply:
        raise PointCloudReadError(path, f"no 'vertex' element (has {[el.name for el in ply.elements]})")
    vertex = ply["vertex"].data
    if not {"x", "y", "z"} <= set(vertex.dtype.names):
        raise PointCloudReadError(path, f"vertex element lacks x y z properties (has {list(vertex.dtype.names)})")
    return np.stack([vertex[c] for c in "xyz"], axis=1)


def _ply_problem(e: plyfile.PlyParseError) -> str:
    if isinstance(e, plyfile.PlyElementParseError) and "end-of-file" in e.message:
        return (
            f"file truncated: the header announces {e.element.count} '{e.element.name}' rows, "
            f"the data ends at row {e.row}"
        )
    return f"not a valid PLY file ({e}); expected a 'ply' header ending in 'end_header', then the data"


def write_ply(path: Path | str, points: np.ndarray, binary: bool = True, comments: list[str] = ()) -> Path:
    """Write ``(N, 3)`` points as a PLY ``vertex`` element of float x y z (trimesh/Open3D readable)."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float32)[:, :3]
    vertex = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vertex["x"], vertex["y"], vertex["z"] = pts.T
    ply = plyfile.PlyData(
        [plyfile.PlyElement.describe(vertex, "vertex")],
        text=not binary,
        byte_order="<",
        comments=[" ".join(str(c).splitlines()) for c in comments],  # a line break would end the header line
    )
    ply.write(str(path))
    return path


# -- PCD -------------------------------------------------------------------------------------
_PCD_VALID = (
    "a valid header has FIELDS (with x y z), SIZE, TYPE (F, I or U), COUNT, WIDTH, POINTS and "
    "DATA (ascii, binary or binary_compressed), one value per field"
)


def _pcd_header(path: Path | str) -> tuple[MetaData, int]:
    """The header as pypcd4 parses it, and the number of bytes after it.

    Read apart from the data so that a truncated or inconsistent file is reported as such
    rather than as whatever numpy error decoding it produces.
    """
    lines = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", "replace").strip()
            if line and not line.startswith("#"):
                lines.append(line)
            if line.upper().startswith("DATA"):
                break
        else:
            raise PointCloudReadError(path, f"PCD header has no DATA line; {_PCD_VALID}")
        data_bytes = Path(path).stat().st_size - f.tell()
    try:
        meta = MetaData.parse_header(lines)
    except ValueError as e:  # pydantic's ValidationError: one entry per missing or invalid header key
        errors = e.errors() if hasattr(e, "errors") else [{"loc": (), "msg": str(e)}]
        problems = "; ".join(f"{' '.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in errors)
        raise PointCloudReadError(path, f"invalid PCD header ({problems}); {_PCD_VALID}") from e
    if not len(meta.fields) == len(meta.size) == len(meta.type) == len(meta.count):
        raise PointCloudReadError(
            path,
            f"PCD header lists {len(meta.fields)} FIELDS but {len(meta.size)} SIZE, {len(meta.type)} TYPE "
            f"and {len(meta.count)} COUNT values; {_PCD_VALID}",
        )
    if not {"x", "y", "z"} <= set(meta.fields):
        raise PointCloudReadError(path, f"FIELDS lacks x y z (has {' '.join(meta.fields)}); {_PCD_VALID}")
    return meta, data_bytes


def read_pcd(path: Path | str) -> np.ndarray:
    """The x y z fields of a PCD v0.5-0.7 file (DATA ascii, binary or binary_compressed)."""
    meta, data_bytes = _pcd_header(path)
    expected = meta.points * meta.build_dtype().itemsize
    if meta.data == Encoding.BINARY and data_bytes < expected:
        raise PointCloudReadError(
            path, f"file truncated: {meta.points} points need {expected} bytes of binary data, {data_bytes} present"
        )
    try:
        pc = PointCloud.from_path(path)
    except (ValueError, RuntimeError, TypeError, struct.error) as e:  # TypeError: an LZF block that fails to decode
        want = {
            Encoding.ASCII: f"{meta.points} rows of {sum(meta.count)} single-space-separated values",
            Encoding.BINARY: f"{expected} bytes",
        }.get(meta.data, f"an 8-byte size prefix, then an LZF block that decompresses to {expected} bytes")
        raise PointCloudReadError(
            path, f"PCD data truncated or not as its header says ({e}); DATA {meta.data.value} should hold {want}"
        ) from e
    got = np.atleast_1d(pc.pc_data).shape[0]  # numpy gives a 0-d array for a one-row ascii body
    if got != meta.points:
        raise PointCloudReadError(path, f"file truncated: the header announces {meta.points} points, {got} present")
    return pc.numpy(("x", "y", "z"))


def write_pcd(path: Path | str, points: np.ndarray, binary: bool = True) -> Path:
    """Write ``(N, 3)`` float32 points as PCD v0.7 (DATA binary or ascii)."""
    path = Path(path)
    pc = PointCloud.from_xyz_points(np.asarray(points, dtype=np.float32)[:, :3])
    pc.save(path, encoding=Encoding.BINARY if binary else Encoding.ASCII)
    return path


# -- OFF meshes ------------------------------------------------------------------------------
def read_off(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` and triangles ``(F, 3)`` of an OFF mesh (polygons fan-triangulated), as in the file.

    Accepts ModelNet's malformed first line where the counts follow ``OFF`` directly.
    """
    import trimesh  # imported here: it takes most of a second, and only mesh datasets need it

    try:
        # process=False keeps vertices and faces as written (no merging or dropping of degenerate faces)
        mesh = trimesh.load(Path(path), file_type="off", force="mesh", process=False)
    except (ValueError, NameError, IndexError) as e:
        raise PointCloudReadError(
            path,
            f"not a valid OFF mesh ({e}); expected 'OFF', a 'V F E' count line, V rows 'x y z' "
            "and F rows 'n i1 ... in' of vertex indices",
        ) from e
    verts, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(verts) == 0:
        raise PointCloudReadError(path, "mesh has zero vertices")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):  # older trimesh loads these unchecked
        raise PointCloudReadError(path, f"face index out of range: valid indices are 0 to {len(verts) - 1}")
    return verts, faces
