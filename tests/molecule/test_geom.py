"""GEOM-Drugs from MiDi's pickles: a small sample written in that exact format (lists of (smiles, conformers))."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from multidiff.domains.molecule import GeomDrugsDataModule
from multidiff.domains.molecule.geom import GEOM_ELEMENTS


def _conformers(smiles: str, n: int, seed: int = 0) -> list[Chem.Mol]:
    """``n`` molecules with one conformer each, as the release stores them (explicit H, aromatic flags)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = AllChem.EmbedMultipleConfs(mol, numConfs=n, randomSeed=seed)
    out = []
    for cid in ids:
        single = Chem.Mol(mol)
        single.RemoveAllConformers()
        single.AddConformer(Chem.Conformer(mol.GetConformer(cid)), assignId=True)
        out.append(single)
    return out


@pytest.fixture(scope="module")
def geom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("geom")
    stretched = _conformers("CC(=O)Nc1ccc(O)cc1", 3, seed=1)
    pos = stretched[2].GetConformer().GetPositions()
    stretched[2].GetConformer().SetAtomPosition(0, (pos[0] + [3.0, 0, 0]).tolist())  # a C-C bond of ~4.5 A
    splits = {
        "train": [
            ("c1ccccc1O", _conformers("c1ccccc1O", 6)),
            ("CC(=O)Nc1ccc(O)cc1", stretched),  # dropped by cleaning: one conformer's bond is implausible
            ("C[NH3+].[Cl-]", _conformers("C[NH3+].[Cl-]", 2)),  # dropped by cleaning: two fragments
            ("CS(=O)(=O)N", _conformers("CS(=O)(=O)N", 2)),
        ],
        "val": [("c1ccncc1", _conformers("c1ccncc1", 2))],
        "test": [("CCBr", _conformers("CCBr", 3))],
    }
    for split, entries in splits.items():
        with open(root / f"{split}_data.pickle", "wb") as f:
            pickle.dump(entries, f)
    return root


def test_reads_midi_pickles_with_conformer_limit_and_cleaning(geom_root, tmp_path):
    dm = GeomDrugsDataModule(root=geom_root, conformers=5, progress=False)
    arrays = dm.load()
    assert arrays["elements"] == list(GEOM_ELEMENTS)
    sizes = {k: len(v) for k, v in arrays["splits"].items()}
    assert sizes == {"train": 5 + 2, "val": 2, "test": 3}  # phenol capped at 5; two molecules cleaned away
    assert arrays["has_graph"].all()  # kekulised bonds of every conformer
    first = slice(arrays["ptr"][0], arrays["ptr"][1])
    symbols = [arrays["elements"][t] for t in arrays["types"][first]]
    assert symbols.count("C") == 6 and symbols.count("O") == 1 and symbols.count("H") == 6
    orders = arrays["bonds"][arrays["bond_ptr"][0] : arrays["bond_ptr"][1], 2]
    assert sorted(orders.tolist()).count(2) == 3  # the Kekule ring of phenol

    raw = GeomDrugsDataModule(root=geom_root, conformers=1, clean=False, progress=False).load()
    assert {k: len(v) for k, v in raw["splits"].items()} == {"train": 4, "val": 1, "test": 1}
    charges = raw["charges"][raw["ptr"][2] : raw["ptr"][3]]
    assert sorted(charges.tolist()) == [-1] + [0] * (len(charges) - 2) + [1]  # the salt, uncleaned


def test_missing_release_says_where_to_get_it(tmp_path):
    dm = GeomDrugsDataModule(root=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"train_data.pickle.*bits.csb.pitt.edu/files/geom_raw.*download=true"):
        dm.load()
    with pytest.raises(ValueError, match="conformers=0"):
        GeomDrugsDataModule(root=tmp_path, conformers=0)


def test_geom_batches_feed_the_molecule_domain(geom_root):
    from multidiff.domains.molecule import MoleculeDomain

    dm = GeomDrugsDataModule(root=geom_root, conformers=2, batch_size=3, progress=False)
    dm.setup()
    domain = MoleculeDomain(bonds=True)
    domain.bind(dm.info())
    batch = next(iter(dm.train_dataloader()))
    state = domain.unpack(batch)
    assert state.x["node"].shape[1] == 3 + len(GEOM_ELEMENTS) + 1
    assert np.isfinite(state.x["pair"].numpy()).all()
