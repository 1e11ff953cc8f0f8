"""The Lightning module: training-loop glue between a domain, its denoiser and a process."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from multidiff.base_module import TrainedModule
from multidiff.checkpoint import weights_digest
from multidiff.core.categorical import categorical_of, discrete_of
from multidiff.core.denoiser import Preconditioned, sampling_denoiser
from multidiff.core.distill import check_jumps_at, jump_tops
from multidiff.core.domain import Domain, State
from multidiff.core.latent import LatentDomain
from multidiff.core.noise import make_noise
from multidiff.core.observation import (
    Observation,
    conditioned_denoiser,
    masked_item_mean,
    observed_input,
    replacement_denoiser,
    sample_with_resampling,
)
from multidiff.core.options import call_strict
from multidiff.core.processes import Process
from multidiff.core.protocols import MaskSampler
from multidiff.core.samplers import sample_euler
from multidiff.core.schedules import Schedule
from multidiff.precision import resolve_precision, with_precision
from multidiff.sampling import OBSERVE_WITH, Sampling, SamplingRequest, jumps_of, segments_of

#: noise-level buckets for the per-level loss log, as log10(sigma) edges
SIGMA_BUCKETS = (-math.inf, -1.0, 0.0, 1.0, math.inf)


class DiffusionModule(TrainedModule):
    """Any denoiser, any process, any domain (``optimizer``, ``lr_scheduler``, ``run_config``: see
    :class:`~multidiff.base_module.TrainedModule`).

    ``masks``: observation-conditioned training (a mask drawn per item, the network given the mask and the
    clean observed values, the loss taken on the unknown part); needs a net built with ``observable``.
    ``distilled``: set for a few-step student (:mod:`multidiff.distillation`): its method and teacher.
    """

    kind = "diffusion"

    def __init__(
        self,
        domain: Domain,
        net: nn.Module,
        process: Process,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        cond_drop_prob: float = 0.1,
        run_config: dict | None = None,
        masks: MaskSampler | None = None,
        distilled: Mapping[str, Any] | None = None,
    ):
        super().__init__(domain, optimizer, lr_scheduler, run_config)
        self.distilled = dict(distilled) if distilled else None  # a student: method, teacher, grid
        self.process = process
        self.model = Preconditioned(net, process, domain.space)
        if isinstance(domain, LatentDomain):
            # a latent model carries its (frozen) autoencoder: its checkpoint alone samples and decodes
            self.autoencoder = domain.autoencoder.requires_grad_(False)
        if masks is not None and masks.domain != domain.name:
            raise ValueError(
                f"mask config {type(masks).__name__} is for {masks.domain!r} models; this one is {domain.name!r}"
            )
        if masks is not None and not self.model.observable:
            raise ValueError(
                f"mask config {type(masks).__name__} needs a net built with observable=true "
                f"(net {type(net).__name__} has observable={getattr(net, 'observable', False)})"
            )
        self.masks = masks
        self.cond_drop_prob = cond_drop_prob

    # -- training ---------------------------------------------------------------------------
    def diffusion_loss(self, state: State, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-item weighted losses and the noise levels they were drawn at."""
        space, x0 = self.domain.space, state.x
        n = space.num_items(x0, state.ctx)
        sigma = self.process.sample_sigma(n, x0.device, generator)
        noise = space.noise(x0, state.ctx, generator=generator)
        s = space.per_item(sigma, x0, state.ctx)
        drop = None
        if state.cond is not None and self.training and self.cond_drop_prob > 0:
            drop = torch.rand(n, device=x0.device) < self.cond_drop_prob
        x = x0 + s * noise
        categorical = categorical_of(space)
        if categorical is not None:  # a discrete process's blocks hold a draw of their classes instead
            x = categorical.noisy(x, x0, s, generator)
        known = None
        if self.masks is not None:
            known = self.masks(state, generator).expand_as(x0)
            x = observed_input(x0, x, known, space, state.ctx)
        pred = self.model.raw(x, sigma, state, cond_drop=drop, known=known)
        # at least float32 (bf16 autocast), float64 stays float64
        dtype = torch.promote_types(pred.dtype, torch.float32)
        err = (pred.to(dtype) - self.process.target(x0, noise, s).to(dtype)) ** 2
        if categorical is not None:
            err = categorical.loss(err, pred, x, s, x0)
        per_item = space.item_mean(err, state.ctx) if known is None else masked_item_mean(err, known, space, state.ctx)
        return per_item * self.process.loss_weight(sigma), sigma

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        state = self.domain.unpack(batch)
        losses, sigma = self.diffusion_loss(state)
        loss = losses.mean()
        # decided together: a rank that stopped alone would leave the others waiting in the gradient all-reduce
        finite = bool(torch.isfinite(loss))
        if self.trainer.strategy.reduce_boolean_decision(not finite, all=False):
            where = f"({loss.item()})" if not finite else "(on another process)"
            raise FloatingPointError(
                f"non-finite training loss {where} at step {self.global_step} "
                f"(sigma in [{sigma.min().item():.3g}, {sigma.max().item():.3g}]); the run stops here and "
                "the last good checkpoint is kept. Lower the learning rate or enable gradient clipping."
            )
        n = losses.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self._log_buckets("train", losses.detach(), sigma, n)
        return loss

    def _log_buckets(self, stage: str, losses: Tensor, sigma: Tensor, n: int) -> None:
        level = sigma.log10()
        for lo, hi in zip(SIGMA_BUCKETS[:-1], SIGMA_BUCKETS[1:]):
            m = (level >= lo) & (level < hi)
            if m.any():
                low = "lt" if lo == -math.inf else f"1e{int(lo)}"
                high = "inf" if hi == math.inf else f"1e{int(hi)}"
                self.log(f"{stage}/loss_sigma_{low}_{high}", losses[m].mean(), batch_size=int(m.sum()), on_epoch=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # a finite loss can still produce inf/NaN gradients; stepping on them would poison the
        # weights that the next checkpoint saves
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            raise FloatingPointError(
                f"non-finite gradients at step {self.global_step}; the run stops before the optimizer "
                "step so the last good checkpoint is kept. Lower the learning rate or enable gradient clipping."
            )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # fixed noise per batch so validation curves are comparable across epochs
        gen = torch.Generator().manual_seed(batch_idx)
        state = self.domain.unpack(batch)
        losses, sigma = self.diffusion_loss(state, generator=gen)
        self.log("val/loss", losses.mean(), prog_bar=True, batch_size=losses.shape[0], sync_dist=True)
        self._log_buckets("val", losses, sigma, losses.shape[0])

    # -- generation -------------------------------------------------------------------------
    def latent_id(self) -> str | None:
        """Which autoencoder's latents this model denoises (a digest of its weights and scale), or None for data."""
        if not isinstance(self.domain, LatentDomain):
            return None
        return weights_digest(self.autoencoder)

    def observed_by(self, observe_with: str = "auto") -> str:
        """How an observation is honoured for ``observe_with`` (:data:`OBSERVE_WITH`): ``model`` or
        ``replacement``; asking for ``model`` of a model not trained with observations is an error."""
        if observe_with not in OBSERVE_WITH:
            raise ValueError(f"observe_with={observe_with}; valid: {', '.join(OBSERVE_WITH)}")
        if observe_with == "model" and not self.model.observable:
            raise ValueError(
                "observe_with=model needs a model trained with observations (train.py mask=...); this one was "
                "not: use observe_with=replacement (or auto)"
            )
        return "model" if observe_with != "replacement" and self.model.observable else "replacement"

    @torch.no_grad()
    def generate(
        self,
        n: int,
        request: SamplingRequest,
        *,
        seed: int = 0,
        condition: Mapping[str, Any] | None = None,
        observation: Observation | None = None,
        progress: bool = True,
    ) -> State:
        """Draw ``n`` items as ``request`` says (:class:`~multidiff.sampling.SamplingRequest`: sampler, guidance,
        how an observation is honoured, precision). ``condition``: the request for :meth:`Domain.condition`
        (e.g. ``{"digit": 7}``), whose unknown keys are an error naming the valid ones; ``observation``: known
        values and mask (:meth:`Domain.observe`, e.g. the request's file read by
        :meth:`~multidiff.sampling.SamplingRequest.observation`), honoured by replacement and, for a model
        trained with observations, by the network itself (:mod:`multidiff.core.observation`)."""
        sampler, guide, resample = request.sampler, request.guide, request.resample
        precision = resolve_precision(request.precision, self.device)
        by_model = self.observed_by(request.observe_with) == "model"
        cond = call_strict(self.domain.condition, "condition", condition or {}, n)
        check_sampler_fits(sampler.name, self.distilled, request.guidance if cond is not None else None)
        step_fn = student_steps(sampler, self.distilled)
        if guide is not None and guide.domain.name != self.domain.name:
            raise ValueError(f"guide model is a {guide.domain.name!r} model; this one is {self.domain.name!r}")
        if guide is not None and (mine := self.domain.signature()) != (its := guide.domain.signature()):
            diff = ", ".join(f"{k}: {its.get(k)!r} (guide), {v!r} (here)" for k, v in mine.items() if its.get(k) != v)
            raise ValueError(f"the guide model must denoise the same state as this one; its domain differs in {diff}")
        if guide is not None and (ours := self.latent_id()) != (theirs := guide.latent_id()):
            raise ValueError(
                "the guide model must denoise the same space as this one: both on the data, or both on the latents "
                f"of the same autoencoder (this one: {ours or 'data'}, guide: {theirs or 'data'})"
            )
        if resample != 1 and observation is None:
            raise ValueError(f"resample={resample}: resampling jumps apply to an observation only")
        gen = torch.Generator().manual_seed(seed)
        if observation is not None and observation.ctx is not None:  # the observation fixes the items' sizes
            if self.domain.space.num_items(observation.values, observation.ctx) != n:
                raise ValueError(f"the observation holds {observation.ctx.get('num_items')} items; {n} requested")
            state = State(torch.zeros_like(observation.values), cond, observation.ctx).to(self.device)
        else:
            state = self.domain.template(n, cond, gen).to(self.device)
        sigmas = sampling_levels(sampler, self.process.schedule, self.distilled).to(self.device)
        noise_fn = make_noise(sampler.noise, self.domain.space, state.x, state.ctx, sigmas, gen, seed)
        x = self.domain.space.noise(state.x, state.ctx, generator=gen) * self.process.prior_std()
        if observation is not None:
            if observation.values.shape != state.x.shape:
                raise ValueError(
                    f"observation of shape {tuple(observation.values.shape)} does not fit {n} items of this model, "
                    f"shaped {tuple(state.x.shape)}"
                )
            observation = observation.to(self.device)
        modules = [self] if guide is None else [self, guide]
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        bar = tqdm(
            total=sampler.steps,
            desc=f"sampling ({sampler.name}, {sampler.steps} steps)",
            disable=not progress,
            leave=False,
        )
        try:
            by_model = by_model and observation is not None
            known = observation.mask.expand_as(state.x) if by_model else None
            denoise = sampling_denoiser(
                self.model,
                state,
                request.guidance,
                request.guidance_interval,
                None if guide is None else guide.model,
                known,
            )
            denoise = with_precision(denoise, precision, self.device)
            discrete = discrete_of(self.domain.space)
            chain = None
            if discrete is not None:  # the blocks' classes move by their own steps
                chain = denoise = discrete.chain(denoise, gen, observation, clean_known=by_model)
            if observation is None:
                x = step_fn(denoise, x, sigmas, noise_sampler=noise_fn, callback=lambda *a: bar.update(1))
            else:
                fresh = lambda like: self.domain.space.noise(like, state.ctx, generator=gen)  # noqa: E731
                space = self.domain.space
                if by_model:
                    denoise = conditioned_denoiser(denoise, observation, space, state.ctx)
                denoise = replacement_denoiser(denoise, observation, fresh, space, state.ctx)
                x = sample_with_resampling(
                    step_fn, denoise, x, sigmas, resample, noise_fn, callback=lambda *a: bar.update(1)
                )
            if chain is not None:
                x = chain.finish(x)
            if observation is not None:
                x = observation.impose(x, self.domain.space, state.ctx)
        finally:
            bar.close()
            for m, mode in zip(modules, was_training):
                m.train(mode)
        return State(x, state.cond, state.ctx)


def check_sampler_fits(sampler: str, distilled: Mapping[str, Any] | None, guidance: float | None = None) -> None:
    """A student's denoiser is a consistency function: only the consistency sampler serves it; that sampler in
    turn serves students only (on a plain model it returns blurred averages, not samples). A guidance-conditioned
    student serves the guidance scales it learned (``guidance``: the request's, when it gives a condition)."""
    scales = (distilled or {}).get("guidance")
    if scales is not None and guidance is not None and not scales[0] <= guidance <= scales[1]:
        raise ValueError(
            f"guidance={guidance}: this student learned guidance scales in [{scales[0]}, {scales[1]}] "
            "(distill.guidance); ask for one in that range, or distil again with a wider one"
        )
    if distilled and sampler != "consistency":
        jumps = jumps_of(distilled)
        steps = "steps=1..4" if jumps is None else f"steps={jumps}, its jumps"
        raise ValueError(
            f"sampler={sampler}: this model is a {distilled.get('method')} student (distilled from "
            f"{distilled.get('teacher')}); it samples with sampler=consistency ({steps}); solvers need the teacher"
        )
    if not distilled and sampler == "consistency":
        raise ValueError(
            "sampler=consistency is for students (train.py experiment=distill teacher=...); this model is not one: "
            "use a solver such as sampler=dpmpp_2m"
        )


def sampling_levels(sampler: Sampling, schedule: Schedule, distilled: Mapping[str, Any] | None) -> Tensor:
    """The noise levels a request samples on: the sampler's grid, or for a trajectory student with chosen jump
    levels (``distill.jumps_at``, checked again: a config edited by hand is refused) the levels it learned to jump
    from."""
    jumps_at = (distilled or {}).get("jumps_at")
    if jumps_at is None:
        return schedule.sigmas(sampler.steps, sampler.spacing)
    segments = segments_of(distilled)
    check_jumps_at(jumps_at, segments, schedule.sigma_min, schedule.sigma_max)
    return jump_tops(schedule, segments, jumps_at)


def student_steps(sampler: Sampling, distilled: Mapping[str, Any] | None) -> Callable[..., Tensor]:
    """The function that takes the sampler's steps. A student of K jumps (a multistep consistency student,
    ``distill.segments`` K > 1, Heek et al. 2024, or a trajectory student) learned to jump from each of its K
    segments' top level to the segment's end: sampling is those K deterministic DDIM jumps, which is Euler on the
    ``karras_open`` grid of exactly K steps (or on the levels it chose, :func:`sampling_levels`)."""
    jumps = jumps_of(distilled)
    if jumps is None:
        return sampler.fn
    if sampler.steps != jumps or sampler.spacing != "karras_open":
        raise ValueError(
            f"steps={sampler.steps}, spacing={sampler.spacing}: this student was distilled in {jumps} jumps "
            f"(distill.segments) and samples in exactly steps={jumps} on spacing=karras_open"
            + ("" if distilled.get("jumps_at") is None else f" (its levels: distill.jumps_at={distilled['jumps_at']})")
        )
    return sample_euler
