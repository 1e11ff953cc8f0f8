"""EGNN: E(3) equivariance, permutation equivariance, edge construction."""

from __future__ import annotations

import torch

from multidiff.domains.molecule.net import EGNN, fully_connected_edges


def _random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:  # proper rotation; reflections are tested separately below
        q[:, 0] = -q[:, 0]
    return q.float()


def _inputs(gen: torch.Generator, sizes=(5, 3, 7, 1), features=6):
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(len(batch), 3 + features, generator=gen)
    return x, batch, len(sizes)


def test_fully_connected_edges_matches_brute_force():
    batch = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    row, col = fully_connected_edges(batch, 5)  # item 4 is empty
    got = set(zip(row.tolist(), col.tolist()))
    want = {(i, j) for i in range(10) for j in range(10) if i != j and batch[i] == batch[j]}
    assert got == want and len(row) == len(want)


def test_egnn_is_e3_and_permutation_equivariant():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    net = EGNN(5, charges=True, hidden=32, layers=3, cond_features=2).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)  # the feature head starts at zero: make it say something
    x, batch, n = _inputs(gen)
    c_noise, cond = torch.randn(n, generator=gen), torch.randn(n, 2, generator=gen)
    out = net(x, c_noise, cond=cond, batch=batch, num_items=n)
    assert out.shape == x.shape

    rot, shift = _random_rotation(gen), torch.randn(n, 3, generator=gen) * 5
    x2 = x.clone()
    x2[:, :3] = x[:, :3] @ rot.T + shift[batch]  # a different translation per molecule
    out2 = net(x2, c_noise, cond=cond, batch=batch, num_items=n)
    assert (out2[:, :3] - out[:, :3] @ rot.T).abs().max() < 1e-4
    assert (out2[:, 3:] - out[:, 3:]).abs().max() < 1e-4

    # reflections too (E(3), not only SE(3))
    x3 = x.clone()
    x3[:, 0] = -x3[:, 0]
    out3 = net(x3, c_noise, cond=cond, batch=batch, num_items=n)
    assert (out3[:, 0] + out[:, 0]).abs().max() < 1e-4 and (out3[:, 1:] - out[:, 1:]).abs().max() < 1e-4

    # permuting atoms inside each molecule permutes the output rows
    perm = torch.cat(
        [torch.nonzero(batch == b).flatten()[torch.randperm(int((batch == b).sum()), generator=gen)] for b in range(n)]
    )
    out4 = net(x[perm], c_noise, cond=cond, batch=batch, num_items=n)
    assert (out4 - out[perm]).abs().max() < 1e-4


def test_position_output_has_zero_mean_per_molecule_and_radius_graph():
    gen = torch.Generator().manual_seed(2)
    x, batch, n = _inputs(gen, sizes=(6, 4), features=4)
    for radius in (None, 1.5):
        net = EGNN(3, charges=True, hidden=16, layers=2, radius=radius)
        out = net(x, torch.zeros(n), batch=batch, num_items=n)
        for b in range(n):
            assert out[batch == b, :3].mean(0).abs().max() < 1e-5
    row, col = net.edges(x[:, :3], batch, n)
    assert (((x[row, :3] - x[col, :3]) ** 2).sum(1) < 1.5**2).all()


def test_condition_drop_uses_null_embedding():
    gen = torch.Generator().manual_seed(3)
    x, batch, n = _inputs(gen, sizes=(4, 4), features=6)
    net = EGNN(5, hidden=16, layers=2, cond_features=["gap"])
    with torch.no_grad():
        net.cond_embed.null.normal_()  # make the null vector differ from any real embedding
    cond = torch.randn(n, 1, generator=gen)
    dropped = net(x, torch.zeros(n), cond=cond, cond_drop=torch.ones(n, dtype=torch.bool), batch=batch, num_items=n)
    absent = net(x, torch.zeros(n), batch=batch, num_items=n)
    kept = net(x, torch.zeros(n), cond=cond, cond_drop=torch.zeros(n, dtype=torch.bool), batch=batch, num_items=n)
    assert torch.allclose(dropped, absent, atol=1e-6)
    assert not torch.allclose(kept, absent, atol=1e-4)


