"""E(n)-equivariant graph network denoiser (Satorras et al. 2021) in the form EDM uses it.

Mirrors EDM's ``EGNN_dynamics`` (Hoogeboom et al. 2022, egnn/egnn_new.py) with one invariant sublayer
per block: messages from node features and squared distances (current and initial), sigmoid attention,
sum aggregation, and coordinate updates along ``(x_i - x_j) / (|x_i - x_j| + 1)`` scaled by
``tanh(.) * coords_range / layers`` (the range is shared out over the layers: a full range per layer lets
coordinates, and with them the distance features, run away; EDM's code computes coords_range / layers but
passes the full coords_range to every layer, which ``split_coords_range=False`` reproduces). Molecules are fully
connected (optionally cut by a radius); all edges of a batch are built at once, without Python loops
over molecules.

With ``bonds`` the network reads and predicts pair features (a graph model's bond orders, one row per unordered
atom pair, :class:`~multidiff.core.space.PairGraphSpace`): every message and coordinate update also sees the
pair's features, and a symmetric head ``MLP([h_i + h_j, h_i * h_j, log(1 + d_ij^2) (input and updated),
pair_ij])`` predicts them; both are invariant, so the network stays E(3)-equivariant and permutation-equivariant.
Without bonds it is the network above, parameter for parameter.

Speed: the first linear layer of each edge MLP acts on ``[h_i, h_j, e_ij]``; it is split into per-node
products gathered onto edges (same function and parameter count, far fewer edge-sized matmuls).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from multidiff.core.embeddings import (
    ConditionEmbedding,
    GuidanceEmbedding,
    NoiseEmbedding,
    guidance_input,
    known_input,
    per_item,
    reject_condition,
)
from multidiff.core.parts import Parts

from .graphs import BOND_ORDERS


def _count(value: int | str | Sequence[str] | None) -> int:
    """Sizes may be given as ints or as the data config's lists/names (their length is used)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return 1
    return len(value)


