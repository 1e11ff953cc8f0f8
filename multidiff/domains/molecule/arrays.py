"""The processed-dataset cache: packed arrays (see :mod:`.data`) in one torch file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiff.paths import replaced


def save_arrays(arrays: dict[str, Any], path: Path) -> None:
    """Packed arrays -> one torch file, written atomically."""
    tensors = {k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
    tensors["splits"] = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays["splits"].items()}
    with replaced(path) as tmp:  # an interrupted run never leaves a half-written cache
        torch.save(tensors, tmp)


def load_arrays(path: Path) -> dict[str, Any]:
    """Inverse of :func:`save_arrays` (numpy arrays again)."""
    raw = torch.load(path, weights_only=True)
    out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
    out["splits"] = {k: v.numpy() for k, v in raw["splits"].items()}
    return out
