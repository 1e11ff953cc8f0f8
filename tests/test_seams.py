"""The architecture's seams: the core stands alone, and nothing swallows a misspelt option."""

import re
import subprocess
import sys

import pytest
from helpers import ROOT


def test_core_imports_nothing_from_the_domains():
    code = (
        "import importlib, pkgutil, sys\n"
        "import multidiff.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module(f'multidiff.core.{m.name}')\n"
        "bad = sorted(m for m in sys.modules if m.startswith('multidiff.domains'))\n"
        "print(len(list(pkgutil.iter_modules(core.__path__))), bad)\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[0]) >= 8  # every core module was imported, not none


def test_no_catch_all_keyword_arguments_in_samplers_and_domains():
    files = [ROOT / "multidiff" / "core" / "samplers.py", *(ROOT / "multidiff" / "domains").rglob("*.py")]
    offenders = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if re.search(r"\*\*_\b", line)
    ]
    assert not offenders, offenders


@pytest.mark.slow
def test_sample_cli_rejects_misspelt_sampler_option_and_condition(tiny_audio_ckpt, tmp_path):
    """The two typos a user makes: both fail before any work, naming what is valid."""
    for override, expected in (
        ("+sampler.s_chrun=1", "s_churn"),
        ("+condition.lable=x", "digit, label"),
    ):
        r = subprocess.run(
            [
                sys.executable,
                "sample.py",
                f"ckpt={tiny_audio_ckpt}",
                "sampler=heun",
                "n=1",
                "steps=2",
                override,
                f"out={tmp_path}/o",
                f"hydra.run.dir={tmp_path}/h",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode != 0 and expected in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "o").exists()
