"""Finding shape files in the supported layouts, and loading them robustly (bad files reported and skipped).

Layouts:

* ShapeNet (PointFlow ``ShapeNetCore.v2.PC15k``): ``<root>/<synset>/<split>/<model_id>.npy``.
* ModelNet10/40: ``<root>/<class>/<split>/<class>_NNNN.{pcd,off,...}``.
* A generic folder: every supported file below ``root``, optionally one class per subfolder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .io import POINT_SUFFIXES, PointCloudReadError, read_points
from .mesh import MESH_SUFFIX

log = logging.getLogger(__name__)


#: the 13 ShapeNetCore categories of 3D-R2N2 (synset id -> name); any other synset id also works
SHAPENET_SYNSETS = {
    "02691156": "airplane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "speaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}


def synset_id(category: str | int) -> str:
    """A ShapeNet synset id from an id (``"02691156"``) or a known name (``"airplane"``)."""
    cat = str(category)
    if cat.isdigit():
        return cat.zfill(8)
    names = {v: k for k, v in SHAPENET_SYNSETS.items()}
    if cat not in names:
        raise ValueError(f"unknown ShapeNet category {cat!r}; use a synset id or one of {', '.join(sorted(names))}")
    return names[cat]


def _require_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}{'; ' + hint if hint else ''}")
    return path


def shapenet_files(root: Path, categories: list[str], split: str) -> list[tuple[Path, int]]:
    """(file, category index) for every ``.npy`` of the given categories and split."""
    hint = (
        "download ShapeNetCore.v2.PC15k as described at https://github.com/stevenygd/PointFlow "
        "and point data.root at the folder holding the synset folders"
    )
    _require_dir(Path(root), "ShapeNet root", hint)
    out = []
    for label, cat in enumerate(categories):
        d = _require_dir(Path(root) / synset_id(cat) / split, f"ShapeNet split folder (category {cat})", hint)
        out += [(p, label) for p in sorted(d.glob("*.npy"))]
    if not out:
        raise FileNotFoundError(f"no .npy shapes for categories {list(categories)} split {split!r} under {root}")
    return out


def class_folders(root: Path) -> list[str]:
    """Sorted class subfolder names of a ModelNet-style root."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def modelnet_files(root: Path, split: str, classes: list[str], suffixes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(file, class index) under ``root/<class>/<split>/`` with one of ``suffixes``."""
    out = []
    for label, cls in enumerate(classes):
        d = _require_dir(Path(root) / cls / split, f"ModelNet folder for class {cls!r}")
        out += [(p, label) for p in sorted(d.iterdir()) if p.suffix.lower() in suffixes]
    return out


def folder_files(root: Path, classes_from_subfolders: bool = False) -> tuple[list[tuple[Path, int]], list[str]]:
    """Every supported point-cloud file below ``root`` (recursively), with class labels from the
    first-level subfolder when asked."""
    root = _require_dir(Path(root), "point-cloud folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in POINT_SUFFIXES and not p.name.endswith(MESH_SUFFIX)  # surfaces
    )
    if not files:
        raise FileNotFoundError(f"no point-cloud files ({', '.join(POINT_SUFFIXES)}) found under {root}")
    if not classes_from_subfolders:
        return [(p, 0) for p in files], []
    names = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    if not names:
        raise FileNotFoundError(f"classes_from_subfolders is set but {root} has no class subfolders with files")
    index = {n: i for i, n in enumerate(names)}
    out = [(p, index[p.relative_to(root).parts[0]]) for p in files if len(p.relative_to(root).parts) > 1]
    return out, names


@dataclass
class LoadResult:
    shapes: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def load_shapes(
    items: list[tuple[Path, int]], reader=read_points, desc: str = "loading shapes", require_any: bool = False
) -> LoadResult:
    """Read every file; bad files are logged by name with the reason and skipped.

    ``require_any``: raise :class:`PointCloudReadError` naming the folder, each file and why it was
    skipped when not one file is readable (instead of returning an empty result).
    """
    res = LoadResult()
    for path, label in tqdm(items, desc=desc, leave=False, disable=len(items) < 200):
        try:
            pts = reader(path)
        except PointCloudReadError as e:
            log.warning("skipping %s", e)
            res.skipped.append((str(path), e.reason))
            continue
        res.shapes.append(pts)
        res.labels.append(label)
        res.names.append(Path(path).stem)
    if res.skipped:
        log.warning("%s: skipped %d bad file(s) of %d", desc, len(res.skipped), len(items))
    if require_any and not res.shapes:
        raise _nothing_readable([Path(p) for p, _ in items], res.skipped, desc)
    return res


def _nothing_readable(
    files: list[Path], skipped: list[tuple[str, str]], desc: str, show: int = 10
) -> PointCloudReadError:
    folder = Path(os.path.commonpath(files)) if files else Path(".")
    if folder in files:  # a single file: name its folder
        folder = folder.parent
    lines = [f"  {Path(f).relative_to(folder)}: {why}" for f, why in skipped[:show]]
    if len(skipped) > show:
        lines.append(f"  ... and {len(skipped) - show} more")
    return PointCloudReadError(
        folder,
        f"no readable point cloud found in this folder ({desc}: {len(files)} file(s), all skipped):\n"
        + "\n".join(lines)
        + "\na readable cloud has at least one point and finite x y z (the first three columns, or the x y z fields)",
    )
