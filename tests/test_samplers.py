"""Samplers against the exact denoiser of a Gaussian mixture: no training involved.

Tolerances are Monte-Carlo bands for N = 20,000 samples, about 4 standard errors: component
weight SE = sqrt(0.25 / N) = 0.0035 -> 0.015; mean SE of the smallest component
sqrt(0.3 / 4,000) = 0.009 -> 0.035; covariance SE ~ var * sqrt(2 / N_k) = 0.007 -> 0.03.
"""

import pytest
import torch
from gmm import GaussianMixture

from multidiff.config import sampler_config
from multidiff.core.noise import BrownianNoise, make_noise
from multidiff.core.samplers import SAMPLERS, sampler_named
from multidiff.core.schedules import KarrasSchedule, LinearSchedule
from multidiff.core.space import GraphSpace, TensorSpace

N = 20_000
TOL = {"weight": 0.015, "mean": 0.035, "cov": 0.03}
EA_STEPS = 100  # Euler ancestral is first order in a stochastic step: slow to converge
# how much worse than DDPM-1000 a fast sampler may be: two standard errors of each moment
MARGIN = {"weight": 0.007, "mean": 0.018, "cov": 0.014}

CASES = [
    ("ddim", 250, "karras", {}),
    ("ddim", 200, "time", {"eta": 1.0}),
    ("euler", 250, "karras", {}),
    ("heun", 50, "karras", {}),
    ("heun", 50, "karras", {"s_churn": 10.0}),
    ("dpmpp_2m", 50, "karras", {}),
    ("dpmpp_2m", 50, "log_snr", {}),
    # the fewest steps at which each passes on both schedules (docs/results.md has the table)
    ("euler_ancestral", EA_STEPS, "karras", {}),
    ("dpmpp_2m_sde", 50, "karras", {}),
    ("dpmpp_3m_sde", 50, "karras", {}),
    ("unipc", 20, "karras", {}),
    ("unipc", 30, "karras", {"order": 3}),
    ("restart", 10, "karras", {}),
]


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.default()


def run(gmm, schedule, name, steps, spacing, opts, seed=0):
    """Sample the mixture with its exact denoiser; the noise kind is the sampler config's (Brownian for SDEs)."""
    gen = torch.Generator().manual_seed(seed)
    sigmas = schedule.sigmas(steps, spacing).double()
    x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
    kind = sampler_config(name).noise
    noise = make_noise(kind, TensorSpace(), x, {}, sigmas, gen, seed)
    return sampler_named(name)(gmm.denoise, x, sigmas, noise_sampler=noise, **opts)


@pytest.fixture(scope="module")
def ddpm_1000(gmm):
    """DDPM ancestral sampling with 1,000 steps: the reference the fast samplers must match."""
    return gmm.moment_errors(run(gmm, LinearSchedule(), "ddpm", 1000, "time", {}, seed=3))


def test_every_sampler_is_covered():
    # consistency serves distilled students, not a denoiser: tests/test_distill.py checks it on exact ones
    assert {c[0] for c in CASES} | {"ddpm", "consistency"} == set(SAMPLERS)


