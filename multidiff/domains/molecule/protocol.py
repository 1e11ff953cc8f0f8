"""The corrected evaluation protocol of Nikitin et al. 2025 ("GEOM-Drugs Revisited"), beside EDM's.

* Stability: an atom is stable when its (number of aromatic bonds, sum of the other bond orders, hydrogens
  included) is allowed for its element *and formal charge* in :data:`CORRECTED_VALENCES`, the table the paper
  derived from GEOM-Drugs (isayevlab/geom-drugs-3dgen-evaluation, ``geom_drugs_h_tuple_valencies``); an
  element or charge missing from it is unstable. Aromatic bonds are counted apart (not as 1.5 summed, nor
  truncated to 1 as the widely copied MiDi code does). Molecules here carry Kekulé bonds, so the (0, v) entries
  apply, exactly as the paper's code on Kekulé files.
* Validity and connectivity: RDKit sanitises the whole molecule with its formal charges, and it is one
  fragment (EDM's validity sanitises the largest fragment only).
* Geometry: the median GFN2-xTB relaxation energy (:mod:`.xtb`) of valid, connected molecules (the paper uses
  5 x 1,000 molecules; ``xtb_max_molecules`` sets how many here), and PoseBusters' checks for generated
  molecules (``config="mol"``): the rate of each and of all (``pb_valid``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger
from tqdm import tqdm

from .metrics import NO_MOLECULE, MoleculeAnalysis, fraction
from .structures import to_rdkit
from .xtb import relaxation_energy

#: element -> formal charge -> allowed (aromatic bonds, sum of the other bond orders)
CORRECTED_VALENCES: dict[str, dict[int, tuple[tuple[int, int], ...]]] = {
    "H": {0: ((0, 1),)},
    "B": {-1: ((0, 4),), 0: ((0, 3),)},
    "C": {0: ((0, 4), (2, 2), (2, 1), (3, 0)), -1: ((0, 3), (2, 1), (3, 0)), 1: ((0, 3), (2, 1), (3, 0))},
    "N": {
        0: ((0, 3), (2, 0), (2, 1), (3, 0)), 1: ((0, 4), (2, 0), (2, 1), (2, 2), (3, 0)),
        -1: ((0, 2), (2, 0)), -2: ((0, 1),),
    },
    "O": {0: ((0, 2), (2, 0)), -1: ((0, 1),), 1: ((0, 3),)},
    "F": {0: ((0, 1),)},
    "Si": {0: ((0, 4),), 1: ((0, 5),)},
    "P": {0: ((0, 3), (0, 5)), 1: ((0, 4),)},
    "S": {
        0: ((0, 2), (0, 3), (0, 6), (2, 0)), 1: ((0, 3), (2, 0), (2, 1), (3, 0)), 2: ((0, 4), (2, 1), (2, 2)),
        3: ((0, 2), (0, 5)), -1: ((0, 1),),
    },
    "Cl": {0: ((0, 1),), 1: ((0, 2),)},
    "Br": {0: ((0, 1),), 1: ((0, 2),)},
    "I": {0: ((0, 1),), 1: ((0, 2),), 2: ((0, 3),)},
    "Bi": {0: ((0, 3),), 2: ((0, 5),)},
}  # fmt: skip

PROTOCOLS = ("edm", "corrected")


def corrected_atom_stability(
    elements: Sequence[str], charges: np.ndarray, orders: np.ndarray, aromatic: np.ndarray | None = None
) -> np.ndarray:
    """Per-atom bool under :data:`CORRECTED_VALENCES`. ``orders``: ``(n, n)`` bond orders of the non-aromatic
    bonds; ``aromatic``: ``(n, n)`` bool of aromatic bonds (None: a Kekulé molecule, none)."""
    n_aromatic = np.zeros(len(elements), np.int64) if aromatic is None else aromatic.sum(1).astype(np.int64)
    plain = orders if aromatic is None else np.where(aromatic, 0, orders)
    valence = plain.sum(1).astype(np.int64)
    stable = np.zeros(len(elements), bool)
    for k, (e, q) in enumerate(zip(elements, np.asarray(charges).tolist())):
        stable[k] = (int(n_aromatic[k]), int(valence[k])) in CORRECTED_VALENCES.get(e, {}).get(int(q), ())
    return stable


def corrected_metrics(
    analysis: MoleculeAnalysis,
    xtb_max_molecules: int = 100,
    posebusters_max_molecules: int = 100,
    progress: bool = True,
    reasons: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The protocol's numbers for analysed molecules (their bonds as ``analysis`` holds them: a graph model's
    own, or perceived from distances), with the formal charges written in the file."""
    reasons = {} if reasons is None else reasons
    stable = [corrected_atom_stability(m.elements, m.charges, o) for m, o in zip(analysis.molecules, analysis.orders)]
    connected = []
    for m, o in zip(analysis.molecules, analysis.orders):
        rd = to_rdkit(m, o, with_charges=True)
        try:
            Chem.SanitizeMol(rd)
            ok = len(Chem.GetMolFrags(rd)) == 1
        except (ValueError, RuntimeError):  # valence and kekulisation errors
            ok = False
        connected.append(rd if ok else None)
    atoms, molecules = sum(int(s.sum()) for s in stable), sum(bool(s.all()) for s in stable)
    n, n_atoms, n_connected = len(stable), sum(len(s) for s in stable), sum(r is not None for r in connected)
    out: dict[str, Any] = {
        "corrected_atom_stable": fraction(atoms, n_atoms, "corrected_atom_stable", "no atom", reasons),
        "corrected_mol_stable": fraction(molecules, n, "corrected_mol_stable", NO_MOLECULE, reasons),
        "corrected_valid_connected": fraction(n_connected, n, "corrected_valid_connected", NO_MOLECULE, reasons),
    }
    valid = [r for r in connected if r is not None]
    out.update(_xtb(valid[:xtb_max_molecules], progress, reasons))
    out.update(posebusters_rates(valid[:posebusters_max_molecules], reasons))
    return out


