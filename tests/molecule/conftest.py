"""Shared fixtures: QM9 processed once per machine (parsing qm9pack takes ~10 s) into a temp cache."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("qm9pack")


@pytest.fixture(scope="session")
def qm9_module(qm9_root: Path):
    from multidiff.domains.molecule import QM9DataModule

    dm = QM9DataModule(root=qm9_root, batch_size=8, max_molecules=64, progress=False)
    dm.setup()
    return dm
