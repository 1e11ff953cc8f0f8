"""A PNG grid of 3-D scatter renders (matplotlib's object API: no display, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def render_grid(
    clouds: list[np.ndarray],
    path: Path | str,
    titles: list[str] | None = None,
    max_shapes: int = 16,
    up: str = "y",
    point_size: float = 1.0,
    dpi: int = 100,
    observed: list[int] | None = None,
) -> Path:
    """Scatter-plot up to ``max_shapes`` clouds in a square-ish grid; ``up`` is the vertical axis
    (ShapeNet and ModelNet PCD are y-up). ``observed``: per cloud, how many leading points were given (drawn
    in red, the generated rest coloured by height)."""
    if up not in ("x", "y", "z"):
        raise ValueError(f"up must be x, y or z, got {up!r}")
    clouds = clouds[:max_shapes]
    n = max(len(clouds), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows))
    # matplotlib's vertical axis is z: rotate the up axis there
    order = {"x": (1, 2, 0), "y": (0, 2, 1), "z": (0, 1, 2)}[up]
    for k, pts in enumerate(clouds):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        p = np.asarray(pts, dtype=np.float32)[:, order]
        centre = (p.max(0) + p.min(0)) / 2
        radius = float((p.max(0) - p.min(0)).max() / 2) or 1.0
        m = observed[k] if observed else 0
        ax.scatter(p[m:, 0], p[m:, 1], p[m:, 2], s=point_size, c=p[m:, 2], cmap="viridis", linewidths=0)
        if m:
            ax.scatter(p[:m, 0], p[:m, 1], p[:m, 2], s=2 * point_size, c="tab:red", linewidths=0)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(c - radius, c + radius)
        ax.set_box_aspect((1, 1, 1), zoom=1.35)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
