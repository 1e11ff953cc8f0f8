"""Molecule metrics as published by EDM (Hoogeboom et al. 2022; qm9/analyze.py, qm9/rdkit_functions.py).

* atom stability: the bond-order sum of an atom (bonds from distances, :mod:`.bonds`) is one of its
  allowed valences (H 1, C 4, N 3, O 2, F 1, ...); molecule stability: all atoms stable. As EDM, the
  headline numbers ignore formal charges; ``*_charged`` variants shift the valence by the charge.
* validity: RDKit sanitises the molecule built from those bonds (no charges, as EDM); uniqueness over
  the canonical SMILES of the largest fragment of valid molecules; novelty: unique SMILES absent from
  the training SMILES built the same way.
* distribution distances to the training data: total variation of atom-type frequencies and the
  1-Wasserstein distance (Angstrom) between bond-length histograms.
* MMFF strain: energy at the given pose minus energy after MMFF relaxation (kcal/mol), valid molecules.

Graph models generate the bonds and charges themselves: with ``bonds="file"`` every metric reads each
molecule's own bonds instead of perceiving them, and validity sanitises the molecule with its formal charges
(the graph the model produced). ``validity`` counts a molecule whose largest fragment is valid (EDM);
``validity_connected`` requires it to be one fragment.

A metric that is undefined on the given molecules (a rate over zero molecules, a distance to an empty
histogram) is None, never NaN; :func:`evaluate_molecules` says why under ``null_reasons``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem
from scipy.stats import wasserstein_distance

from .bonds import BondTable
from .elements import ALLOWED_VALENCES, ELECTRON_RICH
from .structures import Molecule, largest_fragment, sanitized_smiles, to_rdkit

BOND_LENGTH_RANGE = (0.0, 3.0)  # Angstrom; the longest tabulated bond (I-I) is 2.69 + margin
BOND_LENGTH_BINS = 300

NO_MOLECULE = "no molecule"
NO_VALID = "no valid molecule"

RDLogger.DisableLog("rdApp.*")  # sanitisation failures are expected for samples; counted, not printed


def fraction(count: int, total: int, key: str, reason: str, reasons: dict[str, str]) -> float | None:
    """``count / total``, or None with ``reasons[key] = reason`` when there is nothing to count."""
    if total == 0:
        reasons[key] = reason
        return None
    return count / total


def vocabulary_of(molecules: Iterable[Molecule]) -> list[str]:
    return sorted({e for m in molecules for e in m.elements})


@lru_cache(maxsize=16)
def _valence_table(vocabulary: tuple[str, ...], max_valence: int = 16) -> np.ndarray:
    table = np.zeros((len(vocabulary), max_valence + 1), bool)
    for k, e in enumerate(vocabulary):
        table[k, list(ALLOWED_VALENCES.get(e, ()))] = True
    return table


def atom_stability(
    types: np.ndarray, orders: np.ndarray, vocabulary: Sequence[str], charges: np.ndarray | None = None
) -> np.ndarray:
    """Per-atom bool: bond-order sum is an allowed valence (shifted by formal charge when given)."""
    valence = orders.sum(1).astype(np.int64)
    if charges is not None and np.any(charges):
        rich = np.array([e in ELECTRON_RICH for e in vocabulary], bool)[types]
        valence = valence - np.where(rich, charges, -np.abs(charges))
    table = _valence_table(tuple(vocabulary))
    ok = (valence >= 0) & (valence < table.shape[1])
    return ok & table[types, np.clip(valence, 0, table.shape[1] - 1)]


def bond_lengths(mol: Molecule, orders: np.ndarray) -> np.ndarray:
    i, j = np.nonzero(np.triu(orders, 1))
    return np.linalg.norm(mol.positions[i] - mol.positions[j], axis=1)


def histogram(
    values: np.ndarray, bins: int = BOND_LENGTH_BINS, value_range: tuple[float, float] = BOND_LENGTH_RANGE
) -> dict[str, Any]:
    counts, _ = np.histogram(values, bins=bins, range=value_range)
    return {"range": list(value_range), "counts": counts.tolist()}


def histogram_w1(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """1-Wasserstein distance between two histograms over the same bins (in the value's unit); None when
    either is empty."""
    lo, hi = a["range"]
    ca, cb = np.asarray(a["counts"], float), np.asarray(b["counts"], float)
    if ca.sum() == 0 or cb.sum() == 0:
        return None
    centres = lo + (np.arange(len(ca)) + 0.5) * (hi - lo) / len(ca)
    return float(wasserstein_distance(centres, centres, ca, cb))


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys))


def atom_type_frequencies(molecules: Sequence[Molecule]) -> dict[str, float]:
    symbols, counts = np.unique([e for m in molecules for e in m.elements], return_counts=True)
    total = max(int(counts.sum()), 1)
    return {str(s): int(c) / total for s, c in zip(symbols, counts)}


def mmff_strain(rd: Chem.Mol, max_iters: int = 2000) -> float | None:
    """Pose energy minus MMFF-relaxed energy (kcal/mol) of a sanitised molecule; None without MMFF params
    or when an energy is not finite (e.g. atoms on top of each other)."""
    props = AllChem.MMFFGetMoleculeProperties(rd)
    if props is None:
        return None
    ff = AllChem.MMFFGetMoleculeForceField(rd, props)
    if ff is None:
        return None
    e_pose = ff.CalcEnergy()
    ff.Minimize(maxIts=max_iters)
    strain = float(e_pose - ff.CalcEnergy())
    return strain if np.isfinite(strain) else None


BOND_SOURCES = ("perceived", "file")


class MoleculeAnalysis:
    """Bonds, stability and RDKit results for a list of molecules, computed once and reused. ``bonds``:
    ``perceived`` from distances (EDM), or each molecule's own (``file``: a graph model's, or a data file's)."""

    def __init__(
        self, molecules: Sequence[Molecule], vocabulary: Sequence[str] | None = None, bonds: str = "perceived"
    ):
        if bonds not in BOND_SOURCES:
            raise ValueError(f"bonds={bonds!r}; valid: {', '.join(BOND_SOURCES)}")
        self.molecules = list(molecules)
        self.vocabulary = list(vocabulary) if vocabulary is not None else vocabulary_of(self.molecules)
        index = {e: k for k, e in enumerate(self.vocabulary)}
        self.types = [np.array([index[e] for e in m.elements], np.int64) for m in self.molecules]
        self.own_bonds = bonds == "file"
        if self.own_bonds:
            missing = [m.name or str(k) for k, m in enumerate(self.molecules) if m.bonds is None]
            if missing:
                raise ValueError(f"bonds=file: molecule(s) {missing[:5]} have no bonds (an XYZ file, or no bond block)")
            self.orders = [m.bonds for m in self.molecules]
        else:
            self.orders = BondTable(self.vocabulary).batch_orders([m.positions for m in self.molecules], self.types)
        self.stable_atoms = [atom_stability(t, o, self.vocabulary) for t, o in zip(self.types, self.orders)]
        self.stable_atoms_charged = [
            atom_stability(t, o, self.vocabulary, m.charges) for t, o, m in zip(self.types, self.orders, self.molecules)
        ]
        self.rdkit: list[Chem.Mol | None] = []  # sanitised molecule (no charges) when valid
        self.smiles: list[str | None] = []  # full-molecule SMILES (the form training SMILES use)
        self.fragment_smiles: list[str | None] = []  # largest fragment (the form uniqueness uses)
        self.connected: list[bool] = []  # valid and one fragment
        self.valid_charged = []
        for m, o in zip(self.molecules, self.orders):
            rd = to_rdkit(m, o, with_charges=self.own_bonds)
            smi = sanitized_smiles(rd)
            self.rdkit.append(rd if smi is not None else None)
            self.smiles.append(smi)
            self.fragment_smiles.append(None if smi is None else Chem.MolToSmiles(largest_fragment(rd)))
            self.connected.append(smi is not None and len(Chem.GetMolFrags(rd)) == 1)
            charged = np.any(m.charges != 0)
            self.valid_charged.append(
                smi is not None if not charged else sanitized_smiles(to_rdkit(m, o, with_charges=True)) is not None
            )

    @property
    def valid(self) -> np.ndarray:
        return np.array([s is not None for s in self.smiles], bool)

    def stability(self, reasons: dict[str, str] | None = None) -> dict[str, float | None]:
        """Atom and molecule stability, as EDM and charge-aware; None (reason in ``reasons``) without atoms."""
        reasons = {} if reasons is None else reasons
        n_atoms = sum(len(s) for s in self.stable_atoms)
        out: dict[str, float | None] = {}
        for suffix, stable in (("", self.stable_atoms), ("_charged", self.stable_atoms_charged)):
            atoms, molecules = sum(int(s.sum()) for s in stable), sum(bool(s.all()) for s in stable)
            out[f"atom_stable{suffix}"] = fraction(atoms, n_atoms, f"atom_stable{suffix}", "no atom", reasons)
            out[f"mol_stable{suffix}"] = fraction(molecules, len(stable), f"mol_stable{suffix}", NO_MOLECULE, reasons)
        return out

    def rdkit_metrics(
        self, reference_smiles: set[str] | None = None, reasons: dict[str, str] | None = None
    ) -> dict[str, float | None]:
        """Validity, uniqueness and novelty; None (reason in ``reasons``) where there is nothing to count."""
        reasons = {} if reasons is None else reasons
        n = len(self.molecules)
        valid = [s for s in self.fragment_smiles if s is not None]
        unique = set(valid)
        out: dict[str, float | None] = {
            "validity": fraction(len(valid), n, "validity", NO_MOLECULE, reasons),
            "validity_charged": fraction(sum(self.valid_charged), n, "validity_charged", NO_MOLECULE, reasons),
            "validity_connected": fraction(sum(self.connected), n, "validity_connected", NO_MOLECULE, reasons),
            "uniqueness": fraction(len(unique), len(valid), "uniqueness", NO_VALID, reasons),
            "valid_unique": fraction(len(unique), n, "valid_unique", NO_MOLECULE, reasons),
        }
        if reference_smiles is None:
            out["novelty"] = None
            reasons["novelty"] = "no reference SMILES"
        else:
            out["novelty"] = fraction(len(unique - reference_smiles), len(unique), "novelty", NO_VALID, reasons)
        return out

    def bond_length_histogram(self) -> dict[str, Any]:
        lengths = [bond_lengths(m, o) for m, o in zip(self.molecules, self.orders)]
        return histogram(np.concatenate(lengths) if lengths else np.zeros(0))

    def strain(
        self, max_molecules: int = 1000, max_iters: int = 2000, reasons: dict[str, str] | None = None
    ) -> dict[str, float | None]:
        """MMFF strain of up to ``max_molecules`` valid molecules; None (reason in ``reasons``) when none has one."""
        reasons = {} if reasons is None else reasons
        valid = [r for r in self.rdkit if r is not None]
        strains = [s for rd in valid[:max_molecules] if (s := mmff_strain(Chem.Mol(rd), max_iters)) is not None]
        if not strains:
            if not valid:
                why = NO_VALID
            elif max_molecules <= 0:
                why = f"strain_max_molecules={max_molecules}"
            else:
                why = "no valid molecule has a finite MMFF energy (missing parameters or overlapping atoms)"
            reasons["mmff_strain_mean"] = reasons["mmff_strain_median"] = why
        return {
            "mmff_strain_mean": float(np.mean(strains)) if strains else None,
            "mmff_strain_median": float(np.median(strains)) if strains else None,
            "mmff_strain_count": len(strains),
        }


def evaluate_molecules(
    molecules: Sequence[Molecule],
    vocabulary: Sequence[str] | None = None,
    reference: dict[str, Any] | None = None,
    strain: bool = True,
    strain_max_molecules: int = 1000,
    bonds: str = "perceived",
) -> dict[str, Any]:
    """All metrics as a JSON-able dict. ``reference`` may hold training ``smiles`` (a set),
    ``atom_types`` (frequencies) and ``bond_lengths`` (a :func:`histogram` dict); ``bonds``: see
    :class:`MoleculeAnalysis`.

    Undefined metrics are None, their key -> reason under ``null_reasons`` (present only when one is None).
    """
    analysis = MoleculeAnalysis(molecules, vocabulary, bonds)
    return analysis_metrics(analysis, reference, strain, strain_max_molecules)


def analysis_metrics(
    analysis: MoleculeAnalysis,
    reference: dict[str, Any] | None = None,
    strain: bool = True,
    strain_max_molecules: int = 1000,
) -> dict[str, Any]:
    """:func:`evaluate_molecules` on molecules already analysed."""
    reference = reference or {}
    reasons: dict[str, str] = {}
    bonds = "file" if analysis.own_bonds else "perceived"
    out: dict[str, Any] = {"num_molecules": len(analysis.molecules), "bonds": bonds}
    out.update(analysis.stability(reasons))
    out.update(analysis.rdkit_metrics(reference.get("smiles"), reasons))
    out["atom_type_tv"] = _atom_type_tv(analysis, reference.get("atom_types"), reasons)
    out["bond_length_w1"] = _bond_length_w1(analysis, reference.get("bond_lengths"), reasons)
    if strain:
        out.update(analysis.strain(strain_max_molecules, reasons=reasons))
    if reasons:
        out["null_reasons"] = reasons
    return out


def _atom_type_tv(
    analysis: MoleculeAnalysis, reference: dict[str, float] | None, reasons: dict[str, str]
) -> float | None:
    frequencies = atom_type_frequencies(analysis.molecules)
    if not reference or not frequencies:
        reasons["atom_type_tv"] = "no reference atom types" if not reference else "no atom in the samples"
        return None
    return total_variation(frequencies, reference)


def _bond_length_w1(
    analysis: MoleculeAnalysis, reference: dict[str, Any] | None, reasons: dict[str, str]
) -> float | None:
    if not reference:
        reasons["bond_length_w1"] = "no reference bond lengths"
        return None
    w1 = histogram_w1(analysis.bond_length_histogram(), reference)
    if w1 is None:
        empty = sum(reference["counts"]) == 0
        reasons["bond_length_w1"] = "the reference has no bond" if empty else "no bond in the samples"
    return w1
