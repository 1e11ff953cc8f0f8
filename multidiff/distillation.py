"""Few-step students: consistency distillation of a trained model (``train.py experiment=distill teacher=...``).

The student is the teacher's own network, process, domain (Space, conditions, latent autoencoder) and weights
to start from; it trains by :func:`multidiff.core.distill.consistency_loss` against the frozen teacher and
samples with ``sampler=consistency`` in 1-4 evaluations. Its checkpoint is an ordinary diffusion checkpoint
whose config says ``stage: distill`` and, under ``distill``, the method, the teacher (path and a digest of its
weights) and the grid; sample.py, export and observations by replacement work on it unchanged, and it refuses
the samplers it cannot serve.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from multidiff.build import build_module, load_any
from multidiff.checkpoint import weights_digest
from multidiff.core.categorical import discrete_of
from multidiff.core.distill import (
    check_segments,
    check_teacher_steps,
    consistency_loss,
    karras_levels,
    sample_index,
)
from multidiff.module import DiffusionModule
from multidiff.student import StudentModule
from multidiff.trajectories import TrajectoryModule, bank_folder, check_trajectory_settings

#: consistency distillation (the grid, a target network) or direct distillation on stored teacher trajectories
METHODS = ("consistency", "trajectory")
#: the config groups a student takes from its teacher (the model it is), not from the command line
TEACHER_GROUPS = ("domain", "net", "process", "schedule", "autoencoder", "latent", "mask")
#: the Karras grid's rho of the sampler's levels (``karras_open``), which a multistep student's segments must share
SEGMENT_RHO = 7.0
#: the options of ``distill`` (conf/experiment/distill.yaml)
DISTILL_KEYS = (
    "method",
    "levels",
    "rho",
    "target_decay",
    "guidance",
    "segments",
    "teacher_steps",
    "huber",
    "trajectories",
    "jump_weight",
    "jumps_at",
)
#: the settings added since the first students, as a student written before them had them
LATER_DEFAULTS = {
    "segments": 1,
    "guidance": None,
    "teacher_steps": 1,
    "huber": None,
    "trajectories": None,
    "jump_weight": "uniform",
    "jumps_at": None,
}


def load_teacher(source: str, trust_targets: list[str]) -> DiffusionModule:
    """A training checkpoint, a shipped/exported model (a name or folder) or a URL of either as the teacher."""
    teacher = load_any(source, trust_targets=trust_targets)
    if teacher.distilled:
        raise ValueError(f"teacher={source} is itself a student (distilled from {teacher.distilled.get('teacher')})")
    if teacher.masks is not None or teacher.model.observable:
        raise ValueError(
            f"teacher={source} was trained with observations (mask=...); distilling observation-conditioned "
            "models is not supported: distil a model trained without mask="
        )
    return teacher.requires_grad_(False).eval()


class DistillModule(StudentModule):
    """A student trained by consistency distillation from ``teacher`` along a Karras grid of ``levels``. The target
    network is kept outside the state dict, as the teacher is (on resume the target restarts from the student)."""

    def __init__(
        self,
        teacher: DiffusionModule,
        levels: int,
        rho: float,
        target_decay: float,
        guidance: tuple[float, float] | None = None,
        segments: int = 1,
        teacher_steps: int = 1,
        huber: float | None = None,
        **module: Any,
    ):
        super().__init__(teacher, guidance, segments, huber, **module)
        if not 0.0 <= target_decay < 1.0:
            raise ValueError(f"distill.target_decay={target_decay}: the target's EMA decay must be in [0, 1)")
        check_segments(levels, segments)
        if segments > 1 and rho != SEGMENT_RHO:
            raise ValueError(
                f"distill.rho={rho} with distill.segments={segments}: the consistency sampler jumps along the "
                f"karras_open levels, which use rho={SEGMENT_RHO}; leave rho at {SEGMENT_RHO}"
            )
        check_teacher_steps(teacher_steps)
        self.teacher_steps, self.rho = teacher_steps, rho
        schedule = self.process.schedule
        levels_ = karras_levels(schedule.sigma_min, schedule.sigma_max, levels, rho)
        self.register_buffer("levels", levels_, persistent=False)  # not saved: the checkpoint is the student alone
        self.target_decay = target_decay
        object.__setattr__(self, "target", copy.deepcopy(self.model).requires_grad_(False))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # the target starts as the student: the teacher's weights, or a resumed run's student
        self.target.load_state_dict(self.model.state_dict())
        self.target.to(self.device).eval()

    def distill_loss(self, batch: Any, generator: torch.Generator | None = None, train: bool = True) -> Tensor:
        state = self.domain.unpack(batch)
        space, x0 = self.domain.space, state.x
        n = space.num_items(x0, state.ctx)
        index = sample_index(n, len(self.levels), generator, x0.device)
        noise = space.noise(x0, state.ctx, generator=generator)
        drop, w = self.draw_asks(n, state.cond, generator, x0.device)
        return consistency_loss(
            self.student_of(state, drop, w),
            lambda x, sigma: self.target(x, sigma, state, cond_drop=drop, guidance=w),
            self.teacher_of(state, drop, w),
            x0,
            noise,
            self.levels,
            index,
            lambda v: space.per_item(v, x0, state.ctx),
            lambda err: space.item_mean(err, state.ctx),
            discrete_of(space),
            generator,
            self.segments,
            self.teacher_steps,
            self.rho,
            self.huber,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        with torch.no_grad():  # the target follows the student as it stands after the last optimizer step
            for t, s in zip(self.target.parameters(), self.model.parameters()):
                t.lerp_(s, 1.0 - self.target_decay)
        return super().training_step(batch, batch_idx)


def resume_settings(options: Any) -> Any:
    """A student's ``distill`` settings as a resume compares them: settings added since a student was written
    take their defaults (:data:`LATER_DEFAULTS`), and the teacher counts by its weights' digest alone (the same
    teacher may be named by another path)."""
    if not isinstance(options, dict):
        return options
    return {**LATER_DEFAULTS, **{k: v for k, v in options.items() if k != "teacher"}}


def build_student(cfg: DictConfig) -> StudentModule:
    """The student of ``cfg.teacher``: the teacher's model groups replace the command line's (a differing domain
    is an error), ``distill`` is recorded with the teacher's path and weight digest, the weights start as the
    teacher's."""
    if not cfg.get("teacher"):
        raise ValueError("stage=distill needs teacher=PATH (a .ckpt) or a model name/folder: the model to distil")
    options = OmegaConf.to_container(cfg.distill, resolve=True) if cfg.get("distill") else {}
    unknown = sorted(set(options) - set(DISTILL_KEYS) - {"teacher", "teacher_digest"})
    if unknown:
        raise ValueError(f"distill: unknown option(s) {unknown}; valid: {', '.join(DISTILL_KEYS)}")
    options = {**LATER_DEFAULTS, **options}
    if options.get("method") not in METHODS:
        raise ValueError(f"distill.method={options.get('method')!r}; valid: {', '.join(METHODS)}")
    if cfg.sampler.name != "consistency":
        raise ValueError(
            f"sampler={cfg.sampler.name}: a student samples with sampler=consistency (experiment=distill sets it)"
        )
    teacher = load_teacher(str(cfg.teacher), list(cfg.trust_targets))
    guidance = guidance_range(options["guidance"], teacher, str(cfg.teacher))
    theirs = teacher.run_config
    if cfg.domain.get("_target_") != theirs["domain"].get("_target_"):
        raise ValueError(
            f"teacher={cfg.teacher} is a {teacher.domain.name!r} model; give its domain (domain={teacher.domain.name})"
        )
    segments, trajectory = options["segments"], options["method"] == "trajectory"
    # counts that are no whole numbers, or a grid the segments do not cut evenly, are refused before the build
    if trajectory:
        check_segments(None, segments)
        check_trajectory_settings(options["trajectories"], options["teacher_steps"], options["jump_weight"])
    else:
        if options["trajectories"] is not None:
            raise ValueError(
                f"distill.trajectories={options['trajectories']}: stored trajectories are for distill.method="
                "trajectory (experiment=distill_trajectory); consistency distillation draws its pairs afresh"
            )
        if options["jumps_at"] is not None:
            raise ValueError(
                f"distill.jumps_at={options['jumps_at']}: chosen jump levels are for distill.method=trajectory "
                "(experiment=distill_trajectory); a consistency student's segments cut its Karras grid evenly"
            )
        if options["jump_weight"] != "uniform":
            raise ValueError(
                f"distill.jump_weight={options['jump_weight']!r}: weighting the jumps is for distill.method="
                "trajectory (experiment=distill_trajectory)"
            )
        check_segments(int(options["levels"]), segments)
    with open_dict(cfg):
        for group in TEACHER_GROUPS:
            cfg[group] = theirs.get(group)
        cfg.distill.teacher = str(cfg.teacher)
        cfg.distill.teacher_digest = weights_digest(teacher)
        if segments > 1 or trajectory:  # its only step count: the previews and the recorded sampler take it
            cfg.sampler.steps, cfg.sampler.spacing = segments, "karras_open"
        if guidance is not None:
            cfg.net.guidance_input = True  # the student's network takes the scale (its embedding starts at zero)
    if trajectory:
        make = lambda **module: TrajectoryModule(  # noqa: E731
            teacher,
            options["trajectories"],
            options["teacher_steps"],
            bank_folder(cfg.paths.output_dir),
            int(cfg.seed),
            guidance,
            segments,
            options["huber"],
            options["jump_weight"],
            options["jumps_at"],
            **module,
        )
    else:
        make = lambda **module: DistillModule(  # noqa: E731
            teacher,
            int(options["levels"]),
            float(options["rho"]),
            float(options["target_decay"]),
            guidance,
            segments,
            options["teacher_steps"],
            options["huber"],
            **module,
        )
    # sample as the teacher does (its atom counts, vocabulary, ...)
    student = build_module(cfg, dict(teacher.domain.info), make=make)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any("guidance_embed" not in k for k in missing):
        raise RuntimeError(f"a student that does not fit its teacher: missing {missing}, unexpected {unexpected}")
    return student


def guidance_range(value: Any, teacher: DiffusionModule, source: str) -> tuple[float, float] | None:
    """``distill.guidance=[lo, hi]``: the scales a guidance-conditioned student learns (null: none, the student of
    the plain model). Classifier-free guidance needs a conditional teacher."""
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and 0 <= float(value[0]) <= float(value[1])):
        raise ValueError(f"distill.guidance={value}: give [lo, hi] with 0 <= lo <= hi (e.g. [1, 4]), or null")
    if not getattr(teacher.model.net, "conditional", False):
        raise ValueError(
            f"distill.guidance={list(value)}: teacher={source} is unconditional; classifier-free guidance needs a "
            "conditional teacher"
        )
    return float(value[0]), float(value[1])
