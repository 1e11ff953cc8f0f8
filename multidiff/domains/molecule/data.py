"""What the QM9 and drug-like data modules share: packed arrays -> PyG batches, splits, ``info()``.

A processed dataset is one dict of packed arrays (all atoms of all molecules concatenated):
``pos`` (A, 3) float32 Angstrom, ``types`` (A,) int8 indices into ``elements``, ``charges`` (A,)
int8 formal charges, ``ptr`` (M + 1,) atom offsets, ``props`` (M, P) float64 with ``prop_names``,
``splits`` {train, val, test} molecule indices, ``bonds``/``bond_ptr``/``has_graph`` the bond graphs
(:mod:`.graphs`), ``stats`` (training-set statistics the metrics compare
against, from :func:`.reference.reference_stats`).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from multidiff.distributed import per_device_batch
from multidiff.paths import exclusive, writable_dir

from .arrays import load_arrays, save_arrays
from .elements import reindex_types
from .graphs import bond_order_frequencies
from .reference import reference_stats

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class MoleculeSet(Dataset):
    """Molecules ``indices`` of packed ``arrays`` as PyG ``Data`` (pos, atom_type, charge, edge_index and
    bond_order (each bond once, i < j)[, cond, y])."""

    def __init__(
        self,
        arrays: dict[str, Any],
        indices: np.ndarray,
        cond: np.ndarray | None = None,
        cond_raw: np.ndarray | None = None,
    ):
        self.pos = torch.from_numpy(arrays["pos"].astype(np.float32))
        self.types = torch.from_numpy(arrays["types"].astype(np.int64))  # stored as int8
        self.charges = torch.from_numpy(arrays["charges"].astype(np.int64))
        self.ptr = arrays["ptr"]
        self.bonds = torch.from_numpy(arrays["bonds"].astype(np.int64))
        self.bond_ptr = arrays["bond_ptr"]
        self.indices = np.asarray(indices)
        self.cond = None if cond is None else torch.from_numpy(cond.astype(np.float32))
        self.cond_raw = None if cond_raw is None else torch.from_numpy(cond_raw.astype(np.float32))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Data:
        m = int(self.indices[i])
        a, b = int(self.ptr[m]), int(self.ptr[m + 1])
        bonds = self.bonds[int(self.bond_ptr[m]) : int(self.bond_ptr[m + 1])]
        data = Data(
            pos=self.pos[a:b],
            atom_type=self.types[a:b],
            charge=self.charges[a:b],
            edge_index=bonds[:, :2].T.contiguous(),  # PyG offsets it by each molecule's first atom in a batch
            bond_order=bonds[:, 2],
            num_nodes=b - a,
        )
        if self.cond is not None:
            data.cond = self.cond[m : m + 1]  # (1, P) so batches stack to (B, P)
            data.y = self.cond_raw[m : m + 1]
        return data


class MoleculeDataModule(pl.LightningDataModule):
    """Base: subclasses provide ``name`` and ``_build_arrays()``; caching, splits and loaders live here.

    ``condition``: None, a property name or a list of names (normalised to zero mean / unit std over
    the training split). ``max_molecules`` keeps the first N molecules of each split (fast tests).
    ``elements``: the one-hot vocabulary and its order (None: the dataset's own); it must cover every
    element of the data. Nets read it from the config (``${data.elements}``) to size their input.
    ``require_graph``: keep only molecules with a bond graph (graph models; the count left out is logged).
    """

    name = "molecules"
    cache_version = 2  # 2: bond graphs
    #: property names known before loading (checked at construction); None: only known from the data
    property_names: tuple[str, ...] | None = None

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 64,
        num_workers: int = 0,
        condition: str | list[str] | None = None,
        max_molecules: int | None = None,
        shuffle: bool = True,
        progress: bool = True,
        elements: list[str] | None = None,
        require_graph: bool = False,
    ):
        super().__init__()
        self.require_graph = require_graph
        self.elements = [str(e) for e in elements] if elements else None
        self.root = Path(root)
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle
        self.condition = [condition] if isinstance(condition, str) else (list(condition) if condition else [])
        if self.property_names is not None:
            self._check_condition(list(self.property_names))
        self.max_molecules = max_molecules
        self.progress = progress
        self.arrays: dict[str, Any] | None = None
        self.sets: dict[str, MoleculeSet] = {}

    # -- subclass hooks --------------------------------------------------------------------
    def _build_arrays(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- caching -----------------------------------------------------------------------------
    @cached_property
    def cache_path(self) -> Path:
        return writable_dir(self.root, self.name) / "processed" / f"{self.name}_v{self.cache_version}.pt"

    def prepare_data(self) -> None:
        path = self.cache_path
        if path.exists():
            return
        with exclusive(path):  # one process builds it; the others wait and then find it
            if not path.exists():
                arrays = self._build_arrays()
                arrays["stats"] = reference_stats(arrays, arrays["splits"]["train"])
                save_arrays(arrays, path)

    def load(self) -> dict[str, Any]:
        if self.arrays is None:
            self.prepare_data()
            self.arrays = self._remap(load_arrays(self.cache_path))
            self._check_condition(list(self.arrays["prop_names"]))
        return self.arrays

    def _remap(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """Re-index atom types to the configured vocabulary."""
        own = [str(e) for e in arrays["elements"]]
        if self.elements is None or self.elements == own:
            return arrays
        arrays["types"] = reindex_types(arrays["types"], own, self.elements, f"data.elements of {self.name}").astype(
            np.int8
        )
        arrays["elements"] = list(self.elements)
        return arrays

    def _check_condition(self, valid: list[str]) -> None:
        unknown = [c for c in self.condition if c not in valid]
        if unknown:
            raise ValueError(f"data.condition: unknown {self.name} property {unknown}; valid names: {valid}")

    # -- splits and loaders --------------------------------------------------------------------
    def split_indices(self, split: str) -> np.ndarray:
        idx = self.load()["splits"][split]
        if self.require_graph:
            has = self.load()["has_graph"][idx]
            if not has.all():
                log.info(
                    "%s %s: %d of %d molecules have no bond graph and are left out",
                    self.name,
                    split,
                    int((~has).sum()),
                    len(idx),
                )
            idx = idx[has]
        return idx[: self.max_molecules] if self.max_molecules else idx

    def _cond_columns(self) -> list[int]:
        names = list(self.load()["prop_names"])
        return [names.index(c) for c in self.condition]

    def property_norms(self) -> tuple[np.ndarray, np.ndarray]:
        props = self.load()["props"][self.load()["splits"]["train"]][:, self._cond_columns()]
        std = props.std(0)
        return props.mean(0), np.where(std > 0, std, 1.0)  # a constant property must not divide by 0

    def setup(self, stage: str | None = None) -> None:
        arrays = self.load()
        cond = raw = None
        if self.condition:
            mean, std = self.property_norms()
            raw = arrays["props"][:, self._cond_columns()]
            cond = (raw - mean) / std
        self.sets = {s: MoleculeSet(arrays, self.split_indices(s), cond, raw) for s in SPLITS}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.sets:
            self.setup()
        return DataLoader(
            self.sets[split],
            batch_size=per_device_batch(self.batch_size, self.trainer),
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    # -- info -------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """JSON-able description stored in checkpoints: vocabulary, node counts, condition norms."""
        arrays = self.load()
        ptr = arrays["ptr"]
        train = self.split_indices("train")  # the molecules actually trained on
        values, counts = np.unique(ptr[train + 1] - ptr[train], return_counts=True)
        charges = arrays["charges"]
        out: dict[str, Any] = {
            "dataset": self.name,
            "elements": [str(e) for e in arrays["elements"]],
            "charge_range": [int(charges.min()), int(charges.max())] if len(charges) else [0, 0],
            "node_counts": {"values": values.tolist(), "counts": counts.tolist()},
            "atom_types": arrays["stats"]["atom_types"],
            "bond_lengths": arrays["stats"]["bond_lengths"],
            "bond_orders": bond_order_frequencies(arrays, train),
            "data_root": str(self.cache_path.parent),
            "condition": None,
        }
        if self.condition:
            mean, std = self.property_norms()
            out["condition"] = {
                "names": self.condition,
                "mean": mean.tolist(),
                "std": std.tolist(),
                "units": [self.property_units().get(c, "") for c in self.condition],
            }
        return out

    def property_units(self) -> dict[str, str]:
        return {}

    def data_config(self) -> dict[str, Any]:
        """Config keys the data decides when the config leaves them null (``elements: null``: the data's own
        vocabulary, which ``${data.elements}`` passes to the network); train.py fills them in before building."""
        return {"elements": [str(e) for e in self.load()["elements"]]}
