"""Noise schedules: the noise level as a function of continuous time t in [0, 1].

Every schedule is one function, the log signal-to-noise ratio ``log_snr(t)`` (decreasing in t).
Everything else follows from it:

* ``alpha(t)``, ``sigma(t)``: the variance-preserving pair, alpha^2 + sigma^2 = 1;
* ``sigma_ve(t) = sigma / alpha = exp(-log_snr / 2)``: the noise level of the equivalent
  variance-exploding process ``x = x0 + sigma_ve * noise``. Samplers work in this coordinate
  (as k-diffusion and EDM do), so discrete DDPM-style and continuous schedules share one path.

A discrete schedule with T steps is the continuous one read at t = i / T.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SPACINGS = ("time", "karras", "karras_open", "log_snr")


class Schedule:
    """Base class: subclasses define :meth:`log_snr`."""

    #: t of the least noisy level the samplers stop at before the final jump to sigma = 0
    t_min: float = 1e-3

    def log_snr(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self.log_snr(t)).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def sigma_ve(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.log_snr(t))

    def t_from_sigma(self, sigma: Tensor, iterations: int = 64) -> Tensor:
        """The t at which :meth:`sigma_ve` equals ``sigma`` (bisection in float64: sigma_ve increases with t),
        clamped to [0, 1]; for processes whose network is conditioned on t, as EDM's molecule model is."""
        target = torch.as_tensor(sigma, dtype=torch.float64)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = self.sigma_ve(mid) > target
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        return (lo + hi) / 2

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_ve(torch.tensor(1.0, dtype=torch.float64)))

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_ve(torch.tensor(self.t_min, dtype=torch.float64)))

    def sigmas(self, steps: int, spacing: str = "karras", rho: float = 7.0) -> Tensor:
        """A descending grid of ``steps`` VE noise levels from sigma_max to sigma_min, then 0.

        ``time``: uniform in t (DDPM/DDIM); ``karras``: uniform in sigma^(1/rho) (EDM eq. 5);
        ``log_snr``: uniform in log-SNR (DPM-Solver); ``karras_open``: the first ``steps`` levels of the
        ``karras`` grid of ``steps + 1`` (sigma_min left out: a consistency model's every step lands on the data,
        so a step at sigma_min would only repeat the last).
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if spacing == "karras_open":
            return torch.cat([self.sigmas(steps + 1, "karras", rho)[:steps], torch.zeros(1)])
        u = torch.linspace(0, 1, steps, dtype=torch.float64)
        if spacing == "time":
            s = self.sigma_ve(1.0 - u * (1.0 - self.t_min))
        elif spacing == "karras":
            lo, hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
            s = (hi + u * (lo - hi)) ** rho
        elif spacing == "log_snr":
            s = torch.exp(math.log(self.sigma_max) + u * (math.log(self.sigma_min) - math.log(self.sigma_max)))
        else:
            raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
        return torch.cat([s, s.new_zeros(1)]).float()


def _log_snr_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """log(abar / (1 - abar)) without cancellation near abar = 1."""
    log_abar = alpha_bar.clamp(min=1e-20).log()
    return log_abar - torch.log(-torch.expm1(log_abar.clamp(max=-1e-12)))


def _as_tensor(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)


class LinearSchedule(Schedule):
    """DDPM's linear betas (1e-4 to 0.02 over 1,000 steps) in continuous time (Song et al. 2021)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        log_abar = -0.5 * t**2 * (self.beta_max - self.beta_min) - t * self.beta_min
        return log_abar - torch.log(-torch.expm1(log_abar.clamp(max=-1e-12)))


class CosineSchedule(Schedule):
    """Nichol & Dhariwal's cosine schedule as log-SNR = -2 log tan(pi t / 2), truncated to
    [log_snr_min, log_snr_max] so both ends stay finite (as in VDM / simple diffusion)."""

    def __init__(self, log_snr_min: float = -15.0, log_snr_max: float = 15.0):
        self.t0 = math.atan(math.exp(-0.5 * log_snr_max))
        self.t1 = math.atan(math.exp(-0.5 * log_snr_min))

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return -2.0 * torch.log(torch.tan(self.t0 + t * (self.t1 - self.t0)))


class SigmoidSchedule(Schedule):
    """Sigmoid schedule of Chen (2023), 'On the importance of noise scheduling'."""

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip: float = 1e-9):
        self.start, self.end, self.tau, self.clip = start, end, tau, clip

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        v0 = 1 / (1 + math.exp(-self.start / self.tau))
        v1 = 1 / (1 + math.exp(-self.end / self.tau))
        v = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        abar = ((v1 - v) / (v1 - v0)).clamp(self.clip, 1.0 - self.clip)
        return _log_snr_from_alpha_bar(abar)


class PolynomialSchedule(Schedule):
    """EDM-molecule's ``polynomial_2``: abar(t) = (1 - 2s)(1 - t^power)^2 + s (Hoogeboom et al. 2022).

    The precision ``s`` keeps abar in [s, 1 - s], so log-SNR stays within +-log((1 - s) / s).
    """

    def __init__(self, power: float = 2.0, precision: float = 1e-5):
        self.power, self.precision = power, precision

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        s = self.precision
        abar = (1 - 2 * s) * (1 - t**self.power) ** 2 + s
        return _log_snr_from_alpha_bar(abar)


class KarrasSchedule(Schedule):
    """EDM's sigma grid as a schedule: sigma(t)^(1/rho) linear from sigma_min (t=0) to sigma_max (t=1)."""

    t_min = 0.0

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.lo, self.hi, self.rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho), rho

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return -2.0 * self.rho * torch.log(self.lo + t * (self.hi - self.lo))


class RectifiedSchedule(Schedule):
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t noise, so log-SNR = 2 log((1 - t) / t).

    ``t_max`` < 1 keeps sigma_max finite; at 1 - 1e-3 the prior is N(0, 1) to 0.1 %.
    """

    def __init__(self, t_max: float = 1.0 - 1e-3):
        self.t_max = t_max

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t).clamp(1e-6, 1.0) * self.t_max
        return 2.0 * (torch.log1p(-t) - torch.log(t))
