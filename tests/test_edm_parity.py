"""multidiff's polynomial_2 schedule and DDPM step equal EDM's own (values from EDM's code, written by
benchmarks/parity_edm.py into tests/fixtures/edm_schedule_step.npz; EDM's code is not needed here)."""

from pathlib import Path

import numpy as np
import torch

from multidiff.core.samplers import sample_ddpm
from multidiff.core.schedules import PolynomialSchedule

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "edm_schedule_step.npz")
T = 1000


def gamma() -> np.ndarray:
    """-log SNR at EDM's 1,000 steps, t = i / 1000."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    return -PolynomialSchedule(power=2.0, precision=1e-5).log_snr(t).numpy()


def test_polynomial_2_matches_edm_at_its_1000_steps():
    ours, edm = gamma(), FIXTURE["gamma"]
    np.testing.assert_allclose(ours[:-1], edm[:-1], rtol=0, atol=1e-10)
    # the one documented difference: EDM clips alpha_t^2 / alpha_{t-1}^2 at 0.001, which changes only t = 1
    # (its alpha_1^2 is s + 4e-9 instead of s): gamma 11.5125 against 11.5129
    assert 1e-4 < abs(ours[-1] - edm[-1]) < 1e-3
    # alpha and sigma follow from gamma the same way on both sides
    np.testing.assert_allclose(np.sqrt(1 / (1 + np.exp(ours[:-1]))), np.sqrt(1 / (1 + np.exp(edm[:-1]))), atol=1e-12)


def test_one_ancestral_step_matches_edm_given_the_same_eps_and_noise():
    g = gamma()
    s, t = (int(v) for v in FIXTURE["s_t"])
    alpha = lambda i: float(np.sqrt(1 / (1 + np.exp(g[i]))))  # noqa: E731
    sigma = lambda i: float(np.sqrt(1 / (1 + np.exp(-g[i]))))  # noqa: E731
    zt, eps_hat, noise = (torch.from_numpy(FIXTURE[k]) for k in ("zt", "eps_hat", "noise"))
    # EDM's z (variance preserving) is alpha times multidiff's x (variance exploding); eps prediction D = x - sigma eps
    sigmas = torch.tensor([sigma(t) / alpha(t), sigma(s) / alpha(s)], dtype=torch.float64)
    x_s = sample_ddpm(lambda x, sig: x - sig * eps_hat, zt / alpha(t), sigmas, noise_sampler=lambda *_: noise)
    np.testing.assert_allclose((alpha(s) * x_s).numpy(), FIXTURE["zs"], rtol=0, atol=1e-12)
