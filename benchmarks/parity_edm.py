"""Parity with EDM's own code (ehoogeboom/e3_diffusion_for_molecules): the polynomial_2 noise schedule at its
1,000 steps, one ancestral step p(z_s | z_t) given the same network output and the same noise, and the EGNN:
EDM's weights copied into multidiff's EGNN (EDM settings), run on the same noisy QM9 batch: outputs, training
loss and gradients.

Needs EDM's source in $ANCHORS_DIR/e3_diffusion_for_molecules (default ~/.cache/anchors; how to get it:
../shared/anchors-bench/README.md); without it the script says so and exits. It writes
tests/fixtures/edm_schedule_step.npz and tests/fixtures/edm_egnn.npz (EDM's values, inputs and weights), which
tests/test_edm_parity.py checks against multidiff without EDM's code, and prints the differences.

python benchmarks/parity_edm.py [--anchors DIR] [--qm9-root DIR] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edm_parity import HIDDEN, LAYERS, POWER, PRECISION, T, network_differences, schedule_differences  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "edm_schedule_step.npz"
NET_FIXTURE = ROOT / "tests" / "fixtures" / "edm_egnn.npz"
T_INT = 500


class FixedEps(torch.nn.Module):
    """Stands in for EDM's dynamics: returns a given eps prediction, whatever the input."""

    def __init__(self, eps: torch.Tensor):
        super().__init__()
        self.eps = eps

    def _forward(self, t, x, node_mask, edge_mask, context):  # EDM's signature
        return self.eps


