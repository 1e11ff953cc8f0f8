"""Samplers: pure functions ``sample_x(model, x, sigmas, ...)`` in the manner of k-diffusion.

``model(x, sigma)`` is a denoiser D returning the estimate of x0 at noise level ``sigma`` (a
0-dim tensor), ``x`` starts at the prior (noise scaled to sigmas[0]) and ``sigmas`` is a
descending grid ending in 0 (:meth:`Schedule.sigmas`). ``noise_sampler(x)`` draws fresh noise in
the domain's space (e.g. zero centre of mass), ``callback(i, x, sigma, denoised)`` reports
progress. Nothing here knows about training, Lightning or the domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
NoiseSampler = Callable[[Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor, Tensor], None] | None


def _randn_like(x: Tensor) -> Tensor:
    return torch.randn_like(x)


def _report(callback: Callback, i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback(i, x, sigma, denoised)


def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) of a step sigma -> sigma_next; eta = 1 is the DDPM posterior and
    eta maps exactly onto DDIM's eta in VE coordinates."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, sigma_next * 0
    up = torch.clamp(eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt(), max=sigma_next)
    return (sigma_next**2 - up**2).sqrt(), up


@torch.no_grad()
def sample_euler(
    model: Denoiser, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler = _randn_like, callback: Callback = None
) -> Tensor:
    """Euler on the probability-flow ODE (Karras et al. 2022, Alg. 1 without the 2nd-order step).

    In VE coordinates this is exactly DDIM with eta = 0 and the Euler sampler of rectified flow.
    Deterministic: ``noise_sampler`` is unused (taken so that every sampler has one signature).
    """
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
    return x


@torch.no_grad()
def sample_ddim(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    eta: float = 0.0,
    noise_sampler: NoiseSampler = _randn_like,
    callback: Callback = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity eta; eta = 1 is DDPM ancestral sampling."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + (down / sigmas[i]) * (x - denoised)
        if up > 0:
            x = x + noise_sampler(x) * up
    return x


@torch.no_grad()
def sample_ddpm(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler = _randn_like,
    callback: Callback = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): each step draws from q(x_s | x_t, x0 = D(x_t))."""
    return sample_ddim(model, x, sigmas, eta=1.0, noise_sampler=noise_sampler, callback=callback)


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler = _randn_like,
    callback: Callback = None,
) -> Tensor:
    """Heun's second-order method with optional churn (Karras et al. 2022, Alg. 2)."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma = sigmas[i]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + noise_sampler(x) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
        denoised = model(x, sigma_hat)
        _report(callback, i, x, sigma_hat, denoised)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler = _randn_like, callback: Callback = None
) -> Tensor:
    """DPM-Solver++(2M), multistep second order in log-sigma (Lu et al. 2022, Alg. 2); deterministic."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            if old_denoised is not None:
                r = (t - (-sigmas[i - 1].log())) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            else:
                denoised_d = denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * denoised_d
        old_denoised = denoised
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}

#: arguments every sampler takes from the caller, never from its options
CALL_ARGS = ("model", "x", "sigmas", "noise_sampler", "callback")


def get_sampler(name: str) -> Callable[..., Tensor]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
