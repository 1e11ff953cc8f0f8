"""Observation-conditioned training: the per-domain mask distributions and the training seam (what the net
sees, what the loss counts)."""

import pytest
import torch
from helpers import compose
from torch import Tensor, nn

from multidiff.build import build_module
from multidiff.core.domain import Domain
from multidiff.core.processes import EDMProcess
from multidiff.core.schedules import KarrasSchedule
from multidiff.core.space import GraphSpace, TensorSpace
from multidiff.core.state import State
from multidiff.domains.audio.masks import SpanMasks
from multidiff.domains.molecule.masks import FragmentMasks
from multidiff.domains.pointcloud.masks import HalfSpaceMasks
from multidiff.module import DiffusionModule


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- audio --------------------------------------------------------------------------------------------------
def test_spans_cover_gaps_prefixes_and_nothing():
    x = torch.zeros(400, 1, 1000)
    known = SpanMasks(p_unconditional=0.0, p_continuation=0.0, gap=(0.2, 0.4))(State(x), gen())[:, 0]
    assert known.shape == (400, 1000)
    gap = (~known).float().mean(1)
    assert gap.min() >= 0.19 and gap.max() <= 0.41
    # one contiguous gap per clip: known -> unknown at most once, unknown -> known at most once
    steps = known[:, 1:].int() - known[:, :-1].int()
    assert ((steps == -1).sum(1) <= 1).all() and ((steps == 1).sum(1) <= 1).all()

    prefix = SpanMasks(p_unconditional=0.0, p_continuation=1.0, prefix=(0.3, 0.5))(State(x), gen())[:, 0]
    assert prefix[:, 0].all() and not prefix[:, -1].any()
    assert (prefix[:, 1:].int() <= prefix[:, :-1].int()).all()  # a prefix: once unknown, unknown to the end
    assert prefix.float().mean(1).min() >= 0.29 and prefix.float().mean(1).max() <= 0.51

    mixed = SpanMasks(p_unconditional=0.25)(State(x), gen(1))[:, 0]
    nothing = (~mixed.any(1)).float().mean()
    assert 0.18 < nothing < 0.32  # ~25 % of 400 clips, a few standard errors
    assert not mixed.all(1).any()  # never everything known


def test_spans_refuse_bad_options():
    with pytest.raises(ValueError, match=r"gap=\[0.5, 0.2\]"):
        SpanMasks(gap=[0.5, 0.2])
    with pytest.raises(ValueError, match="exceeds 1"):
        SpanMasks(p_unconditional=0.6, p_continuation=0.6)
    with pytest.raises(ValueError, match=r"\(B, C, T\)"):
        SpanMasks()(State(torch.zeros(4, 100)), gen())


# -- point clouds -------------------------------------------------------------------------------------------
def test_halfspace_keeps_one_side_of_a_plane():
    # points on a line: whatever the plane's normal, one side of it is a prefix or a suffix of the line
    t = torch.linspace(-1, 1, 200)
    x = torch.stack([t, 2 * t, -t], 1).expand(300, 200, 3).contiguous()
    known = HalfSpaceMasks(p_unconditional=0.0, keep=(0.3, 0.6))(State(x), gen())[..., 0]
    changes = (known[:, 1:] != known[:, :-1]).sum(1)
    assert (changes == 1).all()
    frac = known.float().mean(1)
    assert frac.min() >= 0.29 and frac.max() <= 0.61
    assert known[:, 0].any() and known[:, -1].any()  # both sides get chosen
    none = HalfSpaceMasks(p_unconditional=1.0)(State(x), gen())
    assert not none.any()
    with pytest.raises(ValueError, match="keep"):
        HalfSpaceMasks(keep=(0.0, 1.0))


