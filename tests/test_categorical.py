"""Categorical blocks denoised as class probabilities (multidiff.core.categorical).

The problem: a class k in {0..3} with probability p_k sits at the scaled one-hot vertex s e_k and is observed as
x = s e_k + sigma n. Its exact denoiser is s times the posterior, softmax(log p_k - |x - s e_k|^2 / (2 sigma^2));
the block's likelihood in closed form plus a network output equal to log p must give exactly that, through the
preconditioned denoiser that samplers call, and the cross-entropy must be minimised there.
"""

from __future__ import annotations

import pytest
import torch
from pair_classes import SCALE, VERTICES, P, assert_class_marginals, exact_pair, run_sampler
from torch import nn

from multidiff.core.categorical import Block, Categorical, DiscreteCategorical
from multidiff.core.denoiser import Preconditioned
from multidiff.core.parts import Parts
from multidiff.core.processes import VPProcess
from multidiff.core.samplers import SAMPLERS, sampler_named
from multidiff.core.schedules import KarrasSchedule, PolynomialSchedule
from multidiff.core.space import PairGraphSpace, pair_context
from multidiff.core.state import State


class PriorNet(nn.Module):
    """A network whose pair output is the log prior of the classes and whose node output is zero."""

    def forward(self, x, c_noise, *, cond=None, cond_drop=None, batch, num_items, pair_index, pair_batch):
        return Parts({"node": torch.zeros_like(x["node"]), "pair": P.log().to(x["pair"].dtype).expand_as(x["pair"])})


def _problem(m: int = 2000, atoms: int = 3):
    batch = torch.arange(m).repeat_interleave(atoms)
    ctx = pair_context(batch, m)
    space = PairGraphSpace(com_dims=3)
    space.categorical = Categorical([Block("pair", 0, 4, SCALE)])
    process = VPProcess(PolynomialSchedule(), prediction="eps")
    model = Preconditioned(PriorNet(), process, space).double()
    template = Parts(
        {
            "node": torch.zeros(len(batch), 3, dtype=torch.float64),
            "pair": torch.zeros(ctx["pair_index"].shape[1], 4, dtype=torch.float64),
        }
    )
    return space, ctx, model, template


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 5.0])
def test_likelihood_plus_log_prior_is_the_exact_denoiser(sigma):
    space, ctx, model, template = _problem(m=300)
    gen = torch.Generator().manual_seed(0)
    classes = torch.multinomial(P, len(template["pair"]), replacement=True, generator=gen)
    x0 = template.replace(pair=VERTICES[classes])
    x = x0 + sigma * space.noise(x0, ctx, generator=gen)
    d = model(x, torch.full((ctx["num_items"],), sigma, dtype=torch.float64), State(x, None, ctx))
    torch.testing.assert_close(d["pair"], exact_pair(x["pair"], torch.tensor(sigma, dtype=torch.float64)))
    # the other columns follow the process: eps prediction of zero leaves x as it is
    torch.testing.assert_close(d["node"], x["node"])


def test_cross_entropy_is_minimised_at_the_true_log_prior():
    """The expected loss's gradient in the network's output vanishes at log p (within Monte-Carlo error) and not
    at a uniform prior: training finds the posterior."""
    sigma = torch.tensor(0.6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    n = 200_000
    classes = torch.multinomial(P, n, replacement=True, generator=gen)
    x0 = VERTICES[classes]
    x = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    cat = Categorical([Block(None, 0, 4, SCALE)])

    def gradient(prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = prior.clone().expand(n, 4).requires_grad_(True)
        err = cat.loss(torch.zeros(n, 4, dtype=torch.float64), raw, x, sigma.expand(n, 1), x0)
        per_row = err[:, 0]
        (g,) = torch.autograd.grad(per_row.sum(), raw)
        return g.mean(0), g.std(0) / n**0.5

    g_true, se = gradient(P.log())
    assert (g_true.abs() < 4 * se + 1e-12).all(), (g_true, se)
    g_flat, _ = gradient(torch.zeros(4, dtype=torch.float64))
    assert (g_flat.abs() > 10 * se).any(), g_flat


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"consistency"}))
def test_every_sampler_draws_the_class_marginals_through_the_softmax_denoiser(name):
    space, ctx, model, template = _problem()
    n = ctx["num_items"]

    def denoise(x, sigma):
        return model(x, sigma.expand(n), State(x, None, ctx))

    out = run_sampler(name, denoise, space, ctx, template, seed=2)
    assert_class_marginals(out["pair"], name)


