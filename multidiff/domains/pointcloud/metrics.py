"""Generative point-cloud metrics following PointFlow (``metrics/evaluation_metrics.py``).

Given generated clouds S and reference clouds R and a distance D (Chamfer or EMD):

* MMD = mean over r in R of min over s in S of D(s, r)  (fidelity; lower is better),
* COV = fraction of R that is the nearest reference of some s in S  (diversity; higher),
* 1-NNA = leave-one-out 1-nearest-neighbour accuracy of telling S from R within S u R
  (50 % is ideal: the two sets are indistinguishable; 100 %: fully separable),
* JSD between the two sets' point-occupancy distributions on a 28^3 grid of the cube
  [-0.5, 0.5]^3 restricted to the inscribed ball, as PointFlow (``in_unit_sphere=True``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.stats import entropy
from torch import Tensor

from .chamfer import pairwise_chamfer
from .emd import pairwise_emd


def mmd_cov(dist: Tensor) -> dict[str, float]:
    """MMD and COV from a (num_samples, num_refs) distance matrix (PointFlow ``lgan_mmd_cov``)."""
    min_to_ref, nearest_ref = dist.min(dim=1)  # for each sample its nearest reference
    min_to_sample = dist.min(dim=0).values  # for each reference its nearest sample
    return {
        "mmd": float(min_to_sample.mean()),
        "cov": float(nearest_ref.unique().numel() / dist.shape[1]),
        "mmd_smp": float(min_to_ref.mean()),
    }


def one_nn_accuracy(m_ss: Tensor, m_sr: Tensor, m_rr: Tensor) -> dict[str, float]:
    """Leave-one-out 1-NN accuracy of samples (label 1) vs references (label 0) (PointFlow ``knn``)."""
    ns, nr = m_ss.shape[0], m_rr.shape[0]
    label = torch.cat([torch.ones(ns), torch.zeros(nr)])
    full = torch.cat([torch.cat([m_ss, m_sr], 1), torch.cat([m_sr.T, m_rr], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))
    pred = label[full.argmin(dim=0)]
    correct = pred == label
    return {
        "acc": float(correct.float().mean()),
        "acc_t": float(correct[:ns].float().mean()),  # samples classified as samples
        "acc_f": float(correct[ns:].float().mean()),  # references classified as references
    }


def _sphere_grid(resolution: int) -> np.ndarray:
    """PointFlow's ``unit_cube_grid_point_cloud(resolution, clip_sphere=True)``."""
    ax = np.arange(resolution) / (resolution - 1) - 0.5
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    return grid[np.linalg.norm(grid, axis=1) <= 0.5]


def occupancy_counts(clouds: np.ndarray | list[np.ndarray], resolution: int = 28) -> np.ndarray:
    """How many points of all clouds fall nearest to each grid cell (ball-clipped grid)."""
    grid = _sphere_grid(resolution)
    pts = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in clouds])
    _, idx = cKDTree(grid).query(pts, k=1)
    return np.bincount(idx, minlength=len(grid)).astype(np.float64)


def jsd(samples: np.ndarray | list[np.ndarray], refs: np.ndarray | list[np.ndarray], resolution: int = 28) -> float:
    """Jensen-Shannon divergence (base 2) between the occupancy distributions of two sets."""
    p, q = occupancy_counts(samples, resolution), occupancy_counts(refs, resolution)
    p, q = p / p.sum(), q / q.sum()
    return float(entropy((p + q) / 2, base=2) - (entropy(p, base=2) + entropy(q, base=2)) / 2)


def compute_all_metrics(
    samples: Tensor,
    refs: Tensor,
    emd: str = "multiscale",
    emd_points: int | None = 512,
    chamfer_backend: str = "auto",
    block: int = 16,
    jsd_resolution: int = 28,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """MMD, COV and 1-NNA with Chamfer (and EMD unless ``emd='none'``), and JSD.

    ``samples`` (S, N, 3) and ``refs`` (R, N, 3) share one coordinate frame. EMD uses ``emd``
    ('multiscale', 'exact' or 'auction', see :mod:`.emd`) on ``emd_points`` points per cloud drawn
    at random (None: all). On a CPU the all-pairs EMD dominates the cost (about 30 ms per pair of
    512-point clouds): keep the sets small or pass ``emd='none'``.
    """
    samples, refs = samples.float(), refs.float()
    out: dict[str, float] = {}
    m_sr = pairwise_chamfer(samples, refs, block=block, backend=chamfer_backend, progress=progress)
    m_ss = pairwise_chamfer(samples, block=block, backend=chamfer_backend, progress=progress)
    m_rr = pairwise_chamfer(refs, block=block, backend=chamfer_backend, progress=progress)
    mc = mmd_cov(m_sr)
    out.update({"MMD-CD": mc["mmd"], "COV-CD": mc["cov"], "1-NNA-CD": one_nn_accuracy(m_ss, m_sr, m_rr)["acc"]})
    if emd != "none":
        s, r = samples, refs
        if emd_points and emd_points < samples.shape[1]:
            g = torch.Generator().manual_seed(seed)
            s = torch.stack([c[torch.randperm(c.shape[0], generator=g)[:emd_points]] for c in samples])
            r = torch.stack([c[torch.randperm(c.shape[0], generator=g)[:emd_points]] for c in refs])
        e_sr = pairwise_emd(s, r, method=emd, progress=progress)
        e_ss = pairwise_emd(s, method=emd, progress=progress)
        e_rr = pairwise_emd(r, method=emd, progress=progress)
        me = mmd_cov(e_sr)
        out.update(
            {
                "MMD-EMD": me["mmd"],
                "COV-EMD": me["cov"],
                "1-NNA-EMD": one_nn_accuracy(e_ss, e_sr, e_rr)["acc"],
            }
        )
    out["JSD"] = jsd(samples.numpy(), refs.numpy(), jsd_resolution)
    return out