# -- molecules ----------------------------------------------------------------------------------------------
def molecules(sizes: list[int], seed: int = 0) -> State:
    g = gen(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pos = torch.randn(len(batch), 3, generator=g) * 2
    element = torch.randint(0, 3, (len(batch),), generator=g)  # H, C, O
    x = torch.cat([pos, torch.nn.functional.one_hot(element, 3).float() * 0.25], 1)
    return State(x, None, {"batch": batch, "num_items": len(sizes)})


def test_fragments_are_the_atoms_nearest_one_atom():
    state = molecules([9, 15, 4, 20] * 25)
    masks = FragmentMasks(["H", "C", "O"], p_unconditional=0.0, size=(0.2, 0.6), p_heavy=0.0)
    known = masks(state, gen())[:, 0]
    batch = state.ctx["batch"]
    for i in range(100):
        rows, k = state.x[batch == i, :3], known[batch == i]
        assert 1 <= k.sum() <= len(rows) - 1
        # some given atom has every given atom closer than every other atom: a ball around it
        d = torch.cdist(rows, rows)
        assert any(d[c][k].max() <= d[c][~k].min() for c in k.nonzero()[:, 0])


def test_heavy_fragments_leave_hydrogens_out_and_nothing_known_happens():
    state = molecules([12, 18] * 20, seed=1)
    hydrogen = state.x[:, 3] > 0
    heavy = FragmentMasks(["H", "C", "O"], p_unconditional=0.0, p_heavy=1.0)(state, gen())[:, 0]
    assert heavy.any() and not (heavy & hydrogen).any()
    none = FragmentMasks(["H", "C", "O"], p_unconditional=1.0)(state, gen())
    assert not none.any()


# -- the training seam --------------------------------------------------------------------------------------
class Spy(nn.Module):
    """Records its input; outputs ``junk`` where the mask says known, zeros elsewhere."""

    conditional, observable, equivariance = False, True, None

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.junk = 0.0

    def forward(self, x: Tensor, c_noise: Tensor, *, cond=None, cond_drop=None, known=None, **ctx) -> Tensor:
        self.seen, self.known = x.clone(), known
        return torch.where(known, torch.full_like(x, self.junk), x * self.w)


class Plain(Domain):
    name = "plain"

    def __init__(self, space):
        super().__init__()
        self.space = space


class FirstHalf:
    domain = "plain"

    def __call__(self, state: State, generator=None) -> Tensor:
        known = torch.zeros_like(state.x, dtype=torch.bool)
        known[:, : state.x.shape[1] // 2] = True
        return known


def module(space, masks=None) -> DiffusionModule:
    masks = FirstHalf() if masks is None else masks
    return DiffusionModule(Plain(space), Spy(), EDMProcess(KarrasSchedule()), torch.optim.Adam, masks=masks)


def test_the_net_sees_clean_observed_values_and_the_loss_counts_the_rest():
    m = module(TensorSpace())
    x0 = torch.randn(64, 6, generator=gen())
    losses, sigma = m.diffusion_loss(State(x0), gen(1))
    net = m.model.net
    c_in = m.process.scalings(sigma[:, None])[2]
    torch.testing.assert_close(net.seen[:, :3], c_in * x0[:, :3])  # clean, scaled like the rest
    assert not torch.allclose(net.seen[:, 3:], c_in * x0[:, 3:])  # noisy
    assert net.known[:, :3].all() and not net.known[:, 3:].any()
    net.junk = 1e3  # whatever the net says about the known part, the loss is the same
    torch.testing.assert_close(m.diffusion_loss(State(x0), gen(1))[0], losses)
    with torch.no_grad():
        net.w.fill_(0.5)  # ... and the unknown part counts
    assert not torch.allclose(m.diffusion_loss(State(x0), gen(1))[0], losses)


def test_graph_observations_keep_their_shape_in_the_noisy_frame():
    space = GraphSpace()
    state = molecules([5, 7])
    x0 = space.remove_com(state.x, state.ctx)
    m = module(space)
    m.diffusion_loss(State(x0, None, state.ctx), gen(2))
    seen, known = m.model.net.seen, m.model.net.known
    for i in range(2):
        rows = state.ctx["batch"] == i
        given = known[rows][:, 0]
        pos_seen, pos0 = seen[rows][given, :3], x0[rows][given, :3]
        # the given atoms are the clean ones up to one translation (their frame is the noisy state's), scaled
        shifted = pos_seen - pos_seen.mean(0)
        scale = shifted.norm() / (pos0 - pos0.mean(0)).norm()
        torch.testing.assert_close(shifted, scale * (pos0 - pos0.mean(0)), atol=1e-5, rtol=1e-5)


def test_masks_need_an_observable_net_of_their_domain(tmp_path):
    with pytest.raises(ValueError, match="is for 'audio' models; this one is 'plain'"):
        module(TensorSpace(), SpanMasks())
    plain = DiffusionModule(Plain(TensorSpace()), Spy(), EDMProcess(KarrasSchedule()), torch.optim.Adam)
    assert plain.observed_by() == "model"
    cfg = compose("train", ["domain=pointcloud", "mask=halfspace", "net.observable=false"], tmp_path)
    with pytest.raises(ValueError, match="needs a net built with observable=true"):
        build_module(cfg)
    cfg = compose("train", ["domain=pointcloud", "mask=spans"], tmp_path)
    with pytest.raises(ValueError, match="SpanMasks is for 'audio' models; this one is 'pointcloud'"):
        build_module(cfg)
