"""EDM's EGNN weights (``EGNN_dynamics_QM9``, Hoogeboom et al. 2022) in multidiff's :class:`~.net.EGNN` layout.

EDM's first layer of every edge MLP acts on ``[h_i, h_j, e_ij]``; multidiff splits it into a per-node product
(``node_proj``: the h_i and h_j blocks stacked), an edge product (``edge_proj``) and the one bias.
EDM's output layer also predicts its time feature, which it drops; multidiff's has no such row. An EGNN built
with EDM's settings (``time_embedding=False, split_coords_range=False``, see ``net.EGNN``) computes EDM's
function with these weights (``tests/test_edm_parity.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

#: layers with the same shape on both sides: EDM's name within a block -> multidiff's
SAME_LAYERS = {
    "gcl_0.edge_mlp.2": "message.out",
    "gcl_0.att_mlp.0": "attention.0",
    "gcl_0.node_mlp.0": "node.0",
    "gcl_0.node_mlp.2": "node.2",
    "gcl_equiv.coord_mlp.2": "coord.out",
}
#: EDM's first edge layer on [h_i, h_j, e_ij] -> multidiff's split edge MLP
SPLIT_LAYERS = {"gcl_0.edge_mlp.0": "message", "gcl_equiv.coord_mlp.0": "coord"}


def _split_edge_layer(weight: Tensor, bias: Tensor, hidden: int, prefix: str) -> dict[str, Tensor]:
    w_i, w_j, w_e = weight[:, :hidden], weight[:, hidden : 2 * hidden], weight[:, 2 * hidden :]
    return {
        f"{prefix}.node_proj.weight": torch.cat([w_i, w_j], 0),
        f"{prefix}.edge_proj.weight": w_e,
        f"{prefix}.bias": bias,
    }


def egnn_state_from_edm(edm: Mapping[str, Tensor], layers: int) -> dict[str, Tensor]:
    """A state dict for multidiff's EGNN from an ``EGNN_dynamics_QM9`` state dict (keys ``egnn.*``) with one
    invariant sublayer per block (EDM's ``inv_sublayers=1``). Unused or missing EDM keys are an error."""
    hidden = edm["egnn.embedding.weight"].shape[0]
    node_features = edm["egnn.embedding_out.weight"].shape[0] - 1  # EDM's last output row is its time feature
    out = {
        "embed.weight": edm["egnn.embedding.weight"],
        "embed.bias": edm["egnn.embedding.bias"],
        "out.weight": edm["egnn.embedding_out.weight"][:node_features],
        "out.bias": edm["egnn.embedding_out.bias"][:node_features],
    }
    used = {"egnn.embedding.weight", "egnn.embedding.bias", "egnn.embedding_out.weight", "egnn.embedding_out.bias"}
    for i in range(layers):
        src, dst = f"egnn.e_block_{i}", f"blocks.{i}"
        for a, b in SAME_LAYERS.items():
            for kind in ("weight", "bias"):
                out[f"{dst}.{b}.{kind}"] = edm[f"{src}.{a}.{kind}"]
                used.add(f"{src}.{a}.{kind}")
        out[f"{dst}.coord_out.weight"] = edm[f"{src}.gcl_equiv.coord_mlp.4.weight"]
        used.add(f"{src}.gcl_equiv.coord_mlp.4.weight")
        for a, b in SPLIT_LAYERS.items():
            out.update(_split_edge_layer(edm[f"{src}.{a}.weight"], edm[f"{src}.{a}.bias"], hidden, f"{dst}.{b}"))
            used |= {f"{src}.{a}.weight", f"{src}.{a}.bias"}
    left = sorted(set(edm) - used)
    if left:
        raise ValueError(f"EDM weights not mapped (more sublayers or blocks than layers={layers}?): {left[:6]}")
    return out


def edm_grads_from_egnn(grads: Mapping[str, Tensor], layers: int) -> dict[str, Tensor]:
    """The reverse of :func:`egnn_state_from_edm` for gradients (EDM's split first layers put back together;
    EDM's time output row, which it drops, gets zero)."""
    w_out, b_out = grads["out.weight"], grads["out.bias"]
    out = {
        "egnn.embedding.weight": grads["embed.weight"],
        "egnn.embedding.bias": grads["embed.bias"],
        "egnn.embedding_out.weight": torch.cat([w_out, torch.zeros_like(w_out[:1])]),
        "egnn.embedding_out.bias": torch.cat([b_out, torch.zeros_like(b_out[:1])]),
    }
    for i in range(layers):
        src, dst = f"egnn.e_block_{i}", f"blocks.{i}"
        for a, b in SPLIT_LAYERS.items():
            w = grads[f"{dst}.{b}.node_proj.weight"]
            hidden = w.shape[1]
            out[f"{src}.{a}.weight"] = torch.cat([w[:hidden], w[hidden:], grads[f"{dst}.{b}.edge_proj.weight"]], 1)
            out[f"{src}.{a}.bias"] = grads[f"{dst}.{b}.bias"]
        for a, b in SAME_LAYERS.items():
            for kind in ("weight", "bias"):
                out[f"{src}.{a}.{kind}"] = grads[f"{dst}.{b}.{kind}"]
        out[f"{src}.gcl_equiv.coord_mlp.4.weight"] = grads[f"{dst}.coord_out.weight"]
    return out
