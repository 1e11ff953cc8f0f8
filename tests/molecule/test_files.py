"""data=sdf: the user's own SDF/XYZ files with properties from SDF fields or a CSV; bad records named."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem, Descriptors

from multidiff.domains.molecule import MoleculeFilesDataModule

SMILES = [
    "CCO", "CCN", "CC(=O)O", "c1ccccc1", "CC#N", "C=CC=O", "OCCO", "CC(C)O", "NCC(=O)O", "c1ccncc1",
    "CCOC", "C1CC1", "CC(N)=O", "OC=O", "C[NH3+]", "CC([O-])=O", "FC(F)F", "CCCC", "c1ccoc1", "N#CC#N",
]  # fmt: skip


def _mol(smiles: str, name: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    mol.SetProp("_Name", name)
    return mol


@pytest.fixture(scope="module")
def sdf_folder(tmp_path_factory) -> Path:
    """Two SDF files (20 molecules, a heavy-atom count field ``heavy``), a CSV of ``mw`` keyed by name (one name
    missing), and a malformed block, an atom-less record and a selenium compound among them."""
    folder = tmp_path_factory.mktemp("mols")
    mols = [_mol(s, f"mol{k}") for k, s in enumerate(SMILES)]
    for mol in mols:
        mol.SetIntProp("heavy", mol.GetNumHeavyAtoms())
    for part, chunk in (("a", mols[:10]), ("b", mols[10:])):
        with Chem.SDWriter(str(folder / f"{part}.sdf")) as w:
            for mol in chunk:
                w.write(mol)
    selenium = _mol("C[Se]C", "selenide")
    selenium.SetIntProp("heavy", 3)
    with Chem.SDWriter(str(folder / "c.sdf")) as w:
        w.write(selenium)
    with open(folder / "c.sdf", "a") as f:
        f.write("broken\n  not a mol block\n\nthis is no counts line\n$$$$\n")
    rows = ["name,mw"] + [f"mol{k},{Descriptors.MolWt(m):.4f}" for k, m in enumerate(mols) if k != 3]
    rows.append(f"selenide,{Descriptors.MolWt(selenium):.4f}")
    (folder / "props.csv").write_text("\n".join(rows) + "\n")
    return folder


def _module(folder: Path, root: Path, **options) -> MoleculeFilesDataModule:
    return MoleculeFilesDataModule(root=root, files=str(folder), progress=False, batch_size=4, **options)


def test_reads_folder_with_csv_properties_and_names_each_bad_record(sdf_folder, tmp_path, caplog):
    dm = _module(sdf_folder, tmp_path, properties_csv=str(sdf_folder / "props.csv"), elements=["H", "C", "N", "O", "F"])
    with caplog.at_level(logging.WARNING):
        arrays = dm.load()
    # 23 records: 20 molecules + selenide + broken block; mol3 (benzene) has no mw in the CSV
    assert arrays["prop_names"] == ["mw", "heavy"]
    assert len(arrays["ptr"]) - 1 == 19
    assert "mol3" not in arrays["names"] and "selenide" not in arrays["names"]
    report = dm.cache_path.with_suffix(".bad_records.txt").read_text().splitlines()
    assert len(report) == 3
    assert any("b.sdf" not in r and "a.sdf record 4 (mol3): no numeric value for property ['mw']" in r for r in report)
    assert any("c.sdf record 1 (selenide): element(s) ['Se'] not in data.elements" in r for r in report)
    assert any("c.sdf record 2" in r and "not a readable MDL mol block" in r for r in report)
    assert "3 record(s) skipped" in caplog.text
    # properties land on the right molecules: mw from the CSV, heavy from the SDF field
    mw = {n: v for n, v in zip(arrays["names"], arrays["props"][:, 0])}
    assert mw["mol0"] == pytest.approx(46.069, abs=1e-3) and mw["mol19"] == pytest.approx(52.036, abs=1e-3)
    k = arrays["names"].index("mol14")  # CH3NH3+: the charge is read from the file
    a, b = arrays["ptr"][k], arrays["ptr"][k + 1]
    assert sorted(arrays["charges"][a:b].tolist())[-1] == 1 and arrays["props"][k, 1] == 2
    assert arrays["has_graph"].all() and dm.info()["charge_range"] == [-1, 1]


def test_on_bad_record_error_names_the_first(sdf_folder, tmp_path):
    dm = _module(sdf_folder, tmp_path, elements=["H", "C", "N", "O", "F"], on_bad_record="error")
    with pytest.raises(ValueError, match=r"c\.sdf record 1 \(selenide\): element\(s\) \['Se'\].*on_bad_record=skip"):
        dm.load()
    assert not dm.cache_path.exists()  # nothing half-written
    with pytest.raises(ValueError, match=r"on_bad_record='drop'; valid: skip, error"):
        _module(sdf_folder, tmp_path, on_bad_record="drop")
    with pytest.raises(ValueError, match=r"no column named name or index.*\['id', 'mw'\]"):
        (tmp_path / "bad.csv").write_text("id,mw\n1,2\n")
        _module(sdf_folder, tmp_path, properties_csv=str(tmp_path / "bad.csv")).load()
    with pytest.raises(FileNotFoundError, match="nothing_here.*no such file or folder"):
        _module(tmp_path / "nothing_here", tmp_path)


def test_vocabulary_from_the_data_and_cache_follows_the_files(sdf_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("a.sdf", "c.sdf"):
        (folder / name).write_bytes((sdf_folder / name).read_bytes())
    dm = _module(folder, tmp_path / "cache")
    assert dm.data_config() == {"elements": ["H", "C", "N", "O", "Se"]}  # H first, then by atomic number
    assert dm.info()["elements"] == ["H", "C", "N", "O", "Se"]
    first = dm.cache_path
    (folder / "c.sdf").write_bytes((sdf_folder / "b.sdf").read_bytes())  # edited data: a new cache
    os.utime(folder / "c.sdf", ns=(1, 1))
    again = _module(folder, tmp_path / "cache")
    assert again.cache_path != first and "Se" not in again.data_config()["elements"]


def test_xyz_files_with_properties_in_the_comment_line(tmp_path):
    frames = []
    for k, smiles in enumerate(SMILES[:4]):
        mol = _mol(smiles, f"x{k}")
        pos = mol.GetConformer().GetPositions()
        lines = [f"{a.GetSymbol()} {x:.4f} {y:.4f} {z:.4f}" for a, (x, y, z) in zip(mol.GetAtoms(), pos)]
        frames.append(f"{mol.GetNumAtoms()}\nx{k} energy={-k * 1.5}\n" + "\n".join(lines))
    (tmp_path / "m.xyz").write_text("\n".join(frames) + "\n")
    dm = MoleculeFilesDataModule(root=tmp_path / "c", files=str(tmp_path / "m.xyz"), progress=False, split=[1, 0, 0])
    arrays = dm.load()
    assert arrays["names"] == ["x0", "x1", "x2", "x3"] and arrays["prop_names"] == ["energy"]
    assert arrays["props"][:, 0].tolist() == [0.0, -1.5, -3.0, -4.5]
    assert not arrays["has_graph"].any()  # XYZ carries no bonds: a graph model leaves such records out


@pytest.mark.slow
def test_train_a_few_steps_and_sample_conditioned(sdf_folder, tmp_path):
    """train.py domain=molecule data=sdf with a CSV property as the condition, then sample.py at a requested
    value: the vocabulary comes from the data and travels in the checkpoint."""
    from helpers import compose

    import sample
    import train

    run = tmp_path / "run"
    overrides = [
        "domain=molecule",
        "data=sdf",
        f"data.files={sdf_folder}",
        f"data.properties_csv={sdf_folder / 'props.csv'}",
        "data.condition=mw",
        "data.batch_size=4",
        f"data.root={tmp_path / 'cache'}",
        "net.hidden=16",
        "net.layers=2",
        "trainer.max_steps=3",
        "~callbacks.samples",
    ]
    train.train(compose("train", overrides, run))
    ckpt = run / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, weights_only=False, map_location="cpu")["multidiff"]
    assert meta["domain_info"]["elements"] == ["H", "C", "N", "O", "F", "Se"]
    assert meta["config"]["data"]["elements"] == ["H", "C", "N", "O", "F", "Se"]
    out = tmp_path / "samples"
    sample.sample(
        compose("sample", [f"ckpt={ckpt}", "n=3", "steps=2", f"out={out}", "+condition.mw=60"], tmp_path / "s")
    )
    records = [m for m in Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False)]
    assert len(records) == 3 and all(float(r.GetProp("mw")) == 60 for r in records)
    assert json.loads((out / "sampling.json").read_text())["condition"] == {"mw": 60}
    assert np.isfinite(np.concatenate([r.GetConformer().GetPositions() for r in records])).all()
