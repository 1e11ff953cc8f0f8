"""The README's quickstart, run as written at tiny sizes: its commands cannot drift from the code."""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # trains, samples and evaluates through the command line

# what makes each entry point tiny; the README's own options stay, these replace or join them
TINY = {
    "train.py": ["data.max_molecules=64", "data.batch_size=8", "net.hidden=16", "net.layers=2", "trainer.max_steps=4"],
    "sample.py": ["n=4", "steps=3"],
    "evaluate.py": ["+options.novelty=false", "+options.strain=false"],
}


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Quickstart block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with ``extra`` applied: a key given in both takes the extra value."""
    keys = {e.split("=", 1)[0].lstrip("+") for e in extra}
    return [a for a in args if a.split("=", 1)[0].lstrip("+") not in keys] + extra


def test_quickstart_is_two_set_up_commands_then_the_entry_points():
    lines = quickstart()
    assert lines[:2] == ['pip install -e ".[dev]"', "python -m pytest -q"]
    assert {line.split()[1] for line in lines[2:]} == {"train.py", "sample.py", "evaluate.py"}
    assert len(lines) <= 10


def test_quickstart_commands_run(qm9_root, tmp_path):
    """Each command as written, run from an empty folder (so its relative outputs land there), at tiny sizes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    outputs = []
    for k, line in enumerate(quickstart()[2:]):
        script, *args = line.split()[1:]
        extra = [*TINY[script], *([f"hydra.run.dir=hydra_{k}"] if script != "train.py" else [])]
        extra += [f"data.root={qm9_root}"] if script != "sample.py" else []
        cmd = [sys.executable, str(ROOT / script), *with_overrides(args, extra)]
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{line}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
        outputs.append((script, run.stdout))
    assert list(tmp_path.rglob("samples.sdf")), "sample.py wrote no molecules"
    evaluated = next(out for script, out in outputs if script == "evaluate.py")
    metrics = json.loads(evaluated[evaluated.index("{") :])
    assert metrics["num_records"] == 4 and 0.0 <= metrics["mol_stable"] <= 1.0
