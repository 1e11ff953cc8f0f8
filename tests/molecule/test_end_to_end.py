"""train.py -> sample.py -> evaluate.py on a tiny EGNN and a few QM9 molecules (command-line entry points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rdkit import Chem

pytestmark = pytest.mark.slow  # end to end: trains, samples or runs the CLI

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_train_sample_evaluate(qm9_root, tmp_path):
    run = tmp_path / "run"
    _run(
        [
            "train.py",
            "domain=molecule",
            "trainer.max_steps=20",
            f"hydra.run.dir={run}",
            f"data.root={qm9_root}",
            "data.max_molecules=64",
            "data.batch_size=8",
            "net.hidden=16",
            "net.layers=2",
            "callbacks.samples.every_n_steps=10",
            "callbacks.samples.n=4",
            "sampler.steps=5",
        ],
        ROOT,
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert (run / "samples" / "step_0000010" / "samples.sdf").is_file()  # exported during training

    out = tmp_path / "samples"
    _run(["sample.py", f"ckpt={ckpt}", "n=16", "steps=50", f"out={out}", f"hydra.run.dir={tmp_path / 's'}"], ROOT)
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 16 and all(r is not None and r.GetNumAtoms() > 0 for r in records)
    assert all(r.HasProp("valid") for r in records)
    assert (out / "samples.png").stat().st_size > 0 and (out / "samples.xyz").is_file()

    text = _run(
        [
            "evaluate.py",
            "domain=molecule",
            f"samples={out / 'samples.sdf'}",
            f"data.root={qm9_root}",
            "+options.novelty=false",
            "+options.strain=false",
            f"hydra.run.dir={tmp_path / 'e'}",
        ],
        ROOT,
    )
    metrics = json.loads(text[text.index("{") :])
    assert metrics["num_records"] == 16 and metrics["num_molecules"] == 16
    assert 0.0 <= metrics["mol_stable"] <= 1.0 and "bond_length_w1" in metrics
