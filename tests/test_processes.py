import pytest
import torch
from gmm import GaussianMixture

from multidiff.core.domain import Domain, State
from multidiff.core.processes import EDMProcess, FlowProcess, VPProcess
from multidiff.core.schedules import CosineSchedule, KarrasSchedule, RectifiedSchedule
from multidiff.core.space import TensorSpace
from multidiff.module import DiffusionModule
from multidiff.sampling import named_request

PROCESSES = {
    "vp_eps": lambda: VPProcess(CosineSchedule(), "eps"),
    "vp_x0": lambda: VPProcess(CosineSchedule(), "x0"),
    "vp_v": lambda: VPProcess(CosineSchedule(), "v"),
    "edm": lambda: EDMProcess(KarrasSchedule()),
    "flow": lambda: FlowProcess(RectifiedSchedule()),
}


@pytest.mark.parametrize("name", PROCESSES)
def test_target_recovers_clean_data(name):
    """D = c_skip x + c_out F must return x0 when F is the regression target."""
    p = PROCESSES[name]()
    x0, n = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    sigma = p.sample_sigma(64).double()[:, None]
    c_skip, c_out, _ = p.scalings(sigma)
    torch.testing.assert_close(c_skip * (x0 + sigma * n) + c_out * p.target(x0, n, sigma), x0)


def test_known_targets():
    x0, n, s = torch.randn(8, 2), torch.randn(8, 2), torch.full((8, 1), 0.7)
    torch.testing.assert_close(VPProcess(CosineSchedule(), "eps").target(x0, n, s), n)
    torch.testing.assert_close(VPProcess(CosineSchedule(), "x0").target(x0, n, s), x0)
    torch.testing.assert_close(FlowProcess(RectifiedSchedule()).target(x0, n, s), n - x0)
    a, sv = (1 + s**2).rsqrt(), s * (1 + s**2).rsqrt()  # VP alpha, sigma
    torch.testing.assert_close(VPProcess(CosineSchedule(), "v").target(x0, n, s), a * n - sv * x0)


def test_min_snr_weighting_for_eps():
    p = VPProcess(CosineSchedule(), "eps", weighting="min_snr", min_snr_gamma=5.0)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    snr = sigma**-2
    torch.testing.assert_close(p.loss_weight(sigma), snr.clamp(max=5.0) / snr)


def test_unknown_choices_list_valid_ones():
    with pytest.raises(ValueError, match="eps, x0, v"):
        VPProcess(CosineSchedule(), "score")
    with pytest.raises(ValueError, match="min_snr"):
        VPProcess(CosineSchedule(), weighting="p2")


class OracleNet(torch.nn.Module):
    """The exact mixture denoiser expressed as a network output F for a given process."""

    def __init__(self, gmm, process):
        super().__init__()
        self.gmm, self.process, self.dummy = gmm, process, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c_noise, cond=None, cond_drop=None):
        sigma = torch.exp(4 * c_noise.double())
        c_skip, c_out, c_in = self.process.scalings(sigma[:, None])
        x = x_in.double() / c_in
        d = self.gmm.denoise(x, sigma[:1])
        return ((d - c_skip * x) / c_out).to(x_in.dtype)


class PointDomain(Domain):
    name = "points"
    space = TensorSpace()

    def template(self, n, cond, generator):
        return State(torch.zeros(n, 2, dtype=torch.float64), cond)


@pytest.mark.parametrize("name", PROCESSES)
def test_generate_with_exact_denoiser_matches_mixture(name):
    """The whole generation path (prior, preconditioning, c_noise, sampler) for every process."""
    gmm, process = GaussianMixture.default(), PROCESSES[name]()
    module = DiffusionModule(PointDomain(), OracleNet(gmm, process), process, optimizer=torch.optim.Adam)
    state = module.generate(8000, named_request(steps=50), seed=1, progress=False)
    errs = gmm.moment_errors(state.x)
    # Monte-Carlo bands for N = 8,000 at ~4 standard errors (see test_samplers.py)
    assert errs["weight"] < 0.025 and errs["mean"] < 0.055 and errs["cov"] < 0.045, errs


def test_noise_code_is_log_sigma_or_the_schedules_t():
    from multidiff.core.schedules import PolynomialSchedule

    sched = PolynomialSchedule()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sigma = sched.sigma_ve(t)
    torch.testing.assert_close(VPProcess(sched, noise_code="t").c_noise(sigma), t, atol=1e-9, rtol=0)
    torch.testing.assert_close(VPProcess(sched).c_noise(sigma), sigma.log() / 4)
    with pytest.raises(ValueError, match="unknown noise_code 'time'; valid: log_sigma, t"):
        VPProcess(sched, noise_code="time")
