"""Molecular graphs of the data: bond orders per atom pair, from RDKit molecules or QM9's SMILES.

Bonds are kept in Kekulé form (single, double, triple): the graph model generates one order per atom pair
(0: no bond) and RDKit perceives aromaticity again when it sanitises the result.

Packed form (see :mod:`.data`): ``bonds`` ``(B, 3)`` int16 rows ``(i, j, order)`` with atom indices local to
their molecule, ``bond_ptr`` ``(M + 1,)`` offsets of each molecule's rows; ``has_graph`` ``(M,)`` bool, False
where no bond graph consistent with the coordinates was found (such molecules are left out of graph training).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds

#: bond classes a graph model predicts per atom pair: the index is the bond order
BOND_ORDERS = (0, 1, 2, 3)
_ORDER = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}


def rdkit_bonds(mol: Chem.Mol) -> np.ndarray:
    """``(B, 3)`` rows ``(i, j, order)``, i < j, of a molecule in Kekulé form; ValueError naming the bond when
    RDKit cannot kekulise it or a bond is not single, double or triple (dative, quadruple, ...)."""
    mol = Chem.Mol(mol)
    if any(b.GetIsAromatic() or b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds()):
        try:
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except Exception as e:  # KekulizeException
            raise ValueError(f"RDKit cannot kekulise its aromatic bonds ({e})") from e
    rows = []
    for b in mol.GetBonds():
        order = _ORDER.get(b.GetBondType())
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        if b.GetBondType() == Chem.BondType.AROMATIC:
            raise ValueError(f"RDKit cannot kekulise its aromatic bonds (bond {i + 1}-{j + 1} stays aromatic)")
        if order is None:
            raise ValueError(f"bond {i + 1}-{j + 1} is {b.GetBondType()}: only single, double and triple are modelled")
        rows.append((i, j, order))
    return np.array(rows, np.int16).reshape(-1, 3)


def qm9_bonds(smiles: str, elements: list[str], pos: np.ndarray, charge: int = 0) -> np.ndarray | None:
    """The bonds of a QM9 molecule: the heavy-atom graph of its SMILES (QM9 lists heavy atoms in SMILES order)
    with every hydrogen on its nearest heavy atom, accepted only if each heavy atom then carries as many
    hydrogens as the SMILES gives it; otherwise RDKit's bond perception from the coordinates (xyz2mol); None
    when neither gives a graph."""
    heavy = [k for k, e in enumerate(elements) if e != "H"]
    mol = Chem.MolFromSmiles(smiles)
    if mol is not None and [a.GetSymbol() for a in mol.GetAtoms()] == [elements[k] for k in heavy]:
        hydrogens = [k for k, e in enumerate(elements) if e == "H"]
        try:
            rows = [(heavy[i], heavy[j], o) for i, j, o in rdkit_bonds(mol).tolist()]
        except ValueError:
            rows = None
        if rows is not None and heavy:
            if hydrogens:
                d = np.linalg.norm(pos[hydrogens][:, None] - pos[heavy][None], axis=2)
                host = np.asarray(heavy)[d.argmin(1)]
            else:
                host = np.zeros(0, np.int64)
            wanted = [a.GetTotalNumHs() for a in mol.GetAtoms()]
            if np.array_equal(np.bincount(host, minlength=len(elements))[heavy], wanted):
                rows += [(min(h, int(a)), max(h, int(a)), 1) for h, a in zip(hydrogens, host)]
                return np.array(sorted(rows), np.int16).reshape(-1, 3)
    return perceived_bonds(elements, pos, charge)


def perceived_bonds(elements: list[str], pos: np.ndarray, charge: int = 0) -> np.ndarray | None:
    """RDKit's connectivity and bond-order perception from coordinates (``rdDetermineBonds``); None on failure."""
    rd = Chem.RWMol()
    for e in elements:
        rd.AddAtom(Chem.Atom(e))
    conf = Chem.Conformer(len(elements))
    conf.SetPositions(np.ascontiguousarray(pos, dtype=np.float64))
    rd.AddConformer(conf, assignId=True)
    try:
        rdDetermineBonds.DetermineBonds(rd, charge=int(charge))
        return rdkit_bonds(rd)
    except Exception:  # perception failures are reported as "no graph" by the caller
        return None


def order_matrix(rows: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` symmetric bond-order matrix from ``(i, j, order)`` rows."""
    m = np.zeros((n, n), np.int64)
    if len(rows):
        i, j, o = np.asarray(rows, np.int64).T
        m[i, j] = m[j, i] = o
    return m


def pack_bonds(per_molecule: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """``bonds``, ``bond_ptr`` and ``has_graph`` from one ``(B, 3)`` array (or None: no graph) per molecule."""
    has = np.array([b is not None for b in per_molecule], bool)
    rows = [np.zeros((0, 3), np.int16) if b is None else np.asarray(b, np.int16).reshape(-1, 3) for b in per_molecule]
    sizes = np.array([len(r) for r in rows], np.int64)
    return {
        "bonds": np.concatenate(rows) if rows else np.zeros((0, 3), np.int16),
        "bond_ptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "has_graph": has,
    }


def bond_order_frequencies(arrays: dict[str, np.ndarray], molecules: np.ndarray) -> list[float]:
    """How often each bond class (:data:`BOND_ORDERS`, 0: no bond) holds over all atom pairs of the given
    molecules that have a graph: the marginals a discrete process for bonds starts from."""
    chosen = np.asarray(molecules, dtype=np.int64)
    chosen = chosen[arrays["has_graph"][chosen]]
    ptr, bond_ptr = arrays["ptr"], arrays["bond_ptr"]
    atoms = (ptr[chosen + 1] - ptr[chosen]).astype(np.int64)
    pairs = int((atoms * (atoms - 1) // 2).sum())
    if pairs == 0:
        return [1.0] + [0.0] * (len(BOND_ORDERS) - 1)
    owner = np.repeat(np.arange(len(bond_ptr) - 1), np.diff(bond_ptr))  # molecule of each bond row
    selected = np.zeros(len(bond_ptr) - 1, dtype=bool)
    selected[chosen] = True
    counts = np.bincount(arrays["bonds"][selected[owner], 2].astype(np.int64), minlength=len(BOND_ORDERS))
    counts[0] = pairs - counts[1:].sum()
    return (counts / pairs).tolist()
