"""What a domain shows of its samples, for loggers and pages that cannot read its file formats.

A domain turns generated items into these (:meth:`multidiff.core.domain.Domain.media`); each logger draws them its
own way (:mod:`multidiff.loggers`): a clip to listen to, a cloud of points to turn, a picture to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Clip:
    """Mono audio in [-1, 1]."""

    name: str
    samples: np.ndarray  # (frames,) float32
    rate: int


@dataclass(frozen=True)
class Cloud:
    """Points in 3D, optionally coloured (atoms by element, say)."""

    name: str
    points: np.ndarray  # (n, 3) float32
    colors: np.ndarray | None = None  # (n, 3) uint8


@dataclass(frozen=True)
class Picture:
    """A PNG the domain wrote (a preview grid, spectrograms, a molecule grid)."""

    name: str
    path: Path


Media = Clip | Cloud | Picture


def pictures(files: list[Path]) -> list[Picture]:
    """The PNGs among ``files``, named by their stem."""
    return [Picture(Path(f).stem, Path(f)) for f in files if Path(f).suffix == ".png"]
