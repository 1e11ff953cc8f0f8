"""Latent points for point-cloud latent diffusion: ``(B, N, 3) <-> (B, N, 3 + k)``.

LION (Vahdat et al. 2022) encodes a shape into latent points (a position and a few features per point) plus a
global shape latent, and diffuses both with two models. Here the latent is the latent points alone, each
computed from its point and a max-pooled summary of the whole shape (PointNet style), so one diffusion model of
the existing kind (a permutation-equivariant point denoiser with ``in_dim = 3 + k``) runs on it, and the shape
summary lives in the points' features rather than in a second latent. Encoder and decoder are per-point maps
with pooled context: permutation-equivariant, and each latent point stays next to its point (the encoder
predicts an offset from it), so a point's reconstruction error is measured against the point itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.space import TensorSpace
from multidiff.core.state import State


class _PointNet(nn.Module):
    """Per-point features refined ``layers`` times with the max-pooled features of the whole set."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.mix = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(2 * hidden), nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.out[1].weight)  # start as the identity map of the positions (offsets of zero)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.mix:
            pooled = h.max(dim=1, keepdim=True).values.expand_as(h)
            h = h + block(torch.cat([h, pooled], dim=-1))
        return self.out(h)


class PointAutoencoder(nn.Module):
    """``latent_features`` features per latent point besides its position; ``hidden`` and ``layers`` size the
    encoder and the decoder. The reconstruction loss is the squared distance of each point to its own
    reconstruction (points and latent points correspond one to one)."""

    domain = "pointcloud"
    data_keys = ()  # any number of points: the latent has one latent point per point

    def __init__(self, latent_features: int = 4, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.latent_features = latent_features
        self.space = TensorSpace()
        self.register_buffer("latent_scale", torch.tensor(1.0))
        self.encoder = _PointNet(3, hidden, 3 + latent_features, layers)
        self.decoder = _PointNet(3 + latent_features, hidden, 3, layers)

    @staticmethod
    def _check(x: Tensor, width: int) -> None:
        if x.dim() != 3 or x.shape[-1] != width:
            raise ValueError(f"the point autoencoder takes (B, N, {width}) tensors, got {tuple(x.shape)}")

    def encode(self, state: State) -> State:
        self._check(state.x, 3)
        out = self.encoder(state.x)
        return State(torch.cat([state.x + out[..., :3], out[..., 3:]], dim=-1), state.cond, state.ctx)

    def decode(self, latent: State) -> State:
        self._check(latent.x, 3 + self.latent_features)
        return State(latent.x[..., :3] + self.decoder(latent.x), latent.cond, latent.ctx)

    def latent_template(self, state: State) -> State:
        n, points, _ = state.x.shape
        return State(state.x.new_zeros(n, points, 3 + self.latent_features), state.cond, state.ctx)

    def latent_mask(self, mask: Tensor) -> Tensor:
        """A latent point is known where its point is."""
        return mask.all(-1, keepdim=True).expand(*mask.shape[:-1], 3 + self.latent_features)

    def reconstruction_loss(self, state: State, recon: State) -> tuple[Tensor, dict[str, Tensor]]:
        mse = F.mse_loss(recon.x.float(), state.x.float(), reduction="none").sum(-1).mean()
        return mse, {"point_mse": mse.detach()}

    def net_inputs(self) -> dict[str, Any]:
        return {"in_dim": 3 + self.latent_features}
