"""A permutation-equivariant point-cloud denoiser: points read into and write from latent tokens.

The design follows Recurrent Interface Networks (Jabri et al. 2023), as used for point clouds by
PointInfinity (Huang et al. 2024): a narrow per-point stream (the "interface") and a small set of
learned latent tokens that hold most of the parameters. Each block

1. *reads*: latents cross-attend to all points (a softmax-weighted sum over points, so the latents
   do not depend on point order),
2. *processes*: latent self-attention + MLP layers,
3. *writes*: every point cross-attends to the latents, then a per-point MLP.

Every per-point operation is applied pointwise and every pooling is a symmetric sum, so the
output permutes exactly with the input points. Cost is linear in the number of points
(no N x N attention), which keeps 2,048-point clouds cheap on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.embeddings import (
    ConditionEmbedding,
    GuidanceEmbedding,
    NoiseEmbedding,
    guidance_input,
    known_input,
    per_item,
    reject_condition,
)


class Attention(nn.Module):
    """Multi-head (cross-)attention through ``scaled_dot_product_attention``; queries and
    key/values may have different widths."""

    def __init__(self, q_dim: int, kv_dim: int, inner: int, heads: int, out_dim: int | None = None):
        super().__init__()
        if inner % heads:
            raise ValueError(f"attention width {inner} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(q_dim, inner, bias=False)
        self.kv = nn.Linear(kv_dim, 2 * inner, bias=False)
        self.out = nn.Linear(inner, out_dim or q_dim)

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, n, -1))


class Modulation(nn.Module):
    """Per-item shift/scale/gate from the conditioning vector (adaLN-Zero, Peebles & Xie 2023)."""

    def __init__(self, emb_dim: int, dim: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(emb_dim, n * 3 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, emb: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        chunks = self.proj(emb).unsqueeze(1).chunk(3 * self.n, dim=-1)
        return [(chunks[3 * i], 1 + chunks[3 * i + 1], chunks[3 * i + 2]) for i in range(self.n)]


ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "hardswish": nn.Hardswish}


def make_activation(name: str) -> nn.Module:
    # exact-erf GELU is smooth and several times cheaper than SiLU or tanh-GELU on CPUs
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _mlp(dim: int, ratio: float, act: str) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), make_activation(act), nn.Linear(hidden, dim))


class LatentLayer(nn.Module):
    """Pre-norm transformer layer over the latent tokens with adaLN modulation."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, emb_dim: int, act: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = _mlp(dim, mlp_ratio, act)
        self.mod = Modulation(emb_dim, dim, 2)

    def forward(self, z: Tensor, emb: Tensor) -> Tensor:
        (sh1, sc1, g1), (sh2, sc2, g2) = self.mod(emb)
        h = torch.addcmul(sh1, self.norm1(z), sc1)
        z = torch.addcmul(z, g1, self.attn(h, h))
        return torch.addcmul(z, g2, self.mlp(torch.addcmul(sh2, self.norm2(z), sc2)))


class PointRead(nn.Module):
    """Latents attend to the points' normalised features ``n`` (B, N, C).

    Each head's key/value projections of the points fold into the (cheap) latent side: with
    q.(W_k n) = (W_k^T q).n and sum_j a_j W_v n_j = W_v sum_j a_j n_j, keys and values are ``n``
    itself and no per-point projection is computed.
    """

    def __init__(self, latent_dim: int, point_dim: int, heads: int):
        super().__init__()
        self.heads, self.point_dim = heads, point_dim
        self.q = nn.Linear(latent_dim, heads * point_dim, bias=False)
        self.out = nn.Linear(heads * point_dim, latent_dim)

    def forward(self, z: Tensor, n: Tensor) -> Tensor:
        b, m, _ = z.shape
        # every head's queries against the same keys n: one (heads x latents, N) score matrix per item, two batched
        # matmuls and no per-head copy of n (forward + backward in bf16 on CPU: 35 ms against the flash kernel's 40)
        q = self.q(z).view(b, m * self.heads, self.point_dim) * self.point_dim**-0.5
        attn = torch.bmm(q, n.transpose(1, 2)).softmax(-1)
        o = torch.bmm(attn, n).view(b, m, self.heads * self.point_dim)
        return self.out(o)


