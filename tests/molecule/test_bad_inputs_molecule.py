"""Evaluation on bad input: unreadable files are clear errors, undefined metrics are None with a reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from multidiff.domains.molecule import MoleculeDomain
from multidiff.domains.molecule.metrics import evaluate_molecules


@pytest.fixture()
def domain(qm9_module, tmp_path) -> MoleculeDomain:
    d = MoleculeDomain()
    # no training SMILES cache in data_root: novelty must say so instead of scoring against nothing
    d.bind({**qm9_module.info(), "data_root": str(tmp_path)})
    return d


def _xyz(molecules: list[tuple[list[str], np.ndarray]]) -> str:
    blocks = []
    for k, (elements, pos) in enumerate(molecules):
        atoms = "\n".join(f"{e} {x:.4f} {y:.4f} {z:.4f}" for e, (x, y, z) in zip(elements, pos))
        blocks.append(f"{len(elements)}\nmol_{k}\n{atoms}")
    return "\n".join(blocks) + "\n"


def _hexavalent_carbon() -> tuple[list[str], np.ndarray]:
    """C with six H at 1.09 A (octahedral): six C-H bonds by distance, no valence allows it."""
    axes = np.concatenate([np.eye(3), -np.eye(3)]) * 1.09
    return ["C"] + ["H"] * 6, np.concatenate([np.zeros((1, 3)), axes])


def _check_nulls_explained(metrics: dict) -> dict[str, str]:
    json.dumps(metrics, allow_nan=False)  # raises on NaN / inf
    reasons = metrics.get("null_reasons", {})
    nulls = {k for k, v in metrics.items() if v is None}
    assert nulls == set(reasons), (nulls, reasons)
    assert all(isinstance(r, str) and r for r in reasons.values())
    return reasons


@pytest.mark.parametrize(
    "name, text, why",
    [
        ("junk.sdf", "not a mol block\n$$$$\nneither is this\n  1 2 3\n$$$$\n", "not a readable MDL mol block"),
        ("junk.xyz", "hello\nworld\n3\ncomment\nC 0 0 0\n", "expected an atom count"),
        ("nan.xyz", "2\nnan\nC nan 0 0\nH 1 0 0\n0\nempty\n", "non-finite coordinates"),
    ],
)
def test_file_without_a_readable_molecule_is_a_clear_error(domain, tmp_path, name, text, why):
    path = tmp_path / name
    path.write_text(text)
    n_records = 2
    with pytest.raises(ValueError) as err:
        domain.evaluate(path, novelty=False, strain=False)
    message = str(err.value)
    assert str(path) in message and f"none of its {n_records} record(s)" in message
    assert why in message and "record 1" in message
    # the same file as a reference is refused too, rather than giving meaningless distances
    good = tmp_path / "good.xyz"
    good.write_text(_xyz([(["C", "O"], np.array([[0, 0, 0], [1.2, 0, 0]]))]))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        domain.evaluate(good, novelty=False, strain=False, reference=path)


def test_zero_atom_record_is_malformed_not_a_stable_molecule(domain, tmp_path):
    path = tmp_path / "mixed.xyz"
    path.write_text("0\nnothing\n" + _xyz([(["C", "O"], np.array([[0, 0, 0], [1.2, 0, 0]]))]))
    metrics = domain.evaluate(path, novelty=False, strain=False)
    assert metrics["num_records"] == 2 and metrics["num_molecules"] == 1
    assert metrics["malformed_records"] == ["record 1: no atoms"]


def test_empty_file_and_folder_without_molecule_files_say_so(domain, tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(ValueError, match=re.escape(str(empty)) + r".*no molecule records.*empty"):
        domain.evaluate(empty, novelty=False)

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("C\n")
    with pytest.raises(FileNotFoundError, match=r"no \.sdf or \.xyz file in this folder.*notes\.txt"):
        domain.evaluate(folder, novelty=False)

    blank = folder / "samples.xyz"
    blank.write_text("\n\n")
    with pytest.raises(ValueError, match=re.escape(str(blank)) + r".*no molecule records"):
        domain.evaluate(folder, novelty=False)  # a folder names the file inside it

    binary = tmp_path / "packed.sdf"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe\x00\x80")
    with pytest.raises(ValueError, match=re.escape(str(binary)) + r".*not a text file"):
        domain.evaluate(binary, novelty=False)


def test_all_invalid_molecules_give_null_metrics_with_reasons(domain, tmp_path):
    path = tmp_path / "invalid.xyz"
    path.write_text(_xyz([_hexavalent_carbon()] * 3))
    metrics = domain.evaluate(path, novelty=True, strain=True)
    reasons = _check_nulls_explained(metrics)
    assert metrics["num_molecules"] == 3 and metrics["validity"] == 0.0 and metrics["mol_stable"] == 0.0
    assert metrics["uniqueness"] is None and reasons["uniqueness"] == "no valid molecule"
    assert metrics["mmff_strain_mean"] is None and reasons["mmff_strain_mean"] == "no valid molecule"
    assert metrics["mmff_strain_count"] == 0
    assert metrics["novelty"] is None and "no training SMILES" in reasons["novelty"]
    # its C-H bonds still give a bond-length distance to the training data
    assert metrics["bond_length_w1"] is not None and metrics["bond_length_w1"] > 0

    off = domain.evaluate(path, novelty=False, strain=False)
    assert _check_nulls_explained(off)["novelty"] == "novelty=false" and "mmff_strain_mean" not in off


def test_molecules_without_bonds_have_no_bond_length_distance(domain, tmp_path):
    far = np.array([[0, 0, 0], [4.0, 0, 0], [0, 4.0, 0]])
    path = tmp_path / "atoms.xyz"
    path.write_text(_xyz([(["C", "N", "O"], far)] * 2))
    metrics = domain.evaluate(path, novelty=False, strain=False)
    reasons = _check_nulls_explained(metrics)
    assert metrics["bond_length_w1"] is None and reasons["bond_length_w1"] == "no bond in the samples"
    assert metrics["atom_type_tv"] is not None and metrics["validity"] is not None


def test_metrics_of_no_molecule_are_all_null():
    metrics = evaluate_molecules([], ["H", "C"], {"smiles": {"C"}}, strain=True)
    reasons = _check_nulls_explained(metrics)
    rates = ["atom_stable", "mol_stable", "validity", "validity_charged", "valid_unique"]
    assert all(metrics[k] is None for k in rates) and reasons["mol_stable"] == "no molecule"
    assert reasons["uniqueness"] == reasons["novelty"] == reasons["mmff_strain_median"] == "no valid molecule"
    assert reasons["atom_type_tv"] == "no reference atom types"
    assert metrics["num_molecules"] == 0


def test_reference_txt_without_smiles_is_refused(domain, tmp_path):
    ref = tmp_path / "smiles.txt"
    ref.write_text("\n")
    sample = tmp_path / "s.xyz"
    sample.write_text(_xyz([(["C", "O"], np.array([[0, 0, 0], [1.2, 0, 0]]))]))
    with pytest.raises(ValueError, match=re.escape(str(ref)) + r".*no SMILES"):
        domain.evaluate(Path(sample), novelty=False, strain=False, reference=ref)