def test_blocks_are_checked_and_plain_tensors_take_them_too():
    with pytest.raises(ValueError, match="two classes"):
        Block(None, 3, 4, 0.5)
    with pytest.raises(ValueError, match="scale"):
        Block(None, 0, 4, 0.0)
    cat = Categorical([Block(None, 1, 3, 2.0)])
    d = torch.zeros(2, 4)
    raw = torch.tensor([[9.0, 0.0, 0.0, 9.0], [9.0, 5.0, -5.0, 9.0]])
    out = cat.denoise(d, raw, torch.zeros(2, 4), torch.ones(2, 1))
    assert torch.equal(out[:, [0, 3]], d[:, [0, 3]])  # columns outside the block untouched
    torch.testing.assert_close(out[0, 1:3], torch.tensor([1.0, 1.0]))
    assert out[1, 1] > 1.99 and out[1, 1:3].sum().item() == pytest.approx(2.0)


# -- the discrete process ---------------------------------------------------------------------------------------
# Two dependent 3-class blocks A and B of a plain tensor (columns 0:3 and 3:6) with the joint table J. At noise
# sigma each block holds its class with probability a = s^2 / (s^2 + sigma^2), else a draw from its prior m; the
# exact log prior of A's class given the rest is log sum_j J[k, j] q(z_B | j) (and alike for B), which with the
# block's own likelihood gives the exact posterior the network should learn.
J = torch.tensor([[0.30, 0.05, 0.05], [0.02, 0.25, 0.03], [0.10, 0.05, 0.15]], dtype=torch.float64)
M = (0.5, 0.3, 0.2)  # a prior other than the marginals: the chain must still reach J


def _discrete_pair():
    blocks = [Block(None, 0, 3, 1.0, prior=M), Block(None, 3, 6, 0.5, prior=M)]
    return DiscreteCategorical(blocks)


