"""Molecule metrics: bond orders, stability, validity on real QM9 molecules, distribution distances."""

from __future__ import annotations

import numpy as np
import pytest

from multidiff.domains.molecule.bonds import BondTable
from multidiff.domains.molecule.metrics import MoleculeAnalysis, evaluate_molecules
from multidiff.domains.molecule.reference import molecules_from_arrays
from multidiff.domains.molecule.structures import Molecule

QM9 = ["H", "C", "N", "O", "F"]


def _molecules(arrays, indices) -> list[Molecule]:
    return molecules_from_arrays(arrays, indices)


def test_bond_orders_follow_edm_thresholds():
    table = BondTable(["C", "H"])
    for d, order in [(1.18, 3), (1.30, 2), (1.50, 1), (1.66, 0)]:
        pos = np.array([[0, 0, 0], [d, 0, 0]], float)
        assert table.molecule_orders(pos, np.array([0, 0]))[0, 1] == order, d
    # C-H has no double bond in the tables: any distance under 1.19 A is a single bond
    assert table.molecule_orders(np.array([[0, 0, 0], [0.9, 0, 0]]), np.array([0, 1]))[0, 1] == 1


def test_ammonium_is_unstable_for_edm_but_stable_with_its_charge():
    pos = np.array([[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [-0.6, 0.6, -0.6], [0.6, -0.6, -0.6]])
    mol = Molecule(pos, ["N", "H", "H", "H", "H"], np.array([1, 0, 0, 0, 0]))
    s = MoleculeAnalysis([mol], QM9).stability()
    assert s["mol_stable"] == 0.0 and s["mol_stable_charged"] == 1.0


def test_real_qm9_reproduces_published_data_row(qm9_module):
    """EDM Table 1, "Data": molecule stability 95.2 %, validity 97.7 %; atom stability by the published
    definition over all 130,831 molecules: 99.4 %.

    The test split is a uniformly random subset, so on n = 4,000 molecules the binomial standard
    error is 0.34 points for molecule stability and 0.24 for validity: tolerances of 1.0 and 0.75
    points are ~3 standard errors. Unstable atoms are ~0.6 % of ~72k atoms (SE < 0.05 points), so
    0.3 points also leaves room for the rounding of the published figure.
    """
    arrays = qm9_module.load()
    test = _molecules(arrays, arrays["splits"]["test"][:4000])
    analysis = MoleculeAnalysis(test, QM9)
    stab, rd = analysis.stability(), analysis.rdkit_metrics()
    assert stab["mol_stable"] == pytest.approx(0.952, abs=0.010)
    assert stab["atom_stable"] == pytest.approx(0.994, abs=0.003)
    assert rd["validity"] == pytest.approx(0.977, abs=0.0075)
    assert rd["uniqueness"] > 0.99


def test_distribution_distances_and_novelty(qm9_module):
    arrays = qm9_module.load()
    test = _molecules(arrays, arrays["splits"]["test"][:500])
    reference = {**arrays["stats"], "smiles": set()}
    real = evaluate_molecules(test, QM9, reference, strain=False)
    assert real["atom_type_tv"] < 0.02 and real["bond_length_w1"] < 0.01
    assert real["novelty"] == 1.0  # nothing is in an empty reference

    rng = np.random.default_rng(0)
    noisy = [Molecule(m.positions + rng.normal(0, 0.15, m.positions.shape), m.elements) for m in test]
    distorted = evaluate_molecules(noisy, QM9, reference, strain=False)
    assert distorted["bond_length_w1"] > 3 * real["bond_length_w1"]
    assert distorted["mol_stable"] < real["mol_stable"] - 0.2

    known = MoleculeAnalysis(test[:100], QM9)
    half = {s for s in known.smiles[:50] if s is not None}
    again = evaluate_molecules(test[:100], QM9, {"smiles": half}, strain=False)
    assert again["novelty"] < 0.6  # the first 50 are known


def test_mmff_strain_is_zero_at_a_minimum_and_grows_with_distortion(qm9_module):
    from rdkit.Chem import AllChem

    arrays = qm9_module.load()
    mols = _molecules(arrays, arrays["splits"]["test"][:20])
    analysis = MoleculeAnalysis(mols, QM9)
    relaxed = []
    for m, rd in zip(mols, analysis.rdkit):
        if rd is None:
            continue
        AllChem.MMFFOptimizeMolecule(rd, maxIters=5000)
        relaxed.append(Molecule(rd.GetConformer().GetPositions(), m.elements))
    at_min = evaluate_molecules(relaxed, QM9, strain=True)
    rng = np.random.default_rng(1)
    shaken = [Molecule(m.positions + rng.normal(0, 0.03, m.positions.shape), m.elements) for m in relaxed]
    distorted = evaluate_molecules(shaken, QM9, strain=True)
    assert at_min["mmff_strain_count"] >= 15
    assert abs(at_min["mmff_strain_mean"]) < 0.05
    assert distorted["mmff_strain_mean"] > 1.0
