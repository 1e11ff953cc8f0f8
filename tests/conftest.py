import os
import sys
import tempfile
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch, as the entry points)

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests' own helpers (helpers.py, gmm.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train.py / sample.py / evaluate.py

from helpers import SHARED, TINY_AUDIO, TINY_PC, compose

# small models on a 2-core machine run several times faster on one thread
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only real datasets shipped beside the repository (../shared/datasets)."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (set MULTIDIFF_SHARED to the folder holding datasets/)")
    return SHARED


@pytest.fixture
def audio_cfg(shared_datasets, tmp_path):
    """Compose a tiny FSDD training run: ``audio_cfg(*overrides, out=DIR)``."""

    def make(*overrides: str, out: Path | None = None):
        return compose(
            "train",
            ["domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO, *overrides],
            out or tmp_path / "run",
        )

    return make


@pytest.fixture(scope="session")
def tiny_audio_ckpt(tmp_path_factory, shared_datasets) -> Path:
    """A checkpoint of a tiny audio model trained for one step (read-only for the tests that share it)."""
    import train

    run = tmp_path_factory.mktemp("tiny_audio") / "run"
    cfg = compose(
        "train", ["domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO, "trainer.max_steps=1"], run
    )
    train.train(cfg)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_audio_masked_ckpt(tmp_path_factory, shared_datasets) -> Path:
    """The tiny audio model trained with observation masks (mask=spans) for two steps."""
    import train

    run = tmp_path_factory.mktemp("tiny_audio_masked") / "run"
    overrides = ["domain=audio", "mask=spans", f"paths.data_dir={shared_datasets}", *TINY_AUDIO, "trainer.max_steps=2"]
    train.train(compose("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_points_ckpt(tmp_path_factory, shared_datasets) -> Path:
    """A checkpoint of a tiny ShapeNet airplane model trained for one step."""
    import train

    run = tmp_path_factory.mktemp("tiny_points") / "run"
    overrides = [f"paths.data_dir={shared_datasets}", *TINY_PC, "data=shapenet", "trainer.max_steps=1"]
    train.train(compose("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_molecule_ckpt(tmp_path_factory, qm9_root) -> Path:
    """A checkpoint of a tiny QM9 EGNN trained for one step on 64 molecules."""
    import train

    run = tmp_path_factory.mktemp("tiny_molecule") / "run"
    tiny = ["data.max_molecules=64", "data.batch_size=8", "net.hidden=16", "net.layers=2", "trainer.max_steps=1"]
    overrides = ["domain=molecule", f"data.root={qm9_root}", *tiny, "callbacks.samples=null", "callbacks.progress=null"]
    train.train(compose("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def qm9_root() -> Path:
    """QM9 (from the qm9pack package) processed once per machine into a per-user cache outside the repository,
    reused across runs: the cache file is versioned, so a format change writes a new file, never reads a stale one."""
    pytest.importorskip("qm9pack")
    root = Path(tempfile.gettempdir()) / f"multidiff-test-cache-{os.getuid()}" / "qm9"
    root.mkdir(parents=True, exist_ok=True)
    return root
