"""How well molecules grown from a fragment keep it: the fragment found in each molecule's bond graph (RDKit
substructure match, bonds perceived from coordinates on both sides) and the coordinate RMSD of its atoms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem

from .export import annotate
from .structures import Molecule, to_rdkit


def bonded(mol: Molecule, orders: np.ndarray) -> Chem.Mol:
    """An unsanitised RDKit molecule with the given bond orders, ready for substructure matching."""
    rd = to_rdkit(mol, orders, with_conformer=False)
    rd.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(rd)
    return rd.GetMol()


def given_atoms(mol: Molecule, size: int) -> list[int]:
    """0-based indices of the atoms a molecule was given: its ``given_atoms`` property (1-based numbers, as
    sample.py writes them), else its first ``size`` atoms."""
    listed = str(mol.properties.get("given_atoms", "")).split()
    return [int(float(v)) - 1 for v in listed] if listed else list(range(size))


def fragment_metrics(molecules: Sequence[Molecule], fragment: Molecule) -> dict[str, float | None]:
    """``fragment_retention``: the fraction of molecules whose bond graph contains the fragment's (elements and
    bond orders); ``fragment_rmsd``: the RMSD (Angstrom) between each molecule's given atoms and the fragment's
    coordinates, in the file's frame (0 up to the file's precision when they were kept); ``fragment_elements_kept``:
    the fraction of molecules whose given atoms carry the fragment's elements in order."""
    if not molecules:
        return {"fragment_retention": None, "fragment_rmsd": None, "fragment_elements_kept": None}
    annotated = annotate([fragment, *molecules])
    query = bonded(fragment, annotated[0][0])
    found, squared, same = 0, [], 0
    k = len(fragment)
    for mol, (orders, _) in zip(molecules, annotated[1:]):
        found += bonded(mol, orders).HasSubstructMatch(query)
        idx = given_atoms(mol, k)
        if len(idx) == k and max(idx) < len(mol):
            squared.append(((mol.positions[idx] - fragment.positions) ** 2).sum(1).mean())
            same += [mol.elements[i] for i in idx] == list(fragment.elements)
    return {
        "fragment_retention": found / len(molecules),
        "fragment_rmsd": float(np.sqrt(np.mean(squared))) if squared else None,
        "fragment_elements_kept": same / len(molecules),
    }
