"""A 1D convolutional autoencoder of waveforms for latent diffusion: ``(B, 1, T) <-> (B, C, T / prod(factors))``.

Strided convolutions down and transposed convolutions up, residual blocks between them, trained with a
multi-resolution STFT loss plus L1 on the waveform (as audio autoencoders are: the STFT term makes the spectrum
right, the L1 term the phase and level). The latent is a plain tensor, so every sampler, guidance and
observation feature applies to it unchanged.
"""

from __future__ import annotations

from typing import Any

import auraloss
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multidiff.core.space import TensorSpace
from multidiff.core.state import State


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) or 1, c)


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(c), nn.SiLU(), nn.Conv1d(c, c, 3, padding=1), _norm(c), nn.SiLU(), nn.Conv1d(c, c, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ConvAutoencoder1d(nn.Module):
    """``channels[i]`` is the width at level i, each level ``factors[i]`` times shorter than the one before
    (even factors); ``latent_channels`` latent features per latent frame. ``stft_weight`` and ``l1_weight`` weigh
    the multi-resolution STFT and waveform L1 terms (STFT sizes suited to 8-16 kHz clips)."""

    domain = "audio"
    data_keys = ("length", "sample_rate")

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        factors: tuple[int, ...] = (4, 4, 2),
        latent_channels: int = 8,
        blocks: int = 1,
        stft_weight: float = 1.0,
        l1_weight: float = 1.0,
    ):
        super().__init__()
        channels, factors = list(channels), list(factors)
        if len(channels) != len(factors) + 1 or any(f < 2 or f % 2 for f in factors):
            raise ValueError(
                f"channels ({len(channels)}) must be one longer than factors ({len(factors)}), factors even, got "
                f"channels={channels}, factors={factors}"
            )
        self.factors, self.latent_channels = factors, latent_channels
        self.stride = int(torch.tensor(factors).prod())
        self.space = TensorSpace()
        self.stft_weight, self.l1_weight = stft_weight, l1_weight
        self.register_buffer("latent_scale", torch.tensor(1.0))
        enc: list[nn.Module] = [nn.Conv1d(1, channels[0], 7, padding=3)]
        for c_in, c_out, f in zip(channels[:-1], channels[1:], factors):
            enc += [_ResBlock(c_in) for _ in range(blocks)]
            enc.append(nn.Conv1d(c_in, c_out, 2 * f, stride=f, padding=f // 2))
        enc += [_ResBlock(channels[-1]) for _ in range(blocks)]
        enc += [_norm(channels[-1]), nn.SiLU(), nn.Conv1d(channels[-1], latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(latent_channels, channels[-1], 3, padding=1)]
        dec += [_ResBlock(channels[-1]) for _ in range(blocks)]
        for c_in, c_out, f in reversed(list(zip(channels[:-1], channels[1:], factors))):
            dec.append(nn.ConvTranspose1d(c_out, c_in, 2 * f, stride=f, padding=f // 2))
            dec += [_ResBlock(c_in) for _ in range(blocks)]
        dec += [_norm(channels[0]), nn.SiLU(), nn.Conv1d(channels[0], 1, 7, padding=3)]
        self.decoder = nn.Sequential(*dec)
        self.stft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=[512, 256, 128], hop_sizes=[128, 64, 32], win_lengths=[512, 256, 128]
        )

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[-1] % self.stride:
            raise ValueError(
                f"the audio autoencoder takes (B, 1, T) clips with T a multiple of {self.stride}, got {tuple(x.shape)}"
            )

    def encode(self, state: State) -> State:
        self._check(state.x)
        return State(self.encoder(state.x), state.cond, state.ctx)

    def decode(self, latent: State) -> State:
        return State(self.decoder(latent.x), latent.cond, latent.ctx)

    def latent_template(self, state: State) -> State:
        self._check(state.x)
        n, _, t = state.x.shape
        return State(state.x.new_zeros(n, self.latent_channels, t // self.stride), state.cond, state.ctx)

    def latent_mask(self, mask: Tensor) -> Tensor:
        """A latent frame is known where all the samples it stands for are."""
        n, _, t = mask.shape
        frames = mask.reshape(n, 1, t // self.stride, self.stride).all(-1)
        return frames.expand(n, self.latent_channels, -1)

    def reconstruction_loss(self, state: State, recon: State) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = state.x.float(), recon.x.float()
        stft, l1 = self.stft(y, x), F.l1_loss(y, x)
        return self.stft_weight * stft + self.l1_weight * l1, {"stft": stft.detach(), "l1": l1.detach()}

    def net_inputs(self) -> dict[str, Any]:
        return {"in_channels": self.latent_channels}
