"""Processes: how clean data and noise mix, what the network predicts and how the loss is weighted.

All processes are written in the variance-exploding coordinate x = x0 + sigma * n (sigma the
schedule's ``sigma_ve``) and in EDM's form (Karras et al. 2022, Table 1):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

* VP with eps / x0 / v prediction: c_in = 1/sqrt(1 + sigma^2) turns x back into the VP input
  alpha x0 + sigma_vp n, and (c_skip, c_out) read x0 off the prediction.
* EDM: preconditioning for a data standard deviation sigma_data, log-normal training noise.
* Rectified flow: the network predicts the velocity n - x0 of x_t = (1 - t) x0 + t n.

The network's regression target follows from D = x0: target = (x0 - c_skip x) / c_out, so one
training path serves every process. Loss weights are given in the network's output space:
``uniform`` is the plain MSE on F (eps-MSE for eps, EDM's lambda for EDM); ``min_snr`` is
min(SNR, gamma) in x0-space (Hang et al. 2023) times c_out^2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .schedules import Schedule

WEIGHTINGS = ("uniform", "min_snr")
#: what the network is told of the noise level: EDM's ln(sigma) / 4, or the schedule's t in [0, 1] (EDM's
#: molecule model, Hoogeboom et al. 2022, feeds t itself)
NOISE_CODES = ("log_sigma", "t")
PREDICTIONS = ("eps", "x0", "v")


class Process:
    """Base class; subclasses define :meth:`scalings`."""

    #: data standard deviation assumed by the prior: x_T ~ N(0, sigma_max^2 + sigma_data^2)
    sigma_data: float = 1.0

    def __init__(
        self,
        schedule: Schedule,
        weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        noise_code: str = "log_sigma",
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if noise_code not in NOISE_CODES:
            raise ValueError(f"unknown noise_code {noise_code!r}; valid: {', '.join(NOISE_CODES)}")
        self.schedule, self.weighting, self.min_snr_gamma = schedule, weighting, min_snr_gamma
        self.noise_code = noise_code

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) for per-item noise levels ``sigma``."""
        raise NotImplementedError

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The noise-level code the network sees: EDM's ln(sigma) / 4, or t (``noise_code``)."""
        if self.noise_code == "t":
            return self.schedule.t_from_sigma(sigma).to(sigma.dtype)
        return sigma.clamp(min=1e-20).log() / 4

    def sample_sigma(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Training noise levels: t ~ U(0, 1) read through the schedule."""
        t = torch.rand(n, generator=generator, dtype=torch.float64).clamp(min=1e-5)
        return self.schedule.sigma_ve(t).float().to(device)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """(x0 - c_skip x) / c_out with x = x0 + sigma n, expanded to avoid cancellation.

        ``sigma`` must already broadcast against ``x0``.
        """
        c_skip, c_out, _ = self.scalings(sigma)
        return ((1 - c_skip) * x0 - c_skip * sigma * noise) / c_out

    def loss_weight(self, sigma: Tensor) -> Tensor:
        if self.weighting == "uniform":
            return torch.ones_like(sigma)
        _, c_out, _ = self.scalings(sigma)
        snr = sigma.clamp(min=1e-20) ** -2
        return snr.clamp(max=self.min_snr_gamma) * c_out**2

    def prior_std(self) -> float:
        return math.sqrt(self.schedule.sigma_max**2 + self.sigma_data**2)


class VPProcess(Process):
    """Variance-preserving diffusion (DDPM) predicting eps, x0 or v (Salimans & Ho 2022)."""

    def __init__(self, schedule: Schedule, prediction: str = "eps", **kwargs):
        super().__init__(schedule, **kwargs)
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        self.prediction = prediction

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_in = (1 + sigma**2).rsqrt()
        if self.prediction == "eps":
            return torch.ones_like(sigma), -sigma, c_in
        if self.prediction == "x0":
            return torch.zeros_like(sigma), torch.ones_like(sigma), c_in
        return c_in**2, -sigma * c_in, c_in  # v = alpha n - sigma_vp x0


class EDMProcess(Process):
    """EDM preconditioning and log-normal training noise (Karras et al. 2022, Table 1)."""

    def __init__(self, schedule: Schedule, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2, **kwargs):
        super().__init__(schedule, **kwargs)
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sd2 = self.sigma_data**2
        c_in = (sigma**2 + sd2).rsqrt()
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data * c_in, c_in

    def sample_sigma(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        z = torch.randn(n, generator=generator)
        return (self.p_mean + self.p_std * z).exp().to(device)


class FlowProcess(Process):
    """Rectified flow (Liu et al. 2022; Lipman et al. 2022): F predicts v = n - x0.

    With x_t = (1 - t) x0 + t n and sigma = t / (1 - t): c_in = 1 - t, x0 = x_t - t v.
    """

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_in = 1 / (1 + sigma)
        return c_in, -sigma * c_in, c_in
