"""An E(3)-equivariant autoencoder of molecules for latent diffusion (GeoLDM, Xu et al. 2023).

Each atom becomes a latent point: a position (equivariant: the encoder EGNN moves the atom) and a few invariant
features. The latent keeps the molecule's symmetry, so the diffusion model on it is the same EGNN in the same
zero centre-of-mass space as on atoms, with ``num_atom_types`` set to the latent's width. The decoder EGNN
moves the latent points back and reads each atom's element (logits, in the element block of the row: the
domain's decode takes their argmax) and formal charge from their features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.parts import Parts
from multidiff.core.space import GraphSpace
from multidiff.core.state import State

from .net import EGNN, _count


class EquivariantAutoencoder(nn.Module):
    """Encoder and decoder EGNNs (``hidden`` x ``layers`` each, attention and tanh-bounded coordinate updates as
    EDM's); ``latent_features`` invariant features per latent point (GeoLDM uses 1-2 on QM9). ``num_atom_types``,
    ``charges`` and ``charge_scale``: the molecule domain's row layout. The loss: squared position error (per atom,
    summed over axes), cross-entropy of the element, squared charge error (in units of charge)."""

    domain = "molecule"
    data_keys = ("elements",)

    def __init__(
        self,
        num_atom_types: int | Sequence[str],
        charges: bool = True,
        charge_scale: float = 0.1,
        latent_features: int = 2,
        hidden: int = 64,
        layers: int = 3,
        coords_range: float = 15.0,
    ):
        super().__init__()
        self.num_types, self.charges, self.charge_scale = _count(num_atom_types), charges, charge_scale
        self.latent_features = latent_features
        self.space = GraphSpace(com_dims=3)
        self.register_buffer("latent_scale", torch.tensor(1.0))
        common = {"hidden": hidden, "layers": layers, "coords_range": coords_range, "attention": True, "tanh": True}
        self.encoder = EGNN(self.num_types, charges, out_features=latent_features, **common)
        self.decoder = EGNN(latent_features, False, out_features=self.num_types + int(charges), **common)

    def _run(self, net: EGNN, x: Tensor, ctx: dict[str, Any]) -> Tensor:
        n = int(ctx["num_items"])
        out = net(x, x.new_zeros(n), batch=ctx["batch"], num_items=n)
        return torch.cat([x[:, :3] + out[:, :3], out[:, 3:]], dim=1)  # moved positions, new invariant features

    def encode(self, state: State) -> State:
        if isinstance(state.x, Parts):
            raise ValueError(
                "latent diffusion of molecules encodes atoms only (domain=molecule): a graph model "
                "(domain.bonds=true) has no autoencoder of its pair features; train it on the data"
            )
        width = 3 + self.num_types + int(self.charges)
        if state.x.dim() != 2 or state.x.shape[1] != width:
            raise ValueError(
                f"the molecule autoencoder takes rows [pos(3) | {self.num_types} elements"
                f"{' | charge' if self.charges else ''}] ({width} columns), got {tuple(state.x.shape)}: was it "
                "trained with another domain.include_charges or element set?"
            )
        return State(self._run(self.encoder, state.x, state.ctx), state.cond, state.ctx)

    def decode(self, latent: State) -> State:
        return State(self._run(self.decoder, latent.x, latent.ctx), latent.cond, latent.ctx)

    def latent_template(self, state: State) -> State:
        return State(state.x.new_zeros(state.x.shape[0], 3 + self.latent_features), state.cond, state.ctx)

    def latent_mask(self, mask: Tensor) -> Tensor:
        """A latent atom is known where its atom is."""
        return mask.all(-1, keepdim=True).expand(mask.shape[0], 3 + self.latent_features)

    def reconstruction_loss(self, state: State, recon: State) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.num_types
        x, y = state.x.float(), recon.x.float()
        pos = ((y[:, :3] - x[:, :3]) ** 2).sum(1).mean()
        types = F.cross_entropy(y[:, 3 : 3 + k], x[:, 3 : 3 + k].argmax(1))
        parts = {"position_mse": pos.detach(), "element_ce": types.detach()}
        loss = pos + types
        if self.charges:
            charge = (((y[:, 3 + k] - x[:, 3 + k]) / self.charge_scale) ** 2).mean()
            parts["charge_mse"], loss = charge.detach(), loss + charge
        return loss, parts

    def net_inputs(self) -> dict[str, Any]:
        return {"num_atom_types": self.latent_features, "charges": False}
