"""SDF / XYZ / PNG export and the readers evaluate uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rdkit import Chem

from multidiff.domains.molecule import MoleculeDomain
from multidiff.domains.molecule.io import read_molecules
from multidiff.domains.molecule.structures import Molecule


@pytest.fixture(scope="module")
def domain_and_molecules(qm9_module):
    domain = MoleculeDomain()
    domain.bind(qm9_module.info())
    batch = next(iter(qm9_module.test_dataloader()))
    molecules = domain.decode(domain.unpack(batch))
    broken = Molecule(
        np.random.default_rng(0).normal(0, 0.3, (6, 3)),
        ["C", "C", "O", "N", "H", "H"],
        np.array([1, 0, -1, 0, 0, 0]),
        {"gap": 5.5},
        name="broken",
    )
    return domain, molecules + [broken]


def test_sdf_round_trip_readable_by_rdkit(domain_and_molecules, tmp_path):
    domain, molecules = domain_and_molecules
    paths = domain.export(molecules, tmp_path, {"sampler": "heun", "steps": 50})
    sdf = next(p for p in paths if p.suffix == ".sdf")
    assert {p.suffix for p in paths} == {".sdf", ".xyz", ".png"} and all(p.stat().st_size > 0 for p in paths)

    records = list(Chem.SDMolSupplier(str(sdf), sanitize=False, removeHs=False))
    assert len(records) == len(molecules) and all(r is not None for r in records)
    last = records[-1]
    assert last.GetProp("valid") == "0" and last.GetNumBonds() == 0 and last.GetProp("gap") == "5.5"
    assert [a.GetFormalCharge() for a in last.GetAtoms()] == [1, 0, -1, 0, 0, 0]
    valid = [r for r in records if r.GetProp("valid") == "1"]
    assert len(valid) >= len(molecules) - 2 and all(r.GetNumBonds() > 0 for r in valid)
    assert all(r.GetProp("sampler") == "heun" for r in records)
    for r, m in zip(records, molecules):
        assert np.allclose(r.GetConformer().GetPositions(), m.positions, atol=1e-3)

    for path in (sdf, tmp_path / "samples.xyz"):
        back = read_molecules(path, domain.elements)
        assert back.errors == [] and len(back.molecules) == len(molecules)
        assert [m.elements for m in back.molecules] == [m.elements for m in molecules]

    metrics = domain.evaluate(sdf, novelty=False, strain=False)
    json.dumps(metrics)  # JSON-able
    assert metrics["num_records"] == len(molecules) and metrics["validity"] < 1.0


def test_malformed_records_are_reported_and_the_rest_evaluated(domain_and_molecules, tmp_path):
    domain, molecules = domain_and_molecules
    sdf = domain.export(molecules[:4], tmp_path, {})[0]
    blocks = sdf.read_text().split("$$$$\n")
    lines = blocks[1].splitlines()
    lines[5] = "   garbage line that is not an atom"
    blocks[1] = "\n".join(lines) + "\n"
    sdf.write_text("$$$$\n".join(blocks))
    metrics = domain.evaluate(sdf, novelty=False, strain=False)
    assert metrics["num_records"] == 4 and metrics["num_molecules"] == 3
    assert len(metrics["malformed_records"]) == 1 and metrics["malformed_records"][0].startswith("record 2")

    xyz = tmp_path / "bad.xyz"
    xyz.write_text("2\nok\nC 0 0 0\nO 1.2 0 0\nthree\ncomment\nC 0 0 0\n2\nshort\nH 0 0 0\n")
    result = read_molecules(xyz)
    assert len(result.molecules) == 1 and len(result.errors) == 2
    assert result.errors[0].startswith("record 2") and result.errors[1].startswith("record 3")


def test_element_outside_vocabulary_is_a_clear_error(domain_and_molecules, tmp_path):
    domain, _ = domain_and_molecules
    xyz = tmp_path / "si.xyz"
    xyz.write_text("2\nsilane\nSi 0 0 0\nH 1.48 0 0\n")
    with pytest.raises(ValueError, match=r"Si.*not in the vocabulary"):
        domain.evaluate(xyz, novelty=False)
