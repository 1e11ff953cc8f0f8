"""Molecules as graphs: bonds and charges generated with the atoms (domain.bonds=true)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from multidiff.config import compose_run
from multidiff.core.parts import Parts
from multidiff.core.state import State
from multidiff.domains.molecule import EGNN, MoleculeDomain
from multidiff.domains.molecule.export import write_sdf
from multidiff.domains.molecule.graphs import order_matrix, qm9_bonds, rdkit_bonds
from multidiff.domains.molecule.io import read_molecules
from multidiff.domains.molecule.metrics import MoleculeAnalysis, evaluate_molecules
from multidiff.domains.molecule.structures import Molecule

ROOT = Path(__file__).resolve().parents[2]
ELEMENTS = ["H", "C", "N", "O", "F"]
INFO = {
    "elements": ELEMENTS,
    "node_counts": {"values": [6, 9, 12], "counts": [1, 2, 1]},
    "charge_range": [-1, 1],
}


@pytest.fixture
def domain() -> MoleculeDomain:
    d = MoleculeDomain(bonds=True)
    d.bind(INFO)
    return d


def _rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def test_egnn_with_bonds_is_e3_and_permutation_equivariant(domain):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    state = domain.template(4, None, gen, num_atoms=[5, 3, 7, 2])
    x = domain.space.noise(state.x, state.ctx, generator=gen)
    net = EGNN(ELEMENTS, charges=True, hidden=32, layers=3, bonds=True).eval()
    for head in (net.out, net.pair_head[-1]):  # both heads start at zero: make them say something
        torch.nn.init.normal_(head.weight, std=0.1)
    c_noise = torch.randn(4, generator=gen)
    out = net(x, c_noise, **state.ctx)
    assert out.shape == x.shape

    batch = state.ctx["batch"]
    rot, shift = _rotation(gen), torch.randn(4, 3, generator=gen) * 5
    moved = x.replace(node=torch.cat([x["node"][:, :3] @ rot.T + shift[batch], x["node"][:, 3:]], 1))
    out2 = net(moved, c_noise, **state.ctx)
    assert (out2["node"][:, :3] - out["node"][:, :3] @ rot.T).abs().max() < 1e-4
    assert (out2["node"][:, 3:] - out["node"][:, 3:]).abs().max() < 1e-4
    assert (out2["pair"] - out["pair"]).abs().max() < 1e-4

    # permuting the atoms of each molecule permutes the atom rows and maps every pair to its image
    perm = torch.cat([torch.nonzero(batch == b).flatten()[torch.randperm(int((batch == b).sum()), generator=gen)]
                      for b in range(4)])  # fmt: skip
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    pairs = state.ctx["pair_index"]
    where = {tuple(p): k for k, p in enumerate(pairs.T.tolist())}
    # pair k of the permuted molecule joins atoms perm[i], perm[j] of the original
    source = torch.tensor([where[tuple(sorted((int(perm[i]), int(perm[j]))))] for i, j in pairs.T.tolist()])
    permuted = Parts({"node": x["node"][perm], "pair": x["pair"][source]})
    out3 = net(permuted, c_noise, **state.ctx)
    assert (out3["node"] - out["node"][perm]).abs().max() < 1e-4
    assert (out3["pair"] - out["pair"][source]).abs().max() < 1e-4


def test_without_bonds_the_egnn_is_the_point_cloud_network_parameter_for_parameter():
    plain, graph = EGNN(ELEMENTS, hidden=16, layers=2), EGNN(ELEMENTS, hidden=16, layers=2, bonds=False)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in graph.named_parameters()]
    with pytest.raises(ValueError, match="radius"):
        EGNN(ELEMENTS, hidden=16, layers=2, bonds=True, radius=2.0)


def test_the_space_keeps_coordinates_centred_and_pairs_one_per_unordered_pair(domain):
    gen = torch.Generator().manual_seed(0)
    state = domain.template(3, None, gen, num_atoms=[4, 1, 6])
    assert state.x["pair"].shape == (4 * 3 // 2 + 0 + 6 * 5 // 2, 4)
    z = domain.space.noise(state.x, state.ctx, generator=gen)
    com = torch.zeros(3, 3).index_add_(0, state.ctx["batch"], z["node"][:, :3])
    assert com.abs().max() < 1e-5 and z["pair"].std() > 0.5
    i, j = state.ctx["pair_index"]
    assert (i < j).all() and (state.ctx["batch"][i] == state.ctx["batch"][j]).all()
    # decoded bond matrices are symmetric with an empty diagonal, whatever the pair rows hold
    molecules = domain.decode(State(z, None, state.ctx))
    for m in molecules:
        assert np.array_equal(m.bonds, m.bonds.T) and not np.diag(m.bonds).any()
        assert m.properties["bond_source"] == "model"
    # the loss weight of the pair rows: pair_weight=0 leaves the atom rows' mean alone
    e = Parts({"node": torch.ones_like(z["node"]), "pair": torch.full_like(z["pair"], 3.0)})
    assert torch.allclose(domain.space.item_mean(e, state.ctx), torch.tensor([2.0, 1.0, 2.0]))
    unweighted = MoleculeDomain(bonds=True, pair_weight=0.0).space
    assert torch.allclose(unweighted.item_mean(e, state.ctx), torch.ones(3))


def test_qm9_bond_graphs_sanitise_and_match_their_smiles(qm9_module):
    arrays = qm9_module.load()
    assert arrays["has_graph"].mean() > 0.999
    ptr, bptr = arrays["ptr"], arrays["bond_ptr"]
    molecules = []
    for m in range(200):
        a, b = ptr[m], ptr[m + 1]
        bonds = order_matrix(arrays["bonds"][bptr[m] : bptr[m + 1]], b - a)
        elements = [ELEMENTS[t] for t in arrays["types"][a:b]]
        molecules.append(Molecule(arrays["pos"][a:b], elements, arrays["charges"][a:b], bonds=bonds))
    analysis = MoleculeAnalysis(molecules, ELEMENTS, bonds="file")
    assert analysis.valid.mean() > 0.99 and np.mean([s.all() for s in analysis.stable_atoms_charged]) > 0.99
    assert np.mean(analysis.connected) > 0.99


def test_qm9_bonds_fall_back_to_perception_when_the_smiles_disagrees():
    # methane with the SMILES of ethane: the SMILES graph does not fit, the coordinates decide
    pos = np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    rows = qm9_bonds("CC", ["C", "H", "H", "H", "H"], pos)
    assert sorted(map(tuple, rows.tolist())) == [(0, k, 1) for k in range(1, 5)]


def test_sdf_round_trip_keeps_the_models_bonds_and_charges(tmp_path):
    # nitromethane: a charged pair and a double bond, in Kekule form
    mol = Chem.AddHs(Chem.MolFromSmiles("C[N+](=O)[O-]"))
    from rdkit.Chem import AllChem

    AllChem.EmbedMolecule(mol, randomSeed=0)
    bonds = order_matrix(rdkit_bonds(mol), mol.GetNumAtoms())
    m = Molecule(
        mol.GetConformer().GetPositions(),
        [a.GetSymbol() for a in mol.GetAtoms()],
        [a.GetFormalCharge() for a in mol.GetAtoms()],
        {"bond_source": "model"},
        bonds=bonds,
    )
    path = write_sdf([m], tmp_path / "s.sdf")
    back = Chem.MolFromMolFile(str(path), removeHs=False)
    assert back is not None and Chem.MolToSmiles(Chem.RemoveHs(back)) == "C[N+](=O)[O-]"
    read = read_molecules(path).molecules[0]
    assert np.array_equal(read.bonds, bonds) and list(read.charges) == list(m.charges)
    metrics = evaluate_molecules([read], ELEMENTS, strain=False, bonds="file")
    assert metrics["validity"] == 1.0 and metrics["mol_stable_charged"] == 1.0 and metrics["validity_connected"] == 1


def test_exported_samples_read_back_with_the_bonds_the_model_gave(domain, tmp_path):
    """Whatever the pair rows say (valid or not), the SDF holds exactly the decoded bonds and charges."""
    gen = torch.Generator().manual_seed(5)
    state = domain.template(8, None, gen)
    x = domain.space.noise(state.x, state.ctx, generator=gen)
    molecules = domain.decode(State(x, None, state.ctx))
    domain.export(molecules, tmp_path, {})
    records = list(Chem.SDMolSupplier(str(tmp_path / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 8
    for r, m in zip(records, molecules):
        assert np.array_equal(order_matrix(rdkit_bonds(r), r.GetNumAtoms()), m.bonds)
        assert [a.GetFormalCharge() for a in r.GetAtoms()] == list(m.charges)


def _fragment_sdf(tmp_path: Path, block_edit=None) -> Path:
    text = (ROOT / "docs" / "fragment_c4.sdf").read_text()
    if block_edit:
        text = block_edit(text)
    path = tmp_path / "fragment.sdf"
    path.write_text(text)
    return path


def test_fragment_observation_holds_its_bonds_and_bad_fragments_are_named(domain, tmp_path):
    obs = domain.observe(3, _fragment_sdf(tmp_path), n_atoms=9)
    i, j = obs.ctx["pair_index"]
    known = obs.mask["pair"][:, 0]
    assert int(known.sum()) == 3 * 6  # 4 given atoms: 6 pairs per molecule
    orders = obs.values["pair"][known].argmax(1).reshape(3, 6)
    assert orders[0].tolist() == [1, 0, 0, 1, 0, 1]  # C1-C2, C2-C3, C3-C4 single; the rest no bond
    # a bond far longer than its elements allow
    stretched = _fragment_sdf(tmp_path, lambda t: t.replace("0.7265   -1.9701", "9.7265   -1.9701"))
    with pytest.raises(ValueError, match=r"fragment.sdf: bond 3-4 .* contradict"):
        domain.observe(3, stretched, n_atoms=9)
    # aromatic bonds RDKit cannot kekulise (a chain of four atoms marked aromatic)
    aromatic = _fragment_sdf(
        tmp_path, lambda t: t.replace("  1  2  1  0", "  1  2  4  0").replace("  2  3  1  0", "  2  3  4  0")
    )
    with pytest.raises(ValueError, match=r"fragment.sdf: record 1: RDKit cannot kekulise"):
        domain.observe(3, aromatic, n_atoms=9)
    charged = _fragment_sdf(tmp_path, lambda t: t.replace("M  END", "M  CHG  1   1   2\nM  END"))
    with pytest.raises(ValueError, match=r"charge\(s\) \[2\] outside this model's range \[-1, 1\]"):
        domain.observe(3, charged, n_atoms=9)
    xyz = tmp_path / "f.xyz"
    xyz.write_text("2\n\nC 0 0 0\nC 1.5 0 0\n")
    with pytest.raises(ValueError, match="f.xyz: a graph model grows from a fragment with bonds"):
        domain.observe(3, xyz, n_atoms=9)


def test_unpack_puts_each_bond_on_its_pair(domain, qm9_module):
    batch = next(iter(qm9_module.train_dataloader()))
    state = domain.unpack(batch)
    molecules = domain.decode(state)
    for k, m in enumerate(molecules):
        data = batch.get_example(k)
        want = order_matrix(np.c_[data.edge_index.T.numpy(), data.bond_order.numpy()], data.num_nodes)
        assert np.array_equal(m.bonds, want)


def test_graph_models_denoise_types_and_bonds_as_probabilities_and_the_choice_is_checked(qm9_module):
    """categorical=softmax: a graph model's atom types and bond orders are softmax blocks (auto: a point cloud's
    are not); even untrained (zero output heads) the denoiser hands back a nearly clean molecule's own types and
    bonds, and far from the data it returns probabilities times the scale."""
    from multidiff.core.processes import VPProcess
    from multidiff.core.schedules import PolynomialSchedule
    from multidiff.module import Preconditioned

    domain = MoleculeDomain(bonds=True, categorical="softmax")
    domain.bind(INFO)
    blocks = [(b.part, b.start, b.stop, b.scale) for b in domain.space.categorical.blocks]
    assert blocks == [("node", 3, 8, 0.25), ("pair", 0, 4, 0.5)]
    points = MoleculeDomain(categorical="auto")
    points.bind(INFO)
    assert points.categorical == "gaussian" and getattr(points.space, "categorical", None) is None
    with pytest.raises(ValueError, match="gaussian, softmax, discrete, auto"):
        MoleculeDomain(bonds=True, categorical="onehot")
    with pytest.raises(ValueError, match="type_weight=2"):
        MoleculeDomain(categorical="auto", type_weight=2)

    net = EGNN(ELEMENTS, charges=True, hidden=16, layers=2, bonds=True)
    model = Preconditioned(net, VPProcess(PolynomialSchedule()), domain.space)
    state = domain.unpack(next(iter(qm9_module.train_dataloader())))
    n = state.ctx["num_items"]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sigma in (0.02, 50.0):
            x = state.x + sigma * domain.space.noise(state.x, state.ctx, generator=gen)
            d = model(x, torch.full((n,), sigma), state)
            types, pair = d["node"][:, 3:8], d["pair"]
            torch.testing.assert_close(pair.sum(1), torch.full((len(pair),), 0.5))
            torch.testing.assert_close(types.sum(1), torch.full((len(types),), 0.25))
            if sigma < 1:
                assert torch.equal(pair.argmax(1), state.x["pair"].argmax(1))
                assert torch.equal(types.argmax(1), state.x["node"][:, 3:8].argmax(1))


def test_a_discrete_graph_model_starts_its_classes_from_the_datas_marginals(qm9_module):
    """categorical=discrete: the blocks of softmax, each with the data's class frequencies as its prior (the
    training split's atom types; bond orders over all atom pairs, mostly none); data that does not report them is
    refused by name. Near sigma = 0 the classes' own likelihood decides: an untrained EGNN hands back the classes
    it was given."""
    from multidiff.core.categorical import DiscreteCategorical
    from multidiff.core.processes import VPProcess
    from multidiff.core.schedules import PolynomialSchedule
    from multidiff.module import Preconditioned

    info = qm9_module.info()
    domain = MoleculeDomain(bonds=True, categorical="discrete", type_weight=2.0)
    domain.bind(info)
    cat = domain.space.categorical
    assert isinstance(cat, DiscreteCategorical) and cat.discrete
    types, bonds = cat.blocks
    assert (types.part, types.start, types.stop, types.weight) == ("node", 3, 8, 2.0)
    want = [info["atom_types"][e] for e in domain.elements]
    assert types.prior == pytest.approx([w / sum(want) for w in want], abs=1e-5)
    assert bonds.prior == pytest.approx(info["bond_orders"], abs=1e-5)
    batch = next(iter(qm9_module.train_dataloader()))  # the data's own share of bonded pairs, by counting
    counts = torch.bincount(batch.batch)
    pairs = float((counts * (counts - 1) / 2).sum())
    assert bonds.prior[0] == pytest.approx(1 - len(batch.bond_order) / pairs, abs=0.05)
    with pytest.raises(ValueError, match="no complete 'atom_types'"):
        MoleculeDomain(bonds=True, categorical="discrete").bind(INFO)
    with pytest.raises(ValueError, match="no complete 'bond_orders'"):
        MoleculeDomain(bonds=True, categorical="discrete").bind({**INFO, "atom_types": dict.fromkeys(ELEMENTS, 0.2)})

    net = EGNN(ELEMENTS, charges=True, hidden=16, layers=2, bonds=True)
    model = Preconditioned(net, VPProcess(PolynomialSchedule()), domain.space)
    state = domain.unpack(batch)
    n = state.ctx["num_items"]
    with torch.no_grad():
        x = cat.noisy(state.x, state.x, domain.space.per_item(torch.full((n,), 0.02), state.x, state.ctx))
        d = model(x, torch.full((n,), 0.02), state)
    assert torch.equal(d["pair"].argmax(1), x["pair"].argmax(1))
    assert torch.equal(d["node"][:, 3:8].argmax(1), x["node"][:, 3:8].argmax(1))
    assert (d["node"][:, 3:8].max(1).values > 0.9 * 0.25).all()


def test_a_run_resumes_only_with_the_categorical_choice_its_checkpoint_was_trained_with(qm9_module, tmp_path):
    """A checkpoint's config written before ``categorical`` existed means gaussian blocks, and one that stored
    ``auto`` before discrete became the graphs' default meant softmax: resuming either under today's default
    (auto = discrete) would silently change the model, so it is named as a difference. Run configs now store the
    resolved choice."""
    import train
    from multidiff.build import build_module

    target = "multidiff.domains.molecule.MoleculeDomain"
    old = {"_target_": target, "bonds": True}  # no categorical key
    now = MoleculeDomain(bonds=True, categorical="auto")
    assert now.categorical == "discrete"
    assert train.domain_differences(old, now) == ["domain.categorical: 'gaussian' in the checkpoint, 'discrete' now"]
    stored_auto = {"_target_": target, "bonds": True, "categorical": "auto"}
    assert train.domain_differences(stored_auto, now) == [
        "domain.categorical: 'softmax' in the checkpoint, 'discrete' now"
    ]
    same = {"_target_": target, "bonds": True, "categorical": "discrete", "png_max_molecules": 3}
    assert train.domain_differences(same, now) == []  # settings that do not change the model may differ
    assert train.domain_differences({"_target_": target, "bonds": True, "categorical": "gaussian"},
                                    MoleculeDomain(bonds=True)) == []  # fmt: skip
    cfg = compose_run("train", ["domain=molecule", "domain.bonds=true", "net.hidden=8", "net.layers=1"], tmp_path)
    assert cfg.domain.categorical == "auto"
    module = build_module(cfg, qm9_module.info())
    assert module.run_config["domain"]["categorical"] == "discrete"  # what a checkpoint of this run will say


def test_a_molecule_whose_hydrogens_cannot_be_folded_in_is_still_drawn():
    """Removing explicit hydrogens re-sanitises, which a generated graph can fail (here a five-bonded carbon);
    the export draws it as it is rather than failing the whole batch."""
    from rdkit.Chem import Draw

    from multidiff.domains.molecule.export import without_hydrogens

    rd = Chem.RWMol()
    for symbol in ["C"] + ["H"] * 5:
        atom = Chem.Atom(symbol)
        atom.SetNoImplicit(True)
        rd.AddAtom(atom)
    for h in range(1, 6):
        rd.AddBond(0, h, Chem.BondType.SINGLE)
    with pytest.raises(ValueError, match="valence"):
        Chem.RemoveHs(rd.GetMol(), sanitize=True)
    heavy = without_hydrogens(rd.GetMol())
    assert heavy.GetNumAtoms() == 1 and heavy.GetAtomWithIdx(0).GetSymbol() == "C"
    assert Draw.MolToImage(heavy).size[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("categorical", ["softmax", "auto"])  # auto: discrete
def test_graph_model_trains_samples_grows_and_evaluates_from_its_own_bonds(qm9_root, tmp_path, categorical):
    """train -> sample -> evaluate -> grow, each entry point's function on its composed config in-process (the
    command lines themselves are run by tests/test_readme.py and tests/test_seams.py)."""
    import evaluate as evaluate_script
    import sample
    import train

    run = tmp_path / "run"
    tiny = ["data.max_molecules=64", "data.batch_size=8", "net.hidden=16", "net.layers=2"]
    graph = ["domain=molecule", "domain.bonds=true", "mask=fragment", f"domain.categorical={categorical}"]
    train.train(compose_run("train", [*graph, f"data.root={qm9_root}", *tiny, "trainer.max_steps=6",
                                      "callbacks.samples=null", "optimized_metric=null"], run))  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "samples"
    sample.sample(compose_run("sample", [f"ckpt={ckpt}", "n=6", "steps=8", f"out={out}"], tmp_path / "s"))
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 6 and all(r.GetProp("bond_source") == "model" for r in records)

    evaluate = ["domain=molecule", f"samples={out / 'samples.sdf'}", f"data.root={qm9_root}"]
    metrics = evaluate_script.evaluate(
        compose_run("evaluate", [*evaluate, "+options.novelty=false", "+options.strain=false"], tmp_path / "e")
    )
    assert metrics["bonds"] == "file" and metrics["num_molecules"] == 6 and "validity_connected" in metrics

    # grow from a fragment: its atoms, coordinates and bonds come back exactly
    grown = tmp_path / "grown"
    frag = ROOT / "docs" / "fragment_c4.sdf"
    sample.sample(compose_run("sample", [f"ckpt={ckpt}", "n=3", "steps=8", f"observe={frag}",
                                         "+observe_options.n_atoms=10", f"out={grown}"], tmp_path / "g"))  # fmt: skip
    fragment = read_molecules(frag).molecules[0]
    for m in read_molecules(grown / "samples.sdf").molecules:
        assert len(m) == 10 and m.elements[:4] == fragment.elements
        assert np.array_equal(m.bonds[:4, :4], fragment.bonds)
        assert abs(m.positions[:4] - fragment.positions).max() < 1e-4
