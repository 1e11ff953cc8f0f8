"""Finding shape files in the supported layouts, loading them robustly, and the torch Dataset.

Layouts:

* ShapeNet (PointFlow ``ShapeNetCore.v2.PC15k``): ``<root>/<synset>/<split>/<model_id>.npy``.
* ModelNet10/40: ``<root>/<class>/<split>/<class>_NNNN.{pcd,off,...}``.
* A generic folder: every supported file below ``root``, optionally one class per subfolder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .io import POINT_SUFFIXES, PointCloudReadError, read_points
from .normalize import resample

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
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in POINT_SUFFIXES)
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


def load_shapes(items: list[tuple[Path, int]], reader=read_points, desc: str = "loading shapes") -> LoadResult:
    """Read every file; bad files are logged by name with the reason and skipped."""
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
    return res


class PointCloudDataset(Dataset):
    """Normalised shapes resampled to ``n_points``: fresh random subsets each access when
    ``random`` (training augmentation, as PointFlow), a fixed subset per index otherwise."""

    def __init__(self, shapes: list[np.ndarray], labels: list[int], n_points: int, random: bool, seed: int = 0):
        if not shapes:
            raise ValueError("a PointCloudDataset needs at least one shape")
        self.shapes, self.labels = shapes, torch.as_tensor(labels, dtype=torch.long)
        self.n_points, self.random, self.seed = n_points, random, seed
        self.num_short = sum(len(s) < n_points for s in shapes)
        if self.num_short:
            log.info(
                "%d of %d shapes have fewer than %d points; sampled with replacement",
                self.num_short,
                len(shapes),
                n_points,
            )

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # random subsets draw their seed from torch's RNG, which Lightning seeds per worker
        seed = int(torch.randint(2**62, ())) if self.random else (self.seed, i)
        rng = np.random.default_rng(seed)
        pts, _ = resample(self.shapes[i], self.n_points, rng)
        return {
            "points": torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)),
            "label": self.labels[i],
        }
