"""A molecule as the domain hands it around, and its RDKit form built from inferred bonds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rdkit import Chem

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


@dataclass
class Molecule:
    """Atoms with 3D coordinates (Angstrom), element symbols and formal charges.

    ``properties`` carries per-molecule values such as the condition a sample was drawn with.
    """

    positions: np.ndarray
    elements: list[str]
    charges: np.ndarray | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if len(self.elements) != len(self.positions):
            raise ValueError(
                f"molecule {self.name!r}: {len(self.elements)} elements but {len(self.positions)} positions"
            )
        n = len(self.elements)
        self.charges = np.zeros(n, np.int64) if self.charges is None else np.asarray(self.charges, np.int64)

    def __len__(self) -> int:
        return len(self.elements)


def to_rdkit(
    mol: Molecule, orders: np.ndarray | None, with_charges: bool = False, with_conformer: bool = True
) -> Chem.RWMol:
    """An unsanitised RDKit molecule with bonds from an ``(n, n)`` order matrix (None: no bonds).

    EDM builds molecules without formal charges; ``with_charges`` sets them from ``mol.charges``.
    """
    rd = Chem.RWMol()
    for k, symbol in enumerate(mol.elements):
        atom = Chem.Atom(symbol)
        if with_charges:
            atom.SetFormalCharge(int(mol.charges[k]))
        rd.AddAtom(atom)
    if orders is not None:
        i, j = np.nonzero(np.triu(orders, 1))
        for a, b in zip(i.tolist(), j.tolist()):
            rd.AddBond(a, b, _BOND_TYPES[int(orders[a, b])])
    if with_conformer and len(mol):
        conf = Chem.Conformer(len(mol))
        conf.SetPositions(np.ascontiguousarray(mol.positions, dtype=np.float64))
        conf.Set3D(True)
        rd.AddConformer(conf, assignId=True)
    return rd


def sanitized_smiles(rd: Chem.Mol) -> str | None:
    """Canonical SMILES after sanitising in place, or None when RDKit rejects the molecule."""
    try:
        Chem.SanitizeMol(rd)
    except (ValueError, RuntimeError):  # MolSanitizeException (valence, kekulisation) is a ValueError
        return None
    return Chem.MolToSmiles(rd)


def largest_fragment(rd: Chem.Mol) -> Chem.Mol:
    """The fragment with the most atoms (EDM's validity uses it for SMILES)."""
    frags = Chem.GetMolFrags(rd, asMols=True, sanitizeFrags=False)
    return max(frags, default=rd, key=lambda m: m.GetNumAtoms())
