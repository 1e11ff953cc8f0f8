"""RDKit molecules (or atoms and coordinates) -> the packed arrays of :mod:`.data`, one molecule at a time.

Shared by the data modules that read molecules from files (the user's SDF/XYZ files, GEOM-Drugs): they decide
what a record is and which to keep; :class:`Packer` only accumulates and packs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem

from .graphs import pack_bonds, rdkit_bonds

_TABLE = Chem.GetPeriodicTable()


def element_order(symbols: set[str] | Sequence[str]) -> list[str]:
    """A vocabulary in a fixed order: hydrogen first, then by atomic number (the order QM9 and EDM use)."""
    return sorted(set(symbols), key=lambda e: (e != "H", _TABLE.GetAtomicNumber(e)))


def mol_atoms(mol: Chem.Mol) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Symbols, ``(n, 3)`` coordinates of the first conformer and formal charges of an RDKit molecule."""
    atoms = mol.GetAtoms()
    return (
        [a.GetSymbol() for a in atoms],
        mol.GetConformer().GetPositions(),
        np.fromiter((a.GetFormalCharge() for a in atoms), np.int64, mol.GetNumAtoms()),
    )


def mol_bonds(mol: Chem.Mol) -> np.ndarray | None:
    """Kekulé bond rows of a molecule, None (no graph) when RDKit cannot kekulise it or a bond is not
    single/double/triple."""
    try:
        return rdkit_bonds(mol)
    except ValueError:
        return None


class Packer:
    """Accumulates molecules (symbols, coordinates, charges, bonds or None, property values) and packs them.

    ``elements``: the vocabulary (its order fixes the one-hot columns); None: the data's own, in
    :func:`element_order`.
    """

    def __init__(self, prop_names: Sequence[str] = (), elements: Sequence[str] | None = None):
        self.prop_names = list(prop_names)
        self.elements = list(elements) if elements is not None else None
        self.symbols: list[list[str]] = []
        self.pos: list[np.ndarray] = []
        self.charges: list[np.ndarray] = []
        self.bonds: list[np.ndarray | None] = []
        self.props: list[list[float]] = []
        self.names: list[str] = []

    def __len__(self) -> int:
        return len(self.pos)

    def add(
        self,
        symbols: list[str],
        pos: np.ndarray,
        charges: np.ndarray,
        bonds: np.ndarray | None,
        props: Sequence[float] = (),
        name: str = "",
    ) -> None:
        self.symbols.append(symbols)
        self.pos.append(np.asarray(pos, np.float32).reshape(-1, 3))
        self.charges.append(np.asarray(charges, np.int64))
        self.bonds.append(bonds)
        self.props.append([float(v) for v in props])
        self.names.append(name)

    def add_mol(self, mol: Chem.Mol, props: Sequence[float] = (), name: str = "") -> None:
        symbols, pos, charges = mol_atoms(mol)
        self.add(symbols, pos, charges, mol_bonds(mol), props, name)

    def pack(self, splits: dict[str, np.ndarray]) -> dict[str, Any]:
        elements = self.elements or element_order({e for s in self.symbols for e in s})
        index = {e: k for k, e in enumerate(elements)}
        flat = [e for s in self.symbols for e in s]
        n = len(self.pos)
        charges = np.concatenate(self.charges) if n else np.zeros(0, np.int64)
        if len(charges) and (charges.min() < -128 or charges.max() > 127):
            raise ValueError(f"formal charges {charges.min()}..{charges.max()} do not fit the cache's int8")
        return {
            "elements": list(elements),
            "pos": np.concatenate(self.pos) if n else np.zeros((0, 3), np.float32),
            "types": np.fromiter((index[e] for e in flat), np.int8, len(flat)),
            "charges": charges.astype(np.int8),
            "ptr": np.concatenate([[0], np.cumsum([len(p) for p in self.pos])]).astype(np.int64),
            **pack_bonds(self.bonds),
            "props": np.asarray(self.props, np.float64).reshape(n, len(self.prop_names)),
            "prop_names": list(self.prop_names),
            "names": list(self.names),
            "splits": {k: np.asarray(v, np.int64) for k, v in splits.items()},
        }


def random_splits(n: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """``train``/``val``/``test`` molecule indices: a seeded permutation cut by ``fractions`` (summing to 1)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split={list(fractions)}: give three fractions (train, val, test) >= 0 summing to 1")
    perm = np.random.RandomState(seed).permutation(n)
    n_val, n_test = int(round(fractions[1] * n)), int(round(fractions[2] * n))
    return {"train": perm[n_val + n_test :], "val": perm[:n_val], "test": perm[n_val : n_val + n_test]}
