"""QM9 (Ramakrishnan et al. 2014): 130,831 small organic molecules with DFT geometries and properties.

Read from the PyPI package ``qm9pack`` (CSV, column ``XYZ_Ang`` coordinates, ``Elements`` symbols),
parsed once and cached under the data root. Split as EDM/Cormorant: a permutation with seed 0 of the
molecules in index order, 100,000 train / 17,748 validation / 13,083 test.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Any

import numpy as np
from rdkit import Chem
from tqdm import tqdm

from .data import MoleculeDataModule
from .elements import QM9_ELEMENTS, check_elements
from .graphs import pack_bonds, qm9_bonds

HARTREE_TO_EV = 27.211386246

# name -> (qm9pack column, factor, unit); energies converted to eV as in EDM's QM9 pipeline
PROPERTIES: dict[str, tuple[str, float, str]] = {
    "A": ("RotA_GHz", 1.0, "GHz"),
    "B": ("RotB_GHz", 1.0, "GHz"),
    "C": ("RotC_GHz", 1.0, "GHz"),
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", HARTREE_TO_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_TO_EV, "eV"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", HARTREE_TO_EV, "eV"),
    "U0": ("InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    "U": ("InternalEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "H": ("Enthalphy_298K_au", HARTREE_TO_EV, "eV"),
    "G": ("GibbsFreeEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
}
NUM_TRAIN = 100_000
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SYMBOL = re.compile(r"[A-Z][a-z]?")


def parse_coordinates(text: str, n_atoms: int, where: str) -> np.ndarray:
    """``[[x,y,z],...]`` -> (n, 3). Tolerates numbers strict JSON rejects (``0.``, ``.5``, ``1E-6``)."""
    values = _NUMBER.findall(text)
    if len(values) != 3 * n_atoms:
        raise ValueError(f"{where}: expected {3 * n_atoms} coordinates, found {len(values)}")
    return np.array(values, dtype=np.float64).reshape(n_atoms, 3)


def formal_charges(smiles: str, elements: list[str]) -> np.ndarray:
    """Formal charges per atom. QM9 lists heavy atoms in SMILES order, hydrogens carry none."""
    charges = np.zeros(len(elements), np.int64)
    if "+" not in smiles and "-" not in smiles:
        return charges
    mol = Chem.MolFromSmiles(smiles)
    heavy = [k for k, e in enumerate(elements) if e != "H"]
    if mol is None or [a.GetSymbol() for a in mol.GetAtoms()] != [elements[k] for k in heavy]:
        return charges  # order cannot be matched: leave neutral rather than guess
    charges[heavy] = [a.GetFormalCharge() for a in mol.GetAtoms()]
    return charges


def _bulk_coordinates(texts: list[str], sizes: np.ndarray, names: list[str]) -> np.ndarray:
    """All molecules' coordinates in one float conversion; on a count mismatch, find the bad row."""
    flat = ",".join(texts).translate({ord("["): None, ord("]"): None, ord(" "): None})
    try:
        values = np.array(flat.split(","), dtype=np.float64)
    except ValueError:
        values = np.zeros(0)
    if len(values) == 3 * sizes.sum():
        return values.reshape(-1, 3)
    # slow path, only to name the offending row
    return np.concatenate([parse_coordinates(t, int(n), f"qm9pack {name}") for t, n, name in zip(texts, sizes, names)])


def edm_split(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Cormorant/EDM split: ``np.random.seed(0); permutation(n)``; 100k train, 10 % test, rest val."""
    perm = np.random.RandomState(seed).permutation(n)
    n_train, n_test = min(NUM_TRAIN, int(0.8 * n)), int(0.1 * n)
    n_val = n - n_train - n_test
    return {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}


def read_qm9(progress: bool = True) -> dict[str, Any]:
    """Parse every molecule of ``qm9pack`` into packed arrays (see :mod:`.data`)."""
    try:
        import qm9pack
    except ImportError as e:  # pragma: no cover - dependency of the molecule domain
        raise ImportError("QM9 needs the PyPI package `qm9pack` (pip install qm9pack)") from e
    df = qm9pack.get_data("qm9").sort_values("Index", kind="stable").reset_index(drop=True)
    symbols = df["Elements"].str.findall(_SYMBOL.pattern).tolist()
    sizes = np.array([len(s) for s in symbols], np.int64)
    pos = _bulk_coordinates(df["XYZ_Ang"].tolist(), sizes, df["XYZ_file"].tolist())
    flat = np.array(list(chain.from_iterable(symbols)))
    check_elements(np.unique(flat).tolist(), QM9_ELEMENTS, "qm9pack column Elements")
    types = np.searchsorted(np.array(QM9_ELEMENTS), flat, sorter=np.argsort(QM9_ELEMENTS))
    types = np.argsort(QM9_ELEMENTS)[types]
    charges, bonds = [], []
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = enumerate(zip(symbols, df["SMILES"]))
    for m, (elements, smiles) in tqdm(rows, total=len(df), desc="QM9: parsing", disable=not progress):
        charges.append(formal_charges(smiles, elements))
        bonds.append(qm9_bonds(smiles, elements, pos[ptr[m] : ptr[m + 1]], int(charges[-1].sum())))
    props = np.stack([df[col].to_numpy(np.float64) * f for col, f, _ in PROPERTIES.values()], 1)
    return {
        "elements": list(QM9_ELEMENTS),
        "pos": pos.astype(np.float32),
        "types": types.astype(np.int8),
        "charges": np.concatenate(charges).astype(np.int8),
        "ptr": ptr,
        **pack_bonds(bonds),
        "index": df["Index"].to_numpy(np.int64),
        "props": props,
        "prop_names": list(PROPERTIES),
        "splits": edm_split(len(df)),
    }


class QM9DataModule(MoleculeDataModule):
    """QM9 with explicit hydrogens; batches are PyG ``Batch`` objects (pos, atom_type, charge[, cond, y]).

    Config keys: ``root`` (cache folder), ``batch_size``, ``num_workers``, ``condition`` (None or a
    property name / list of names from :data:`PROPERTIES`), ``max_molecules`` (first N per split).
    """

    name = "qm9"
    property_names = tuple(PROPERTIES)

    def _build_arrays(self) -> dict[str, Any]:
        return read_qm9(self.progress)

    def property_units(self) -> dict[str, str]:
        return {k: unit for k, (_, _, unit) in PROPERTIES.items()}
