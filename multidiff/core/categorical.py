"""Categorical features denoised as class probabilities.

A one-hot block scaled by ``s`` (atom types, bond orders) relaxed into a continuous state (JODO, Huang et al.
2023) has an exact denoiser of a known form: E[x0 | x] = s * p(class | x), the posterior class probabilities
times the scale. :class:`Categorical` builds that form into the model: the network's outputs on a block are read
as logits, the denoiser returns ``s * softmax(logits)`` there, and training takes the cross-entropy against the
true class, whose minimiser is exactly the posterior.

The logits carry the block's own evidence in closed form: with ``x = s e_c + sigma n`` the likelihood of class
``c`` is proportional to ``exp(s x_c / sigma^2)``, so the posterior logits are ``s x_c / sigma^2`` plus the log
prior of ``c`` given everything else. The network supplies the second term only (the class given the rest of the
molecule); near sigma = 0 the first decides, as it should, and far from it the network's prior does.

So the model's estimate is a probability vector times the scale at every noise level (an eps-parameterised
estimate ``x - sigma eps`` can leave the simplex by orders of magnitude at high noise; guidance may still
extrapolate beyond it), and the loss keeps its signal where the squared error of a nearly clean one-hot has none.
The process's loss weight multiplies the cross-entropy as it does the squared errors. Samplers see a denoiser like
any other and run unchanged; the process (schedule, scalings) still governs every other column.

:class:`DiscreteCategorical` keeps the blocks discrete instead (D3PM, Austin et al. 2021, with a marginal prior as
MiDi and EQGAT-diff use): at noise level sigma a block holds the one-hot of a class that is the data's with
probability ``a = s^2 / (s^2 + sigma^2)`` (the relaxation's signal fraction, so ``scale`` delays or advances a
block as it does there) and a draw from the block's ``prior`` otherwise. The same network output is the log prior
given the rest; the likelihood term becomes ``log q(z | class)``; the continuous samplers move the other columns
while :class:`DiscreteChain` draws each block's next class from the exact discrete posterior given the network's
class probabilities (an ancestral step), at whatever noise levels the sampler calls the denoiser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .parts import Parts


@dataclass(frozen=True)
class Block:
    """Columns ``start:stop`` of part ``part`` (``None`` for a plain-tensor state) hold a one-hot times
    ``scale``; ``weight`` multiplies its cross-entropy in the loss."""

    part: str | None
    start: int
    stop: int
    scale: float
    weight: float = 1.0
    prior: tuple[float, ...] | None = None  # the discrete process's class marginals (its state at infinite noise)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop - 1:
            raise ValueError(f"categorical block {self}: needs at least two classes (start < stop - 1)")
        if self.scale <= 0 or self.weight < 0:
            raise ValueError(f"categorical block {self}: scale must be > 0 and weight >= 0")
        if self.prior is not None and (
            len(self.prior) != self.stop - self.start or min(self.prior) <= 0 or abs(sum(self.prior) - 1) > 1e-6
        ):
            raise ValueError(
                f"categorical block {self}: prior needs one probability > 0 per class ({self.stop - self.start}), "
                "summing to 1"
            )

    def classes(self, x: Any) -> Tensor:
        """The class of each row of ``x``'s block (the argmax of its columns)."""
        return _get(x, self.part)[:, self.start : self.stop].argmax(1)

    def prior_tensor(self, like: Tensor) -> Tensor:
        if self.prior is None:
            raise ValueError(f"categorical block {self}: a discrete process needs the block's prior")
        return torch.tensor(self.prior, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)


def _get(x: Any, part: str | None) -> Tensor:
    return x if part is None else x[part]


def _put(x: Any, part: str | None, value: Tensor) -> Any:
    return value if part is None else x.replace(**{part: value})


def _splice(t: Tensor, start: int, stop: int, block: Tensor) -> Tensor:
    """``t`` with columns ``start:stop`` replaced, out of place (autograd-safe)."""
    return torch.cat([t[:, :start], block.to(t.dtype), t[:, stop:]], dim=1)


