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

from multidiff.core.categorical import Block, Categorical
from multidiff.core.denoiser import Preconditioned
from multidiff.core.parts import Parts
from multidiff.core.processes import VPProcess
from multidiff.core.samplers import SAMPLERS
from multidiff.core.schedules import PolynomialSchedule
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
