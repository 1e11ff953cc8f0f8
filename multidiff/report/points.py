"""Point clouds (``*.ply``) and triangle meshes (``<stem>.mesh.ply``, e.g. written by trimesh) as one three.js grid
per sample folder: one WebGL context for all its shapes, each shape a cell you turn by dragging."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from .discover import ReportError
from .markup import esc, json_script

#: points drawn per cloud: a denser cloud is thinned (every k-th point), which the caption says
MAX_POINTS = 30000
#: shapes (a cloud and its mesh, or either alone) drawn per folder
MAX_SHAPES = 12
CELL = 240  # px, a cell's side


def _b64(array: np.ndarray, dtype: str) -> str:
    """Little-endian raw bytes, base64: the JS side views them as a Float32Array / Uint32Array without parsing."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def cloud_cell(path: Path, cell_id: str) -> dict[str, Any]:
    """A point cloud read with the project's PLY reader; an unreadable file is a :class:`ReportError` naming it."""
    # imported here: the point-cloud package imports torch and its data modules, seconds a report without PLYs skips
    from multidiff.domains.pointcloud.io import PointCloudReadError, read_ply

    try:
        points = read_ply(path)
    except PointCloudReadError as e:
        raise ReportError(str(e)) from e
    total, note = len(points), ""
    if total > MAX_POINTS:
        k = -(-total // MAX_POINTS)
        note = f", every {k}th drawn"
        points = points[::k]
    return {
        "id": cell_id,
        "kind": "points",
        "title": path.name,
        "caption": f"{total} points{note}",
        "group": path.name[: -len(".ply")],
        "positions": _b64(points, "<f4"),
    }


def mesh_cell(path: Path, cell_id: str) -> dict[str, Any]:
    """A triangle mesh: its vertices and faces (``<stem>.mesh.ply`` turns with the cloud ``<stem>.ply``)."""
    from multidiff.domains.pointcloud.mesh import read_mesh  # (imported here as cloud_cell's reader is)

    try:
        mesh = read_mesh(path)
    except Exception as e:  # trimesh raises what its loaders raise: any of them means this file cannot be shown
        raise ReportError(f"{path}: not a readable triangle mesh ({type(e).__name__}: {e})") from e
    if len(mesh.faces) == 0:
        raise ReportError(f"{path}: a .mesh.ply file with no faces (a triangle mesh expected)")
    return {
        "id": cell_id,
        "kind": "mesh",
        "title": path.name,
        "caption": f"{len(mesh.vertices)} vertices, {len(mesh.faces)} triangles",
        "group": path.name[: -len(".mesh.ply")],
        "positions": _b64(mesh.vertices, "<f4"),
        "index": _b64(mesh.faces, "<u4"),
    }


def points_html(clouds: list[Path], meshes: list[Path], set_id: str) -> str:
    """The grid of one folder: each cloud followed by its mesh, then meshes without a cloud; the first
    :data:`MAX_SHAPES` shapes, saying how many there are. The cells' layout is HTML (a CSS grid); the JS
    (``assets/report.js``, ``pointGrid``) draws each cell's scene into that cell's rectangle of one shared canvas."""
    by_stem = {p.name[: -len(".mesh.ply")]: p for p in meshes}
    shapes: list[list[tuple[str, Path]]] = []
    for cloud in clouds:
        mesh = by_stem.pop(cloud.name[: -len(".ply")], None)
        shapes.append([("points", cloud)] + ([("mesh", mesh)] if mesh is not None else []))
    shapes += [[("mesh", m)] for m in by_stem.values()]
    note = f"{len(shapes)} shapes; the first {MAX_SHAPES} are drawn. " if len(shapes) > MAX_SHAPES else ""
    ordered = [cell for shape in shapes[:MAX_SHAPES] for cell in shape]
    cells = [
        (cloud_cell if kind == "points" else mesh_cell)(path, f"{set_id}-{kind}{k}")
        for k, (kind, path) in enumerate(ordered)
    ]
    spec_id = f"{set_id}-spec"
    pairs = " (a cloud and its mesh turn together)" if any(len(shape) == 2 for shape in shapes[:MAX_SHAPES]) else ""
    html_cells = "".join(
        f'<div class="cell"><div class="view" data-viewer-id="{esc(c["id"])}" style="width:{CELL}px;height:{CELL}px">'
        f'</div><div class="caption"><b>{esc(c["title"])}</b><br>{esc(c["caption"])}</div></div>'
        for c in cells
    )
    return (
        f'<p class="note">{note}Drag to turn a shape{pairs}, scroll to zoom, double-click to reset.</p>'
        f'<div class="grid3d" data-viewer="points" data-spec="{esc(spec_id)}"><canvas></canvas>{html_cells}</div>'
        + json_script(spec_id, {"cells": cells})
    )
