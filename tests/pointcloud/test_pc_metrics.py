"""Chamfer, EMD and the PointFlow set metrics against brute-force numpy, plus 1-NNA sanity on real shapes."""

import itertools

import numpy as np
import pytest
import torch

from multidiff.domains.pointcloud.chamfer import chamfer, pairwise_chamfer
from multidiff.domains.pointcloud.emd import emd_auction, emd_exact, emd_multiscale, kd_groups, pairwise_emd
from multidiff.domains.pointcloud.io import read_points
from multidiff.domains.pointcloud.metrics import compute_all_metrics, jsd, mmd_cov, one_nn_accuracy
from multidiff.domains.pointcloud.normalize import Normalizer, resample


def brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return d.min(1).mean() + d.min(0).mean()


@pytest.fixture
def sets():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 90, 3, generator=g), torch.rand(5, 90, 3, generator=g) * 1.3


@pytest.mark.parametrize(
    "backend", ["eager", pytest.param("compiled", marks=pytest.mark.slow)]
)  # compiling takes ~20 s
def test_pairwise_chamfer_matches_brute_force(sets, backend):
    x, y = sets
    ref = np.array([[brute_chamfer(a.double().numpy(), b.double().numpy()) for b in y] for a in x])
    got = pairwise_chamfer(x, y, block=4, backend=backend, progress=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    sym = pairwise_chamfer(x, block=4, backend=backend, progress=False).numpy()
    ref_sym = np.array([[brute_chamfer(a.double().numpy(), b.double().numpy()) for b in x] for a in x])
    np.testing.assert_allclose(sym, ref_sym, rtol=1e-4, atol=1e-7)
    assert np.allclose(np.diag(sym), 0, atol=1e-6)


def test_paired_chamfer_far_from_origin(sets):
    x, y = sets
    # the augmented-GEMM form loses precision far from the origin unless the clouds are centred
    shift = torch.tensor([1e3, -2e3, 5e2])
    got = chamfer(x[:5] + shift, y + shift)
    ref = [brute_chamfer(a.double().numpy(), b.double().numpy()) for a, b in zip(x[:5], y)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-3)


def test_emd_exact_matches_all_permutations():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    best = min(np.linalg.norm(a - b[list(p)], axis=1).mean() for p in itertools.permutations(range(6)))
    assert np.isclose(emd_exact(a, b), best)


def test_emd_auction_is_within_eps_above_exact():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(4, 128, 3, generator=g), torch.rand(4, 128, 3, generator=g)
    exact = np.array([emd_exact(x.numpy(), y.numpy()) for x, y in zip(a, b)])
    approx = emd_auction(a, b, eps=1e-3).numpy()
    assert (approx >= exact - 1e-5).all() and (approx <= exact + 1e-3 + 1e-5).all()
    m = pairwise_emd(a[:3], b[:2], method="auction", progress=False)
    assert m.shape == (3, 2) and torch.allclose(m[0, 0], torch.tensor(approx[0]), atol=1e-3)


def test_kd_groups_partition_any_size():
    pts = np.random.default_rng(4).normal(size=(1001, 3))
    groups = kd_groups(pts, 4)
    assert sorted(np.concatenate(groups).tolist()) == list(range(1001))
    assert {len(g) for g in groups} <= {3, 4}
    # leaves are spatially compact: random groups of 4 would spread about as much as the cloud
    assert np.mean([pts[g].std(0).max() for g in groups]) < 0.4 * pts.std(0).min()


def test_emd_multiscale_is_a_close_upper_bound(shared_datasets):
    rng = np.random.default_rng(5)
    files = sorted((shared_datasets / "shapenet_airplane" / "02691156" / "test").glob("*.npy"))[:8]
    clouds = [resample(read_points(f), 300, rng)[0] for f in files]  # 300: not a power of two
    for a, b in zip(clouds[:4], clouds[4:]):
        exact, approx = emd_exact(a, b), emd_multiscale(a, b)
        assert exact - 1e-7 <= approx <= 1.02 * exact
    m = pairwise_emd(torch.from_numpy(np.stack(clouds[:3])), method="multiscale", progress=False)
    assert torch.allclose(m, m.T) and (m.diagonal() == 0).all() and (m + torch.eye(3) > 0).all()


def test_mmd_cov_and_1nna_match_brute_force():
    rng = np.random.default_rng(2)
    m_sr, m_ss, m_rr = rng.random((7, 5)), rng.random((7, 7)), rng.random((5, 5))
    m_ss, m_rr = m_ss + m_ss.T, m_rr + m_rr.T
    res = mmd_cov(torch.from_numpy(m_sr))
    assert np.isclose(res["mmd"], np.mean([m_sr[:, j].min() for j in range(5)]))
    assert np.isclose(res["cov"], len({int(np.argmin(m_sr[i])) for i in range(7)}) / 5)
    full = np.block([[m_ss, m_sr], [m_sr.T, m_rr]])
    np.fill_diagonal(full, np.inf)
    labels = np.r_[np.ones(7), np.zeros(5)]
    expected = np.mean([labels[np.argmin(full[i])] == labels[i] for i in range(12)])
    acc = one_nn_accuracy(torch.from_numpy(m_ss), torch.from_numpy(m_sr), torch.from_numpy(m_rr))["acc"]
    assert np.isclose(acc, expected)


def brute_jsd(p_clouds, q_clouds, res=28):
    ax = np.arange(res) / (res - 1) - 0.5
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.linalg.norm(grid, axis=1) <= 0.5]

    def counts(clouds):
        pts = np.concatenate(clouds)
        idx = np.argmin(((pts[:, None] - grid[None]) ** 2).sum(-1), axis=1)
        return np.bincount(idx, minlength=len(grid)) / len(pts)

    def h(p):
        p = p[p > 0]
        return -(p * np.log2(p)).sum()

    p, q = counts(p_clouds), counts(q_clouds)
    return h((p + q) / 2) - (h(p) + h(q)) / 2


