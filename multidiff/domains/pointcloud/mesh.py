"""Surfaces from generated point clouds: ``sample.py ... mesh=true`` writes ``<name>.mesh.ply`` beside each shape.

Open3D's screened Poisson reconstruction (Kazhdan & Hoppe 2013): a maintained library whose Poisson solver closes a
surface over the gaps a 2,048-point shape leaves, where its ball pivoting and alpha shapes leave holes on such sparse
clouds; normals are estimated from neighbours and oriented consistently over the cloud first. Poisson's surface also
bulges where no point holds it (around thin wings and tails), so the triangles farther than ``trim`` times the
mean point spacing from every point are cut away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from multidiff.paths import replaced

#: a surface's file beside the shape's ``<name>.ply``; point-cloud readers skip these
MESH_SUFFIX = ".mesh.ply"


@dataclass(frozen=True)
class Surface:
    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int64

    @property
    def area(self) -> float:
        a, b, c = (self.vertices[self.faces[:, i]].astype(np.float64) for i in range(3))
        return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def reconstruct(points: np.ndarray, depth: int = 8, neighbours: int = 20, trim: float = 3.0) -> Surface:
    """The surface through ``points`` (N, 3): screened Poisson at octree ``depth`` over normals from ``neighbours``
    nearest points, cut back to within ``trim`` mean point spacings of the points."""
    try:
        import open3d as o3d
    except ImportError as e:
        raise ImportError("mesh=true needs Open3D: pip install -e '.[mesh]' (open3d-cpu)") from e
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) < max(neighbours, 4):
        raise ValueError(f"a surface needs at least {max(neighbours, 4)} points, got {len(points)}")
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    spacing = float(np.mean(cloud.compute_nearest_neighbor_distance()))
    try:
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(neighbours))
        cloud.orient_normals_consistent_tangent_plane(neighbours)
        mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth)
    except RuntimeError as e:  # Open3D's qhull on points that span no volume (all on a plane, a line, a point)
        raise ValueError(f"no surface through these points: {str(e).splitlines()[0]}") from None
    distance, _ = cKDTree(points).query(np.asarray(mesh.vertices))
    mesh.remove_vertices_by_mask(distance > trim * spacing)
    mesh.remove_unreferenced_vertices()
    if len(mesh.triangles) == 0:
        raise ValueError("no surface through these points (every triangle lies away from them)")
    return Surface(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.int64))


def write_mesh(path: Path | str, surface: Surface) -> Path:
    """The surface as a binary PLY (vertex + face elements), written whole or not at all."""
    import trimesh

    path = Path(path)
    with replaced(path) as tmp:
        tmp.write_bytes(trimesh.Trimesh(surface.vertices, surface.faces, process=False).export(file_type="ply"))
    return path


def read_mesh(path: Path | str) -> Surface:
    """A surface written by :func:`write_mesh` (or any triangle-mesh PLY)."""
    import trimesh

    mesh = trimesh.load(Path(path), file_type="ply", process=False, force="mesh")
    return Surface(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64))