def test_activation_checkpointing_gives_the_same_gradients():
    gen = torch.Generator().manual_seed(4)
    x, batch, n = _inputs(gen, sizes=(5, 4), features=6)
    torch.manual_seed(0)
    plain = EGNN(5, hidden=16, layers=2)
    ckpt = EGNN(5, hidden=16, layers=2, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for net in (plain, ckpt):
        net.zero_grad()
        net(x, torch.zeros(n), batch=batch, num_items=n).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_sampling_commutes_with_rotations_so_samples_do_not_depend_on_the_frame():
    """The whole sampler, not only one denoiser call, is E(3)-equivariant: starting from rotated prior
    noise (and, for ancestral steps, rotated fresh noise) gives the rotated molecules. With an
    isotropic zero-CoM prior this makes the distribution of generated molecules frame-independent."""
    from multidiff.core.processes import VPProcess
    from multidiff.core.samplers import sample_ddpm, sample_dpmpp_2m
    from multidiff.core.schedules import PolynomialSchedule
    from multidiff.domains.molecule import MoleculeDomain
    from multidiff.module import DiffusionModule

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    domain = MoleculeDomain()
    domain.bind({"elements": ["H", "C", "N", "O", "F"], "node_counts": {"values": [4, 9, 12], "counts": [1, 2, 1]}})
    net = EGNN(5, charges=True, hidden=32, layers=3)
    module = DiffusionModule(domain, net, VPProcess(PolynomialSchedule(), "eps"), optimizer=torch.optim.AdamW).eval()
    state = domain.template(6, None, gen)
    sigmas = module.process.schedule.sigmas(12, "time")
    z = domain.space.noise(state.x, state.ctx, generator=gen) * module.process.prior_std()
    fresh = [domain.space.noise(state.x, state.ctx, generator=gen) for _ in range(len(sigmas))]
    rot = _random_rotation(gen)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :3] @ rot.T, x[:, 3:]], dim=1)

    from multidiff.core.denoiser import sampling_denoiser

    den = sampling_denoiser(module.model, state)
    with torch.no_grad():
        for sampler in (sample_dpmpp_2m, sample_ddpm):
            it, it_rot = iter(fresh), iter(fresh)
            a = sampler(den, z, sigmas, noise_sampler=lambda s, s_next, it=it: next(it))
            b = sampler(den, rotate(z), sigmas, noise_sampler=lambda s, s_next, it_rot=it_rot: rotate(next(it_rot)))
            scale = a.abs().max()
            assert torch.isfinite(a).all() and scale > 0
            assert ((b - rotate(a)).abs().max() / scale) < 1e-4, sampler.__name__
            com = torch.zeros(6, 3).index_add_(0, state.ctx["batch"], a[:, :3])
            assert com.abs().max() / scale < 1e-4  # samples stay in the zero centre-of-mass subspace


def test_coordinate_updates_share_the_range_over_layers():
    """By default each of the L layers moves an atom by at most coords_range / L per neighbour, so a saturated
    network moves a two-atom molecule's atoms by at most coords_range in total; EDM's code bounds every layer
    by the full coords_range (split_coords_range=False)."""
    x = torch.zeros(2, 3 + 5)
    x[0, 0], x[1, 0] = -5.0, 5.0
    moved = {}
    for split in (True, False):
        net = EGNN(5, charges=False, hidden=16, layers=3, coords_range=15.0, split_coords_range=split).eval()
        for block in net.blocks:
            torch.nn.init.constant_(block.coord_out.weight, 50.0)  # saturate tanh
        out = net(x, torch.zeros(1), batch=torch.tensor([0, 0]), num_items=1)
        moved[split] = out[:, :3].norm(dim=1).max()
    assert 1.0 < moved[True] <= 15.0 < moved[False] <= 45.0


def test_the_default_recipe_starts_at_a_loss_of_order_one(qm9_root, qm9_module, tmp_path):
    """EDM preconditioning feeds coordinates scaled up to 1 / sigma_data = 2, and sum aggregation lets the
    features grow over 9 layers: with a default-initialised feature head the first losses were ~500 (the eps
    recipe's ~16). The head starts at zero, so the first loss is the targets' own size."""
    from helpers import compose

    from multidiff.build import build_module

    cfg = compose("train", ["domain=molecule", f"data.root={qm9_root}", "data.max_molecules=64"], tmp_path)
    torch.manual_seed(0)
    module = build_module(cfg, qm9_module.info())
    state = module.domain.unpack(next(iter(qm9_module.train_dataloader())))
    with torch.no_grad():
        losses, _ = module.diffusion_loss(state, torch.Generator().manual_seed(0))
    assert 0.1 < losses.mean() < 10, losses.mean()


def test_checkpoints_with_a_bias_per_half_of_the_split_layer_load_as_one_bias():
    """Earlier EGNNs carried two bias vectors in each edge MLP's per-node product (their sum acted as the
    bias); their state dicts load into the single bias unchanged in function."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    net = EGNN(5, charges=True, hidden=16, layers=2).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    old = {}
    for key, value in net.state_dict().items():
        if key.endswith("message.bias") or key.endswith("coord.bias"):
            part = torch.randn(value.shape, generator=gen)
            old[key.removesuffix("bias") + "node_proj.bias"] = torch.cat([value - part, part])
        else:
            old[key] = value
    x, batch, n = _inputs(gen)
    loaded = EGNN(5, charges=True, hidden=16, layers=2).eval()
    loaded.load_state_dict(old)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, torch.zeros(n), batch=batch, num_items=n), net(x, torch.zeros(n), batch=batch, num_items=n)
        )
