"""Spaces: what "noise", "per-item" and "mean over an item" mean for a domain's state.

A state is one tensor ``x`` plus a context dict ``ctx`` of extra tensors (a PyG batch vector,
masks, ...). Images, audio and point clouds are plain ``(B, ...)`` tensors; molecules are
``(num_nodes, F)`` node tensors grouped by ``ctx["batch"]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def randn(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise like ``x``, drawn on the generator's device for reproducibility."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class TensorSpace:
    """Items stacked along dim 0; noise is i.i.d. standard normal."""

    def num_items(self, x: Tensor, ctx: dict) -> int:
        return x.shape[0]

    def per_item(self, v: Tensor, x: Tensor, ctx: dict) -> Tensor:
        """Broadcast a per-item vector ``(B,)`` against ``x``."""
        return v.reshape(-1, *([1] * (x.dim() - 1)))

    def project(self, z: Tensor, ctx: dict) -> Tensor:
        """Gaussian noise of the whole tensor into the space: here the space is the whole tensor."""
        return z

    def noise(self, x: Tensor, ctx: dict, generator: torch.Generator | None = None) -> Tensor:
        return randn(x, generator)

    def item_mean(self, e: Tensor, ctx: dict) -> Tensor:
        """Mean of an elementwise tensor over each item: ``(B, ...) -> (B,)``."""
        return e.reshape(e.shape[0], -1).mean(1)

    def align(self, values: Tensor, x: Tensor, mask: Tensor, ctx: dict) -> Tensor:
        """No free frame: observed values are where they are."""
        return values


class GraphSpace:
    """Variable-size items (molecules) as node rows grouped by ``ctx["batch"]``.

    The first ``com_dims`` columns are coordinates kept in the zero centre-of-mass subspace:
    their noise is projected per item so the process never leaves it (EDM, Hoogeboom 2022).
    """

    def __init__(self, com_dims: int = 3):
        self.com_dims = com_dims

    def num_items(self, x: Tensor, ctx: dict) -> int:
        return int(ctx["num_items"])

    def per_item(self, v: Tensor, x: Tensor, ctx: dict) -> Tensor:
        return v[ctx["batch"]].unsqueeze(-1)

    def _scatter_mean(self, e: Tensor, ctx: dict) -> Tensor:
        b, n = ctx["batch"], self.num_items(e, ctx)
        total = torch.zeros(n, *e.shape[1:], device=e.device, dtype=e.dtype).index_add_(0, b, e)
        count = torch.bincount(b, minlength=n).clamp(min=1).to(e.dtype)
        return total / count.reshape(-1, *([1] * (e.dim() - 1)))

    def remove_com(self, x: Tensor, ctx: dict) -> Tensor:
        d = self.com_dims
        pos = x[:, :d] - self._scatter_mean(x[:, :d], ctx)[ctx["batch"]]
        return torch.cat([pos, x[:, d:]], dim=1)

    def project(self, z: Tensor, ctx: dict) -> Tensor:
        """Gaussian noise of the whole tensor into the space: the coordinates' centre of mass removed."""
        return self.remove_com(z, ctx)

    def noise(self, x: Tensor, ctx: dict, generator: torch.Generator | None = None) -> Tensor:
        return self.project(randn(x, generator), ctx)

    def item_mean(self, e: Tensor, ctx: dict) -> Tensor:
        return self._scatter_mean(e, ctx).mean(1)

    def align(self, values: Tensor, x: Tensor, mask: Tensor, ctx: dict) -> Tensor:
        """Translate each item's observed coordinates so that the centroid of its known rows (those whose
        coordinates ``mask`` marks) matches ``x``'s centroid of the same rows; the shape they form is kept
        exactly. Features other than coordinates are left as they are."""
        d = self.com_dims
        known = torch.broadcast_to(mask, values.shape)[:, :d].all(1, keepdim=True).to(values.dtype)
        b, n = ctx["batch"], self.num_items(x, ctx)
        count = torch.zeros(n, 1, dtype=values.dtype, device=values.device).index_add_(0, b, known).clamp(min=1)

        def centroid(v: Tensor) -> Tensor:
            total = torch.zeros(n, d, dtype=values.dtype, device=values.device).index_add_(0, b, v[:, :d] * known)
            return total / count

        shift = (centroid(x.to(values.dtype)) - centroid(values))[b]
        return torch.cat([values[:, :d] + shift, values[:, d:]], dim=1)
