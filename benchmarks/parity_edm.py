"""Parity with EDM's own code (ehoogeboom/e3_diffusion_for_molecules): the polynomial_2 noise schedule at its
1,000 steps and one ancestral step p(z_s | z_t) given the same network output and the same noise.

Needs EDM's source in $ANCHORS_DIR/e3_diffusion_for_molecules (default ~/.cache/anchors; how to get it:
../shared/anchors-bench/README.md); without it the script says so and exits. It writes
tests/fixtures/edm_schedule_step.npz (EDM's values), which tests/molecule/test_edm_parity.py checks against
multidiff without EDM's code, and prints the differences.

python benchmarks/parity_edm.py [--anchors DIR] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "edm_schedule_step.npz"
T, PRECISION, POWER = 1000, 1e-5, 2.0


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
    with contextlib.redirect_stdout(io.StringIO()):  # EDM prints its whole schedule
        diffusion = EnVariationalDiffusion(
            FixedEps(eps_hat),
            in_node_nf=6,
            n_dims=3,
            timesteps=T,
            parametrization="eps",
            noise_schedule=f"polynomial_{int(POWER)}",
            noise_precision=PRECISION,
            loss_type="l2",
            norm_values=(1.0, 4.0, 10.0),
        )
    diffusion = diffusion.double()
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


def ours(values: dict[str, np.ndarray]) -> dict[str, float]:
    """multidiff's schedule and DDPM step on EDM's inputs; the differences from EDM's values."""
    sys.path.insert(0, str(ROOT))
    from multidiff.core.samplers import sample_ddpm
    from multidiff.core.schedules import PolynomialSchedule

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=Path, default=Path(os.environ.get("ANCHORS_DIR", Path.home() / ".cache/anchors")))
    ap.add_argument("--write", action="store_true", help=f"(re)write {FIXTURE.relative_to(ROOT)}")
    a = ap.parse_args()
    edm_dir = a.anchors / "e3_diffusion_for_molecules"
    if not (edm_dir / "equivariant_diffusion" / "en_diffusion.py").is_file():
        print(f"EDM's source is not in {edm_dir}: see ../shared/anchors-bench/README.md; nothing to compare")
        return
    values = edm_values(edm_dir)
    if a.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, **values)
        print(f"wrote {FIXTURE}")
    print("| quantity | max |multidiff - EDM| |")
    print("|---|---|")
    for name, value in ours(values).items():
        print(f"| {name} | {value:.2e} |")


if __name__ == "__main__":
    main()
