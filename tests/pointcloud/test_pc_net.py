"""The point denoiser's contract: shapes, permutation equivariance, conditioning, chunked inference."""

import pytest
import torch

from multidiff.domains.pointcloud.net import PointRINDenoiser

TINY = dict(point_dim=16, latent_dim=32, num_latents=8, depth=2, latent_layers=1, heads=2, point_heads=2)


def _randomised(net: PointRINDenoiser) -> PointRINDenoiser:
    # zero-initialised gates and output make a fresh net output zeros; perturb every weight
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("num_classes", [0, 3])
def test_permutation_equivariance(num_classes):
    net = _randomised(PointRINDenoiser(**TINY, num_classes=num_classes))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 200, 3, generator=g)
    c = torch.randn(3, generator=g)
    cond = torch.tensor([0, 2, 1]) if num_classes else None
    perm = torch.randperm(200, generator=g)
    out = net(x, c, cond=cond)
    out_perm = net(x[:, perm], c, cond=cond)
    assert out.shape == x.shape and out.abs().mean() > 1e-3
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-4, atol=1e-5)


def test_condition_and_noise_level_change_the_output():
    net = _randomised(PointRINDenoiser(**TINY, num_classes=3))
    x, c = torch.randn(2, 64, 3), torch.zeros(2)
    a = net(x, c, cond=torch.tensor([0, 0]))
    b = net(x, c, cond=torch.tensor([1, 1]))
    dropped = net(x, c, cond=torch.tensor([1, 1]), cond_drop=torch.tensor([True, True]))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(dropped, net(x, c, cond=None))  # dropped = the learned null condition
    assert not torch.allclose(net(x, c), net(x, c + 1))


def test_chunked_inference_equals_one_batch():
    net = _randomised(PointRINDenoiser(**TINY, inference_chunk=2))
    x, c = torch.randn(5, 50, 3), torch.randn(5)
    with torch.no_grad():
        chunked = net(x, c)
    net.inference_chunk = 0
    with torch.no_grad():
        whole = net(x, c)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_fresh_net_outputs_zero_and_trains():
    net = PointRINDenoiser(**TINY)
    x, c = torch.randn(2, 32, 3), torch.randn(2)
    assert torch.equal(net(x, c), torch.zeros_like(x))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(30):
        loss = (net(x, c) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        PointRINDenoiser(**TINY)(torch.randn(2, 3, 10), torch.zeros(2))


@pytest.mark.parametrize("heads", [1, 3])
def test_read_and_write_are_multi_head_attention(heads):
    """The explicit batched-matmul attention of PointRead/PointWrite against torch's attention run per head."""
    import torch.nn.functional as F

    from multidiff.domains.pointcloud.net import PointRead, PointWrite

    g = torch.Generator().manual_seed(2)
    b, m, n_pts, c, d = 2, 5, 40, 8, 12
    z = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    n = torch.randn(b, n_pts, c, generator=g, dtype=torch.float64)
    read, write = PointRead(d, c, heads).double(), PointWrite(d, c, heads).double()
    gate = torch.randn(b, 1, c, generator=g, dtype=torch.float64)

    q = read.q(z).view(b, m, heads, c).transpose(1, 2)  # (b, heads, m, c); keys and values are n for every head
    per_head = F.scaled_dot_product_attention(
        q, n[:, None].expand(b, heads, n_pts, c), n[:, None].expand(b, heads, n_pts, c)
    )
    expected = read.out(per_head.transpose(1, 2).reshape(b, m, heads * c))
    torch.testing.assert_close(read(z, n), expected, rtol=1e-10, atol=1e-10)

    k = write.k(z).view(b, m, heads, c).transpose(1, 2)
    v = (write.v(z).view(b, m, heads, c) * gate.unsqueeze(1)).transpose(1, 2)
    expected = F.scaled_dot_product_attention(n[:, None].expand(b, heads, n_pts, c), k, v).sum(1)  # heads summed
    torch.testing.assert_close(write(n, z, gate), expected, rtol=1e-10, atol=1e-10)
