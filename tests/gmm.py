"""A 2-D Gaussian mixture whose optimal denoiser E[x0 | x0 + sigma n = x] is known in closed form."""

from __future__ import annotations

import torch
from torch import Tensor

from multidiff.core.embeddings import per_item


class GaussianMixture:
    dims = 2  # a state's width
    discrete = None  # no discrete block (:class:`LabelledMixture` has one)

    def __init__(self, weights: list[float], means: list[list[float]], covs: list[list[list[float]]]):
        self.w = torch.tensor(weights, dtype=torch.float64)
        self.mu = torch.tensor(means, dtype=torch.float64)
        self.cov = torch.tensor(covs, dtype=torch.float64)

    @classmethod
    def default(cls) -> GaussianMixture:
        return cls(
            [0.5, 0.3, 0.2],
            [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]],
            [[[0.30, 0.10], [0.10, 0.20]], [[0.15, -0.05], [-0.05, 0.25]], [[0.20, 0.0], [0.0, 0.10]]],
        )

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` points and the component each was drawn from."""
        k = torch.multinomial(self.w, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.mu[k] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(self.cov)[k], z), k

    def responsibilities(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Posterior over components of x ~ mixture convolved with N(0, sigma^2 I)."""
        c = self.cov + (torch.as_tensor(sigma, dtype=torch.float64) ** 2) * torch.eye(2, dtype=torch.float64)
        d = x.double()[:, None, :] - self.mu  # (N, K, 2)
        maha = torch.einsum("nki,kij,nkj->nk", d, torch.linalg.inv(c), d)
        logp = -0.5 * (maha + torch.logdet(c)) + self.w.log()
        return torch.softmax(logp, dim=1)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact D(x; sigma) = sum_k r_k(x) (mu_k + cov_k (cov_k + sigma^2 I)^-1 (x - mu_k))."""
        s2 = sigma.double().reshape(-1)[0] ** 2
        xd = x.double()
        c = self.cov + s2 * torch.eye(2, dtype=torch.float64)
        gain = self.cov @ torch.linalg.inv(c)  # (K, 2, 2)
        comp = self.mu + torch.einsum("kij,nkj->nki", gain, xd[:, None, :] - self.mu)
        r = self.responsibilities(xd, sigma.double().reshape(-1)[0])
        return torch.einsum("nk,nki->ni", r, comp).to(x.dtype)

    def denoise_items(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact D(x; sigma) with one noise level per item, as distillation calls a teacher."""
        return denoise_per_item(self, x, sigma)

    def moment_errors(self, x: Tensor) -> dict[str, float]:
        """Worst absolute errors of the component weights, means and covariances of samples ``x``
        (each sample assigned to its most probable component)."""
        k = self.responsibilities(x, 0.0).argmax(1)
        errs = {"weight": 0.0, "mean": 0.0, "cov": 0.0}
        for j in range(len(self.w)):
            xs = x.double()[k == j]
            errs["weight"] = max(errs["weight"], abs(len(xs) / len(x) - self.w[j].item()))
            errs["mean"] = max(errs["mean"], (xs.mean(0) - self.mu[j]).abs().max().item())
            errs["cov"] = max(errs["cov"], (torch.cov(xs.T) - self.cov[j]).abs().max().item())
        return errs


class MixtureModel:
    """The exact denoiser of a :class:`GaussianMixture` in the shape the sampling code calls a trained model:
    ``model(x, sigma_per_item, state, cond_drop=None)`` with ``state.cond`` a component index per item
    (class-conditional: that component's Gaussian) or None / dropped (the whole mixture). ``scale`` widens
    every covariance: a weaker model of the same data, for autoguidance. ``observable``: the model an
    observation-conditioned training converges to: given ``known`` (x1 observed, x2 not), it reads the clean x1
    from ``x`` and returns the exact denoiser of x2 given it."""

    def __init__(self, gmm: GaussianMixture, scale: float = 1.0, observable: bool = False):
        from multidiff.core.space import TensorSpace

        self.gmm = GaussianMixture(gmm.w.tolist(), gmm.mu.tolist(), (gmm.cov * scale).tolist())
        self.space = TensorSpace()
        self.observable = observable

    def __call__(
        self, x: Tensor, sigma: Tensor, state, cond_drop: Tensor | None = None, known: Tensor | None = None
    ) -> Tensor:
        g = self.gmm
        if known is not None:
            assert self.observable and state.cond is None and known[:, 0].all() and not known[:, 1].any()
            return denoise_given_x1(g, x[:, 0].double(), x[:, 1:].double(), sigma[0]).to(x.dtype)
        uncond = g.denoise(x, sigma[:1])
        if state.cond is None:
            return uncond
        k = state.cond.long()
        c = g.cov[k] + sigma[0].double() ** 2 * torch.eye(2, dtype=torch.float64)
        gain = g.cov[k] @ torch.linalg.inv(c)
        cond = g.mu[k] + torch.einsum("nij,nj->ni", gain, x.double() - g.mu[k])
        if cond_drop is not None:
            cond = torch.where(cond_drop[:, None], uncond.double(), cond)
        return cond.to(x.dtype)


# -- conditioning on x1 = a: the closed-form answer for generation from an observation --------------------
def conditional(g: GaussianMixture, a: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, means and variances of x2 given x1 = a (per component; ``(n, K)`` for a vector ``a``)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 1)
    c11, c12, c22 = g.cov[:, 0, 0], g.cov[:, 0, 1], g.cov[:, 1, 1]
    logw = g.w.log() - 0.5 * ((a - g.mu[:, 0]) ** 2 / c11 + c11.log())
    return torch.softmax(logw, -1), g.mu[:, 1] + c12 / c11 * (a - g.mu[:, 0]), (c22 - c12**2 / c11).expand_as(logw)


def denoise_given_x1(g: GaussianMixture, a: torch.Tensor, x2: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x2 + sigma * noise = x2, x1 = a] for per-item ``a`` and ``x2`` ``(n, 1)``: ``(n, 2)``."""
    w, m, v = conditional(g, a)
    s2 = sigma.double().reshape(-1)[0] ** 2
    logr = w.log() - 0.5 * ((x2 - m) ** 2 / (v + s2) + (v + s2).log())
    out = (torch.softmax(logr, 1) * (m + v / (v + s2) * (x2 - m))).sum(1)
    return torch.stack([a.expand_as(out), out], 1)


def conditional_denoiser(g: GaussianMixture, a: float):
    """The exact denoiser of x2 given x1 = a (x1 is returned as a)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return denoise_given_x1(g, torch.full((len(x),), a, dtype=torch.float64), x[:, 1:].double(), sigma).to(x.dtype)

    return denoise


def conditional_errors(g: GaussianMixture, x: torch.Tensor, a: float) -> dict[str, float]:
    w, m, v = conditional(g, a)
    w, m, v = w[0], m[0], v[0]
    x2 = x[:, 1].double()
    k = (w.log() - 0.5 * ((x2[:, None] - m) ** 2 / v + v.log())).argmax(1)
    errs = {"weight": 0.0, "mean": 0.0, "var": 0.0}
    for j in range(len(w)):
        xs = x2[k == j]
        errs["weight"] = max(errs["weight"], abs(len(xs) / len(x2) - w[j].item()))
        errs["mean"] = max(errs["mean"], abs(xs.mean().item() - m[j].item()))
        errs["var"] = max(errs["var"], abs(xs.var().item() - v[j].item()))
    return errs


class FragmentGaussian:
    """``m`` molecules of four atoms in the zero centre-of-mass space: a shape ``p0`` plus ``tau`` times zero-CoM
    Gaussian noise, with an exact (linear) denoiser. The first ``k`` atoms are given in another frame; relative to
    their centroid the others are N(p0_U - mean(p0_K), tau^2 (1 + 1/k)) per coordinate, whatever the frame."""

    def __init__(self, m: int, k: int = 2, tau: float = 0.5):
        from multidiff.core.space import GraphSpace

        self.m, self.k, self.tau, self.atoms = m, k, tau, 4
        p0 = torch.tensor([[0.0, 0, 0], [1.5, 0, 0], [1.5, 1.5, 0], [0, 1.5, 1.0]], dtype=torch.float64)
        self.p0 = p0 - p0.mean(0)
        self.space = GraphSpace(com_dims=3)
        self.ctx = {"batch": torch.arange(m).repeat_interleave(self.atoms), "num_items": m}
        self.rows = self.p0.repeat(m, 1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.rows + self.tau**2 / (self.tau**2 + sigma**2) * (x - self.rows)

    def observation(self, shift=(5.0, -3.0, 2.0)):
        from multidiff.core.observation import Observation

        known = (torch.arange(len(self.rows)) % self.atoms) < self.k
        values = torch.zeros_like(self.rows)
        values[known] = (self.p0[: self.k] + torch.tensor(shift, dtype=torch.float64)).repeat(self.m, 1)
        return Observation(values, known.unsqueeze(1))

    def errors(self, out: torch.Tensor) -> dict[str, float]:
        """``shape``: the largest deviation of the given atoms from the fragment's shape; ``com``: the largest
        centre of mass; ``mean``: of the others relative to the given centroid, in standard errors; ``var``: their
        variance over the exact one (1 is exact)."""
        k, tau = self.k, self.tau
        out = out.reshape(self.m, self.atoms, 3)
        centroid = out[:, :k].mean(1, keepdim=True)
        rel = out[:, k:] - centroid
        se = (tau**2 * (1 + 1 / k) / self.m) ** 0.5
        return {
            "shape": (out[:, :k] - centroid - (self.p0[:k] - self.p0[:k].mean(0))).abs().max().item(),
            "com": out.mean(1).abs().max().item(),
            "mean": ((rel.mean(0) - (self.p0[k:] - self.p0[:k].mean(0))).abs().max() / se).item(),
            "var": (rel.var(0) / (tau**2 * (1 + 1 / k))).mean().item(),
        }


def components_per_item(g: GaussianMixture, x: torch.Tensor, sigma: torch.Tensor) -> tuple[Tensor, Tensor]:
    """For points ``x`` (n, 2) at one noise level per item (``sigma`` (n,) or one for all): each component's log
    weight plus log density of x, ``(n, K)``, and its own denoiser E[x0 | x, k], ``(n, K, 2)``."""
    s2 = per_item(sigma.double(), len(x)).reshape(-1, 1, 1, 1) ** 2
    c = g.cov[None] + s2 * torch.eye(2, dtype=torch.float64)
    inv = torch.linalg.inv(c)
    d = x.double()[:, None, :] - g.mu
    logp = -0.5 * (torch.einsum("nki,nkij,nkj->nk", d, inv, d) + torch.logdet(c)) + g.w.log()
    return logp, g.mu + torch.einsum("kij,nkjl,nkl->nki", g.cov, inv, d)


def denoise_per_item(g: GaussianMixture, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact D(x; sigma) with one noise level per item (``sigma`` (n,)), as distillation calls a teacher."""
    logp, comp = components_per_item(g, x, sigma)
    return torch.einsum("nk,nki->ni", torch.softmax(logp, 1), comp).to(x.dtype)


class PointNet(torch.nn.Module):
    """A small denoiser network F(x_in, c_noise) for 2-D points (the DenoiserNet contract, no conditions): an MLP
    on the input and random Fourier features of the noise code. Students of the mixture's exact denoiser."""

    def __init__(self, hidden: int = 256, freqs: int = 16, seed: int = 0, dims: int = 2):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(freqs, generator=gen) * 4)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dims + 2 * freqs, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dims),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None, cond_drop=None) -> torch.Tensor:
        e = c_noise.reshape(-1, 1).to(x.dtype) * self.freqs
        return self.net(torch.cat([x, e.sin(), e.cos()], 1))


class LabelledMixture:
    """A :class:`GaussianMixture` whose component is part of each sample: ``[point (2), scale * one-hot(k)]``, the
    label a block of a discrete process (prior ``prior``), as a graph's atom types beside its coordinates. Its
    exact denoiser: p(k | y, z) ~ w_k N(y; mu_k, cov_k + sigma^2 I) q(z | k), the point the posterior mixture of
    the components' own denoisers."""

    dims = 5

    def __init__(self, g: GaussianMixture, scale: float = 1.0, prior: tuple[float, ...] = (0.2, 0.3, 0.5)):
        from multidiff.core.categorical import Block, DiscreteCategorical

        self.g, self.block = g, Block(None, 2, 5, scale, prior=prior)
        self.discrete = DiscreteCategorical([self.block])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        point, k = self.g.sample_with_components(n, generator)
        return torch.cat([point, self.block.scale * torch.nn.functional.one_hot(k, 3).double()], 1)

    def denoise_items(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact D(x; sigma) with one noise level per item (``sigma`` (n,)) or one for all."""
        xd = x.double()
        s = per_item(sigma.double(), len(x)).reshape(-1, 1)
        logp, comp = components_per_item(self.g, xd[:, :2], s)
        raw = torch.zeros_like(xd)  # the network's part: the log prior of the label given the point
        raw[:, 2:] = logp
        p = torch.softmax(self.discrete.logits(self.block, raw, xd, s), 1)
        estimate = torch.cat([torch.einsum("nk,nki->ni", p, comp), torch.zeros_like(xd[:, 2:])], 1)
        return self.discrete.denoise(estimate, raw, xd, s).to(x.dtype)

    def errors(self, x: Tensor) -> dict[str, float]:
        """The points' :meth:`GaussianMixture.moment_errors`, the labels' worst weight error, and how often a
        label disagrees with its point's most probable component, beside that rate in the data (``disagree`` and
        ``disagree_data``)."""
        errs = self.g.moment_errors(x[:, :2])
        labels = self.block.classes(x)
        freq = torch.bincount(labels, minlength=3).double() / len(x)
        errs["label_weight"] = (freq - self.g.w).abs().max().item()
        errs["disagree"] = (labels != self.g.responsibilities(x[:, :2], 0.0).argmax(1)).double().mean().item()
        data = self.sample(len(x), torch.Generator().manual_seed(123))
        errs["disagree_data"] = (
            (self.block.classes(data) != self.g.responsibilities(data[:, :2], 0.0).argmax(1)).double().mean().item()
        )
        return errs


def distill_mixture(
    g: GaussianMixture | LabelledMixture,
    steps: int,
    levels: int = 40,
    target_decay: float = 0.95,
    batch: int = 2048,
    lr: float = 1e-3,
    seed: int = 0,
    sigma_data: float = 1.5,
    log_every: int = 0,
    segments: int = 1,
    teacher_steps: int = 1,
    hidden: int = 256,
    huber: float | None = None,
):
    """A consistency student (``segments`` > 1: multistep; :class:`PointNet` in EDM preconditioning) distilled
    from the mixture's exact denoiser with :func:`multidiff.core.distill.consistency_loss` (Adam, cosine learning
    rate, EMA target); of a :class:`LabelledMixture`, with its labels as a discrete block."""
    import copy

    from multidiff.core.denoiser import Preconditioned
    from multidiff.core.distill import consistency_loss, karras_levels, sample_index
    from multidiff.core.processes import EDMProcess
    from multidiff.core.schedules import KarrasSchedule
    from multidiff.core.space import TensorSpace
    from multidiff.core.state import State

    torch.manual_seed(seed)
    space = TensorSpace()
    space.categorical = g.discrete
    process = EDMProcess(KarrasSchedule(), sigma_data=sigma_data)
    student = Preconditioned(PointNet(hidden, seed=seed, dims=g.dims), process, space)
    target = copy.deepcopy(student).requires_grad_(False)
    grid = karras_levels(0.002, 80.0, levels)
    gen = torch.Generator().manual_seed(seed)
    state = State(torch.zeros(batch, g.dims), None, {})  # no condition, no context: what the denoiser reads

    def loss() -> torch.Tensor:
        return consistency_loss(
            lambda x, s: student(x, s, state),
            lambda x, s: target(x, s, state),
            g.denoise_items,
            g.sample(batch, gen).float(),
            torch.randn(batch, g.dims, generator=gen),
            grid,
            sample_index(batch, levels, gen),
            lambda v: v.reshape(-1, 1),
            lambda err: err.mean(1),
            g.discrete,
            gen,
            segments,
            teacher_steps,
            huber=huber,
        )

    def follow() -> None:
        with torch.no_grad():
            for t, s in zip(target.parameters(), student.parameters()):
                t.lerp_(s, 1 - target_decay)

    return fit_student(student, loss, steps, lr, log_every, follow)


def fit_student(student, loss, steps: int, lr: float, log_every: int = 0, after_step=None):
    """Adam on ``loss()`` (per item, averaged) for ``steps`` steps, the learning rate on a cosine to zero;
    ``after_step()`` after each (a target network's average)."""
    import math

    opt = torch.optim.Adam(student.parameters(), lr=lr)
    for step in range(steps):
        value = loss().mean()
        opt.zero_grad()
        value.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        if after_step is not None:
            after_step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}: loss {value.item():.3e}", flush=True)
    return student.eval()


def sample_mixture(
    denoise,
    sampler,
    n: int,
    steps: int,
    dims: int = 2,
    discrete=None,
    seed: int = 1,
    sigma_data: float = 1.5,
    spacing: str | None = None,
):
    """``n`` samples of ``sampler`` (a ``sample_*`` function) on a denoiser D(x, sigma (n,)), started at
    sqrt(sigma_max^2 + sigma_data^2); the consistency sampler takes the ``karras_open`` levels, the others the
    Karras grid, unless ``spacing`` says. A discrete block moves by its chain."""
    from multidiff.core.samplers import sample_consistency
    from multidiff.core.schedules import KarrasSchedule

    gen = torch.Generator().manual_seed(seed)
    spacing = spacing or ("karras_open" if sampler is sample_consistency else "karras")
    sigmas = KarrasSchedule().sigmas(steps, spacing)
    x = torch.randn(n, dims, generator=gen) * (sigmas[0] ** 2 + sigma_data**2) ** 0.5
    model = lambda v, s: denoise(v, s.expand(n))  # noqa: E731
    if discrete is not None:
        model = chain = discrete.chain(model, gen)
    with torch.no_grad():
        out = sampler(model, x, sigmas, noise_sampler=lambda a, b: torch.randn(n, dims, generator=gen))
    return out if discrete is None else chain.finish(out)


def trajectory_mixture(
    g: GaussianMixture | LabelledMixture,
    steps: int,
    trajectories: int = 20_000,
    segments: int = 4,
    teacher_steps: int = 12,
    batch: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    sigma_data: float = 1.5,
    hidden: int = 256,
    log_every: int = 0,
):
    """A K-jump student (:class:`PointNet` in EDM preconditioning) learned from ``trajectories`` stored solves of
    the mixture's exact denoiser by DPM-Solver++(2M) on ``segments * teacher_steps + 1`` Karras levels
    (:func:`multidiff.core.distill.trajectory_states`, ``trajectory_loss``; Adam, cosine learning rate); of a
    :class:`LabelledMixture`, with its labels as a discrete block moved by the solver's chain."""

    from multidiff.core.denoiser import Preconditioned
    from multidiff.core.distill import jump_pair, trajectory_loss, trajectory_states
    from multidiff.core.processes import EDMProcess
    from multidiff.core.samplers import sample_dpmpp_2m
    from multidiff.core.schedules import KarrasSchedule
    from multidiff.core.space import TensorSpace
    from multidiff.core.state import State

    torch.manual_seed(seed)
    process = EDMProcess(KarrasSchedule(), sigma_data=sigma_data)
    discrete = getattr(g, "discrete", None)
    space = TensorSpace()
    space.categorical = discrete
    student = Preconditioned(PointNet(hidden, seed=seed, dims=g.dims), process, space)
    fine = process.schedule.sigmas(segments * teacher_steps + 1, "karras").double()
    tops = process.schedule.sigmas(segments, "karras_open")
    gen = torch.Generator().manual_seed(seed)
    prior = torch.randn(trajectories, g.dims, generator=gen, dtype=torch.float64) * process.prior_std()
    teacher = g.denoise if discrete is None else g.denoise_items
    bank = trajectory_states(sample_dpmpp_2m, teacher, prior, fine, teacher_steps, discrete, gen).float()
    state = State(torch.zeros(batch, g.dims), None, {})

    def loss() -> torch.Tensor:
        i = torch.randint(0, trajectories, (batch,), generator=gen)
        k = torch.randint(0, segments, (batch,), generator=gen)
        b = lambda v: v.reshape(-1, 1)  # noqa: E731
        x, aim = jump_pair(bank[:, i], k, b, discrete)
        return trajectory_loss(
            lambda x, s: student(x, s, state), x, tops[k], tops[k + 1], aim, b, lambda err: err.mean(1), None, discrete
        )

    return fit_student(student, loss, steps, lr, log_every)


def sample_student(student, n: int, steps: int, seed: int = 1, segments: int = 1) -> torch.Tensor:
    """``n`` samples of a distilled student with multistep consistency sampling (``karras_open`` levels); of a
    multistep student (``segments`` = ``steps``), its deterministic jumps: the step function ``generate`` takes."""
    from multidiff.config import sampler_config
    from multidiff.core.categorical import discrete_of
    from multidiff.core.state import State
    from multidiff.module import student_steps
    from multidiff.sampling import build_sampler

    dims = student.net.net[-1].out_features
    state = State(torch.zeros(n, dims), None, {})
    return sample_mixture(
        lambda v, s: student(v, s, state),
        student_steps(build_sampler(sampler_config("consistency"), steps=steps), {"segments": segments}),
        n,
        steps,
        dims,
        discrete_of(student.space),
        seed,
        student.process.sigma_data,
        "karras_open",
    )
