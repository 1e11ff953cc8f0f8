"""Spaces: what "noise", "per-item" and "mean over an item" mean for a domain's state.

A state is ``x`` plus a context dict ``ctx`` of extra tensors (a PyG batch vector, masks, ...). Images, audio
and point clouds are plain ``(B, ...)`` tensors; molecules as point clouds are ``(num_nodes, F)`` node tensors
grouped by ``ctx["batch"]``; molecules as graphs add one row per atom pair (:class:`PairGraphSpace`, a
:class:`~.parts.Parts` state).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parts import Parts


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

    def _scatter_mean(self, e: Tensor, ctx: dict, key: str = "batch") -> Tensor:
        b, n = ctx[key], int(ctx["num_items"])
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


def all_pairs(batch: Tensor, num_items: int) -> Tensor:
    """``(2, P)``: every unordered pair ``i < j`` of nodes within each item, item by item and row-major (``batch``
    sorted, as PyG batches are). One row per unordered pair: pair features are symmetric and free of self-pairs
    by construction."""
    counts = torch.bincount(batch, minlength=num_items)
    starts = torch.cumsum(counts, 0) - counts
    i_parts, j_parts = [], []
    for n in counts.unique().tolist():  # one triu per distinct size, not per item
        if n < 2:
            continue
        items = (counts == n).nonzero().squeeze(1)
        i, j = torch.triu_indices(n, n, 1, device=batch.device)
        i_parts.append((starts[items, None] + i).reshape(-1))
        j_parts.append((starts[items, None] + j).reshape(-1))
    if not i_parts:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    i, j = torch.cat(i_parts), torch.cat(j_parts)
    order = torch.argsort(i * len(batch) + j)  # item by item, row-major within an item
    return torch.stack([i[order], j[order]])


def pair_ids(index: Tensor, pairs: Tensor, num_nodes: int) -> Tensor:
    """Positions in ``pairs`` (from :func:`all_pairs`) of the node pairs ``index`` ``(2, M)``, either order."""
    lo, hi = index.min(0).values, index.max(0).values
    keys = pairs[0] * num_nodes + pairs[1]  # sorted, since pairs are row-major over sorted nodes
    found = torch.searchsorted(keys, lo * num_nodes + hi)
    if (found >= len(keys)).any() or (keys[found.clamp(max=len(keys) - 1)] != lo * num_nodes + hi).any():
        raise ValueError("pair_ids: a pair joins two items or a node to itself")
    return found


def pair_context(batch: Tensor, num_items: int) -> dict:
    """The context of a :class:`PairGraphSpace` state: ``batch``, ``num_items``, ``pair_index``, ``pair_batch``."""
    pairs = all_pairs(batch, num_items)
    return {"batch": batch, "num_items": num_items, "pair_index": pairs, "pair_batch": batch[pairs[0]]}


class PairGraphSpace(GraphSpace):
    """Variable-size items as graphs: :class:`~.parts.Parts` with ``node`` rows as in :class:`GraphSpace`
    (coordinates first, kept at zero centre of mass) and ``pair`` rows, one per unordered node pair of an item
    (``ctx["pair_index"]`` ``(2, P)`` from :func:`all_pairs`, ``ctx["pair_batch"]`` their items). Pair noise is
    drawn once per unordered pair, so the pair features stay symmetric through every sampler.

    ``pair_weight``: the pair rows' share of an item's loss against the node rows' (1: equal), the per-part
    loss weight."""

    def __init__(self, com_dims: int = 3, pair_weight: float = 1.0):
        super().__init__(com_dims)
        if pair_weight < 0:
            raise ValueError(f"pair_weight={pair_weight}: a loss weight must be >= 0")
        self.pair_weight = pair_weight

    @staticmethod
    def _check(x: object) -> None:
        if not isinstance(x, Parts) or set(x.keys()) != {"node", "pair"}:
            raise TypeError(f"a graph state is Parts(node=..., pair=...), got {x!r}")

    def per_item(self, v: Tensor, x: Parts, ctx: dict) -> Parts:
        return Parts({"node": v[ctx["batch"]].unsqueeze(-1), "pair": v[ctx["pair_batch"]].unsqueeze(-1)})

    def project(self, z: Parts, ctx: dict) -> Parts:
        self._check(z)
        return z.replace(node=self.remove_com(z["node"], ctx))

    def noise(self, x: Parts, ctx: dict, generator: torch.Generator | None = None) -> Parts:
        self._check(x)
        return self.project(Parts({"node": randn(x["node"], generator), "pair": randn(x["pair"], generator)}), ctx)

    def item_mean(self, e: Parts, ctx: dict) -> Tensor:
        node = self._scatter_mean(e["node"], ctx).mean(1)
        if not e["pair"].numel():
            return node
        pair = self._scatter_mean(e["pair"], ctx, "pair_batch").mean(1)
        # an item of one node has no pairs: its mean is its node rows' alone
        w = self.pair_weight * (torch.bincount(ctx["pair_batch"], minlength=len(node)) > 0).to(node.dtype)
        return (node + w * pair) / (1 + w)

    def align(self, values: Parts, x: Parts, mask: Parts, ctx: dict) -> Parts:
        """The node rows as :meth:`GraphSpace.align` moves them; pair features have no frame."""
        return values.replace(node=super().align(values["node"], x["node"], mask["node"], ctx))