class PointWrite(nn.Module):
    """Points (queries: their normalised features ``n`` (B, N, C)) attend to the latents.

    The query projection folds into the keys and the output projection and the per-item gate
    into the values (all on the latent side), so per point only the attention itself is
    computed. Heads are summed.
    """

    def __init__(self, latent_dim: int, point_dim: int, heads: int):
        super().__init__()
        self.heads, self.point_dim = heads, point_dim
        self.k = nn.Linear(latent_dim, heads * point_dim, bias=False)
        self.v = nn.Linear(latent_dim, heads * point_dim)

    def forward(self, n: Tensor, z: Tensor, gate: Tensor) -> Tensor:
        b, m, _ = z.shape
        # each point's scores against every head's keys in one matmul; the probabilities of all heads times their
        # values is the sum over heads in one more (the score matrix, N x heads x latents, is small; forward +
        # backward in bf16 on CPU: 28 ms against the flash kernel's 67)
        k = self.k(z).view(b, m * self.heads, self.point_dim) * self.point_dim**-0.5
        v = (self.v(z).view(b, m, self.heads, self.point_dim) * gate.unsqueeze(1)).reshape(b, m * self.heads, -1)
        scores = torch.bmm(n, k.transpose(1, 2)).view(b, -1, m, self.heads)
        attn = scores.softmax(2).view(b, -1, m * self.heads)
        return torch.bmm(attn, v)


