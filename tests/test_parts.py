"""Parts (a state of several named tensors) and PairGraphSpace: every sampler on a state with a categorical part.

The categorical test: each atom pair's class k in {0..3} has probability p_k and sits at the scaled one-hot vertex
s e_k (a continuous relaxation, as the graph model's bond orders); atoms carry an isotropic Gaussian in the zero
centre-of-mass space. The exact denoiser is closed form (a softmax over the vertices; a linear shrink), so the
class frequencies of the samples (argmax per pair) must match p within Monte-Carlo error, for every sampler.
"""

from __future__ import annotations

import pytest
import torch
from pair_classes import SCALE, assert_class_marginals, exact_pair, run_sampler

from multidiff.core.observation import Observation, replacement_denoiser
from multidiff.core.parts import Parts
from multidiff.core.samplers import SAMPLERS, sampler_named
from multidiff.core.schedules import KarrasSchedule
from multidiff.core.space import PairGraphSpace, all_pairs, pair_context, pair_ids

TAU = 0.7


def _flat(p: Parts) -> torch.Tensor:
    return torch.cat([v.flatten() for v in p.values()])


def _replay(draws: list):
    """A noise sampler handing out ``draws`` in order."""
    it = iter(draws)
    return lambda sigma, sigma_next: next(it)


def test_samplers_on_parts_equal_samplers_on_one_flat_tensor():
    """The samplers do the same arithmetic on Parts as on the concatenation of its parts."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=gen, dtype=torch.float64), torch.randn(5, 2, generator=gen, dtype=torch.float64)
    x = Parts({"a": a, "b": b})
    sigmas = KarrasSchedule().sigmas(8).double()

    def denoise(v, s):
        return v * 0.5 / (1 + s**2)

    for name, fn in SAMPLERS.items():
        draws = [torch.randn(31, generator=gen, dtype=torch.float64) for _ in range(64)]
        as_parts = [Parts({"a": z[:21].reshape(7, 3), "b": z[21:].reshape(5, 2)}) for z in draws]
        out_p = fn(denoise, x, sigmas, noise_sampler=_replay(as_parts))
        out_f = fn(denoise, _flat(x), sigmas, noise_sampler=_replay(draws))
        torch.testing.assert_close(_flat(out_p), out_f, msg=name)


def test_parts_apply_masks_and_functions_per_part_and_refuse_ambiguity():
    x = Parts({"node": torch.ones(4, 2), "pair": torch.full((3, 1), 2.0)})
    mask = Parts(
        {"node": torch.tensor([[True], [False], [True], [False]]), "pair": torch.zeros(3, 1, dtype=torch.bool)}
    )
    w = torch.where(mask, x, torch.zeros_like(x))
    assert w["node"][:, 0].tolist() == [1, 0, 1, 0] and w["pair"].abs().sum() == 0
    assert mask.expand_as(x)["node"].shape == (4, 2) and bool(mask.any()) and not bool(mask.all())
    assert torch.equal(x, x) and not torch.equal(x, x * 2)
    assert (torch.tensor(3.0) * x)["pair"][0, 0] == 6 and (1 - x)["node"][0, 0] == 0
    with pytest.raises(TypeError, match="ambiguous"):
        bool(x)
    with pytest.raises(ValueError, match="parts"):
        x + Parts({"node": torch.ones(4, 2)})
    with pytest.raises(KeyError, match="bond"):
        x.replace(bond=torch.ones(1))


def test_all_pairs_lists_each_unordered_pair_of_an_item_once():
    batch = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    pairs = all_pairs(batch, 4)  # item 1 has one node, item 3 none: no pairs
    got = [tuple(p) for p in pairs.T.tolist()]
    want = [(i, j) for i in range(8) for j in range(i + 1, 8) if batch[i] == batch[j]]
    assert got == want
    # either order of a pair finds the same row
    both = pair_ids(torch.tensor([[4, 7, 2], [7, 4, 0]]), pairs, 8)
    assert both[0] == both[1] and got[int(both[2])] == (0, 2)
    with pytest.raises(ValueError, match="two items"):
        pair_ids(torch.tensor([[0], [4]]), pairs, 8)


def _categorical_problem(m: int = 2000, atoms: int = 3):
    batch = torch.arange(m).repeat_interleave(atoms)
    ctx = pair_context(batch, m)
    space = PairGraphSpace(com_dims=3)

    def denoise(x: Parts, sigma: torch.Tensor) -> Parts:
        node = TAU**2 / (TAU**2 + sigma.double() ** 2) * x["node"].double()  # isotropic Gaussian (zero-CoM space)
        return Parts({"node": node, "pair": exact_pair(x["pair"], sigma)})

    template = Parts(
        {"node": torch.zeros(len(batch), 3, dtype=torch.float64), "pair": torch.zeros(ctx["pair_index"].shape[1], 4)}
    )
    template = template.replace(pair=template["pair"].double())
    return space, ctx, denoise, template


# consistency sampling needs a consistency function, not this denoiser (tests/test_distill.py)
@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"consistency"}))
def test_every_sampler_reproduces_the_categorical_marginals_of_pair_classes(name):
    space, ctx, denoise, template = _categorical_problem()
    out = run_sampler(name, denoise, space, ctx, template, seed=1)
    classes = assert_class_marginals(out["pair"], name)
    # the pairs land on the vertices, the atoms keep zero centre of mass and the Gaussian's spread
    assert (out["pair"] - SCALE * torch.nn.functional.one_hot(classes, 4)).abs().max() < 0.05
    com = torch.zeros(ctx["num_items"], 3, dtype=torch.float64).index_add_(0, ctx["batch"], out["node"])
    assert com.abs().max() < 1e-9
    var = out["node"].var().item() * 3 / 2  # a zero-CoM Gaussian of 3 atoms keeps 2/3 of the variance
    assert abs(var / TAU**2 - 1) < 0.1, (name, var)


def test_replacement_keeps_observed_pairs_and_atoms_exactly():
    space, ctx, denoise, template = _categorical_problem(m=200)
    known_pair = torch.zeros(len(template["pair"]), 1, dtype=torch.bool)
    known_pair[::3] = True  # the first pair of every item
    values = template.replace(pair=torch.zeros_like(template["pair"]))
    values["pair"][::3, 3] = SCALE  # class 3, the rarest
    known_node = torch.zeros(len(template["node"]), 1, dtype=torch.bool)
    known_node[::3] = True
    values["node"][::3] = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    obs = Observation(values, Parts({"node": known_node, "pair": known_pair}))
    sigmas = KarrasSchedule(sigma_max=20.0).sigmas(30).double()
    gen = torch.Generator().manual_seed(2)

    def fresh(like):
        return space.noise(like, ctx, generator=gen)

    wrapped = replacement_denoiser(denoise, obs, fresh, space, ctx)
    x = space.noise(template, ctx, generator=gen) * (sigmas[0] ** 2 + 1) ** 0.5
    out = obs.impose(sampler_named("dpmpp_2m")(wrapped, x, sigmas), space, ctx)
    assert (out["pair"][::3].argmax(1) == 3).all() and torch.equal(out["pair"][::3], values["pair"][::3])
    # the known atoms keep their shape (a translation is free in the zero-CoM space): here one atom each
    assert torch.isfinite(out["node"]).all()