def test_jsd_matches_brute_force():
    rng = np.random.default_rng(3)
    p = [rng.uniform(-0.5, 0.5, size=(100, 3)) for _ in range(3)]
    q = [rng.normal(scale=0.15, size=(100, 3)) for _ in range(3)]
    assert np.isclose(jsd(p, q, 28), brute_jsd(p, q, 28))
    assert jsd(p, p) == pytest.approx(0.0, abs=1e-12) and jsd(p, q) > 0.05


def _real(folder, n, points, seed=0):
    files = sorted(folder.glob("*"))[:n]
    rng = np.random.default_rng(seed)
    norm = Normalizer("unit_sphere")
    return torch.from_numpy(np.stack([norm(resample(read_points(f), points, rng)[0]) for f in files]))


def test_1nna_sanity_on_real_shapes(shared_datasets):
    planes = _real(shared_datasets / "shapenet_airplane" / "02691156" / "test", 48, 512)
    chairs = _real(shared_datasets / "modelnet10_pcd" / "chair" / "test", 24, 512)
    same = compute_all_metrics(planes[:24], planes[24:], emd="none", progress=False)
    different = compute_all_metrics(chairs, planes[24:], emd="none", progress=False)
    # two halves of one distribution are hard to tell apart; two classes are trivially separable
    assert 0.3 <= same["1-NNA-CD"] <= 0.7
    assert different["1-NNA-CD"] >= 0.95
    assert different["MMD-CD"] > 2 * same["MMD-CD"] and same["COV-CD"] > different["COV-CD"]
    assert different["JSD"] > same["JSD"]


def test_all_metrics_with_emd_keys(shared_datasets):
    planes = _real(shared_datasets / "shapenet_airplane" / "02691156" / "test", 8, 256)
    res = compute_all_metrics(planes[:4], planes[4:], emd="exact", emd_points=64, progress=False)
    assert set(res) == {"MMD-CD", "COV-CD", "1-NNA-CD", "MMD-EMD", "COV-EMD", "1-NNA-EMD", "JSD"}
    assert res["MMD-EMD"] > 0 and 0 < res["COV-EMD"] <= 1