class RINBlock(nn.Module):
    """Read (latents <- points), process (latent layers), write (points <- latents), point MLP."""

    def __init__(
        self,
        point_dim: int,
        latent_dim: int,
        heads: int,
        point_heads: int,
        latent_layers: int,
        mlp_ratio: float,
        point_mlp_ratio: float,
        emb_dim: int,
        act: str,
    ):
        super().__init__()
        self.point_dim = point_dim
        self.read_norm = nn.LayerNorm(latent_dim)
        self.read = PointRead(latent_dim, point_dim, point_heads)
        self.read_mlp_norm = nn.LayerNorm(latent_dim)
        self.read_mlp = _mlp(latent_dim, mlp_ratio, act)
        self.layers = nn.ModuleList(
            LatentLayer(latent_dim, heads, mlp_ratio, emb_dim, act) for _ in range(latent_layers)
        )
        self.write_norm = nn.LayerNorm(latent_dim)
        self.write = PointWrite(latent_dim, point_dim, point_heads)
        self.point_mlp = _mlp(point_dim, point_mlp_ratio, act) if point_mlp_ratio > 0 else None
        self.point_mod = nn.Linear(emb_dim, 4 * point_dim)  # write gate; MLP shift, scale, gate
        nn.init.zeros_(self.point_mod.weight)
        nn.init.zeros_(self.point_mod.bias)

    def forward(self, h: Tensor, z: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        n = F.layer_norm(h, (self.point_dim,))  # shared by the read and the write
        z = z + self.read(self.read_norm(z), n)
        z = z + self.read_mlp(self.read_mlp_norm(z))
        for layer in self.layers:
            z = layer(z, emb)
        g1, sh2, sc2, g2 = self.point_mod(emb).unsqueeze(1).chunk(4, dim=-1)
        # the noise level reaches the points through the latents and the gated write
        h = h + self.write(n, self.write_norm(z), g1)
        if self.point_mlp is not None:
            n2 = F.layer_norm(h, (self.point_dim,))
            # addcmul: one pass over the (B, N, C) point tensor instead of two
            h = torch.addcmul(h, g2, self.point_mlp(torch.addcmul(sh2, n2, 1 + sc2)))
        return h, z


class FourierFeatures(nn.Module):
    """Coordinates and sin/cos of them at octave frequencies (NeRF-style positional encoding)."""

    def __init__(self, in_dim: int, num_freqs: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)
        self.out_dim = in_dim * (1 + 2 * num_freqs)

    def forward(self, x: Tensor) -> Tensor:
        if not len(self.freqs):
            return x
        a = (x.unsqueeze(-1) * self.freqs).flatten(-2)
        return torch.cat([x, a.sin(), a.cos()], dim=-1)


class PointRINDenoiser(nn.Module):
    """Denoiser ``F(x_in, c_noise, cond, cond_drop) -> (B, N, 3)`` for point clouds ``(B, N, 3)``.

    Sizes: ``point_dim`` (per-point width), ``latent_dim`` x ``num_latents`` (latent tokens),
    ``depth`` read-process-write blocks of ``latent_layers`` latent layers each, ``heads`` for
    the latent self-attention and ``point_heads`` for the point<->latent attention.
    ``num_classes`` > 0 adds a class condition (``num_features`` > 0: continuous properties);
    ``observable`` adds a per-point input feature, whether the point is observed.
    """

    equivariance = "permutation"

    def __init__(
        self,
        in_dim: int = 3,
        point_dim: int = 64,
        latent_dim: int = 256,
        num_latents: int = 32,
        depth: int = 2,
        latent_layers: int = 2,
        heads: int = 4,
        point_heads: int = 2,
        mlp_ratio: float = 2.0,
        point_mlp_ratio: float = 2.0,
        num_freqs: int = 4,
        num_classes: int = 0,
        num_features: int = 0,
        activation: str = "gelu",
        inference_chunk: int = 8,
        observable: bool = False,
        guidance_input: bool = False,
    ):
        super().__init__()
        self.in_dim, self.inference_chunk = in_dim, inference_chunk
        self.observable = observable
        self.fourier = FourierFeatures(in_dim, num_freqs)
        self.point_in = nn.Sequential(
            # observable: one more per-point feature, whether the point is observed
            nn.Linear(self.fourier.out_dim + int(observable), point_dim),
            make_activation(activation),
            nn.Linear(point_dim, point_dim),
        )
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * 0.02)
        self.noise_embed = NoiseEmbedding(latent_dim)
        self.guidance_embed = GuidanceEmbedding(latent_dim) if guidance_input else None
        self.conditional = num_classes > 0 or num_features > 0
        self.cond_embed = (
            ConditionEmbedding(latent_dim, num_classes, num_features) if num_classes or num_features else None
        )
        self.latent_in = nn.Linear(latent_dim, latent_dim)
        self.blocks = nn.ModuleList(
            RINBlock(
                point_dim,
                latent_dim,
                heads,
                point_heads,
                latent_layers,
                mlp_ratio,
                point_mlp_ratio,
                latent_dim,
                activation,
            )
            for _ in range(depth)
        )
        self.out_norm = nn.LayerNorm(point_dim)
        self.out = nn.Linear(point_dim, in_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x_in: Tensor,
        c_noise: Tensor,
        *,
        cond: Tensor | None = None,
        cond_drop: Tensor | None = None,
        known: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        reject_condition(self, cond)
        if x_in.dim() != 3 or x_in.shape[-1] != self.in_dim:
            raise ValueError(f"expected points of shape (B, N, {self.in_dim}), got {tuple(x_in.shape)}")
        mask = known_input(self, known, x_in)
        observed = None if mask is None else mask[..., :1]  # a point is observed as a whole
        b = x_in.shape[0]
        c_noise = per_item(c_noise, b)
        g = guidance_input(self, guidance, b)
        if not torch.is_grad_enabled() and self.inference_chunk and b > self.inference_chunk:
            # items are independent: small chunks keep the (chunk, N, C) point tensors in cache
            k = self.inference_chunk
            return torch.cat(
                [
                    self._forward(
                        x_in[i : i + k],
                        c_noise[i : i + k],
                        None if cond is None else cond[i : i + k],
                        None if cond_drop is None else cond_drop[i : i + k],
                        None if observed is None else observed[i : i + k],
                        None if g is None else g[i : i + k],
                    )
                    for i in range(0, b, k)
                ]
            )
        return self._forward(x_in, c_noise, cond, cond_drop, observed, g)

    def _forward(
        self,
        x_in: Tensor,
        c_noise: Tensor,
        cond: Tensor | None,
        cond_drop: Tensor | None,
        observed: Tensor | None,
        guidance_emb: Tensor | None = None,
    ) -> Tensor:
        b = x_in.shape[0]
        emb = self.noise_embed(c_noise)
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond, b, cond_drop)
        if guidance_emb is not None:
            emb = emb + guidance_emb
        emb = F.silu(emb)
        feats = self.fourier(x_in)
        h = self.point_in(feats if observed is None else torch.cat([feats, observed], dim=-1))
        z = self.latents.unsqueeze(0) + self.latent_in(emb).unsqueeze(1)
        for block in self.blocks:
            h, z = block(h, z, emb)
        return self.out(self.out_norm(h))
