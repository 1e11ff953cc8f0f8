"""Point-cloud file readers and writers: .npy/.npz, .pts/.xyz/.txt, .ply, .pcd, and .off meshes.

Every reader returns an ``(N, 3)`` float32 array of x y z. Extra columns (normals, colours,
intensity) are dropped: the first three columns, or the ``x``/``y``/``z`` fields of PLY and
PCD files, are the coordinates. A file that cannot be read, holds non-finite values, has fewer
than three columns or no points raises :class:`PointCloudReadError` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

POINT_SUFFIXES = (".npy", ".npz", ".pts", ".xyz", ".txt", ".ply", ".pcd")

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_PCD_TYPES = {
    ("F", 4): "f4",
    ("F", 8): "f8",
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
}


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
def _ply_header(f) -> tuple[str, list[tuple[str, int, list[tuple[str, str, str | None]]]]]:
    """(format, [(element, count, [(prop, type, list_count_type)])]) and leaves f after the header."""
    if f.readline().strip() != b"ply":
        raise ValueError("missing 'ply' magic")
    fmt, elements = None, []
    while True:
        line = f.readline()
        if not line:
            raise ValueError("header has no end_header")
        tok = line.decode("ascii", "replace").split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if tok[1] == "list":
                elements[-1][2].append((tok[4], tok[3], tok[2]))
            else:
                elements[-1][2].append((tok[2], tok[1], None))
        elif tok[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown PLY format {fmt!r}")
    return fmt, elements


def read_ply(path: Path | str) -> np.ndarray:
    """The x y z of a PLY file's ``vertex`` element (ascii or binary, any endianness)."""
    with open(path, "rb") as f:
        fmt, elements = _ply_header(f)
        for name, count, props in elements:
            if name == "vertex":
                break
            if fmt != "ascii" and any(p[2] is not None for p in props):
                raise ValueError(f"binary element {name!r} with list properties precedes 'vertex'")
            if fmt == "ascii":
                for _ in range(count):
                    f.readline()
            else:
                f.seek(count * np.dtype([(p[0], _PLY_TYPES[p[1]]) for p in props]).itemsize, 1)
        else:
            raise ValueError("no 'vertex' element")
        names = [p[0] for p in props]
        if not {"x", "y", "z"} <= set(names):
            raise ValueError(f"vertex element lacks x/y/z properties (has {names})")
        if any(p[2] is not None for p in props):
            raise ValueError("list properties inside 'vertex' are not supported")
        if fmt == "ascii":
            rows = [f.readline().split() for _ in range(count)]
            if any(len(r) != len(names) for r in rows):
                raise ValueError(f"vertex rows must have {len(names)} values")
            arr = np.asarray(rows, dtype=np.float64).reshape(count, len(names))
            return arr[:, [names.index(c) for c in "xyz"]]
        end = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(p[0], end + _PLY_TYPES[p[1]]) for p in props])
        buf = f.read(count * dt.itemsize)
        if len(buf) < count * dt.itemsize:
            raise ValueError(f"file truncated: {count} vertices announced, {len(buf) // dt.itemsize} present")
        v = np.frombuffer(buf, dtype=dt, count=count)
        return np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)


def write_ply(path: Path | str, points: np.ndarray, binary: bool = True, comments: list[str] = ()) -> Path:
    """Write ``(N, 3)`` points as a PLY ``vertex`` element of float x y z (trimesh/Open3D readable)."""
    path = Path(path)
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float32)[:, :3])
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [
        f"element vertex {len(pts)}",
        "property float x",
        "property float y",
        "property float z",
        "end_header",
    ]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(pts.astype("<f4").tobytes())
        else:
            np.savetxt(f, pts, fmt="%.7g")
    return path


