"""Samplers: pure functions ``sample_x(model, x, sigmas, ...)`` in the manner of k-diffusion.

``model(x, sigma)`` is a denoiser D returning the estimate of x0 at noise level ``sigma`` (a
0-dim tensor), ``x`` starts at the prior (noise scaled to sigmas[0]) and ``sigmas`` is a
descending grid ending in 0 (:meth:`Schedule.sigmas`). ``noise_sampler(sigma, sigma_next)`` draws
unit-variance noise for the step between two noise levels, in the domain's space (e.g. zero centre of
mass); with a Brownian tree (:mod:`.noise`) the draws depend on the noise levels, not on how many steps
reach them. ``callback(i, x, sigma, denoised)`` reports progress. Nothing here knows about training,
Lightning or the domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .schedules import KarrasSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor, Tensor], None] | None


def _no_noise(sigma: Tensor, sigma_next: Tensor) -> Tensor:
    raise ValueError("this sampler injects noise: pass noise_sampler(sigma, sigma_next)")


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
    model: Denoiser, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler = _no_noise, callback: Callback = None
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
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity eta; eta = 1 is DDPM ancestral sampling."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + (down / sigmas[i]) * (x - denoised)
        if up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * up
    return x


@torch.no_grad()
def sample_ddpm(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler = _no_noise,
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
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """Heun's second-order method with optional churn (Karras et al. 2022, Alg. 2)."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma = sigmas[i]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + noise_sampler(sigma, sigma_hat) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
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
    model: Denoiser, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler = _no_noise, callback: Callback = None
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


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """Euler ancestral: an Euler step down to sigma_down, then fresh noise up to sigma_next
    (Karras et al. 2022, sec. 4 ancestral variant; eta = 1 is the DDPM posterior's noise)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + (down / sigmas[i]) * (x - denoised)
        if up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, sec. 5 and App. B): the second-order multistep data-prediction
    solver of the reverse SDE; eta = 0 is the ODE solver, ``solver_type`` 'midpoint' or 'heun'."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type={solver_type!r}: use 'midpoint' or 'heun'")
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        h = sigmas[i].log() - sigmas[i + 1].log()  # step in log-SNR / 2
        eta_h = eta * h
        phi = -torch.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
        x = (sigmas[i + 1] / sigmas[i]) * torch.exp(-eta_h) * x + phi * denoised
        if old_denoised is not None:
            slope = (denoised - old_denoised) * (h / h_last)
            x = x + (0.5 * phi if solver_type == "midpoint" else 1 - phi / (h + eta_h)) * slope
        if eta > 0:
            x = (
                x
                + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-torch.expm1(-2 * eta_h)).sqrt() * s_noise
            )
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """DPM-Solver++(3M) SDE: the third-order multistep data-prediction solver of the reverse SDE
    (Lu et al. 2022, App. B; Gonzalez et al. 2023 for the SDE form); eta = 0 is the ODE solver."""
    d_1, d_2, h_1, h_2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        h = sigmas[i].log() - sigmas[i + 1].log()
        h_eta = h * (eta + 1)
        x = torch.exp(-h_eta) * x - torch.expm1(-h_eta) * denoised
        phi_2 = torch.expm1(-h_eta) / h_eta + 1
        if h_2 is not None:  # third order: two earlier estimates
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:  # second order on the second step
            x = x + phi_2 * (denoised - d_1) / (h_1 / h)
        if eta > 0:
            x = (
                x
                + noise_sampler(sigmas[i], sigmas[i + 1])
                * sigmas[i + 1]
                * (-torch.expm1(-2 * h * eta)).sqrt()
                * s_noise
            )
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
    return x


def _unipc_coefficients(rks: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor]:
    """R (powers of the step ratios) and b (phi-function moments over B(h) = e^hh - 1, the bh2 variant)."""
    b_h = torch.expm1(hh)
    h_phi_k, factorial = torch.expm1(hh) / hh - 1, 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(b)


@torch.no_grad()
def sample_unipc(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    order: int = 2,
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """UniPC, the bh2 variant (Zhao et al. 2023, Alg. 1-3): a multistep predictor (UniP) and a corrector (UniC)
    that reuses the next step's network evaluation, so one evaluation per step; orders drop near the end
    (lower_order_final). Deterministic."""
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order={order}: use 1, 2 or 3")
    n = len(sigmas) - 1
    denoised = model(x, sigmas[0])
    _report(callback, 0, x, sigmas[0], denoised)
    lams, outs = [-sigmas[0].log()], [denoised]
    for i in range(n):
        if sigmas[i + 1] == 0:
            return outs[-1]
        lam = -sigmas[i + 1].log()
        h = lam - lams[-1]
        k = max(1, min(order, len(outs), n - 1 - i))
        rks = [(lams[-(j + 1)] - lams[-1]) / h for j in range(1, k)]
        d1s = [(outs[-(j + 1)] - outs[-1]) / rk for j, rk in zip(range(1, k), rks)]
        r, b = _unipc_coefficients(torch.stack([*rks, torch.ones_like(h)]), -h, k)
        b_h = torch.expm1(-h)
        base = (sigmas[i + 1] / sigmas[i]) * x - b_h * outs[-1]  # the first-order (DPM-Solver++) step
        pred = base
        if d1s:  # UniP: order k from k - 1 earlier estimates
            rhos_p = torch.tensor([0.5]) if k == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
            pred = base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
        denoised = model(pred, sigmas[i + 1])
        _report(callback, i + 1, pred, sigmas[i + 1], denoised)
        # UniC: correct with the evaluation at the predicted point (which the next step reuses)
        rhos_c = torch.tensor([0.5]) if k == 1 else torch.linalg.solve(r, b)
        corr = sum(rho * d for rho, d in zip(rhos_c[:-1], d1s)) if d1s else 0
        x = base - b_h * (corr + rhos_c[-1] * (denoised - outs[-1]))
        lams, outs = [*lams, lam][-order:], [*outs, denoised][-order:]
    return x


@torch.no_grad()
def sample_restart(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    t_min: float = 0.1,
    t_max: float = 2.0,
    restart_steps: int = 10,
    restarts: int = 2,
    noise_sampler: NoiseSampler = _no_noise,
    callback: Callback = None,
) -> Tensor:
    """Restart sampling (Xu et al. 2023, Alg. 1): Heun ODE steps down the grid; on reaching ``t_min``, jump back
    to ``t_max`` with fresh noise and descend again in ``restart_steps`` Heun steps, ``restarts`` times.
    Each restart needs an independent draw over the same interval: Gaussian noise, not a Brownian tree."""
    if not 0 < t_min < t_max:
        raise ValueError(f"restart needs 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    crossing = [i for i in range(len(sigmas) - 1) if sigmas[i] > t_min >= sigmas[i + 1] > 0]
    if not crossing:  # the grid never crosses t_min: plain Heun
        return sample_heun(model, x, sigmas, callback=callback)
    k = crossing[0] + 1  # the first grid level at or below t_min
    x = sample_heun(model, x, sigmas[: k + 1], callback=callback)
    low = sigmas[k]
    grid = KarrasSchedule(sigma_min=float(low), sigma_max=t_max).sigmas(restart_steps + 1)[:-1].to(sigmas)
    grid[-1] = low
    draws = [noise_sampler(low, grid[0]) for _ in range(restarts)]
    if restarts > 1 and torch.equal(draws[0], draws[1]):
        raise ValueError("restart sampling needs independent noise per restart: use noise=gaussian")
    for z in draws:
        x = sample_heun(model, x + z * (grid[0] ** 2 - low**2).sqrt(), grid)
    return sample_heun(model, x, sigmas[k:])


@torch.no_grad()
def sample_consistency(
    model: Denoiser, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler = _no_noise, callback: Callback = None
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): each evaluation maps to the data, which is
    noised afresh to the next level. For a distilled student (``stage=distill``), whose denoiser is the
    consistency function; one step is ``model(x, sigma_max)``. Use the ``karras_open`` spacing."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        x = denoised if sigmas[i + 1] == 0 else denoised + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


#: the samplers by name: this module's ``sample_*`` functions (k-diffusion's convention), the one list that the
#: config group ``conf/sampler/``, the checkpoint trust list and error messages are checked against or built from
SAMPLERS: dict[str, Callable[..., Tensor]] = {
    name.removeprefix("sample_"): fn for name, fn in list(globals().items()) if name.startswith("sample_")
}

#: arguments every sampler takes from the caller, never from its options
CALL_ARGS = ("model", "x", "sigmas", "noise_sampler", "callback")


def sampler_named(name: str) -> Callable[..., Tensor]:
    """The sampler ``name`` (a key of :data:`SAMPLERS`, e.g. ``dpmpp_2m``); an unknown name lists the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
