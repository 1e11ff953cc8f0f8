"""Growing molecules from a fragment: observe= reads it, generation keeps it, the files mark it, metrics score it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compose
from hydra.utils import instantiate
from rdkit import Chem

from multidiff.build import build_module
from multidiff.domains.molecule.export import write_sdf, write_xyz
from multidiff.domains.molecule.fragments import fragment_metrics
from multidiff.domains.molecule.io import read_molecules
from multidiff.domains.molecule.structures import Molecule
from multidiff.sampling import named_request


def tiny_module(qm9_root, run, *overrides: str):
    cfg = compose(
        "train",
        [
            "domain=molecule",
            f"data.root={qm9_root}",
            "data.max_molecules=64",
            "net.hidden=16",
            "net.layers=2",
            *overrides,
        ],
        run,
    )
    dm = instantiate(cfg.data)
    dm.setup()
    return build_module(cfg, dm.info()).eval()


@pytest.fixture(scope="module")
def module(qm9_root, tmp_path_factory):
    """An untrained tiny EGNN model bound to QM9 (generation mechanics do not need a trained net)."""
    return tiny_module(qm9_root, tmp_path_factory.mktemp("mol"))


@pytest.fixture(scope="module")
def masked_module(qm9_root, tmp_path_factory):
    """The same, built for observation-conditioned training (mask=fragment): it grows fragments by its net."""
    return tiny_module(qm9_root, tmp_path_factory.mktemp("mol_masked"), "mask=fragment")


@pytest.fixture(scope="module")
def real(qm9_module) -> Molecule:
    """A QM9 training molecule with at least 12 atoms, far from the origin (the fragment's frame is its own)."""
    batch = next(iter(qm9_module.train_dataloader()))
    for i in range(batch.num_graphs):
        rows = batch.batch == i
        if int(rows.sum()) >= 12:
            elements = [qm9_module.info()["elements"][t] for t in batch.atom_type[rows].tolist()]
            return Molecule(batch.pos[rows].double().numpy() + [10.0, -4.0, 7.5], elements, name="real")
    raise AssertionError("no molecule with 12 atoms in the first batch")


def fragment_file(mol: Molecule, k: int, path):
    frag = Molecule(mol.positions[:k], mol.elements[:k], name="fragment")
    return write_sdf([frag], path) if path.suffix == ".sdf" else write_xyz([frag], path)


@pytest.mark.parametrize("suffix, model", [(".sdf", "module"), (".xyz", "module"), (".sdf", "masked_module")])
def test_grown_molecules_keep_the_fragment_exactly_in_its_frame(model, real, tmp_path, suffix, request):
    module = request.getfixturevalue(model)
    assert module.observed_by() == ("model" if model == "masked_module" else "replacement")
    k = 5
    path = fragment_file(real, k, tmp_path / f"fragment{suffix}")
    fragment = read_molecules(path).molecules[0]
    obs = module.domain.observe(6, path, seed=3)
    counts = torch.bincount(obs.ctx["batch"])
    assert obs.ctx["num_items"] == 6 and (counts > k).all() and counts.max() <= 29  # QM9 sizes above the fragment
    state = module.generate(6, named_request(steps=4), seed=0, observation=obs)
    molecules = module.domain.decode(state, obs)
    for mol, n in zip(molecules, counts.tolist()):
        assert len(mol) == n and mol.elements[:k] == fragment.elements
        np.testing.assert_allclose(mol.positions[:k], fragment.positions, rtol=0, atol=1e-12)
        assert mol.properties["given_atoms"] == "1 2 3 4 5"
    # the SDF marks the given atoms and keeps their coordinates to the format's precision
    out = write_sdf(molecules, tmp_path / "grown.sdf")
    for rd in Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False):
        assert rd.GetProp("given_atoms") == "1 2 3 4 5"
        np.testing.assert_allclose(rd.GetConformer().GetPositions()[:k], fragment.positions, atol=1e-4)
    back = read_molecules(out).molecules  # the SDF's data fields come back as properties
    assert all(m.properties["given_atoms"] == "1 2 3 4 5" for m in back)
    metrics = fragment_metrics(back, fragment)
    assert metrics["fragment_rmsd"] < 1e-4 and metrics["fragment_elements_kept"] == 1.0


def test_fixed_size_and_seeded_counts(module, real, tmp_path):
    path = fragment_file(real, 4, tmp_path / "f.sdf")
    fixed = module.domain.observe(3, path, n_atoms=9)
    assert torch.bincount(fixed.ctx["batch"]).tolist() == [9, 9, 9]
    a, b = module.domain.observe(8, path, seed=1), module.domain.observe(8, path, seed=1)
    assert torch.equal(a.ctx["batch"], b.ctx["batch"])


def test_retention_finds_the_fragment_in_the_whole_molecule(real):
    fragment = Molecule(real.positions[:6], real.elements[:6])
    shifted = Molecule(real.positions + 3.0, real.elements)  # same bonds, another place
    other = Molecule(real.positions[::-1].copy() * 1.8, real.elements[::-1])  # stretched: no bonds survive
    metrics = fragment_metrics([real, shifted, other], fragment)
    assert metrics["fragment_retention"] == pytest.approx(2 / 3)
    assert metrics["fragment_rmsd"] > 1.0  # the shifted copy sits 3 * sqrt(3) Angstrom away


def test_bad_fragments_are_refused_with_the_file_and_what_is_valid(module, real, tmp_path):
    unknown = tmp_path / "silicon.xyz"
    unknown.write_text("2\nsilane piece\nSi 0 0 0\nH 1.48 0 0\n")
    with pytest.raises(ValueError, match=r"silicon.xyz.*Si.*knows H, C, N, O, F"):
        module.domain.observe(2, unknown)
    largest = max(module.domain.info["node_counts"]["values"])
    atoms = Molecule(np.random.default_rng(0).normal(size=(largest, 3)) * 3, ["C"] * largest)
    whole = fragment_file(atoms, largest, tmp_path / "big.sdf")
    with pytest.raises(ValueError, match=rf"big.sdf: the fragment has {largest} atoms; .* at most {largest}"):
        module.domain.observe(2, whole)
    small = fragment_file(real, 5, tmp_path / "small.sdf")
    with pytest.raises(ValueError, match=r"n_atoms=5: the total must be an integer above the fragment's 5 atoms"):
        module.domain.observe(2, small, n_atoms=5)
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.sdf"):
        module.domain.observe(2, empty)