# the linear schedule repeats the matrix in the full suite; the quick loop checks each sampler once
@pytest.mark.parametrize(
    "schedule",
    [pytest.param(KarrasSchedule(), id="karras"), pytest.param(LinearSchedule(), id="linear", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize(
    "name,steps,spacing,opts", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}{'-' + str(c[3]) if c[3] else ''}" for c in CASES]
)
def test_sampler_matches_mixture(gmm, schedule, name, steps, spacing, opts):
    errs = gmm.moment_errors(run(gmm, schedule, name, steps, spacing, opts))
    for k, tol in TOL.items():
        assert errs[k] < tol, f"{name} {k} error {errs[k]:.4f} >= {tol}"


@pytest.mark.slow
def test_ddpm_1000_matches_mixture(ddpm_1000):
    for k, tol in TOL.items():
        assert ddpm_1000[k] < tol, f"ddpm {k} error {ddpm_1000[k]:.4f} >= {tol}"


@pytest.mark.slow  # against a 1,000-step reference run
@pytest.mark.parametrize(
    "name,steps,spacing",
    [
        ("dpmpp_2m", 30, "log_snr"),
        ("dpmpp_2m", 50, "karras"),
        ("heun", 50, "karras"),
        ("unipc", 30, "karras"),
        ("dpmpp_2m_sde", 50, "karras"),
        ("dpmpp_3m_sde", 50, "karras"),
        ("restart", 10, "karras"),
        ("euler_ancestral", 200, "karras"),
    ],
)
def test_fast_samplers_as_close_as_ddpm_1000(gmm, ddpm_1000, name, steps, spacing):
    errs = gmm.moment_errors(run(gmm, LinearSchedule(), name, steps, spacing, {}, seed=3))
    for k in TOL:
        assert errs[k] <= ddpm_1000[k] + MARGIN[k], (name, steps, k, errs[k], ddpm_1000[k])


def test_too_few_steps_is_detectably_worse(gmm):
    # the moment check has the power to see discretisation error: 3 Euler steps miss the mixture
    errs = gmm.moment_errors(run(gmm, KarrasSchedule(), "euler", 3, "karras", {}))
    assert max(errs[k] / TOL[k] for k in TOL) > 1


def test_sampling_is_reproducible_from_a_seed(gmm):
    a = run(gmm, KarrasSchedule(), "ddpm", 20, "karras", {}, seed=7)
    b = run(gmm, KarrasSchedule(), "ddpm", 20, "karras", {}, seed=7)
    assert torch.equal(a, b)


def test_unknown_sampler_lists_valid_ones():
    with pytest.raises(ValueError, match="dpmpp_2m"):
        sampler_named("plms")


def test_brownian_increments_add_up_so_noise_does_not_depend_on_the_step_count():
    x = torch.zeros(4000, 3, dtype=torch.float64)
    noise = BrownianNoise(TensorSpace(), x, {}, 0.01, 100.0, seed=5)
    a, b, c = torch.tensor(0.5), torch.tensor(2.0), torch.tensor(7.0)
    length = lambda s, t: (t.log() - s.log()).sqrt()  # noqa: E731  (the tree runs in log-sigma time)
    whole = noise(c, a) * length(a, c)
    parts = noise(c, b) * length(b, c) + noise(b, a) * length(a, b)
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=0)
    assert abs(noise(c, a).std().item() - 1) < 0.03  # unit variance per increment
    again = BrownianNoise(TensorSpace(), x, {}, 0.01, 100.0, seed=5)
    assert torch.equal(again(c, a), noise(c, a)) and not torch.equal(noise(c, a), noise(b, a))


def test_noise_stays_in_the_domains_space():
    batch = torch.tensor([0, 0, 0, 1, 1])
    ctx = {"batch": batch, "num_items": 2}
    x = torch.zeros(5, 6)
    gen = torch.Generator().manual_seed(0)
    for kind in ("gaussian", "brownian"):
        z = make_noise(kind, GraphSpace(), x, ctx, torch.tensor([10.0, 1.0, 0.0]), gen, seed=1)(
            torch.tensor(10.0), torch.tensor(1.0)
        )
        for b in range(2):
            assert z[batch == b, :3].mean(0).abs().max() < 1e-6  # zero centre of mass per molecule
        assert z[:, 3:].abs().sum() > 0


def test_restart_refuses_repeated_noise(gmm):
    sigmas = KarrasSchedule().sigmas(10, "karras").double()
    x = torch.randn(10, 2, dtype=torch.float64) * 80
    brownian = make_noise("brownian", TensorSpace(), x, {}, sigmas, torch.Generator(), seed=0)
    with pytest.raises(ValueError, match="independent noise"):
        sampler_named("restart")(gmm.denoise, x, sigmas, noise_sampler=brownian)


def test_restart_restarts_once_where_the_grid_crosses_t_min(gmm):
    calls = []

    def model(x, sigma):
        calls.append(float(sigma))
        return gmm.denoise(x, sigma)

    x = torch.randn(8, 2, dtype=torch.float64)
    noise = lambda *_: torch.randn(8, 2, dtype=torch.float64)  # noqa: E731
    restart = sampler_named("restart")
    restart(model, x * 0.05, torch.tensor([0.05, 0.02, 0.0], dtype=torch.float64), noise_sampler=noise)
    assert len(calls) == 3  # entirely below t_min: Heun only (2 + 1 evaluations), no restart
    calls.clear()
    restart(
        model,
        x * 5,
        torch.tensor([5.0, 1.0, 0.05, 0.0], dtype=torch.float64),
        noise_sampler=noise,
        restart_steps=2,
        restarts=2,
    )
    assert len(calls) == 2 + 2 + 1 + 2 * 2 * 2  # three Heun steps and two restarts of two Heun steps each


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_evaluations_count_what_a_run_calls(gmm, name):
    from multidiff.sampling import build_sampler

    sampling = build_sampler(sampler_config(name), steps=6)
    calls = [0]

    def denoise(x, sigma):
        calls[0] += 1
        return gmm.denoise(x, sigma)

    x = torch.randn(8, 2, dtype=torch.float64) * 80
    sigmas = KarrasSchedule().sigmas(6, sampling.spacing).double()
    noise = make_noise(sampling.noise, TensorSpace(), x, {}, sigmas, torch.Generator().manual_seed(0), seed=0)
    sampling.fn(denoise, x, sigmas, noise_sampler=noise)
    assert sampling.evaluations() == calls[0]
    assert calls[0] >= 6 and (name != "heun" or calls[0] == 11)  # Heun: two per step but the last
