"""The torch Dataset of fixed-size clouds and the LightningDataModules for ShapeNet (PointFlow PC15k layout),
ModelNet10/40 and generic folders (file layouts and loading: :mod:`.files`).

Batches are dicts ``{"points": (B, n_points, 3) float32, "label": (B,) long}``. ``info()``
(JSON-able) records the dataset, point count, classes and the normalisation so that sampling
and evaluation need no dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from multidiff.distributed import per_device_batch

from .files import (
    SHAPENET_SYNSETS,
    LoadResult,
    class_folders,
    folder_files,
    load_shapes,
    modelnet_files,
    shapenet_files,
    synset_id,
)
from .io import POINT_SUFFIXES, read_points
from .modelnet import download_modelnet, mesh_points
from .normalize import Normalizer, check_mode, resample

log = logging.getLogger(__name__)


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


class PointCloudDataModule(pl.LightningDataModule):
    """Shared logic: load splits, fit the normaliser on training shapes, build loaders.

    ``num_classes`` > 0 makes the shape class the condition; it must equal the number of classes
    the dataset defines. ``limit_shapes`` keeps a random subset (fixed by ``seed``) of each split
    for quick runs.
    """

    name = "pointcloud"

    def __init__(
        self,
        root: str | Path,
        n_points: int = 2048,
        normalize: str = "global",
        num_classes: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        train_split: str = "train",
        val_split: str = "test",
        limit_shapes: int | None = None,
        seed: int = 0,
        up_axis: str = "y",
    ):
        super().__init__()
        self.root = Path(root)
        self.n_points, self.normalize = int(n_points), check_mode(normalize)
        self.num_classes, self.batch_size, self.num_workers = (
            int(num_classes),
            int(batch_size),
            int(num_workers),
        )
        self.train_split, self.val_split = train_split, val_split
        self.limit_shapes, self.seed = limit_shapes, seed
        if up_axis not in ("x", "y", "z"):
            raise ValueError(f"up_axis must be x, y or z, got {up_axis!r}")
        self.up_axis = up_axis
        self.normalizer = Normalizer(normalize)
        self._loaded: dict[str, LoadResult] = {}
        self.datasets: dict[str, PointCloudDataset] = {}

    # -- to be provided by each layout ----------------------------------------------------------
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def split_items(self, split: str) -> list[tuple[Path, int]]:
        raise NotImplementedError

    def read(self, path: Path) -> np.ndarray:
        return read_points(path)

    # -- loading --------------------------------------------------------------------------------
    def _load(self, split: str) -> LoadResult:
        if split not in self._loaded:
            items = self.split_items(split)
            if self.limit_shapes:
                rng = np.random.default_rng(self.seed)  # a class-balanced-ish random subset, fixed by seed
                keep = np.sort(rng.permutation(len(items))[: int(self.limit_shapes)])
                items = [items[i] for i in keep]
            res = load_shapes(items, self.read, desc=f"{self.name} {split}")
            if not res.shapes:
                raise RuntimeError(
                    f"{self.name} split {split!r} under {self.root}: no usable shapes "
                    f"({len(res.skipped)} bad file(s) skipped)"
                )
            self._loaded[split] = res
        return self._loaded[split]

    def _check_classes(self) -> None:
        names = self.class_names()
        if self.num_classes and self.num_classes != len(names):
            raise ValueError(
                f"{self.name}: num_classes={self.num_classes} but the dataset defines "
                f"{len(names)} classes {names}; use 0 (unconditional) or {len(names)}"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._check_classes()
        train = self._load(self.train_split)
        self.normalizer.fit(train.shapes)
        for split, random in ((self.train_split, True), (self.val_split, False)):
            res = self._load(split)
            shapes = [self.normalizer(s) for s in res.shapes]
            self.datasets[split] = PointCloudDataset(shapes, res.labels, self.n_points, random, self.seed)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        ds = self.datasets[split]
        batch = per_device_batch(self.batch_size, self.trainer)
        return DataLoader(
            ds,
            batch_size=batch,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle and len(ds) >= batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, False)

    def info(self) -> dict[str, Any]:
        self.setup()
        return {
            "dataset": self.name,
            "root": str(self.root),
            "n_points": self.n_points,
            "num_classes": self.num_classes,
            "class_names": self.class_names(),
            "normalization": self.normalizer.to_dict(),
            "up_axis": self.up_axis,
            "num_shapes": {s: len(d) for s, d in self.datasets.items()},
            "skipped_files": {s: len(r.skipped) for s, r in self._loaded.items()},
            "resampled_with_replacement": {s: d.num_short for s, d in self.datasets.items()},
        }


class ShapeNetDataModule(PointCloudDataModule):
    """ShapeNetCore.v2.PC15k (PointFlow layout); ``categories`` are synset ids or names."""

    name = "shapenet"

    def __init__(self, root: str | Path, categories: list[str] | str = ("02691156",), **kwargs):
        super().__init__(root, **kwargs)
        cats = [categories] if isinstance(categories, str) else list(categories)
        if not cats:
            raise ValueError("ShapeNet: categories must name at least one synset id")
        self.categories = [synset_id(c) for c in cats]

    def class_names(self) -> list[str]:
        return [SHAPENET_SYNSETS.get(c, c) for c in self.categories]

    def split_items(self, split: str) -> list[tuple[Path, int]]:
        return shapenet_files(self.root, self.categories, split)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "categories": self.categories}


class ModelNetDataModule(PointCloudDataModule):
    """ModelNet10/40 as ``<root>/<class>/<split>/`` files.

    ``format``: ``pcd`` (e.g. the 1,024-point PCD copy), ``off`` (official meshes, sampled to
    ``surface_points`` and cached under ``<root>/.surface_<n>/``) or ``auto`` (whatever is
    there). ``download``: fetch the official meshes when ``root`` is absent.
    """

    def __init__(
        self,
        root: str | Path,
        version: int = 10,
        format: str = "auto",
        classes: list[str] | None = None,
        download: bool = False,
        surface_points: int = 4096,
        normalize: str = "unit_sphere",
        up_axis: str = "z",
        **kwargs,
    ):
        super().__init__(root, normalize=normalize, up_axis=up_axis, **kwargs)
        self.version, self.download, self.surface_points = int(version), download, int(surface_points)
        self.name = f"modelnet{self.version}"
        if format not in ("auto", "pcd", "off", "points"):
            raise ValueError(f"ModelNet format must be auto, pcd, off or points, got {format!r}")
        self.format, self._classes = format, list(classes) if classes else None

    def _ensure_root(self) -> None:
        if self.root.is_dir() and class_folders(self.root):
            return
        if not self.download:
            raise FileNotFoundError(
                f"ModelNet{self.version} not found at {self.root}; set data.download=true to "
                f"fetch the official meshes, or point data.root at a <class>/<split>/ tree"
            )
        download_modelnet(self.root, self.version)
        self.format = "off"

    def class_names(self) -> list[str]:
        self._ensure_root()
        found = class_folders(self.root)
        if self._classes:
            missing = sorted(set(self._classes) - set(found))
            if missing:
                raise ValueError(f"ModelNet classes {missing} not in {self.root} (found {found})")
            return list(self._classes)
        return found

    def _suffixes(self) -> tuple[str, ...]:
        if self.format == "off":
            return (".off",)
        if self.format == "pcd":
            return (".pcd",)
        if self.format == "points":
            return POINT_SUFFIXES
        return POINT_SUFFIXES + (".off",)

    def split_items(self, split: str) -> list[tuple[Path, int]]:
        items = modelnet_files(self.root, split, self.class_names(), self._suffixes())
        if not items:
            raise FileNotFoundError(f"no {'/'.join(self._suffixes())} files for split {split!r} under {self.root}")
        return items

    def read(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".off":
            return mesh_points(path, self.root / f".surface_{self.surface_points}", self.root, self.surface_points)
        return read_points(path)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "format": self.format}


class FolderDataModule(PointCloudDataModule):
    """Every point-cloud file under ``root`` (.npy/.npz, .pts/.xyz/.txt, .ply, .pcd).

    Without split folders the files are split at random: ``val_fraction`` of them (at least one)
    for validation. ``classes_from_subfolders`` labels shapes by their first-level subfolder.
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        val_fraction: float = 0.1,
        classes_from_subfolders: bool = False,
        normalize: str = "unit_sphere",
        **kwargs,
    ):
        kwargs.setdefault("train_split", "train")
        kwargs.setdefault("val_split", "val")
        super().__init__(root, normalize=normalize, **kwargs)
        self.val_fraction, self.classes_from_subfolders = float(val_fraction), classes_from_subfolders
        self._split: dict[str, list[tuple[Path, int]]] | None = None
        self._names: list[str] = []

    def _scan(self) -> dict[str, list[tuple[Path, int]]]:
        if self._split is None:
            items, self._names = folder_files(self.root, self.classes_from_subfolders)
            perm = np.random.default_rng(self.seed).permutation(len(items))
            n_val = max(1, round(self.val_fraction * len(items))) if len(items) > 1 else 0
            val = [items[i] for i in sorted(perm[:n_val])]
            train = [items[i] for i in sorted(perm[n_val:])]
            self._split = {self.train_split: train, self.val_split: val or train}
        return self._split

    def class_names(self) -> list[str]:
        self._scan()
        return self._names

    def split_items(self, split: str) -> list[tuple[Path, int]]:
        scan = self._scan()
        if split not in scan:
            raise ValueError(f"folder dataset splits are {list(scan)}, got {split!r}")
        return scan[split]