def fully_connected_edges(batch: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """All ordered pairs ``i != j`` within each molecule; ``batch`` must be sorted (PyG batches are)."""
    counts = torch.bincount(batch, minlength=num_items)
    starts = torch.cumsum(counts, 0) - counts
    n_edges = counts * (counts - 1)
    total = int(n_edges.sum())
    mol = torch.repeat_interleave(torch.arange(num_items, device=batch.device), n_edges, output_size=total)
    edge_starts = torch.cumsum(n_edges, 0) - n_edges
    local = torch.arange(total, device=batch.device) - edge_starts[mol]
    n_minus_1 = (counts - 1)[mol]
    i = torch.div(local, n_minus_1, rounding_mode="floor")
    j = local - i * n_minus_1
    j = j + (j >= i).long()  # skip the diagonal
    return starts[mol] + i, starts[mol] + j


def _scatter_sum(values: Tensor, index: Tensor, n: int) -> Tensor:
    return values.new_zeros(n, values.shape[1]).index_add_(0, index, values)


def _rows(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for an index tensor: index_select's backward is index_add_, on CPU 6-10x faster over a
    batch's edges than the serial index_put_ (accumulate) that advanced indexing's backward runs."""
    return values.index_select(0, index)


class _EdgeMLP(nn.Module):
    """``MLP([h_i, h_j, e_ij])`` with the first layer evaluated per node and gathered: the same function and
    parameters as one linear layer on the concatenation (EDM's), one bias included."""

    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.node_proj = nn.Linear(hidden, 2 * hidden, bias=False)  # [W_i h | W_j h] in one matmul
        self.edge_proj = nn.Linear(edge_dim, hidden, bias=False)
        bound = (2 * hidden + edge_dim) ** -0.5  # nn.Linear's initialisation of the unsplit layer
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.act = nn.SiLU()
        self.out = nn.Linear(hidden, hidden)
        self.register_load_state_dict_pre_hook(self._merge_split_bias)

    @staticmethod
    def _merge_split_bias(module, state_dict, prefix, *args) -> None:
        # checkpoints written before the single bias carried one per half of node_proj; their sum is the bias
        old = state_dict.pop(prefix + "node_proj.bias", None)
        if old is not None and prefix + "bias" not in state_dict:
            half = old.shape[0] // 2
            state_dict[prefix + "bias"] = old[:half] + old[half:]

    def forward(self, h: Tensor, row: Tensor, col: Tensor, e: Tensor) -> Tensor:
        hi, hj = self.node_proj(h).chunk(2, dim=1)
        # the bias joins the edge product's matmul: added on its own, a float32 parameter would promote the
        # (edges x hidden) sum out of bfloat16 under autocast and cost a conversion back
        edge = F.linear(e, self.edge_proj.weight, self.bias)
        return self.act(self.out(self.act(_rows(hi, row) + _rows(hj, col) + edge)))


class EquivariantBlock(nn.Module):
    """One invariant message-passing sublayer followed by one equivariant coordinate update."""

    def __init__(
        self,
        hidden: int,
        attention: bool,
        tanh: bool,
        coords_range: float,
        norm_constant: float,
        aggregation_norm: float,
        pair_dim: int = 0,
    ):
        super().__init__()
        edge_dim = 2 + pair_dim  # squared distance now and at the input, and the pair's features
        self.message = _EdgeMLP(hidden, edge_dim)
        self.attention = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()) if attention else None
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.coord = _EdgeMLP(hidden, edge_dim)
        self.coord_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_out.weight, gain=0.001)  # start near the identity map
        self.tanh, self.coords_range = tanh, coords_range
        self.norm_constant, self.aggregation_norm = norm_constant, aggregation_norm

    def forward(
        self, h: Tensor, x: Tensor, row: Tensor, col: Tensor, d0: Tensor, pair: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        diff = _rows(x, row) - _rows(x, col)
        d2 = (diff**2).sum(1, keepdim=True)
        e = torch.cat([d2, d0] if pair is None else [d2, d0, pair], dim=1)
        m = self.message(h, row, col, e)
        if self.attention is not None:
            m = m * self.attention(m)
        agg = _scatter_sum(m, row, h.shape[0]) / self.aggregation_norm
        h = h + self.node(torch.cat([h, agg], dim=1))

        unit = diff / (torch.sqrt(d2 + 1e-8) + self.norm_constant)
        w = self.coord_out(self.coord(h, row, col, e))
        if self.tanh:
            w = torch.tanh(w) * self.coords_range
        x = x + _scatter_sum(unit * w, row, x.shape[0]) / self.aggregation_norm
        return h, x


class EGNN(nn.Module):
    """Denoiser for :class:`~multidiff.core.space.GraphSpace` rows ``[pos(3) | node features]``.

    Contract (:class:`~multidiff.core.protocols.DenoiserNet`): ``forward(x_in, c_noise, *, cond=None,
    cond_drop=None, batch, num_items=None) -> F`` with ``F`` shaped like ``x_in``; its first 3 columns (a
    coordinate update) are rotation-equivariant and translation-invariant (per-molecule mean removed), the rest
    invariant.

    ``num_atom_types``: int or the vocabulary list; ``charges``: whether a charge column follows the
    one-hot block; ``cond_features``: None, an int, or the data's condition name(s); ``radius``:
    None (fully connected) or a cutoff in the units of the network's input coordinates (the
    process's ``c_in`` times Angstrom); ``checkpointing``: recompute each block in the backward pass
    (less activation memory, ~50 % more compute on CPU); ``observable``: an invariant per-atom input feature,
    whether the atom is observed (a given fragment atom); ``time_embedding``: the noise code through a
    sinusoidal embedding of ``time_dim`` features, or (False) as one raw node feature, as EDM feeds its t (with
    the process's ``noise_code=t``); ``split_coords_range``: see the module docstring; ``out_features``: invariant
    output features per node other than the input's (an autoencoder's encoder or decoder; None for a denoiser).
    EDM's QM9 model: ``hidden=256, layers=9, attention=True, tanh=True, coords_range=15,
    norm_constant=1, aggregation_norm=1``; its code exactly also ``time_embedding=False,
    split_coords_range=False`` with ``noise_code=t`` (``benchmarks/parity_edm.py``).
    """

    equivariance = "E(3)"

    def __init__(
        self,
        num_atom_types: int | Sequence[str],
        charges: bool = True,
        hidden: int = 256,
        layers: int = 9,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        aggregation_norm: float = 1.0,
        radius: float | None = None,
        time_dim: int = 64,
        cond_features: int | str | Sequence[str] | None = None,
        cond_dim: int = 64,
        checkpointing: bool = False,
        observable: bool = False,
        time_embedding: bool = True,
        split_coords_range: bool = True,
        bonds: bool | int = False,
        out_features: int | None = None,
        guidance_input: bool = False,
    ):
        super().__init__()
        if guidance_input and not time_embedding:
            raise ValueError("guidance_input adds to the time embedding: it needs time_embedding=true")
        self.pair_features = len(BOND_ORDERS) if bonds is True else int(bonds)
        if self.pair_features and radius is not None:
            raise ValueError(f"radius={radius} with bonds: a graph model predicts every atom pair; use radius=null")
        pair_dim = self.pair_features + int(observable) if self.pair_features else 0
        self.observable, self.time_embedding = observable, time_embedding
        self.checkpointing = checkpointing
        self.node_features = _count(num_atom_types) + int(charges)
        self.radius = radius
        # EDM feeds its time t in [0, 1] as one node feature; time_embedding=False does the same with c_noise
        self.noise_embed = NoiseEmbedding(time_dim) if time_embedding else None
        self.guidance_embed = GuidanceEmbedding(time_dim) if guidance_input else None
        time_dim = time_dim if time_embedding else 1
        n_cond = _count(cond_features)
        self.conditional = n_cond > 0
        self.cond_embed = ConditionEmbedding(cond_dim, num_features=n_cond) if n_cond else None
        # observable: one more invariant node feature, whether the atom is observed (a given fragment atom)
        self.embed = nn.Linear(self.node_features + int(observable) + time_dim + (cond_dim if n_cond else 0), hidden)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                hidden,
                attention,
                tanh,
                coords_range / max(layers, 1) if split_coords_range else coords_range,
                norm_constant,
                aggregation_norm,
                pair_dim,
            )
            for _ in range(layers)
        )
        if self.pair_features:  # the symmetric pair head, zero-initialised like the node head
            self.pair_head = nn.Sequential(
                nn.Linear(2 * hidden + 2 + pair_dim, hidden), nn.SiLU(), nn.Linear(hidden, self.pair_features)
            )
            nn.init.zeros_(self.pair_head[-1].weight)
            nn.init.zeros_(self.pair_head[-1].bias)
        self.out = nn.Linear(hidden, self.node_features if out_features is None else out_features)
        # start the feature head at zero, as the other denoisers do: under sum aggregation h grows to an rms of ~50
        # over 9 layers, so a default-initialised head made the first EDM-preconditioned losses ~500 instead of ~2
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def edges(self, pos: Tensor, batch: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
        row, col = fully_connected_edges(batch, num_items)
        if self.radius is not None:
            keep = ((_rows(pos, row) - _rows(pos, col)) ** 2).sum(1) < self.radius**2
            row, col = row[keep], col[keep]
        return row, col

    def forward(
        self,
        x_in: Tensor,
        c_noise: Tensor,
        *,
        cond: Tensor | None = None,
        cond_drop: Tensor | None = None,
        known: Tensor | Parts | None = None,
        batch: Tensor,
        num_items: int | None = None,
        pair_index: Tensor | None = None,
        pair_batch: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor | Parts:
        reject_condition(self, cond)
        if self.pair_features or isinstance(x_in, Parts):
            return self._forward_graph(x_in, c_noise, cond, cond_drop, known, batch, num_items, pair_index, guidance)
        mask = known_input(self, known, x_in)
        h, pos, n_items = self._trunk(x_in, c_noise, cond, cond_drop, mask, batch, num_items, guidance)
        row, col = self.edges(pos, batch, n_items)
        h, x = self._blocks(h, pos, row, col)
        return self._node_output(h, x, pos, batch, n_items)

    def _forward_graph(
        self,
        x_in: Parts,
        c_noise: Tensor,
        cond: Tensor | None,
        cond_drop: Tensor | None,
        known: Parts | None,
        batch: Tensor,
        num_items: int | None,
        pair_index: Tensor | None,
        guidance: Tensor | None = None,
    ) -> Parts:
        if not self.pair_features:
            raise ValueError("this EGNN was built without bonds (bonds=false) and got a graph state with pairs")
        if not isinstance(x_in, Parts) or pair_index is None:
            raise ValueError("an EGNN with bonds takes Parts(node=..., pair=...) and the context's pair_index")
        pair = x_in["pair"]
        if pair.shape != (pair_index.shape[1], self.pair_features):
            raise ValueError(
                f"EGNN with {self.pair_features} bond classes expects pair rows ({pair_index.shape[1]}, "
                f"{self.pair_features}), got {tuple(pair.shape)}"
            )
        node_known = None if known is None else known["node"]
        mask = known_input(self, node_known, x_in["node"])
        if mask is not None:
            pair_known = pair.new_zeros(len(pair), 1) if known is None else known["pair"][:, :1].to(pair.dtype)
            pair = torch.cat([pair, pair_known], dim=1)  # a pair is observed as a whole
        # each unordered pair gives the two directed edges i->j and j->i the same pair features
        p = pair_index.shape[1]
        row, col = torch.cat([pair_index[0], pair_index[1]]), torch.cat([pair_index[1], pair_index[0]])
        edge_pair = torch.cat([torch.arange(p, device=pair.device)] * 2)
        h, pos, n_items = self._trunk(x_in["node"], c_noise, cond, cond_drop, mask, batch, num_items, guidance)
        h, x = self._blocks(h, pos, row, col, _rows(pair, edge_pair))
        i, j = pair_index
        # distances of the input coordinates and of the updated ones (with eps prediction the update is a noise
        # estimate, so the input's carry the geometry), as log(1 + d^2): atoms far apart at high noise must not
        # drive the head linearly (raw squared distances made its output explode mid-sampling)
        d0 = torch.log1p(((_rows(pos, i) - _rows(pos, j)) ** 2).sum(1, keepdim=True))
        d2 = torch.log1p(((_rows(x, i) - _rows(x, j)) ** 2).sum(1, keepdim=True))
        hi, hj = _rows(h, i), _rows(h, j)
        pair_out = self.pair_head(torch.cat([hi + hj, hi * hj, d0, d2, pair], dim=1))
        return Parts({"node": self._node_output(h, x, pos, batch, n_items), "pair": pair_out})

    def _blocks(
        self, h: Tensor, pos: Tensor, row: Tensor, col: Tensor, pair: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        d0 = ((_rows(pos, row) - _rows(pos, col)) ** 2).sum(1, keepdim=True)
        extra = () if pair is None else (pair,)  # without pairs, the blocks see exactly EDM's inputs
        x = pos
        for block in self.blocks:
            if self.checkpointing and self.training:
                h, x = checkpoint(block, h, x, row, col, d0, *extra, use_reentrant=False)
            else:
                h, x = block(h, x, row, col, d0, *extra)
        return h, x

    def _trunk(
        self,
        x_in: Tensor,
        c_noise: Tensor,
        cond: Tensor | None,
        cond_drop: Tensor | None,
        mask: Tensor | None,
        batch: Tensor,
        num_items: int | None,
        guidance: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, int]:
        """Checks; the embedded node features ``h``, the coordinates and the number of items."""
        n_items = int(num_items) if num_items is not None else int(batch.max()) + 1
        if x_in.shape[1] != 3 + self.node_features:
            raise ValueError(f"EGNN expects {3 + self.node_features} columns (3 + node features), got {x_in.shape[1]}")
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(
                "EGNN needs the nodes of each molecule contiguous and in order (a sorted batch "
                "vector, as PyG batches have)"
            )
        pos, feats = x_in[:, :3], x_in[:, 3:]
        c_noise = per_item(c_noise, n_items)
        time = self.noise_embed(c_noise) if self.noise_embed is not None else c_noise[:, None].to(feats.dtype)
        if (g := guidance_input(self, guidance, n_items)) is not None:
            time = time + g
        parts = [feats, time[batch]]
        if mask is not None:
            parts.insert(1, mask[:, :1])  # an atom is observed as a whole
        if self.cond_embed is not None:
            parts.append(self.cond_embed(cond, n_items, cond_drop)[batch])
        return self.embed(torch.cat(parts, dim=1)), pos, n_items

    def _node_output(self, h: Tensor, x: Tensor, pos: Tensor, batch: Tensor, n_items: int) -> Tensor:
        vel = x - pos
        counts = torch.bincount(batch, minlength=n_items).clamp(min=1).to(vel.dtype)
        mean = vel.new_zeros(n_items, 3).index_add_(0, batch, vel) / counts[:, None]
        return torch.cat([vel - mean[batch], self.out(h)], dim=1)
