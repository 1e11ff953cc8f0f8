"""Latent diffusion for molecules end to end (GeoLDM-style): the equivariant autoencoder, a diffusion model on its
latent points, sample.py to SDF read back by RDKit, evaluate.py, and growing from a fragment in latent space."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import compose
from rdkit import Chem

import evaluate
import sample
import train
from multidiff.build import load_autoencoder, load_checkpoint
from multidiff.core.space import GraphSpace

pytestmark = pytest.mark.slow  # trains two stages and samples

TINY = ["domain=molecule", "data.max_molecules=64", "data.batch_size=8", "callbacks.samples=null"]


def test_two_stages_sample_evaluate_and_grow(qm9_root, tmp_path):
    base = [*TINY, f"data.root={qm9_root}"]
    ae_overrides = ["stage=autoencoder", "autoencoder.net.hidden=16", "autoencoder.net.layers=2", "trainer.max_steps=3"]
    train.train(compose("train", [*base, *ae_overrides], tmp_path / "ae"))
    ae = tmp_path / "ae" / "checkpoints" / "last.ckpt"
    stage_one = load_autoencoder(ae, domain="molecule")
    assert isinstance(stage_one.autoencoder.space, GraphSpace)

    tiny_net = ["net.hidden=16", "net.layers=2", "trainer.max_steps=3"]
    train.train(compose("train", [*base, f"latent={ae}", *tiny_net], tmp_path / "ld"))
    ld = tmp_path / "ld" / "checkpoints" / "last.ckpt"
    module = load_checkpoint(ld, domain="molecule")
    # the denoiser takes latent points: 3 coordinates + 2 invariant features, in the zero centre-of-mass space
    assert module.model.net.node_features == 2 and isinstance(module.domain.space, GraphSpace)

    out = tmp_path / "out"
    sample.sample(compose("sample", [f"ckpt={ld}", "n=6", "steps=4", f"out={out}"], tmp_path / "s"))
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 6 and all(r is not None and r.GetNumAtoms() > 0 for r in records)
    opts = ["+options.novelty=false", "+options.strain=false"]
    metrics = evaluate.evaluate(
        compose(
            "evaluate",
            ["domain=molecule", f"samples={out / 'samples.sdf'}", f"data.root={qm9_root}", *opts],
            tmp_path / "e",
        )
    )
    assert metrics["num_molecules"] == 6 and 0.0 <= metrics["atom_stable"] <= 1.0

    # a fragment: its atoms are kept exactly (in its own frame) by molecules generated in latent space
    from multidiff.domains.molecule.export import write_sdf
    from multidiff.domains.molecule.io import read_molecules
    from multidiff.domains.molecule.structures import Molecule

    first = read_molecules(out / "samples.sdf").molecules[0]
    fragment = Molecule(first.positions[:3] + [7.0, -2.0, 3.0], ["C", "C", "O"], name="fragment")
    frag_file = write_sdf([fragment], tmp_path / "fragment.sdf")
    grown = tmp_path / "grown"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={ld}", "n=2", "steps=4", f"observe={frag_file}", "+observe_options.n_atoms=9", f"out={grown}"],
            tmp_path / "g",
        )
    )
    for mol in read_molecules(grown / "samples.sdf").molecules:
        assert len(mol.elements) == 9 and mol.elements[:3] == ["C", "C", "O"]
        assert np.abs(mol.positions[:3] - fragment.positions).max() < 1e-3
