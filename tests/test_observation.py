"""Generating from a partial observation, against the closed-form conditional of a Gaussian mixture.

Observing x1 = a in a 2-D mixture leaves x2 distributed as a 1-D mixture with known weights, means and
variances; its exact denoiser is what an observation-conditioned model converges to, and the yardstick for
training-free replacement (RePaint), which is known to be biased: the figures are in docs/results.md.
"""

import pytest
import torch
from gmm import FragmentGaussian, GaussianMixture, MixtureModel, conditional_denoiser, conditional_errors

from multidiff.core.denoiser import sampling_denoiser
from multidiff.core.observation import (
    Observation,
    conditioned_denoiser,
    replacement_denoiser,
    sample_with_resampling,
)
from multidiff.core.samplers import sample_ddpm, sample_dpmpp_2m, sample_euler, sample_heun
from multidiff.core.schedules import KarrasSchedule
from multidiff.core.state import State

N, A = 20_000, 0.2


@pytest.fixture(scope="module")
def mix() -> GaussianMixture:
    # two components that x1 alone does not tell apart: the conditional of x2 given x1 = A is bimodal
    return GaussianMixture(
        [0.6, 0.4], [[0.0, -1.5], [0.4, 1.5]], [[[0.5, 0.35], [0.35, 0.5]], [[0.4, -0.25], [-0.25, 0.45]]]
    )


def start(seed: int, steps: int):
    gen = torch.Generator().manual_seed(seed)
    sigmas = KarrasSchedule().sigmas(steps, "karras").double()
    x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
    noise = lambda *_: torch.randn(N, 2, generator=gen, dtype=torch.float64)  # noqa: E731
    return gen, sigmas, x, noise


def observation() -> Observation:
    values = torch.zeros(N, 2, dtype=torch.float64)
    values[:, 0] = A
    return Observation(values, torch.tensor([True, False]).expand(N, 2))


def test_exact_conditional_denoiser_reproduces_the_conditional(mix):
    # the oracle an observation-conditioned model converges to (N = 20,000; ~4 standard errors)
    _, sigmas, x, noise = start(0, 50)
    out = sample_dpmpp_2m(conditional_denoiser(mix, A), x, sigmas, noise_sampler=noise)
    errs = conditional_errors(mix, out, A)
    assert errs["weight"] < 0.015 and errs["mean"] < 0.02 and errs["var"] < 0.02, errs
    assert (out[:, 0] == A).all()


def replacement(mix, resample: int, sampler=sample_ddpm, steps: int = 50, seed: int = 1) -> torch.Tensor:
    _, sigmas, x, noise = start(seed, steps)
    denoise = replacement_denoiser(mix.denoise, observation(), lambda x: noise())
    return sample_with_resampling(sampler, denoise, x, sigmas, resample, noise_sampler=noise)


@pytest.mark.parametrize("sampler", [sample_ddpm, sample_dpmpp_2m, sample_heun])
def test_known_part_is_exactly_the_observation(mix, sampler):
    out = replacement(mix, 1, sampler, steps=10)
    assert (out[:, 0] == A).all() and torch.isfinite(out).all()


def test_replacement_is_biased_and_resampling_reduces_the_bias(mix):
    plain, resampled = conditional_errors(mix, replacement(mix, 1), A), conditional_errors(mix, replacement(mix, 10), A)
    # replacement alone misses the conditional's means by far more than Monte-Carlo error (~0.005) ...
    assert plain["mean"] > 0.05, plain
    # ... ten resampling jumps per step remove most of that, but not the bias in the component weights
    assert resampled["mean"] < 0.5 * plain["mean"], (plain, resampled)
    assert min(plain["weight"], resampled["weight"]) > 0.015, (plain, resampled)


