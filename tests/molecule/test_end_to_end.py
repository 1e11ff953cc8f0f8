"""train.py -> sample.py -> evaluate.py on a tiny EGNN and a few QM9 molecules: each entry point's function on its
composed config, in-process (the command lines themselves run in tests/test_readme.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rdkit import Chem

import evaluate
import sample
import train
from multidiff.config import compose_run

pytestmark = pytest.mark.slow  # end to end: trains, samples and evaluates

ROOT = Path(__file__).resolve().parents[2]


def _train(qm9_root: Path, tmp_path: Path, *overrides: str) -> Path:
    """train.py on a tiny EGNN and 64 QM9 molecules; returns the run directory."""
    run = tmp_path / "run"
    tiny = ["data.max_molecules=64", "data.batch_size=8", "net.hidden=16", "net.layers=2"]
    train.train(compose_run("train", ["domain=molecule", f"data.root={qm9_root}", *tiny, *overrides], run))
    return run


def test_train_sample_evaluate(qm9_root, tmp_path):
    run = _train(
        qm9_root,
        tmp_path,
        "trainer.max_steps=20",
        "callbacks.samples.every_n_steps=10",
        "callbacks.samples.n=4",
        "sampler.steps=5",
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert (run / "samples" / "step_0000010" / "samples.sdf").is_file()  # exported during training

    out = tmp_path / "samples"
    sample.sample(compose_run("sample", [f"ckpt={ckpt}", "n=16", "steps=50", f"out={out}"], tmp_path / "s"))
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 16 and all(r is not None and r.GetNumAtoms() > 0 for r in records)
    assert all(r.HasProp("valid") for r in records)
    assert (out / "samples.png").stat().st_size > 0 and (out / "samples.xyz").is_file()

    metrics = evaluate.evaluate(
        compose_run(
            "evaluate",
            [
                "domain=molecule",
                f"samples={out / 'samples.sdf'}",
                f"data.root={qm9_root}",
                "+options.novelty=false",
                "+options.strain=false",
            ],
            tmp_path / "e",
        )
    )
    assert metrics["num_records"] == 16 and metrics["num_molecules"] == 16
    assert 0.0 <= metrics["mol_stable"] <= 1.0 and "bond_length_w1" in metrics

    # grow molecules from a fragment given in its own frame: its atoms come first, on its coordinates
    from multidiff.domains.molecule.export import write_sdf
    from multidiff.domains.molecule.io import read_molecules
    from multidiff.domains.molecule.structures import Molecule

    first = read_molecules(out / "samples.sdf").molecules[0]
    fragment = Molecule(first.positions[:3] + [7.0, -2.0, 3.0], first.elements[:3], name="fragment")
    frag_file = write_sdf([fragment], tmp_path / "fragment.sdf")
    grown = tmp_path / "grown"
    args = [
        f"ckpt={ckpt}",
        "n=4",
        "steps=10",
        f"observe={frag_file}",
        "+observe_options.n_atoms=12",
        f"out={grown}",
    ]
    sample.sample(compose_run("sample", args, tmp_path / "g"))
    records = list(Chem.SDMolSupplier(str(grown / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 4
    for r in records:
        assert r.GetNumAtoms() == 12 and r.GetProp("given_atoms") == "1 2 3"
        assert [a.GetSymbol() for a in r.GetAtoms()][:3] == fragment.elements
        given = r.GetConformer().GetPositions()[:3]
        assert abs(given - fragment.positions).max() < 1e-4  # the SDF's 4 decimals
    metrics = evaluate.evaluate(
        compose_run(
            "evaluate",
            [
                "domain=molecule",
                f"samples={grown / 'samples.sdf'}",
                f"data.root={qm9_root}",
                "+options.novelty=false",
                "+options.strain=false",
                f"+options.fragment={frag_file}",
            ],
            tmp_path / "e2",
        )
    )
    assert metrics["fragment_rmsd"] < 1e-4 and metrics["fragment_elements_kept"] == 1.0
    assert 0.0 <= metrics["fragment_retention"] <= 1.0


def test_train_with_fragments_then_grow_by_the_network(qm9_root, tmp_path):
    """train.py mask=fragment: the EGNN learns from fragments; sample.py grows the given one through it."""
    from multidiff.domains.molecule.io import read_molecules

    run = _train(qm9_root, tmp_path, "mask=fragment", "trainer.max_steps=3", "callbacks.samples=null")
    fragment = read_molecules(ROOT / "docs" / "fragment_c4.sdf").molecules[0]
    grown = tmp_path / "grown"
    args = [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "n=3", "steps=8", f"out={grown}"]
    sample.sample(compose_run("sample", [*args, f"observe={ROOT / 'docs' / 'fragment_c4.sdf'}"], tmp_path / "g"))
    assert json.loads((grown / "sampling.json").read_text())["observe_with"] == "model"
    records = list(Chem.SDMolSupplier(str(grown / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 3
    for r in records:
        assert r.GetNumAtoms() > 4 and r.GetProp("given_atoms") == "1 2 3 4"
        assert abs(r.GetConformer().GetPositions()[:4] - fragment.positions).max() < 1e-4
