import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MULTIDIFF_SHARED", ROOT.parent / "shared")) / "datasets"

sys.path.insert(0, str(Path(__file__).parent))  # tests' own helpers (gmm.py)
sys.path.insert(0, str(ROOT))  # train.py / sample.py / evaluate.py

# small models on a 2-core machine run several times faster on one thread
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only real datasets shipped beside the repository (../shared/datasets)."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (set MULTIDIFF_SHARED to the folder holding datasets/)")
    return SHARED
