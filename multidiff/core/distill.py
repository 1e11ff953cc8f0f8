"""Consistency distillation (Song et al. 2023, Alg. 2): a student f(x, sigma) learns to map every point of a
frozen teacher's probability-flow ODE trajectory to the trajectory's end, so that one evaluation (or a few, with
:func:`~.samplers.sample_consistency`) draws a sample.

For a pair of adjacent levels sigma_n < sigma_{n+1} of a Karras grid, x_{n+1} = x0 + sigma_{n+1} z is moved to
sigma_n by one Heun step of the teacher's ODE, and the student at (x_{n+1}, sigma_{n+1}) is pulled towards the
target network (a slow average of the student, or the student itself without gradient) at the moved point. The
student is the same preconditioned denoiser as any model, D(x; sigma) = c_skip x + c_out F: the processes'
c_skip -> 1, c_out -> 0 as sigma -> 0 is the boundary condition f(x, sigma_min) ~ x, and at the grid's
lowest level the target is the moved point itself. Functions of denoisers D(x, sigma per item), nothing of
Lightning or domains.

Multistep consistency distillation (Heek et al. 2024) cuts the grid into ``segments`` equal runs of levels: the
student at a level maps to the lowest level of its run (the data for the lowest run) by a DDIM jump of its own
estimate, x_s = D + (s / sigma) (x - D), so that K segments sample in exactly K deterministic jumps. Each jump
spans a quarter of the trajectory at K = 4 instead of all of it, which a short distillation learns far better;
K = 1 is consistency distillation as above.

Blocks of a discrete process (:class:`~.categorical.DiscreteCategorical`: a graph's atom types and bond orders)
do not follow an ODE: they hold classes that the teacher's step moves by a draw of their exact posterior, as its
sampler does. The flow's end is then random given the start, and the student learns its expectation: for the
blocks, the class probabilities the multistep sampler's discrete chain draws from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .categorical import DiscreteCategorical
from .parts import Parts, stack
from .schedules import Schedule

#: a denoiser of per-item noise levels: D(x, sigma (B,)) -> estimate of x0
ItemDenoiser = Callable[[Tensor, Tensor], Tensor]
#: broadcasts per-item values (B,) against a state's rows (the space's ``per_item``)
Broadcast = Callable[[Tensor], Tensor]


def karras_levels(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> Tensor:
    """``n`` ascending noise levels uniform in sigma^(1/rho) (EDM eq. 5), the discretisation the student learns."""
    if n < 2:
        raise ValueError(f"the distillation grid needs at least 2 levels, got {n}")
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((lo + u * (hi - lo)) ** rho).float()


def heun_step(
    teacher: ItemDenoiser,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    b: Broadcast,
    discrete: DiscreteCategorical | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One Heun step of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, per item, from ``sigma``
    down to ``sigma_next`` > 0 (EDM Alg. 1). ``discrete``: the state's blocks of a discrete process move by one
    draw of their exact posterior given the first estimate, which both evaluations and the result share."""
    s, s_next = b(sigma), b(sigma_next)
    first = teacher(x, sigma)
    d = (x - first) / s
    x_euler = x + (s_next - s) * d
    if discrete is not None:
        x_euler = discrete.advance(x_euler, x, first, s, s_next, generator)
    d_next = (x_euler - teacher(x_euler, sigma_next)) / s_next
    moved = x + (s_next - s) * (d + d_next) / 2
    return moved if discrete is None else discrete.carry(moved, x_euler)


