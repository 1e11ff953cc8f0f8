"""Normalisation of point clouds and fixed-size resampling.

Modes (``normalize`` in the data config; always recorded in ``info()`` and in every metric):

* ``global``: PointFlow's default: subtract the training set's per-axis mean and divide by its
  standard deviation over all coordinates (one scalar). Invertible for generated shapes.
* ``unit_sphere``: per shape, centroid at the origin and the farthest point at radius 1.
* ``bbox``: per shape, bounding-box centre at the origin and the longest side scaled to 2
  (the shape fits [-1, 1]^3), as DPM/PVD's ``shape_bbox`` evaluation protocol.
* ``shape_std``: per shape, PointFlow's ``normalize_per_shape``: centroid at the origin, divided by
  the standard deviation of all its coordinates.
* ``none``: raw coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MODES = ("global", "unit_sphere", "bbox", "shape_std", "none")
PER_SHAPE = ("unit_sphere", "bbox", "shape_std")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; valid: {', '.join(MODES)}")
    return mode


def shape_frame(points: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """(centre (3,), scale) of one shape under a per-shape mode: normalised = (p - centre) / scale."""
    if mode == "unit_sphere":
        c = points.mean(0)
        s = float(np.linalg.norm(points - c, axis=1).max())
    elif mode == "bbox":
        lo, hi = points.min(0), points.max(0)
        c, s = (lo + hi) / 2, float((hi - lo).max() / 2)
    elif mode == "shape_std":
        c = points.mean(0)
        s = float((points - c).std())
    else:
        raise ValueError(f"{mode!r} is not a per-shape normalisation; valid: {', '.join(PER_SHAPE)}")
    return c, max(s, 1e-12)


@dataclass
class Normalizer:
    """A normalisation mode plus, for ``global``, the statistics fitted on training shapes."""

    mode: str = "global"
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: float = 1.0

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def fit(self, shapes: list[np.ndarray]) -> Normalizer:
        """Fit global statistics (a no-op for the other modes)."""
        if self.mode == "global" and shapes:
            allp = np.concatenate(shapes).astype(np.float64)
            self.mean = allp.mean(0).tolist()
            self.std = float(allp.std())  # one scalar over all coordinates, as PointFlow
        return self

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return points.astype(np.float32)
        if self.mode == "global":
            return ((points - np.asarray(self.mean)) / self.std).astype(np.float32)
        c, s = shape_frame(points, self.mode)
        return ((points - c) / s).astype(np.float32)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """Back to data units; per-shape modes have no inverse for new shapes (identity)."""
        if self.mode == "global":
            return (points * self.std + np.asarray(self.mean)).astype(np.float32)
        return np.asarray(points, dtype=np.float32)

    def to_dict(self) -> dict:
        d = {"mode": self.mode}
        if self.mode == "global":
            d.update(mean=[float(v) for v in self.mean], std=float(self.std))
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalizer:
        d = d or {"mode": "none"}
        return cls(d.get("mode", "none"), list(d.get("mean", [0.0, 0.0, 0.0])), float(d.get("std", 1.0)))


def resample(points: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Exactly ``n`` points: a random subset, or, for smaller shapes, all points plus draws with
    replacement. Returns (points, whether replacement was needed)."""
    m = len(points)
    if m >= n:
        return points[rng.choice(m, n, replace=False)], False
    extra = rng.choice(m, n - m, replace=True)
    idx = np.concatenate([rng.permutation(m), extra])
    return points[idx], True
