"""Guidance rules against the exact denoisers of a class-conditional Gaussian mixture (no training)."""

import pytest
import torch
from gmm import GaussianMixture, MixtureModel

from multidiff.core.denoiser import sampling_denoiser
from multidiff.core.samplers import sample_dpmpp_2m
from multidiff.core.schedules import KarrasSchedule
from multidiff.core.state import State

N = 20_000


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.default()


def sample(model, cond, guidance=1.0, interval=None, guide=None, steps=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sigmas = KarrasSchedule().sigmas(steps, "karras").double()
    x = torch.randn(N, 2, generator=gen, dtype=torch.float64) * (sigmas[0] ** 2 + 1) ** 0.5
    state = State(torch.zeros(N, 2), cond)
    return sample_dpmpp_2m(sampling_denoiser(model, state, guidance, interval, guide), x, sigmas)


def test_guidance_one_samples_the_conditional(gmm):
    k = 1
    x = sample(MixtureModel(gmm), torch.full((N,), k))
    assert (gmm.responsibilities(x, 0.0).argmax(1) == k).float().mean() > 0.999
    assert (x.mean(0) - gmm.mu[k]).abs().max() < 0.02  # SE of the mean: sqrt(0.25 / N) = 0.004
    assert (torch.cov(x.T) - gmm.cov[k]).abs().max() < 0.015


def test_classifier_free_guidance_sharpens_the_class(gmm):
    # guidance > 1 pushes away from the other components: fewer samples drift towards them than at guidance 1
    cond = torch.full((N,), 2)
    plain, guided = sample(MixtureModel(gmm), cond), sample(MixtureModel(gmm), cond, guidance=3.0)
    assert not torch.equal(plain, guided)
    assert torch.cov(guided.T).trace() < torch.cov(plain.T).trace()


def test_interval_outside_the_grid_changes_nothing(gmm):
    cond = torch.full((N,), 0)
    plain = sample(MixtureModel(gmm), cond)
    assert torch.equal(sample(MixtureModel(gmm), cond, guidance=3.0, interval=(500.0, 1000.0)), plain)
    everywhere = sample(MixtureModel(gmm), cond, guidance=3.0)
    assert torch.equal(sample(MixtureModel(gmm), cond, guidance=3.0, interval=(0.0, 1000.0)), everywhere)
    partial = sample(MixtureModel(gmm), cond, guidance=3.0, interval=(0.3, 5.0))
    assert not torch.equal(partial, plain) and not torch.equal(partial, everywhere)


def test_autoguidance_with_itself_or_at_one_is_the_plain_model(gmm):
    model = MixtureModel(gmm)
    plain = sample(model, None)
    torch.testing.assert_close(sample(model, None, guidance=2.5, guide=MixtureModel(gmm)), plain)
    weak = MixtureModel(gmm, scale=2.0)
    torch.testing.assert_close(sample(model, None, guidance=1.0, guide=weak), plain)


def test_autoguidance_with_a_weaker_model_sharpens_without_a_condition(gmm):
    # the guide spreads every component twice as wide: extrapolating away from it narrows the components
    model, weak = MixtureModel(gmm), MixtureModel(gmm, scale=2.0)
    plain, guided = sample(model, None), sample(model, None, guidance=2.0, guide=weak)
    k_plain, k_guided = gmm.responsibilities(plain, 0.0).argmax(1), gmm.responsibilities(guided, 0.0).argmax(1)
    for k in range(3):
        assert torch.cov(guided[k_guided == k].T).trace() < 0.9 * torch.cov(plain[k_plain == k].T).trace()


def test_guidance_without_condition_or_guide_is_an_error(gmm):
    with pytest.raises(ValueError, match="guide"):
        sampling_denoiser(MixtureModel(gmm), State(torch.zeros(2, 2)), guidance=2.0)
    with pytest.raises(ValueError, match="interval"):
        sampling_denoiser(MixtureModel(gmm), State(torch.zeros(2, 2), torch.zeros(2)), 2.0, interval=(3.0, 1.0))