def _xtb(molecules: list[Chem.Mol], progress: bool, reasons: dict[str, str]) -> dict[str, Any]:
    energies = []
    for mol in tqdm(molecules, desc="GFN2-xTB relaxation", unit=" mol", disable=not progress or not molecules):
        e = relaxation_energy(mol)
        if e is not None:
            energies.append(e)
    if not energies:
        why = "no valid, connected molecule" if not molecules else "no xTB optimisation converged"
        reasons["xtb_relaxation_median"] = reasons["xtb_relaxation_mean"] = why
    return {
        "xtb_relaxation_median": float(np.median(energies)) if energies else None,
        "xtb_relaxation_mean": float(np.mean(energies)) if energies else None,
        "xtb_count": len(energies),
    }


def posebusters_rates(molecules: list[Chem.Mol], reasons: dict[str, str]) -> dict[str, Any]:
    """PoseBusters' generated-molecule checks (``config="mol"``): the pass rate of each check and of all of
    them (``pb_valid``) over the given sanitised molecules."""
    if not molecules:
        reasons["pb_valid"] = "no valid, connected molecule"
        return {"pb_valid": None, "pb_checks": {}, "pb_count": 0}
    from posebusters import PoseBusters  # pandas-heavy: loaded only for this protocol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-molecule RDKit/pandas chatter
        table = PoseBusters(config="mol").bust([Chem.Mol(m) for m in molecules], None, None)
    RDLogger.DisableLog("rdApp.*")  # PoseBusters turns RDKit's log back on; samples' sanitisation errors are counted
    checks = table.select_dtypes(include="bool")
    return {
        "pb_valid": float(checks.all(axis=1).mean()),
        "pb_checks": {str(c): float(checks[c].mean()) for c in checks.columns},
        "pb_count": len(checks),
    }