def teacher_solve(
    teacher: ItemDenoiser,
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    b: Broadcast,
    steps: int = 1,
    rho: float = 7.0,
    discrete: DiscreteCategorical | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps`` Heun steps of the teacher's ODE from ``sigma`` down to ``sigma_next`` (per item), on levels
    uniform in sigma^(1/rho) between them (the Karras grid refined): with a coarse grid of few levels, the
    teacher's move stays accurate where one Heun step across it would not."""
    check_teacher_steps(steps)
    hi, lo = sigma.double() ** (1 / rho), sigma_next.double() ** (1 / rho)
    at = lambda i: (hi + (lo - hi) * (i / steps)) ** rho  # noqa: E731
    for i in range(steps):
        x = heun_step(teacher, x, at(i).to(sigma.dtype), at(i + 1).to(sigma.dtype), b, discrete, generator)
    return x


def check_teacher_steps(steps: int) -> None:
    """Refuse a count of the teacher's steps per pair that is no whole number >= 1."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"distill.teacher_steps={steps!r}: give a whole number of teacher steps >= 1")


def check_huber(huber: float | None) -> None:
    """Refuse a pseudo-Huber constant that is not > 0 (None: the squared distance)."""
    if huber is not None and not (
        isinstance(huber, (int, float)) and not isinstance(huber, bool) and math.isfinite(huber) and huber > 0
    ):
        raise ValueError(f"distill.huber={huber!r}: the pseudo-Huber constant must be > 0 (null: squared distance)")


def check_segments(levels: int | None, segments: int) -> None:
    """Refuse a segment count that is no whole number >= 1, or that does not cut ``levels - 1`` pairs evenly
    (``levels=None``: no grid to cut, as for a student of stored trajectories)."""
    if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
        raise ValueError(f"distill.segments={segments!r}: give a whole number of segments >= 1 (1: one jump)")
    if levels is not None and (levels - 1) % segments:
        raise ValueError(
            f"{segments} segments do not cut a grid of {levels} levels ({levels - 1} steps) into equal runs: give "
            f"distill.levels = a multiple of {segments} plus 1 (e.g. {segments * ((levels - 1) // segments + 1) + 1})"
        )


def segment_ends(index: Tensor, levels: int, segments: int) -> Tensor:
    """The grid index at which the run of each training pair (n, n+1) ends below: ``segments`` equal runs of the
    ``levels - 1`` pairs, the lowest ending at index 0 (whose jump goes to the data)."""
    check_segments(levels, segments)
    per = (levels - 1) // segments
    return torch.div(index, per, rounding_mode="floor") * per


def jump(denoised: Tensor, x: Tensor, ratio: Tensor) -> Tensor:
    """The DDIM (probability-flow Euler) jump from x at sigma to the level ``ratio`` * sigma given the estimate
    ``denoised``: D + (s / sigma) (x - D); ``ratio`` broadcast per item, 0 jumps to the data."""
    return denoised + ratio * (x - denoised)


def consistency_loss(
    student: ItemDenoiser,
    target: ItemDenoiser,
    teacher: ItemDenoiser,
    x0: Tensor,
    noise: Tensor,
    levels: Tensor,
    index: Tensor,
    b: Broadcast,
    item_mean: Callable[[Tensor], Tensor],
    discrete: DiscreteCategorical | None = None,
    generator: torch.Generator | None = None,
    segments: int = 1,
    teacher_steps: int = 1,
    rho: float = 7.0,
    huber: float | None = None,
) -> Tensor:
    """Per-item squared distance between the student at (x0 + sigma_{n+1} noise, sigma_{n+1}) and the target at
    the teacher's Heun step to sigma_n; ``index`` (B,) holds n in [0, len(levels) - 2].

    ``segments`` > 1 (multistep consistency): both map to the end s of their run by :func:`jump` (the target is
    the moved point itself when sigma_n = s) and the distance is taken there, between the jumps (at s = 0,
    consistency distillation's loss). On the mixture this beat the distance between the estimates that jump onto
    each other, which weights a pair by 1 / (1 - s / sigma_{n+1})^2 (4-step mean error 0.04 against 0.12).

    ``discrete``: blocks that follow a discrete process hold a draw of ``q(z | x0's class)`` at sigma_{n+1} and
    move by a posterior draw, so the moved point is random beyond the noise: the student learns the target's
    expectation there, the class probabilities' included (a squared error of probabilities is a proper score);
    their columns take no jump (the sampler's chain draws them from the estimate's probabilities).

    ``teacher_steps`` > 1: the teacher moves by that many Heun steps (:func:`teacher_solve`, ``rho`` the grid's).
    With ``segments + 1`` levels every pair ends its run and the aim is the teacher's own solution across the
    whole run, with no target network: direct distillation of each jump (Luhman & Luhman 2021), no bootstrapping
    (discrete blocks excepted: above the lowest level their aim stays the target's class probabilities).

    ``huber`` c: the pseudo-Huber distance sqrt(d + c^2) - c of the mean squared distance d per item (Song &
    Dhariwal 2023, with their c = 0.00054 sqrt(dim) taken per element): about d / 2c for small distances and
    sqrt(d) for large ones, so the pairs far from their aim do not outweigh the rest."""
    sigma, sigma_prev = levels[index + 1], levels[index]
    end = segment_ends(index, len(levels), segments)
    s = torch.where(end > 0, levels[end], torch.zeros_like(sigma))
    x = x0 + b(sigma) * noise
    if discrete is not None:
        x = discrete.noisy(x, x0, b(sigma), generator)
    with torch.no_grad():
        moved = teacher_solve(teacher, x, sigma, sigma_prev, b, teacher_steps, rho, discrete, generator)
        if len(levels) - 1 == segments and discrete is None:  # runs of one pair: every aim is the teacher's own
            aim = moved
        else:
            # at a run's lowest level the consistency function is the identity: the moved point is the target
            at_end = b((index == end).to(sigma.dtype))
            estimate = target(moved, sigma_prev)
            aim = at_end * moved + (1 - at_end) * jump(estimate, moved, b(s / sigma_prev))
        if discrete is not None:  # the blocks' aim: the expected end of their chain, as probabilities
            lowest = b((index == 0).to(sigma.dtype))
            aim = discrete.carry(aim, lowest * moved + (1 - lowest) * estimate)
    out = student(x, sigma)
    jumped = jump(out, x, b(s / sigma))
    out = jumped if discrete is None else discrete.carry(jumped, out)
    return distance_to(out, aim, item_mean, huber)


def distance_to(out: Tensor, aim: Tensor, item_mean: Callable[[Tensor], Tensor], huber: float | None) -> Tensor:
    """Per item: the mean squared distance d of ``out`` from ``aim``, or its pseudo-Huber sqrt(d + c^2) - c."""
    dtype = torch.promote_types(out.dtype, torch.float32)
    distance = item_mean((out.to(dtype) - aim.to(dtype)) ** 2)
    # sqrt(d + c^2) - c, written without the difference of two near-equal numbers at small d
    return distance if huber is None else distance / (torch.sqrt(distance + huber**2) + huber)


def trajectory_states(
    solver: Callable[..., Tensor],
    teacher: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor,
    every: int,
    discrete: DiscreteCategorical | None = None,
    generator: torch.Generator | None = None,
) -> Tensor | Parts:
    """The teacher's solve of ``x`` along ``sigmas`` (``solver``, a sampler of :mod:`.samplers`; ``teacher``
    D(x, sigma scalar)) kept at the K levels ``sigmas[0], sigmas[every], ...`` above the last run and at its end:
    ``(K + 1, *x.shape)`` (for :class:`~.parts.Parts`, each part stacked). On the Karras grid of K * every + 1
    levels those K levels are the ``karras_open`` levels of K steps, where a K-jump student starts its jumps.

    ``discrete``: its blocks move by posterior draws (the sampler's chain, on ``generator``): a kept state's blocks
    hold the classes the chain held at that level, the end's its last class probabilities (the expected data)."""
    runs = (len(sigmas) - 2) // every
    if runs < 1 or runs * every != len(sigmas) - 2:
        raise ValueError(f"a grid of {len(sigmas)} levels (0 included) is not K runs of {every} steps plus one")
    kept: list[Tensor] = []

    def keep(i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
        if i % every == 0 and len(kept) < runs:
            kept.append(x.clone())

    if discrete is None:
        end = solver(teacher, x, sigmas, callback=keep)
        return stack([*kept, end])
    wanted = {float(sigmas[i * every]) for i in range(runs)}
    seen: dict[float, Tensor] = {}

    def recorded(x: Tensor, sigma: Tensor) -> Tensor:  # x with the chain's classes written in, first call per level
        if float(sigma) in wanted:
            seen.setdefault(float(sigma), x)
        return teacher(x, sigma)

    chain = discrete.chain(recorded, generator)
    end = chain.finish(solver(chain, x, sigmas, callback=keep))
    return stack([*(discrete.carry(k, seen[float(sigmas[i * every])]) for i, k in enumerate(kept)), end])


def check_jumps_at(jumps_at: object, segments: int, sigma_min: float, sigma_max: float) -> None:
    """Refuse inner jump levels that are not ``segments - 1`` numbers descending strictly within
    (``sigma_min``, ``sigma_max``): the first jump starts at the prior's level, the last ends at the data."""
    if jumps_at is None:
        return
    want = f"give {segments - 1} noise level(s) descending within ({sigma_min:.3g}, {sigma_max:.3g})"
    numbers = isinstance(jumps_at, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in jumps_at
    )
    if not numbers or len(jumps_at) != segments - 1:
        raise ValueError(
            f"distill.jumps_at={jumps_at!r}: where jumps 2..{segments} of {segments} start; {want}, or null for "
            "the karras_open levels"
        )
    levels = [float(v) for v in jumps_at]
    bounds = [sigma_max, *levels, sigma_min]
    if any(not a > b for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"distill.jumps_at={levels}: {want}")


def jump_tops(schedule: Schedule, segments: int, jumps_at: list[float] | tuple[float, ...] | None = None) -> Tensor:
    """Where each of a K-jump student's jumps starts, then 0 (the data): the ``karras_open`` levels of K steps, or
    the prior's level (``schedule.sigma_max``) followed by the K - 1 levels ``jumps_at``."""
    if jumps_at is None:
        return schedule.sigmas(segments, "karras_open")
    return torch.tensor([schedule.sigma_max, *jumps_at, 0.0], dtype=torch.float64).float()


def run_grid(tops: Tensor, sigma_min: float, every: int, rho: float = 7.0) -> Tensor:
    """A solver's grid through the jump levels ``tops`` (descending, ending at 0): each run from one top to the
    next (the last down to ``sigma_min``) in ``every`` steps uniform in sigma^(1/rho), then ``sigma_min`` and 0, so
    that the kept states of :func:`trajectory_states` lie exactly at the tops. On the ``karras_open`` tops it is
    the Karras grid of K * every + 1 levels."""
    ends = [*tops[:-1].double().tolist(), sigma_min]
    u = torch.linspace(0, 1, every + 1, dtype=torch.float64)[:-1]
    runs = [(a ** (1 / rho) + u * (b ** (1 / rho) - a ** (1 / rho))) ** rho for a, b in zip(ends[:-1], ends[1:])]
    return torch.cat([*runs, torch.tensor([sigma_min, 0.0], dtype=torch.float64)]).float()


def balanced(losses: Tensor, k: Tensor, scale: Tensor, update: bool, decay: float = 0.99) -> Tensor:
    """Each item's distance ``losses`` divided by the running mean of its jump's (``k``: each item's jump; ``scale``
    ``(K,)``, 0 for a jump not yet seen, moved toward this batch's mean of each jump by ``1 - decay`` in place when
    ``update``), so that every jump's loss is about 1 whatever its size (EDM2's per-level loss weights at their
    optimum, Karras et al. 2024)."""
    if update:
        for j in k.unique().tolist():
            seen = losses.detach()[k == j].mean().to(scale.dtype)
            scale[j] = torch.where(scale[j] > 0, decay * scale[j] + (1 - decay) * seen, seen)
    s = scale[k]
    return losses / torch.where(s > 0, s, torch.ones_like(s)).to(losses.dtype)


def states_at(states: Tensor, level: Tensor, b: Broadcast) -> Tensor:
    """Each item's state at its own stored level: ``states`` ``(L, rows, ...)`` (or :class:`~.parts.Parts` of
    them) as :func:`trajectory_states` keeps them, ``level`` ``(B,)`` an index per item, ``b`` the broadcast of
    per-item values over a state's rows (items of varying size: the rows of one item share its level)."""
    index = b(level).unsqueeze(0)  # (1, rows, 1, ...): broadcast along the rest of each row
    return torch.take_along_dim(states, index, dim=0).squeeze(0)


def jump_pair(
    states: Tensor | Parts, level: Tensor, b: Broadcast, discrete: DiscreteCategorical | None = None
) -> tuple[Tensor | Parts, Tensor | Parts]:
    """Each item's stored state at its ``level`` and its aim, the teacher's state a level later (``states`` as
    :func:`trajectory_states` keeps them); a discrete process's blocks aim at the solve's end (its class
    probabilities) from every level."""
    x, aim = states_at(states, level, b), states_at(states, level + 1, b)
    return x, aim if discrete is None else discrete.carry(aim, states.select(0, -1))


def trajectory_loss(
    student: ItemDenoiser,
    x: Tensor,
    sigma: Tensor,
    s: Tensor,
    aim: Tensor,
    b: Broadcast,
    item_mean: Callable[[Tensor], Tensor],
    huber: float | None = None,
    discrete: DiscreteCategorical | None = None,
) -> Tensor:
    """Per item: the student's jump from ``x`` at ``sigma`` to ``s`` (0: to the data) against ``aim``, the teacher's
    own solution at ``s`` from the same ``x`` (direct distillation of each jump, Luhman & Luhman 2021, on stored
    trajectories: no teacher call and no target network while training). ``discrete``: the blocks take no jump
    (the sampler's chain draws them from the estimate's class probabilities) and ``aim``'s blocks are the
    solve's last class probabilities, which the estimate learns to expect."""
    out = student(x, sigma)
    jumped = jump(out, x, b(s / sigma))
    return distance_to(jumped if discrete is None else discrete.carry(jumped, out), aim, item_mean, huber)


def sample_index(n: int, levels: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
    """Which adjacent pair of levels each item trains on: uniform over the ``levels - 1`` pairs."""
    return torch.randint(0, levels - 1, (n,), generator=generator).to(device)


def guided_teacher(plain: ItemDenoiser, conditional: ItemDenoiser, w: Tensor, b: Broadcast) -> ItemDenoiser:
    """The teacher's classifier-free guided denoiser at a scale ``w`` per item: D_plain + w (D_cond - D_plain)
    (Ho & Salimans 2022); a guidance-conditioned student (Meng et al. 2023) learns the consistency function of its
    flow, with ``w`` as an input."""
    return lambda x, sigma: (p := plain(x, sigma)) + b(w) * (conditional(x, sigma) - p)
