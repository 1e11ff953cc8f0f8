"""DiffWave denoiser (Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis").

A stack of residual layers over the raw waveform, each: add the projected noise-level embedding,
a dilated 3-tap convolution (dilation ``2 ** (i % dilation_cycle)``), add the projected class
embedding (as the paper's conditioner path), a gated ``tanh * sigmoid`` unit, and a 1x1
convolution split into the residual (averaged with the input) and a skip output. The skips of
all layers are summed, scaled by ``1 / sqrt(layers)``, and projected to the output, whose last
layer starts at zero as in the paper.

Contract: ``net(x_in (B, C, T), c_noise (B,), cond=None, cond_drop=None, **ctx) -> (B, C, T)``.
"""

from __future__ import annotations

import math

import torch
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


class ResidualLayer(nn.Module):
    def __init__(self, channels: int, dilation: int, embed_dim: int, conditional: bool):
        super().__init__()
        self.noise_proj = nn.Linear(embed_dim, channels)
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.cond_proj = nn.Linear(embed_dim, 2 * channels) if conditional else None
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: Tensor, noise_emb: Tensor, cond_emb: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.dilated(x + self.noise_proj(noise_emb)[:, :, None])
        if self.cond_proj is not None and cond_emb is not None:
            h = h + self.cond_proj(cond_emb)[:, :, None]
        gate, filt = h.chunk(2, dim=1)
        h = torch.sigmoid(gate) * torch.tanh(filt)
        residual, skip = self.out(h).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class DiffWave(nn.Module):
    """Raw-waveform denoiser; ``num_classes > 0`` adds a droppable class condition; ``observable`` takes the
    observation mask as extra input channels."""

    equivariance = None

    def __init__(
        self,
        residual_channels: int = 64,
        layers: int = 30,
        dilation_cycle: int = 10,
        num_classes: int = 0,
        in_channels: int = 1,
        embed_dim: int = 512,
        observable: bool = False,
        guidance_input: bool = False,
    ):
        super().__init__()
        if layers < 1 or dilation_cycle < 1 or residual_channels < 1:
            raise ValueError(
                f"DiffWave needs layers, dilation_cycle and residual_channels >= 1, got {layers}, "
                f"{dilation_cycle}, {residual_channels}"
            )
        self.num_classes = num_classes
        self.conditional, self.observable = num_classes > 0, observable
        # observable: the observation mask enters as extra input channels beside the waveform
        self.input = nn.Conv1d(in_channels * (1 + observable), residual_channels, 1)
        self.noise_embed = NoiseEmbedding(embed_dim)
        self.guidance_embed = GuidanceEmbedding(embed_dim) if guidance_input else None
        self.cond_embed = ConditionEmbedding(embed_dim, num_classes=num_classes) if num_classes > 0 else None
        self.layers = nn.ModuleList(
            ResidualLayer(residual_channels, 2 ** (i % dilation_cycle), embed_dim, num_classes > 0)
            for i in range(layers)
        )
        self.skip_proj = nn.Conv1d(residual_channels, residual_channels, 1)
        self.output = nn.Conv1d(residual_channels, in_channels, 1)
        nn.init.zeros_(self.output.weight)  # start as the zero function, as DiffWave does
        nn.init.zeros_(self.output.bias)

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output sample (the dilated 3-tap convolutions only)."""
        return 1 + sum(2 * layer.dilated.dilation[0] for layer in self.layers)

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
        b = x_in.shape[0]
        if x_in.dim() != 3:
            raise ValueError(f"DiffWave expects (B, C, T) input, got shape {tuple(x_in.shape)}")
        reject_condition(self, cond)
        mask = known_input(self, known, x_in)
        c_noise = per_item(c_noise, b)
        noise_emb = self.noise_embed(c_noise.to(x_in.dtype))
        if (g := guidance_input(self, guidance, b)) is not None:
            noise_emb = noise_emb + g
        cond_emb = None if self.cond_embed is None else self.cond_embed(cond, b, cond_drop)
        x = torch.relu(self.input(x_in if mask is None else torch.cat([x_in, mask], dim=1)))
        skip = torch.zeros_like(x)
        for layer in self.layers:
            x, s = layer(x, noise_emb, cond_emb)
            skip = skip + s
        h = torch.relu(self.skip_proj(skip / math.sqrt(len(self.layers))))
        return self.output(h)