def through_the_seam(mix, observe_by_model: bool, sampler, steps: int = 50, seed: int = 2) -> torch.Tensor:
    """Sampling as DiffusionModule.generate does: the sampling denoiser with the mask for an observation-trained
    model (the exact one here, which reads the observed x1 from its input), clean observation in, replacement."""
    _, sigmas, x, noise = start(seed, steps)
    obs = observation()
    model = MixtureModel(mix, observable=True)
    state = State(torch.zeros(N, 2, dtype=torch.float64))
    denoise = sampling_denoiser(model, state, known=obs.mask if observe_by_model else None)
    if observe_by_model:
        denoise = conditioned_denoiser(denoise, obs)
    denoise = replacement_denoiser(denoise, obs, lambda x: noise())
    return obs.impose(sampler(denoise, x, sigmas, noise_sampler=noise))


@pytest.mark.parametrize("sampler", [sample_ddpm, sample_dpmpp_2m])
def test_observation_trained_model_samples_the_exact_conditional(mix, sampler):
    # the model sees the clean observation, so it can be the conditional's exact denoiser: the seam samples what
    # that denoiser samples on its own (DDPM's own 50-step error included), where replacement alone is biased
    trained = conditional_errors(mix, through_the_seam(mix, True, sampler), A)
    _, sigmas, x, noise = start(2, 50)
    alone = conditional_errors(mix, sampler(conditional_denoiser(mix, A), x, sigmas, noise_sampler=noise), A)
    for key, tol in (("weight", 0.01), ("mean", 0.015), ("var", 0.015)):  # ~3 Monte-Carlo standard errors
        assert abs(trained[key] - alone[key]) < tol, (trained, alone)
    if sampler is sample_dpmpp_2m:
        assert trained["weight"] < 0.015 and trained["mean"] < 0.02 and trained["var"] < 0.02, trained
    replaced = conditional_errors(mix, through_the_seam(mix, False, sampler), A)
    assert replaced["weight"] > 0.025 and replaced["weight"] > 2 * trained["weight"], (trained, replaced)


def test_bad_observations_are_refused():
    with pytest.raises(ValueError, match="empty"):
        Observation(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="full"):
        Observation(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        Observation(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        Observation(torch.full((2, 3), float("nan")), torch.tensor([True, False, False]))


def test_resampling_jumps_every_step_but_the_last(mix):
    calls = []
    obs = Observation(torch.zeros(4, 2, dtype=torch.float64), torch.tensor([True, False]).expand(4, 2))

    def model(x, sigma):
        calls.append(float(sigma))
        return mix.denoise(x, sigma)

    noise = lambda *_: torch.randn(4, 2, dtype=torch.float64)  # noqa: E731
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    out = sample_with_resampling(
        sample_euler,
        replacement_denoiser(model, obs, lambda x: noise()),
        torch.randn(4, 2, dtype=torch.float64) * 2,
        sigmas,
        3,
        noise,
    )
    assert calls == [2.0] * 3 + [1.0] * 3 + [0.5]  # the step onto sigma = 0 is taken once
    assert (out[:, 0] == 0).all()


def test_zero_com_replacement_keeps_the_fragment_shape_and_recovers_its_surroundings():
    """Molecules: four atoms in the zero centre-of-mass space, two given in another frame (gmm.FragmentGaussian)."""
    frag = FragmentGaussian(4000)
    gen = torch.Generator().manual_seed(0)
    sigmas = KarrasSchedule().sigmas(50, "karras").double()
    x = frag.space.noise(frag.rows, frag.ctx, gen) * (sigmas[0] ** 2 + frag.tau**2) ** 0.5
    obs = frag.observation()
    fresh = lambda like: frag.space.noise(like, frag.ctx, gen)  # noqa: E731
    denoise = replacement_denoiser(frag.denoise, obs, fresh, frag.space, frag.ctx)
    out = obs.impose(sample_dpmpp_2m(denoise, x, sigmas, noise_sampler=fresh), frag.space, frag.ctx)
    errs = frag.errors(out)
    assert errs["shape"] < 1e-9 and errs["com"] < 1e-9  # the fragment's shape exact, still zero centre of mass
    assert errs["mean"] < 4  # standard errors
    assert 0.9 < errs["var"] < 1.1  # replacement is approximate: a few percent here (docs/results.md)
