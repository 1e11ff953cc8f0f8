import math

import pytest
import torch

from multidiff.core.schedules import (
    CosineSchedule,
    KarrasSchedule,
    LinearSchedule,
    PolynomialSchedule,
    RectifiedSchedule,
    SigmoidSchedule,
)

SCHEDULES = [
    LinearSchedule(),
    CosineSchedule(),
    SigmoidSchedule(),
    PolynomialSchedule(),
    KarrasSchedule(),
    RectifiedSchedule(),
]
IDS = ["linear", "cosine", "sigmoid", "polynomial", "karras", "rectified"]
T = torch.linspace(0.001, 1.0, 513, dtype=torch.float64)


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
def test_variance_preserving_pair_and_ve_sigma(s):
    a, sig = s.alpha(T), s.sigma(T)
    torch.testing.assert_close(a**2 + sig**2, torch.ones_like(T))
    torch.testing.assert_close(s.sigma_ve(T), sig / a)
    torch.testing.assert_close(s.log_snr(T), torch.log(a**2 / sig**2))


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
def test_log_snr_decreases_and_is_finite(s):
    lam = s.log_snr(T)
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("spacing", ["time", "karras", "log_snr"])
def test_sampling_grid(s, spacing):
    g = s.sigmas(10, spacing)
    assert g.shape == (11,) and g[-1] == 0
    assert (g[1:] < g[:-1]).all()
    assert g[0].item() == pytest.approx(s.sigma_max, rel=1e-5)
    assert g[-2].item() == pytest.approx(s.sigma_min, rel=1e-4)


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
def test_t_from_sigma_inverts_sigma_ve(s):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    torch.testing.assert_close(s.t_from_sigma(s.sigma_ve(t)), t, atol=1e-9, rtol=0)


def test_linear_matches_discrete_ddpm_betas():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    cont = LinearSchedule().alpha(t) ** 2
    # the continuous form integrates the betas; -log(1 - beta) = beta + O(beta^2) differs by < 1 % in log(abar)
    torch.testing.assert_close(cont.log(), abar.log(), rtol=0.01, atol=0.01)


def test_cosine_matches_nichol_dhariwal():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    abar = torch.cos(t * math.pi / 2) ** 2  # offset s = 0
    # truncating log-SNR to +-15 shifts t by < 0.1 %, abar by < 2 % near t = 1
    torch.testing.assert_close(CosineSchedule().alpha(t) ** 2, abar, rtol=0.02, atol=1e-3)


def test_polynomial_2_matches_edm_molecule():
    s = 1e-5
    sched = PolynomialSchedule(power=2, precision=s)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = (1 - 2 * s) * (1 - t**2) ** 2 + s
    torch.testing.assert_close(sched.alpha(t) ** 2, expected)
    assert sched.log_snr(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(
        math.log((1 - s) / s), rel=1e-6
    )


def test_karras_endpoints_and_rho():
    k = KarrasSchedule(0.002, 80.0, 7.0)
    assert k.sigma_ve(torch.tensor(1.0)).item() == pytest.approx(80.0, rel=1e-6)
    assert k.sigma_ve(torch.tensor(0.0)).item() == pytest.approx(0.002, rel=1e-6)
    # EDM eq. 5 grid
    g = k.sigmas(18, "karras")[:-1].double()
    i = torch.arange(18, dtype=torch.float64)
    edm = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(g, edm, rtol=1e-5, atol=0)


def test_rectified_is_linear_interpolation():
    r = RectifiedSchedule(t_max=1.0)
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(r.sigma_ve(t), t / (1 - t))


def test_unknown_spacing_lists_valid_ones():
    with pytest.raises(ValueError, match="karras"):
        KarrasSchedule().sigmas(10, "quadratic")