def zero_com(x: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    pos = x[..., :3]
    mean = (pos * node_mask).sum(1, keepdim=True) / node_mask.sum(1, keepdim=True)
    return torch.cat([(pos - mean) * node_mask, x[..., 3:] * node_mask], -1)


def edm_diffusion(cls: type, dynamics: torch.nn.Module) -> torch.nn.Module:
    """EDM's ``EnVariationalDiffusion`` with its QM9 settings (eps, polynomial_2, l2 loss, norm values 1/4/10),
    in float64."""
    with contextlib.redirect_stdout(io.StringIO()):  # EDM prints its whole schedule
        diffusion = cls(
            dynamics,
            in_node_nf=6,
            n_dims=3,
            timesteps=T,
            parametrization="eps",
            noise_schedule=f"polynomial_{int(POWER)}",
            noise_precision=PRECISION,
            loss_type="l2",
            norm_values=(1.0, 4.0, 10.0),
        )
    return diffusion.double()


def edm_values(edm_dir: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(edm_dir))
    from equivariant_diffusion.en_diffusion import EnVariationalDiffusion, polynomial_schedule

    alphas2 = polynomial_schedule(T, s=PRECISION, power=POWER)  # float64, as EDM computes it
    gamma = -(np.log(alphas2) - np.log(1 - alphas2))

    gen = torch.Generator().manual_seed(0)
    counts = [5, 3]
    node_mask = torch.zeros(2, 5, 1, dtype=torch.float64)
    for i, c in enumerate(counts):
        node_mask[i, :c] = 1

    def draw() -> torch.Tensor:
        return zero_com(torch.randn(2, 5, 3 + 6, generator=gen, dtype=torch.float64), node_mask)

    zt, eps_hat, noise = draw(), draw(), draw()
    edge_mask = (node_mask @ node_mask.transpose(1, 2)).reshape(-1, 1)
    diffusion = edm_diffusion(EnVariationalDiffusion, FixedEps(eps_hat))
    edm_gamma32 = diffusion.gamma.gamma.detach().numpy().copy()  # EDM keeps gamma as float32
    # the step's own formula, apart from that storage: the float64 gamma in EDM's lookup table
    diffusion.gamma.gamma.data = torch.from_numpy(gamma)
    diffusion.sample_normal = lambda mu, sigma, node_mask, fix_noise=False: mu + sigma * noise
    s_int, t_int = 499, 500
    s = torch.full((2, 1), s_int / T, dtype=torch.float64)
    t = torch.full((2, 1), t_int / T, dtype=torch.float64)
    with torch.no_grad():
        zs = diffusion.sample_p_zs_given_zt(s, t, zt, node_mask, edge_mask, None)
    return {
        "gamma": gamma,
        "edm_gamma_float32": edm_gamma32,
        "zt": zt.numpy(),
        "eps_hat": eps_hat.numpy(),
        "noise": noise.numpy(),
        "node_mask": node_mask.numpy(),
        "s_t": np.array([s_int, t_int]),
        "zs": zs.numpy(),
    }


def network_values(edm_dir: Path, qm9_root: Path) -> dict[str, np.ndarray]:
    """EDM's EGNN_dynamics_QM9 (EDM's QM9 settings at a small size) on a noisy QM9 batch at t = 0.5: its eps
    prediction, its own training loss (compute_loss, l2, training mode) and the gradients of that loss."""
    sys.path.insert(0, str(edm_dir))
    sys.path.insert(0, str(ROOT))
    from egnn.models import EGNN_dynamics_QM9
    from equivariant_diffusion.en_diffusion import EnVariationalDiffusion, polynomial_schedule

    from multidiff.domains.molecule import QM9DataModule

    dm = QM9DataModule(root=qm9_root, batch_size=6, max_molecules=64, progress=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    counts = torch.bincount(batch.batch).tolist()
    b, n = len(counts), max(counts)
    node_mask = torch.zeros(b, n, 1, dtype=torch.float64)
    x = torch.zeros(b, n, 3, dtype=torch.float64)
    onehot = torch.zeros(b, n, 5, dtype=torch.float64)
    charges = torch.zeros(b, n, 1, dtype=torch.float64)
    start = 0
    for i, c in enumerate(counts):
        rows = slice(start, start + c)
        node_mask[i, :c] = 1
        x[i, :c] = batch.pos[rows].double()
        onehot[i, :c] = torch.nn.functional.one_hot(batch.atom_type[rows], 5).double()
        charges[i, :c, 0] = batch.charge[rows].double()
        start += c
    x = zero_com(torch.cat([x, onehot, charges], -1), node_mask)[..., :3]  # zero centre of mass, as EDM's data
    edge_mask = (node_mask @ node_mask.transpose(1, 2)) * (1 - torch.eye(n, dtype=torch.float64))
    torch.manual_seed(0)
    dynamics = EGNN_dynamics_QM9(
        in_node_nf=7,  # EDM's main_qm9.py: the node features plus its time feature
        context_node_nf=0,
        n_dims=3,
        hidden_nf=HIDDEN,
        act_fn=torch.nn.SiLU(),
        n_layers=LAYERS,
        attention=True,
        tanh=True,
        mode="egnn_dynamics",
        norm_constant=1,
        inv_sublayers=1,
        sin_embedding=False,
        normalization_factor=1,
        aggregation_method="sum",
    ).double()
    with torch.no_grad():  # away from the initialisation, so that every weight matters
        for p in dynamics.parameters():
            p.add_(0.1 * torch.randn_like(p))
    diffusion = edm_diffusion(EnVariationalDiffusion, dynamics).train()
    alphas2 = polynomial_schedule(T, s=PRECISION, power=POWER)
    # EDM's lookup table in float64 (it stores float32; that difference is reported with the schedule)
    diffusion.gamma.gamma.data = torch.from_numpy(-(np.log(alphas2) - np.log(1 - alphas2)))
    eps = zero_com(torch.randn(b, n, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64), node_mask)
    diffusion.sample_combined_position_feature_noise = lambda n_samples, n_nodes, node_mask: eps
    h = {"categorical": onehot, "integer": charges}
    xn, hn, _ = diffusion.normalize(x, h, node_mask)
    xh = torch.cat([xn, hn["categorical"], hn["integer"]], -1).double()  # what EDM's network sees at t = 0
    real_randint = torch.randint
    torch.randint = lambda low, high, size, device=None: torch.full(size, T_INT, dtype=torch.long)
    try:
        loss = diffusion(x, h, node_mask, edge_mask.reshape(-1, 1), None)  # EDM's training loss per molecule
    finally:
        torch.randint = real_randint
    loss.mean().backward()
    with torch.no_grad():
        kl_prior = diffusion.kl_prior(xh, node_mask)  # part of EDM's loss, independent of the network
        gamma_t = diffusion.gamma(torch.full((b, 1), T_INT / T, dtype=torch.float64))
        alpha_t, sigma_t = torch.sigmoid(-gamma_t).sqrt()[:, :, None], torch.sigmoid(gamma_t).sqrt()[:, :, None]
        z_t = alpha_t * xh + sigma_t * eps
        eps_hat = dynamics._forward(
            torch.full((b, 1), T_INT / T, dtype=torch.float64), z_t, node_mask, edge_mask.reshape(-1, 1), None
        )
    real = node_mask[..., 0].bool()
    values = {
        "counts": np.array(counts),
        "x0": xh[real].numpy(),  # rows [pos | onehot / 4 | charge / 10], EDM's normalisation
        "eps": eps[real].numpy(),
        "t_int": np.array(T_INT),
        "eps_hat": eps_hat[real].numpy(),
        "loss": loss.detach().numpy(),  # per molecule, EDM's training loss at t = 0.5
        "kl_prior": kl_prior.numpy(),
    }
    for name, p in dynamics.named_parameters():
        values[f"w/{name}"] = p.detach().numpy()
        values[f"g/{name}"] = p.grad.numpy()
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=Path, default=Path(os.environ.get("ANCHORS_DIR", Path.home() / ".cache/anchors")))
    ap.add_argument("--qm9-root", type=Path, default=Path(os.environ.get("MULTIDIFF_DATA", ROOT / "datasets")) / "qm9")
    ap.add_argument("--write", action="store_true", help="(re)write the fixtures under tests/fixtures")
    a = ap.parse_args()
    edm_dir = a.anchors / "e3_diffusion_for_molecules"
    if not (edm_dir / "equivariant_diffusion" / "en_diffusion.py").is_file():
        print(f"EDM's source is not in {edm_dir}: see ../shared/anchors-bench/README.md; nothing to compare")
        return
    values = edm_values(edm_dir)
    net_values = network_values(edm_dir, a.qm9_root)
    if a.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, **values)
        np.savez_compressed(NET_FIXTURE, **net_values)
        print(f"wrote {FIXTURE} and {NET_FIXTURE}")
    print("| quantity | max |multidiff - EDM| |")
    print("|---|---|")
    for name, value in {**schedule_differences(values), **network_differences(net_values)}.items():
        print(f"| {name} | {value:.2e} |")


if __name__ == "__main__":
    main()
