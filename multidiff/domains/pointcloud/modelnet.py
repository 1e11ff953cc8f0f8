"""ModelNet10/40 from the official Princeton meshes: download, area-weighted surface sampling, cache.

The official archives hold ``<Name>/<class>/{train,test}/<class>_NNNN.off``. Each mesh is sampled
once to ``surface_points`` points with trimesh (uniform over the surface: triangles drawn in
proportion to their area, then a uniform point inside each) and cached as ``.npy`` so later runs
read points only.
"""

from __future__ import annotations

import logging
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from multidiff.paths import replaced

from .io import PointCloudReadError, read_off

log = logging.getLogger(__name__)

URLS = {
    10: "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
    40: "http://modelnet.cs.princeton.edu/ModelNet40.zip",
}


def download_modelnet(root: Path, version: int = 10) -> Path:
    """Download and unpack the official ModelNet``version`` archive so ``root/<class>/`` exists."""
    if version not in URLS:
        raise ValueError(f"ModelNet version must be one of {sorted(URLS)}, got {version}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"ModelNet{version}.zip"
    if not archive.exists():
        log.info("downloading %s to %s", URLS[version], archive)
        tmp = archive.with_suffix(".part")
        with urllib.request.urlopen(URLS[version]) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=archive.name) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        tmp.rename(archive)
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.namelist() if m.endswith(".off") and "__MACOSX" not in m]
        for m in tqdm(members, desc="unpacking"):
            parts = Path(m).parts
            rel = Path(*parts[1:]) if parts[0].lower().startswith("modelnet") else Path(m)
            dst = root / rel
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
    return root


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly distributed over a triangle mesh's surface (reproducible through ``rng``)."""
    import trimesh  # imported here: it takes most of a second, and only mesh datasets need it

    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)  # as given: duplicate faces keep their weight
    if not np.isfinite(mesh.area) or mesh.area <= 0:
        raise ValueError(f"mesh surface area is {mesh.area}; sampling needs a positive, finite area")
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=rng)
    return points.astype(np.float32)


def mesh_points(off: Path, cache_root: Path, mesh_root: Path, n: int, seed: int = 0) -> np.ndarray:
    """Surface points of one OFF mesh, read from / written to the cache tree."""
    cached = cache_root / off.relative_to(mesh_root).with_suffix(".npy")
    if cached.exists():
        return np.load(cached)
    verts, faces = read_off(off)
    if len(faces) == 0:
        raise PointCloudReadError(off, "mesh has no faces")
    try:
        pts = sample_surface(verts, faces, n, np.random.default_rng(seed))
    except ValueError as e:
        raise PointCloudReadError(off, str(e)) from e
    with replaced(cached) as tmp, open(tmp, "wb") as f:  # processes sampling one mesh never read half a file
        np.save(f, pts)
    return pts
