"""How well molecules grown from a fragment keep it: the fragment found in each molecule's bond graph (RDKit
substructure match, bonds perceived from coordinates on both sides) and the coordinate RMSD of its atoms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem

from .bonds import bond_length_pm
from .export import annotate
from .structures import Molecule, to_rdkit


def bonded(mol: Molecule, orders: np.ndarray) -> Chem.Mol:
    """An unsanitised RDKit molecule with the given bond orders, ready for substructure matching."""
    rd = to_rdkit(mol, orders, with_conformer=False)
    rd.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(rd)
    return rd.GetMol()


#: how much longer than its tabulated single-bond length a bond of a given fragment may be (Angstrom)
BOND_SLACK = 0.4


def check_fragment_bonds(fragment: Molecule, where: str, bond_error: str | None = None) -> None:
    """A graph model keeps a fragment's bonds: they must be given (an SDF with a bond block), readable in Kekule
    form (``bond_error``: why they were not, from the reader) and agree with its coordinates (no bond longer than
    the single-bond length of its elements plus :data:`BOND_SLACK`)."""
    if bond_error is not None:
        raise ValueError(f"{where}: {bond_error}")
    if fragment.bonds is None:
        raise ValueError(f"{where}: a graph model grows from a fragment with bonds: give an SDF with its bond block")
    i, j = np.nonzero(np.triu(fragment.bonds, 1))
    for a, b in zip(i.tolist(), j.tolist()):
        ea, eb = fragment.elements[a], fragment.elements[b]
        length = float(np.linalg.norm(fragment.positions[a] - fragment.positions[b]))
        table = bond_length_pm(ea, eb, 1) / 100
        limit = (table if np.isfinite(table) else 2.0) + BOND_SLACK
        if length > limit:
            raise ValueError(
                f"{where}: bond {a + 1}-{b + 1} ({ea}-{eb}, order {int(fragment.bonds[a, b])}) is {length:.2f} A long, "
                f"beyond the {limit:.2f} A such a bond can have: the bonds contradict the coordinates"
            )


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
