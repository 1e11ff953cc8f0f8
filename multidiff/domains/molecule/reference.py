"""What the molecule metrics compare samples against: training-set statistics and SMILES.

``reference_stats`` is stored in the processed cache (``arrays["stats"]``, reaching checkpoints through
``info()``); the training SMILES for novelty are built from that cache on first use and kept beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from multidiff.paths import replaced

from .arrays import load_arrays
from .bonds import BondTable
from .metrics import MoleculeAnalysis, atom_type_frequencies, histogram
from .structures import Molecule, sanitized_smiles, to_rdkit


def reference_stats(arrays: dict[str, Any], indices: np.ndarray) -> dict[str, Any]:
    """Atom-type frequencies and the bond-length histogram of the given molecules of packed ``arrays``."""
    elements, ptr = list(arrays["elements"]), arrays["ptr"]
    starts, stops = ptr[indices], ptr[indices + 1]
    selected = np.zeros(len(ptr) - 1, bool)
    selected[indices] = True
    counts = np.bincount(arrays["types"][np.repeat(selected, np.diff(ptr))], minlength=len(elements))
    positions = [arrays["pos"][a:b].astype(np.float64) for a, b in zip(starts, stops)]
    types = [arrays["types"][a:b] for a, b in zip(starts, stops)]
    lengths = BondTable(elements).bond_lengths(positions, types)
    return {
        "atom_types": {e: float(c / counts.sum()) for e, c in zip(elements, counts)},
        "bond_lengths": histogram(lengths),
    }


def reference_from_molecules(molecules: Sequence[Molecule], vocabulary: Sequence[str] | None = None) -> dict[str, Any]:
    """Reference statistics (SMILES, atom types, bond lengths) of a set of real molecules."""
    analysis = MoleculeAnalysis(molecules, vocabulary)
    return {
        "smiles": {s for s in analysis.smiles if s is not None},
        "atom_types": atom_type_frequencies(analysis.molecules),
        "bond_lengths": analysis.bond_length_histogram(),
    }


def molecules_from_arrays(arrays: dict[str, Any], indices: np.ndarray) -> list[Molecule]:
    """Molecule objects (positions, elements, formal charges) of packed ``arrays``."""
    ptr, elements = arrays["ptr"], list(arrays["elements"])
    out = []
    for m in indices:
        a, b = int(ptr[m]), int(ptr[m + 1])
        out.append(
            Molecule(
                arrays["pos"][a:b], [elements[t] for t in arrays["types"][a:b]], arrays["charges"][a:b], name=f"{m}"
            )
        )
    return out


def smiles_path(data_root: str | Path, dataset: str) -> Path:
    return Path(data_root) / f"{dataset}_train_smiles.txt"


def training_smiles(data_root: str | Path, dataset: str, progress: bool = True) -> set[str] | None:
    """EDM-style SMILES (bonds from distances, no charges) of the training split, for novelty.

    Computed once from the processed cache in ``data_root`` and stored next to it; None when
    neither exists (e.g. sampling on a machine without the dataset).
    """
    path = smiles_path(data_root, dataset)
    if path.exists():
        return set(path.read_text().split())
    caches = sorted(Path(data_root).glob(f"{dataset}_v*.pt"))
    if not caches:
        return None
    arrays = load_arrays(caches[-1])
    elements = list(arrays["elements"])
    molecules = molecules_from_arrays(arrays, arrays["splits"]["train"])
    table = BondTable(elements)
    smiles = set()
    chunk = 5000
    bar = tqdm(range(0, len(molecules), chunk), desc=f"{dataset}: training SMILES", disable=not progress)
    for start in bar:
        part = molecules[start : start + chunk]
        orders = table.batch_orders(
            [m.positions for m in part], [np.array([elements.index(e) for e in m.elements]) for m in part]
        )
        for m, o in zip(part, orders):
            smi = sanitized_smiles(to_rdkit(m, o, with_conformer=False))
            if smi is not None:
                smiles.add(smi)
    with replaced(path) as tmp:
        tmp.write_text("\n".join(sorted(smiles)) + "\n")
    return smiles
