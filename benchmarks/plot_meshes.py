"""Shapes and their surfaces side by side: the points of each shape above the surface ``sample.py mesh=true``
reconstructs from them (:mod:`multidiff.domains.pointcloud.mesh`).

    python benchmarks/plot_meshes.py --shapes DIR_OR_FILES... --title "..." --out docs/meshes.png [--up y] [--n 4]

``--shapes``: sample folders (their ``*.ply``; a ``<name>.mesh.ply`` beside a shape is used, else reconstructed) or
point files (``.npy``, ``.ply``, ...), each subsampled to ``--points`` points as the data module does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from multidiff.domains.pointcloud.files import folder_files
from multidiff.domains.pointcloud.io import read_points
from multidiff.domains.pointcloud.mesh import MESH_SUFFIX, Surface, read_mesh, reconstruct

LIGHT = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])


def shapes(sources: list[str], n: int, points: int) -> list[tuple[str, np.ndarray, Surface]]:
    files = []
    for s in sources:
        files += [p for p, _ in folder_files(Path(s))[0]] if Path(s).is_dir() else [Path(s)]
    out, rng = [], np.random.default_rng(0)
    for f in files[:n]:
        p = read_points(f)[:, :3]
        if len(p) > points:
            p = p[rng.choice(len(p), points, replace=False)]
        mesh = f.with_name(f.stem + MESH_SUFFIX)
        out.append((f.stem, p, read_mesh(mesh) if mesh.is_file() else reconstruct(p)))
    return out


def draw(items: list[tuple[str, np.ndarray, Surface]], title: str, up: str, out: Path) -> Path:
    order = {"y": [0, 2, 1], "z": [0, 1, 2], "x": [1, 2, 0]}[up]  # the data's up axis drawn upwards
    fig = plt.figure(figsize=(3.2 * len(items), 5.2))
    for i, (name, p, s) in enumerate(items):
        v, pts = s.vertices[:, order], p[:, order]
        r = np.abs(pts).max() * 0.68
        for row in (0, 1):
            ax = fig.add_subplot(2, len(items), row * len(items) + i + 1, projection="3d")
            if row == 0:
                ax.scatter(*pts.T, s=0.6, c=pts[:, 2], cmap="viridis")
                ax.set_title(name, fontsize=8)
            else:
                tri = v[s.faces]
                normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
                normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
                shade = np.abs(normal @ LIGHT)  # two-sided: Poisson's normals face either way on thin parts
                ax.add_collection3d(Poly3DCollection(tri, facecolors=plt.cm.Blues(0.35 + 0.6 * shade), lw=0))
                ax.set_title(f"{len(s.faces):,} triangles", fontsize=8)
            ax.set_xlim(-r, r), ax.set_ylim(-r, r), ax.set_zlim(-r, r)
            ax.view_init(25, -60)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", required=True)
    ap.add_argument("--title", default="points (top) and their surfaces (bottom)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--up", default="y", choices=["x", "y", "z"])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--points", type=int, default=2048)
    a = ap.parse_args()
    print(draw(shapes(a.shapes, a.n, a.points), a.title, a.up, a.out))


if __name__ == "__main__":
    main()
