"""QM9 / drug-like data modules and the domain's state <-> molecule mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multidiff.domains.molecule import DrugsDataModule, MoleculeDomain, QM9DataModule


def test_qm9_split_and_info(qm9_module):
    arrays = qm9_module.load()
    splits = arrays["splits"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    assert len(np.unique(np.concatenate(list(splits.values())))) == 130_831
    info = qm9_module.info()
    json.dumps(info)
    assert info["elements"] == ["H", "C", "N", "O", "F"] and info["condition"] is None
    assert sum(info["node_counts"]["counts"]) == 64  # max_molecules=64 training molecules
    assert max(info["node_counts"]["values"]) <= 29


def test_qm9_batches(qm9_module):
    batch = next(iter(qm9_module.train_dataloader()))
    assert batch.num_graphs == 8
    assert batch.pos.shape == (batch.num_nodes, 3) and batch.atom_type.dtype == torch.long
    assert batch.batch.shape == (batch.num_nodes,) and int(batch.batch.max()) == 7
    assert set(batch.charge.unique().tolist()) <= {-1, 0, 1}
    assert not hasattr(batch, "cond") or batch.cond is None


def test_condition_on_a_property_and_unknown_name(qm9_root):
    dm = QM9DataModule(root=qm9_root, batch_size=16, condition="gap", max_molecules=32, progress=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    info = dm.info()
    mean, std = info["condition"]["mean"][0], info["condition"]["std"][0]
    assert batch.cond.shape == (16, 1)
    assert torch.allclose(batch.cond * std + mean, batch.y, atol=1e-4)
    assert 5.0 < mean < 9.0 and info["condition"]["units"] == ["eV"]  # QM9's gap is ~6.9 eV

    with pytest.raises(ValueError, match=r"band_gap.*valid names.*alpha.*gap"):
        QM9DataModule(root=qm9_root, condition="band_gap", progress=False)


def test_domain_unpack_decode_round_trip_and_template(qm9_root):
    dm = QM9DataModule(root=qm9_root, batch_size=8, condition=["alpha", "gap"], max_molecules=16, progress=False)
    dm.setup()
    domain = MoleculeDomain()
    domain.bind(dm.info())
    batch = next(iter(dm.train_dataloader()))
    state = domain.unpack(batch)
    assert state.x.shape == (batch.num_nodes, 3 + 5 + 1) and state.cond.shape == (8, 2)
    com = torch.zeros(8, 3).index_add_(0, batch.batch, state.x[:, :3])
    assert com.abs().max() < 1e-4  # zero centre of mass per molecule
    assert torch.allclose(state.x[:, 3:8].sum(1), torch.full((batch.num_nodes,), 0.25))

    molecules = domain.decode(state)
    assert [len(m) for m in molecules] == torch.bincount(batch.batch).tolist()
    assert sum(m.elements.count("H") for m in molecules) == int((batch.atom_type == 0).sum())
    assert np.concatenate([m.charges for m in molecules]).tolist() == batch.charge.tolist()
    assert molecules[0].properties["gap"] == pytest.approx(float(batch.y[0, 1]), rel=1e-4)

    gen = torch.Generator().manual_seed(0)
    cond = domain.condition(5, alpha=70.0, gap=6.0)
    template = domain.template(5, cond, gen)
    counts = torch.bincount(template.ctx["batch"], minlength=5)
    assert template.ctx["num_items"] == 5 and template.x.shape == (int(counts.sum()), 9)
    assert set(counts.tolist()) <= set(dm.info()["node_counts"]["values"])
    fixed = domain.template(3, None, gen, num_atoms=12)
    assert torch.bincount(fixed.ctx["batch"]).tolist() == [12, 12, 12]
    with pytest.raises(ValueError, match="missing"):
        domain.condition(5, gap=6.0)


def test_drug_like_set_builds_conformers(tmp_path):
    dm = DrugsDataModule(root=tmp_path, limit=12, batch_size=4, condition="logp", progress=False)
    dm.setup()
    info = dm.info()
    assert "C" in info["elements"] and info["condition"]["names"] == ["logp"]
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 4 and batch.pos.shape[1] == 3
    domain = MoleculeDomain()
    domain.bind(info)
    metrics = domain.quick_metrics(domain.decode(domain.unpack(batch)))
    assert metrics["validity"] == 1.0  # MMFF-relaxed conformers of real molecules
