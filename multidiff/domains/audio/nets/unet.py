"""A 1D U-Net on raw waveforms: residual blocks with FiLM noise/class conditioning, strided
down/up-sampling and self-attention at the coarse levels.

The waveform is first folded into ``patch`` channels (T -> T / patch), which keeps the costly
full-resolution levels off the network, as audio-diffusion-pytorch does.
"""

from __future__ import annotations

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


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) or 1, c)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv1d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.drop(h))


class Attention(nn.Module):
    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads, self.norm = heads, _norm(c)
        self.qkv, self.out = nn.Conv1d(c, 3 * c, 1), nn.Conv1d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, t).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, c/heads)
        return x + self.out(h.transpose(-1, -2).reshape(b, c, t))


class UNet1d(nn.Module):
    """``channels[i]`` is the width of level i; level i+1 is ``factors[i]`` times shorter. ``observable``: the
    observation mask enters as extra input channels (observation-conditioned training)."""

    equivariance = None

    def __init__(
        self,
        in_channels: int = 1,
        patch: int = 8,
        channels: tuple[int, ...] = (64, 128, 192, 384),
        factors: tuple[int, ...] = (4, 4, 2),
        blocks: int = 1,
        attn_levels: tuple[int, ...] = (2, 3),
        heads: int = 8,
        emb_dim: int = 256,
        num_classes: int = 0,
        dropout: float = 0.0,
        observable: bool = False,
        guidance_input: bool = False,
    ):
        super().__init__()
        channels, factors = tuple(channels), tuple(factors)
        if len(factors) != len(channels) - 1:
            raise ValueError(f"UNet1d needs len(factors) == len(channels) - 1, got {factors} for {channels}")
        self.patch, self.in_channels = patch, in_channels
        self.conditional, self.observable = num_classes > 0, observable
        self.noise_embed = NoiseEmbedding(emb_dim)
        self.guidance_embed = GuidanceEmbedding(emb_dim) if guidance_input else None
        self.cond_embed = ConditionEmbedding(emb_dim, num_classes=num_classes) if num_classes else None
        # observable: the observation mask enters as extra input channels beside the waveform
        self.stem = nn.Conv1d(in_channels * patch * (1 + observable), channels[0], 3, padding=1)

        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips = []
        for i, c in enumerate(channels):
            level = nn.ModuleList()
            c_prev = channels[max(i - 1, 0)]
            for j in range(blocks):
                level.append(ResBlock(c_prev if j == 0 else c, c, emb_dim, dropout))
                if i in attn_levels:
                    level.append(Attention(c, heads))
                skips.append(c)
            self.down.append(level)
        self.pools = nn.ModuleList(nn.Conv1d(c, c, f, stride=f) for c, f in zip(channels[:-1], factors))
        self.mid = nn.ModuleList(
            [
                ResBlock(channels[-1], channels[-1], emb_dim, dropout),
                Attention(channels[-1], heads),
                ResBlock(channels[-1], channels[-1], emb_dim, dropout),
            ]
        )
        for i in reversed(range(len(channels))):
            c, level = channels[i], nn.ModuleList()
            c_in = channels[-1] if i == len(channels) - 1 else channels[i + 1]
            for j in range(blocks):
                level.append(ResBlock((c_in if j == 0 else c) + skips.pop(), c, emb_dim, dropout))
                if i in attn_levels:
                    level.append(Attention(c, heads))
            self.up.append(level)
        self.unpools = nn.ModuleList(
            nn.ConvTranspose1d(c, c, f, stride=f) for c, f in zip(reversed(channels[1:]), reversed(factors))
        )
        self.head = nn.Sequential(
            _norm(channels[0]), nn.SiLU(), nn.Conv1d(channels[0], in_channels * patch, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.total_factor = patch
        for f in factors:
            self.total_factor *= f

    def _run(
        self,
        level: nn.ModuleList,
        h: Tensor,
        emb: Tensor,
        skips: list[Tensor] | None = None,
        push: list[Tensor] | None = None,
    ) -> Tensor:
        for m in level:
            if isinstance(m, ResBlock):
                if skips is not None:
                    h = torch.cat([h, skips.pop()], dim=1)
                h = m(h, emb)
                if push is not None:
                    push.append(h)
            else:
                h = m(h)
                if push is not None:
                    push[-1] = h
        return h

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        cond: Tensor | None = None,
        cond_drop: Tensor | None = None,
        known: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"UNet1d expects (B, C, T) input, got shape {tuple(x.shape)}")
        reject_condition(self, cond)
        mask = known_input(self, known, x)
        b, c, t = x.shape
        if t % self.total_factor:
            raise ValueError(f"UNet1d input length {t} must be a multiple of {self.total_factor} (patch x factors)")
        emb = self.noise_embed(per_item(c_noise, b))
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(cond, b, cond_drop)
        if (g := guidance_input(self, guidance, b)) is not None:
            emb = emb + g
        inp = x if mask is None else torch.cat([x, mask], dim=1)
        ci = inp.shape[1]
        h = self.stem(
            inp.reshape(b, ci, t // self.patch, self.patch).permute(0, 1, 3, 2).reshape(b, ci * self.patch, -1)
        )
        skips: list[Tensor] = []
        for i, level in enumerate(self.down):
            h = self._run(level, h, emb, push=skips)
            if i < len(self.pools):
                h = self.pools[i](h)
        for m in self.mid:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        for i, level in enumerate(self.up):
            if i > 0:
                h = self.unpools[i - 1](h)
            h = self._run(level, h, emb, skips=skips)
        h = self.head(h)
        return h.reshape(b, c, self.patch, t // self.patch).permute(0, 1, 3, 2).reshape(b, c, t)