# -- PCD -------------------------------------------------------------------------------------
def _lzf_decompress(data: bytes, size: int) -> bytes:
    """LZF decompression (the codec of PCD ``binary_compressed``)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise ValueError("corrupt LZF stream")
            for _ in range(length + 2):
                out.append(out[ref])
                ref += 1
    if len(out) != size:
        raise ValueError(f"LZF stream decompressed to {len(out)} bytes, header says {size}")
    return bytes(out)


def read_pcd(path: Path | str) -> np.ndarray:
    """The x y z fields of a PCD v0.5-0.7 file (DATA ascii, binary or binary_compressed)."""
    with open(path, "rb") as f:
        hdr: dict[str, list[str]] = {}
        while True:
            line = f.readline()
            if not line:
                raise ValueError("header has no DATA line")
            tok = line.decode("ascii", "replace").split()
            if not tok or tok[0].startswith("#"):
                continue
            hdr[tok[0].upper()] = tok[1:]
            if tok[0].upper() == "DATA":
                break
        body = f.read()
    fields = hdr["FIELDS"]
    sizes = [int(s) for s in hdr.get("SIZE", ["4"] * len(fields))]
    types = hdr.get("TYPE", ["F"] * len(fields))
    counts = [int(c) for c in hdr.get("COUNT", ["1"] * len(fields))]
    npts = int(hdr["POINTS"][0]) if "POINTS" in hdr else int(hdr["WIDTH"][0]) * int(hdr.get("HEIGHT", ["1"])[0])
    if not {"x", "y", "z"} <= set(fields):
        raise ValueError(f"FIELDS lacks x y z (has {fields})")
    mode = hdr["DATA"][0].lower()
    if mode == "ascii":
        rows = [r.split() for r in body.decode("ascii", "replace").splitlines() if r.strip()]
        width = sum(counts)
        if len(rows) != npts or any(len(r) != width for r in rows):
            raise ValueError(f"expected {npts} rows of {width} values")
        arr = np.asarray(rows, dtype=np.float64)
        offsets = np.cumsum([0] + counts[:-1])
        return arr[:, [offsets[fields.index(c)] for c in "xyz"]]
    dtypes = [np.dtype("<" + _PCD_TYPES[(t.upper(), s)]) for t, s in zip(types, sizes)]
    if mode == "binary":
        dt = np.dtype([(name, d, (c,)) for name, d, c in zip(fields, dtypes, counts)])
        if len(body) < npts * dt.itemsize:
            raise ValueError(f"file truncated: {npts} points announced, {len(body) // dt.itemsize} present")
        rec = np.frombuffer(body, dtype=dt, count=npts)
        return np.stack([rec[c][:, 0] for c in "xyz"], axis=1).astype(np.float64)
    if mode == "binary_compressed":
        csize, usize = np.frombuffer(body[:8], dtype="<u4")
        raw = _lzf_decompress(body[8 : 8 + int(csize)], int(usize))
        cols, off = {}, 0  # fields stored one after another (structure of arrays)
        for name, d, c in zip(fields, dtypes, counts):
            nbytes = npts * c * d.itemsize
            cols[name] = np.frombuffer(raw[off : off + nbytes], dtype=d).reshape(npts, c)[:, 0]
            off += nbytes
        return np.stack([cols[c] for c in "xyz"], axis=1).astype(np.float64)
    raise ValueError(f"unknown PCD DATA mode {mode!r}")


def write_pcd(path: Path | str, points: np.ndarray, binary: bool = True) -> Path:
    """Write ``(N, 3)`` float32 points as PCD v0.7 (DATA binary or ascii)."""
    path = Path(path)
    pts = np.ascontiguousarray(np.asarray(points, dtype="<f4")[:, :3])
    n = len(pts)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
        f"COUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
        f"DATA {'binary' if binary else 'ascii'}\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(pts.tobytes())
        else:
            np.savetxt(f, pts, fmt="%.7g")
    return path


# -- OFF meshes ------------------------------------------------------------------------------
def read_off(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` and triangles ``(F, 3)`` of an OFF mesh (polygons fan-triangulated).

    Accepts ModelNet's malformed first line where the counts follow ``OFF`` directly.
    """
    text = Path(path).read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise PointCloudReadError(path, "missing 'OFF' header")
    first = lines[0][3:].strip()
    rest = lines[1:]
    if not first:
        first, rest = rest[0], rest[1:]
    nv, nf = (int(v) for v in re.split(r"\s+", first)[:2])
    verts = np.asarray([ln.split()[:3] for ln in rest[:nv]], dtype=np.float64)
    tris = []
    for ln in rest[nv : nv + nf]:
        idx = [int(v) for v in ln.split()]
        k, poly = idx[0], idx[1 : 1 + idx[0]]
        tris += [(poly[0], poly[j], poly[j + 1]) for j in range(1, k - 1)]
    if len(verts) != nv or nv == 0:
        raise PointCloudReadError(path, f"expected {nv} vertices, read {len(verts)}")
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.max() >= nv or faces.min() < 0):
        raise PointCloudReadError(path, "face index out of range")
    return verts, faces
