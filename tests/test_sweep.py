"""Hydra multirun from the command line: each job trains in its own folder under hydra.sweep.dir."""

import subprocess
import sys

import pytest
from helpers import ROOT, TINY_AUDIO

pytestmark = pytest.mark.slow  # end to end: trains, samples or runs the CLI


def test_multirun_sweep_over_processes(shared_datasets, tmp_path):
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "domain=audio",
        "process=edm,vp_v",
        "trainer.max_steps=2",
        f"paths.data_dir={shared_datasets}",
        f"hydra.sweep.dir={tmp_path}",
        *TINY_AUDIO,
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
    assert "vp_v" in (tmp_path / "1" / ".hydra" / "overrides.yaml").read_text()