class Categorical:
    """The one-hot blocks of a state, denoised as probabilities and trained by cross-entropy."""

    #: whether the blocks follow a discrete process (:class:`DiscreteCategorical`) rather than the Gaussian one
    discrete = False

    def __init__(self, blocks: list[Block]):
        self.blocks = list(blocks)

    def noisy(self, x: Any, x0: Any, sigma: Any, generator: torch.Generator | None = None) -> Any:
        """The training input at noise ``sigma`` given the Gaussian ``x = x0 + sigma n``: unchanged here."""
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.blocks})"

    @staticmethod
    def logits(b: Block, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts) -> Tensor:
        """Block ``b``'s posterior logits: its likelihood ``scale x / sigma^2`` (``sigma`` per row, as the space's
        ``per_item`` broadcasts it) plus the network's log prior, in at least float32."""
        dtype = torch.promote_types(_get(x, b.part).dtype, torch.float32)  # float64 stays float64
        own = _get(x, b.part)[:, b.start : b.stop].to(dtype)
        s2 = _get(sigma, b.part).to(dtype).clamp(min=1e-4) ** 2
        return _get(raw, b.part)[:, b.start : b.stop].to(dtype) + b.scale * own / s2

    def denoise(
        self, d: Tensor | Parts, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts
    ) -> Tensor | Parts:
        """The estimate ``d`` with each block replaced by ``scale * softmax(logits)``."""
        for b in self.blocks:
            probs = torch.softmax(self.logits(b, raw, x, sigma), dim=1)
            d = _put(d, b.part, _splice(_get(d, b.part), b.start, b.stop, b.scale * probs))
        return d

    def loss(
        self, err: Tensor | Parts, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts, x0: Tensor | Parts
    ) -> Tensor | Parts:
        """The elementwise loss ``err`` with each block's columns replaced by its weighted cross-entropy (the
        true class is the argmax of ``x0``'s block), so item means count it once per column as they count a
        squared error."""
        for b in self.blocks:
            logits = self.logits(b, raw, x, sigma)
            target = _get(x0, b.part)[:, b.start : b.stop].argmax(1)
            ce = F.cross_entropy(logits, target, reduction="none") if len(target) else logits.sum(1)
            block = (b.weight * ce).unsqueeze(1).expand(-1, b.stop - b.start)
            err = _put(err, b.part, _splice(_get(err, b.part), b.start, b.stop, block))
        return err


def _one_hot(b: Block, z: Tensor, like: Tensor) -> Tensor:
    return b.scale * F.one_hot(z, b.stop - b.start).to(like.dtype)