def _likelihood(b: Block, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """q(z | class) for each class, one row per item."""
    a = DiscreteCategorical.keep(b, sigma)
    return a * nn.functional.one_hot(z, 3).double() + (1 - a) * torch.tensor(b.prior, dtype=torch.float64)[z, None]


def exact_pair_denoiser(cat: DiscreteCategorical):
    a_block, b_block = cat.blocks

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.double().reshape(1, 1).expand(len(x), 1)
        lik_a, lik_b = _likelihood(a_block, a_block.classes(x), sigma), _likelihood(b_block, b_block.classes(x), sigma)
        raw = torch.cat([(lik_b @ J.T).log(), (lik_a @ J).log()], dim=1)
        return cat.denoise(torch.zeros_like(x), raw, x, sig)

    return denoise


def test_discrete_blocks_take_the_exact_posterior_from_likelihood_plus_log_prior():
    cat = _discrete_pair()
    a_block, b_block = cat.blocks
    gen = torch.Generator().manual_seed(3)
    n, sigma = 50_000, torch.tensor(0.7, dtype=torch.float64)
    pairs = torch.multinomial(J.flatten(), n, replacement=True, generator=gen)
    x0 = torch.cat([nn.functional.one_hot(pairs // 3, 3), 0.5 * nn.functional.one_hot(pairs % 3, 3)], 1).double()
    x = cat.noisy(x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64), x0, sigma.expand(n, 1), gen)
    # each block is a one-hot of its scale, holding the data's class about a of the time
    assert set(x[:, :3].sum(1).tolist()) == {1.0} and set(x[:, 3:].sum(1).tolist()) == {0.5}
    for b, truth in ((a_block, pairs // 3), (b_block, pairs % 3)):
        a = float(DiscreteCategorical.keep(b, sigma))
        kept = (b.classes(x) == truth).double().mean()
        expected = a + (1 - a) * (torch.tensor(M, dtype=torch.float64)[truth]).mean()
        assert abs(kept - expected) < 4 * (expected * (1 - expected) / n) ** 0.5
    d = exact_pair_denoiser(cat)(x, sigma)
    z_a, z_b = a_block.classes(x), b_block.classes(x)
    joint = J[None] * _likelihood(a_block, z_a, sigma)[:, :, None] * _likelihood(b_block, z_b, sigma)[:, None, :]
    joint = joint / joint.sum((1, 2), keepdim=True)
    torch.testing.assert_close(d[:, :3], joint.sum(2))  # Bayes' rule over the pair, by hand
    torch.testing.assert_close(d[:, 3:], 0.5 * joint.sum(1))


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"consistency"}))
def test_every_sampler_draws_the_joint_of_dependent_discrete_blocks(name):
    """The chain's ancestral steps reach the joint table J (all nine cells within 4 standard errors), whatever
    the continuous sampler does with the other columns and at whatever noise levels it calls the denoiser."""
    cat = _discrete_pair()
    n = 20_000
    sigmas = KarrasSchedule(sigma_max=20.0).sigmas(60).double()
    gen = torch.Generator().manual_seed(4)
    chain = cat.chain(exact_pair_denoiser(cat), gen)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64) * sigmas[0]
    noise = lambda s, s_next: torch.randn(n, 6, generator=gen, dtype=torch.float64)  # noqa: E731
    # each block's classes move independently within a step (D3PM's factorised posterior), exact as steps shrink:
    # restart's own descent after each jump is 10 Heun steps from 2 to 0.1 by default, too coarse for that
    extra = {"restart_steps": 40} if name == "restart" else {}
    out = chain.finish(sampler_named(name)(chain, x, sigmas, noise_sampler=noise, **extra))
    a, b = cat.blocks
    freq = torch.bincount(a.classes(out) * 3 + b.classes(out), minlength=9).double().reshape(3, 3) / n
    se = (J * (1 - J) / n).sqrt()
    assert ((freq - J).abs() < 4 * se).all(), (name, freq)


def test_discrete_cross_entropy_is_minimised_at_the_exact_log_prior():
    """One block alone: its log prior given the rest is log P, and the loss's gradient vanishes there (within
    Monte-Carlo error) and not at the process's prior."""
    m = (0.4, 0.3, 0.2, 0.1)
    cat = DiscreteCategorical([Block(None, 0, 4, SCALE, prior=m)])
    sigma = torch.tensor(0.4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    n = 200_000
    x0 = VERTICES[torch.multinomial(P, n, replacement=True, generator=gen)]
    x = cat.noisy(x0.clone(), x0, sigma.expand(n, 1), gen)

    def gradient(prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = prior.clone().expand(n, 4).requires_grad_(True)
        err = cat.loss(torch.zeros(n, 4, dtype=torch.float64), raw, x, sigma.expand(n, 1), x0)
        (g,) = torch.autograd.grad(err[:, 0].sum(), raw)
        return g.mean(0), g.std(0) / n**0.5

    g_true, se = gradient(P.log())
    assert (g_true.abs() < 4 * se + 1e-12).all(), (g_true, se)
    g_prior, _ = gradient(torch.tensor(m, dtype=torch.float64).log())
    assert (g_prior.abs() > 10 * se).any(), g_prior


def test_the_chain_holds_known_rows_and_discrete_blocks_need_a_valid_prior():
    cat = DiscreteCategorical([Block(None, 0, 3, 1.0, prior=M)])
    n = 400
    given = torch.nn.functional.one_hot(torch.arange(n) % 3, 3).double()
    mask = (torch.arange(n) < n // 2)[:, None].expand(n, 3)
    seen = []

    def denoise(x, sigma):
        seen.append(x[:, :3].argmax(1).clone())
        return torch.full_like(x, 1 / 3)

    class Obs:
        values, mask_ = given, mask

    obs = Obs()
    obs.mask = mask
    sigmas = KarrasSchedule(sigma_max=20.0).sigmas(10).double()
    gen = torch.Generator().manual_seed(6)
    chain = cat.chain(denoise, gen, obs, clean_known=True)
    sampler_named("euler")(chain, torch.zeros(n, 3, dtype=torch.float64), sigmas)
    for z in seen:  # a model trained with observations sees the observed classes at every level
        assert torch.equal(z[: n // 2], given[: n // 2].argmax(1))
    assert not torch.equal(seen[-1][n // 2 :], given[n // 2 :].argmax(1))  # the rest is drawn
    with pytest.raises(ValueError, match="prior"):
        DiscreteCategorical([Block(None, 0, 3, 1.0)])
    with pytest.raises(ValueError, match="summing to 1"):
        Block(None, 0, 3, 1.0, prior=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="one probability > 0 per class"):
        Block(None, 0, 3, 1.0, prior=(0.5, 0.5))
