"""The preconditioned denoiser D(x; sigma) that samplers call, with classifier-free guidance."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processes import Process
from .state import State


class Preconditioned(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) around a domain network F."""

    def __init__(self, net: nn.Module, process: Process, space):
        super().__init__()
        self.net, self.process, self.space = net, process, space

    def raw(self, x: Tensor, sigma: Tensor, state: State, cond_drop: Tensor | None = None) -> Tensor:
        """The network output F for per-item ``sigma`` (B,)."""
        s = self.space.per_item(sigma, x, state.ctx)
        _, _, c_in = self.process.scalings(s)
        return self.net(c_in * x, self.process.c_noise(sigma), cond=state.cond, cond_drop=cond_drop, **state.ctx)

    def forward(self, x: Tensor, sigma: Tensor, state: State, cond_drop: Tensor | None = None) -> Tensor:
        s = self.space.per_item(sigma, x, state.ctx)
        c_skip, c_out, _ = self.process.scalings(s)
        return c_skip * x + c_out * self.raw(x, sigma, state, cond_drop)


def sampling_denoiser(model: Preconditioned, state: State, guidance: float = 1.0):
    """A closure ``D(x, sigma_scalar)`` for the samplers.

    With a condition and ``guidance != 1``: D_uncond + guidance * (D_cond - D_uncond)
    (Ho & Salimans 2022); guidance 0 is unconditional, 1 purely conditional.
    """
    n = model.space.num_items(state.x, state.ctx)

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        sig = sigma.to(x.dtype).expand(n).to(x.device)
        if state.cond is None or guidance == 1.0:
            return model(x, sig, state)
        drop = torch.ones(n, dtype=torch.bool, device=x.device)
        uncond = model(x, sig, state, cond_drop=drop)
        if guidance == 0.0:
            return uncond
        return uncond + guidance * (model(x, sig, state) - uncond)

    return denoise