def _with_classes(x: Any, b: Block, z: Tensor) -> Any:
    """``x`` with block ``b`` holding the one-hot of classes ``z`` times its scale."""
    cols = _get(x, b.part)
    return _put(x, b.part, _splice(cols, b.start, b.stop, _one_hot(b, z, cols)))


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One class per row from (unnormalised, non-negative) row weights, drawn on the generator's device (for
    reproducibility, as :func:`~multidiff.core.space.randn` draws noise)."""
    if len(probs) == 0:
        return torch.zeros(0, dtype=torch.long, device=probs.device)
    device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(device), 1, generator=generator).squeeze(1).to(probs.device)


def _probabilities(b: Block, estimate: Tensor) -> Tensor:
    """Block ``b``'s class probabilities from a denoiser's estimate (``scale`` times them); guidance may
    extrapolate off the simplex: back onto it."""
    p = (estimate[:, b.start : b.stop].float() / b.scale).clamp(min=0) + 1e-12
    return p / p.sum(1, keepdim=True)


def _level(sigma: Tensor) -> Tensor:
    """Noise levels in at least float32 (float64 stays float64)."""
    return sigma.to(torch.promote_types(sigma.dtype, torch.float32))


def _uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(n, generator=generator, device=device).to(like.device)


class DiscreteCategorical(Categorical):
    """The one-hot blocks as discrete states (module docstring): ``z ~ a delta(class) + (1 - a) prior`` with
    ``a = scale^2 / (scale^2 + sigma^2)``; every block needs its ``prior``."""

    discrete = True

    def __init__(self, blocks: list[Block]):
        super().__init__(blocks)
        for b in self.blocks:
            if b.prior is None:
                raise ValueError(f"categorical block {b}: a discrete process needs the block's prior (its marginals)")

    @staticmethod
    def logits(b: Block, raw: Tensor | Parts, x: Tensor | Parts, sigma: Tensor | Parts) -> Tensor:
        """The network's log prior plus ``log q(z | class)`` up to a constant: ``log(1 + a / ((1 - a) m_z))`` at
        the current class ``z``, 0 elsewhere (``a / (1 - a) = scale^2 / sigma^2``, free of cancellation)."""
        out = _get(raw, b.part)[:, b.start : b.stop]
        dtype = torch.promote_types(out.dtype, torch.float32)
        z = b.classes(x)
        s2 = _get(sigma, b.part).to(dtype).clamp(min=1e-4) ** 2  # per row (N, 1), or one level
        bonus = torch.log1p(b.scale**2 / (s2 * b.prior_tensor(out)[z][:, None]))
        return out.to(dtype) + bonus * F.one_hot(z, b.stop - b.start).to(dtype)

    @staticmethod
    def keep(b: Block, sigma: Tensor) -> Tensor:
        """The probability ``a`` that a block still holds its data class at noise ``sigma``."""
        return b.scale**2 / (b.scale**2 + sigma.clamp(min=0) ** 2)

    def corrupt(self, b: Block, classes: Tensor, sigma: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draws of ``q(z | class)`` at ``sigma`` (per row or one level for all)."""
        a = self.keep(b, sigma.to(torch.float32)).reshape(-1)
        kept = _uniform(len(classes), generator, classes) < a.to(classes.device)
        m = b.prior_tensor(a).expand(len(classes), -1)
        return torch.where(kept, classes, _draw(m, generator))

    def noisy(self, x: Any, x0: Any, sigma: Any, generator: torch.Generator | None = None) -> Any:
        """``x`` with each block replaced by a draw of ``q(z | x0's class)`` at the row's ``sigma``."""
        for b in self.blocks:
            rows = len(_get(x, b.part))
            x = _with_classes(x, b, self.corrupt(b, b.classes(x0), _get(sigma, b.part).expand(rows, 1), generator))
        return x

    def step(
        self, b: Block, z: Tensor, probs: Tensor, a_from: Tensor, a_to: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """The next class of each row, from ``z`` at keep-probability ``a_from`` to ``a_to``. Toward the data
        (``a_to > a_from``): the exact posterior (:meth:`posterior`); away from it (a sampler's re-noising):
        ``q(z' | z)``."""
        if a_to <= a_from:
            r = a_to / a_from
            kept = _uniform(len(z), generator, z) < r
            return torch.where(kept, z, _draw(b.prior_tensor(probs).expand(len(z), -1), generator))
        return _draw(self.posterior(b, z, probs, a_from, a_to), generator)

    @staticmethod
    def posterior(b: Block, z: Tensor, probs: Tensor, a_from: Tensor, a_to: Tensor) -> Tensor:
        """Unnormalised weights of the next class, from ``z`` at keep-probability ``a_from`` to ``a_to > a_from``
        (one level, or one per row (N, 1)): ``sum_k p_k q(z' | z, k)`` for the class probabilities ``probs``,
        ``q(z' = j | z, k) ~ q(z | z' = j) q(j | k)``."""
        m = b.prior_tensor(probs)
        hot = F.one_hot(z, b.stop - b.start).to(probs.dtype)
        r = a_from / a_to
        m_z = m[z][:, None]
        to_now = r * hot + (1 - r) * m_z  # q(z | z' = j) per j
        evidence = a_from * hot + (1 - a_from) * m_z  # q(z | x0 = k) per k
        ratio = probs / evidence
        weights = to_now * (a_to * ratio + (1 - a_to) * m * ratio.sum(1, keepdim=True))
        return weights.clamp(min=0) + 1e-30

    def advance(
        self,
        x_next: Tensor | Parts,
        x: Tensor | Parts,
        estimate: Tensor | Parts,
        sigma: Tensor | Parts,
        sigma_next: Tensor | Parts,
        generator: torch.Generator | None = None,
    ) -> Tensor | Parts:
        """``x_next`` with each block at a class drawn from the exact posterior from ``x``'s classes (its blocks
        hold one-hots, as :meth:`noisy` and the chain write them) at ``sigma`` to ``sigma_next < sigma`` (per row,
        as the space's ``per_item`` broadcasts them), given ``estimate``'s class probabilities: the discrete half of
        one step of a teacher in distillation."""
        for b in self.blocks:
            rows = len(_get(x_next, b.part))
            probs = _probabilities(b, _get(estimate, b.part))
            a_from, a_to = (self.keep(b, _level(_get(s, b.part)).expand(rows, 1)) for s in (sigma, sigma_next))
            x_next = _with_classes(x_next, b, _draw(self.posterior(b, b.classes(x), probs, a_from, a_to), generator))
        return x_next

    def carry(self, x: Tensor | Parts, source: Tensor | Parts) -> Tensor | Parts:
        """``x`` with each block's columns taken from ``source``."""
        for b in self.blocks:
            block = _get(source, b.part)[:, b.start : b.stop]
            x = _put(x, b.part, _splice(_get(x, b.part), b.start, b.stop, block))
        return x

    def chain(
        self,
        denoise: Callable,
        generator: torch.Generator | None = None,
        observation: Any = None,
        clean_known: bool = False,
    ) -> DiscreteChain:
        """The sampling denoiser that carries the blocks' classes (:class:`DiscreteChain`)."""
        return DiscreteChain(self, denoise, generator, observation, clean_known)


class DiscreteChain:
    """A sampling denoiser ``D(x, sigma)`` for :class:`DiscreteCategorical` blocks: it keeps each block's current
    classes, moves them to every new noise level the sampler asks for (:meth:`DiscreteCategorical.step`, from the
    class probabilities of its previous call), writes them into ``x`` (the sampler's values of these columns are
    not used) and returns the wrapped denoiser's estimate. Calls at the same level (guidance's two) share the
    classes. ``observation``: known rows of a block take the observed class, as is (``clean_known``: a model
    trained with observations) or drawn from ``q(z | class)`` at the level, as replacement noises the rest.
    :meth:`finish` puts the last estimate into the sampler's result. Resampling jumps (``resample``) re-noise the
    continuous columns only: a call back at the same level keeps the blocks' classes."""

    def __init__(
        self,
        cat: DiscreteCategorical,
        denoise: Callable,
        generator: torch.Generator | None,
        observation: Any = None,
        clean_known: bool = False,
    ):
        self.cat, self.denoise, self.generator = cat, denoise, generator
        self.observation, self.clean_known = observation, clean_known
        self.z: dict[Block, Tensor] = {}
        self.probs: dict[Block, Tensor] = {}
        self.sigma: Tensor | None = None

    def __call__(self, x: Any, sigma: Tensor) -> Any:
        level = sigma.reshape(()).to(torch.float32)
        for b in self.cat.blocks:
            cols = _get(x, b.part)
            if b not in self.z:
                z = _draw(b.prior_tensor(cols).expand(len(cols), -1), self.generator)
            elif float(level) == float(self.sigma):
                z = self.z[b]
            else:
                a_from, a_to = self.cat.keep(b, self.sigma), self.cat.keep(b, level)
                z = self.cat.step(b, self.z[b], self.probs[b], a_from, a_to, self.generator)
            if self.observation is not None:
                known = torch.broadcast_to(_get(self.observation.mask, b.part), cols.shape)[:, b.start]
                given = b.classes(self.observation.values)
                if not self.clean_known:
                    given = self.cat.corrupt(b, given, level, self.generator)
                z = torch.where(known, given, z)
            self.z[b] = z
            x = _with_classes(x, b, z)
        self.sigma = level
        d = self.denoise(x, sigma)
        for b in self.cat.blocks:
            self.probs[b] = _probabilities(b, _get(d, b.part))
        return d

    def finish(self, x: Any) -> Any:
        """``x`` with each block set to ``scale`` times the last class probabilities (export takes the argmax)."""
        for b, p in self.probs.items():
            cols = _get(x, b.part)
            x = _put(x, b.part, _splice(cols, b.start, b.stop, b.scale * p))
        return x


def categorical_of(space: object) -> Categorical | None:
    """The space's :class:`Categorical` blocks, if it declares any (``space.categorical``)."""
    cat = getattr(space, "categorical", None)
    return cat if cat is not None and cat.blocks else None


def discrete_of(space: object) -> DiscreteCategorical | None:
    """The space's blocks if they follow a discrete process (their classes move by posterior draws)."""
    cat = categorical_of(space)
    return cat if isinstance(cat, DiscreteCategorical) else None
