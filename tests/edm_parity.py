"""multidiff's side of the EDM parity (benchmarks/parity_edm.py computes EDM's side with EDM's code and stores it
in tests/fixtures): the same quantities from multidiff, as differences from EDM's."""

from __future__ import annotations

import numpy as np
import torch

from multidiff.core.processes import VPProcess
from multidiff.core.samplers import sample_ddpm
from multidiff.core.schedules import PolynomialSchedule
from multidiff.core.state import State
from multidiff.domains.molecule import EGNN, MoleculeDomain
from multidiff.domains.molecule.edm_weights import edm_grads_from_egnn, egnn_state_from_edm
from multidiff.module import DiffusionModule

T, PRECISION, POWER = 1000, 1e-5, 2.0
HIDDEN, LAYERS = 32, 2


def schedule_differences(values: dict[str, np.ndarray]) -> dict[str, float]:
    """multidiff's schedule and DDPM step on EDM's inputs; the differences from EDM's values."""

    sched = PolynomialSchedule(power=POWER, precision=PRECISION)
    t = torch.arange(T + 1, dtype=torch.float64) / T
    gamma = -sched.log_snr(t).numpy()
    edm = values["gamma"]
    diff = {
        "gamma, t < 1": float(np.abs(gamma[:-1] - edm[:-1]).max()),
        "gamma, t = 1": float(abs(gamma[-1] - edm[-1])),
        "gamma vs EDM's float32 table, t < 1": float(np.abs(gamma - values["edm_gamma_float32"])[:-1].max()),
    }

    def alpha_sigma(i: int) -> tuple[float, float]:
        g = torch.tensor(gamma[i])
        return float(torch.sigmoid(-g).sqrt()), float(torch.sigmoid(g).sqrt())

    s_int, t_int = (int(v) for v in values["s_t"])
    (a_s, s_s), (a_t, s_t) = alpha_sigma(s_int), alpha_sigma(t_int)
    zt, eps_hat, noise = (torch.from_numpy(values[k]) for k in ("zt", "eps_hat", "noise"))
    # variance-exploding coordinates: x = z / alpha, sigma_ve = sigma / alpha; eps prediction D = x - sigma_ve eps
    sigmas = torch.tensor([s_t / a_t, s_s / a_s], dtype=torch.float64)
    x_s = sample_ddpm(lambda x, sig: x - sig * eps_hat, zt / a_t, sigmas, noise_sampler=lambda *_: noise)
    diff["ancestral step z_s"] = float((a_s * x_s - torch.from_numpy(values["zs"])).abs().max())
    return diff


def network_differences(values: dict[str, np.ndarray]) -> dict[str, float]:
    """multidiff's EGNN with EDM's weights, its process and its loss on EDM's batch: differences from EDM."""

    counts = torch.from_numpy(values["counts"])
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    ctx = {"batch": batch, "num_items": len(counts)}
    net = EGNN(
        5,
        charges=True,
        hidden=HIDDEN,
        layers=LAYERS,
        attention=True,
        tanh=True,
        coords_range=15.0,
        norm_constant=1.0,
        aggregation_norm=1.0,
        time_embedding=False,
        split_coords_range=False,
    ).double()
    edm = {k[2:]: torch.from_numpy(v) for k, v in values.items() if k.startswith("w/")}
    net.load_state_dict(egnn_state_from_edm(edm, LAYERS))
    process = VPProcess(PolynomialSchedule(power=POWER, precision=PRECISION), "eps", noise_code="t")
    domain = MoleculeDomain()
    domain.bind({"elements": ["H", "C", "N", "O", "F"], "node_counts": {"values": [9], "counts": [1]}})
    module = DiffusionModule(domain, net, process, optimizer=torch.optim.Adam).double()
    x0, eps = torch.from_numpy(values["x0"]), torch.from_numpy(values["eps"])
    t = torch.full((len(counts),), int(values["t_int"]) / T, dtype=torch.float64)
    sigma = process.schedule.sigma_ve(t)
    # the training loss through DiffusionModule.diffusion_loss with EDM's noise level and noise
    process.sample_sigma = lambda n, device="cpu", generator=None: sigma
    domain.space.noise = lambda x, ctx, generator=None: eps
    losses, _ = module.diffusion_loss(State(x0, None, ctx))
    # EDM's l2 loss: 0.5 x the squared error summed over a molecule, over (3 + 6) x the batch's largest molecule
    edm_normalised = 0.5 * losses * counts / counts.max()
    edm_normalised.mean().backward()
    edm_loss = torch.from_numpy(values["loss"]) - torch.from_numpy(values["kl_prior"])
    with torch.no_grad():
        eps_hat = module.model.raw(x0 + sigma[batch, None] * eps, sigma, State(x0, None, ctx))
    grads = edm_grads_from_egnn({k: p.grad for k, p in net.named_parameters()}, LAYERS)
    g_edm = {k[2:]: torch.from_numpy(v) for k, v in values.items() if k.startswith("g/")}
    return {
        "eps prediction": float((eps_hat - torch.from_numpy(values["eps_hat"])).abs().max()),
        "training loss (per molecule)": float((edm_normalised.detach() - edm_loss).abs().max()),
        "gradients": max(float((grads[k] - g_edm[k]).abs().max()) for k in g_edm),
    }
