"""A sampling request: everything that decides how items are drawn from a trained model, as one value.

Built once (from ``conf/sample.yaml`` by :func:`request_from_config`, or directly) and passed whole to
:meth:`~multidiff.module.DiffusionModule.generate`; :meth:`SamplingRequest.record` is what sample.py writes
beside the samples. A new request option is a field here, read where it acts (``generate``), and a key of the
same name in ``conf/sample.yaml``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from multidiff.config import sampler_config
from multidiff.core.noise import NOISE_KINDS, GaussianNoise
from multidiff.core.observation import Observation
from multidiff.core.options import accepted_keywords, call_strict, check_keys, positive_int
from multidiff.core.parts import count_nonfinite
from multidiff.core.samplers import CALL_ARGS, SAMPLERS, sampler_named
from multidiff.core.schedules import SPACINGS, KarrasSchedule
from multidiff.core.space import TensorSpace
from multidiff.precision import PRECISIONS, resolve_precision

log = logging.getLogger(__name__)

#: how an observation is honoured: ``auto`` (the model if it was trained with observations, else replacement),
#: ``model`` (observation-conditioned network, with replacement of the state's known part) or ``replacement``
#: (RePaint, for any model)
OBSERVE_WITH = ("auto", "model", "replacement")


@dataclass(frozen=True)
class Sampling:
    """A configured sampler: the function with its options bound, and the sigma grid to run it on."""

    fn: Callable[..., Tensor]
    steps: int
    spacing: str
    noise: str = "gaussian"

    @property
    def name(self) -> str:
        fn = self.fn.func if isinstance(self.fn, functools.partial) else self.fn
        return fn.__name__.removeprefix("sample_")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.fn.keywords) if isinstance(self.fn, functools.partial) else {}

    def record(self) -> dict[str, Any]:
        return {
            "sampler": self.name,
            "sampler_options": self.options,
            "steps": self.steps,
            "spacing": self.spacing,
            "noise": self.noise,
        }

    def evaluations(self) -> int:
        """Network evaluations per item: the sampler run with its options on one number, counting the calls
        (second-order steps, restarts and the last step's shortcut included; the grid's values do not matter)."""
        calls = [0]

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            calls[0] += 1
            return x * 0

        x = torch.zeros(1, 1)
        sigmas = KarrasSchedule().sigmas(self.steps, self.spacing)
        self.fn(denoise, x, sigmas, noise_sampler=GaussianNoise(TensorSpace(), x, {}, torch.Generator()))
        return calls[0]


def build_sampler(
    cfg: DictConfig | Mapping[str, Any], steps: int | None = None, spacing: str | None = None
) -> Sampling:
    """The ``sampler`` config group (``name`` (see :data:`~multidiff.core.samplers.SAMPLERS`), the function's
    options, ``steps``, ``spacing`` and ``noise``) as one object, the same for sample.py, in-training previews and
    benchmarks. ``steps`` / ``spacing`` override the config's. An option the function does not take is an error
    naming those it does."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if "_target_" in cfg:
        raise ValueError(
            f"sampler config names its sampler with name: (one of {', '.join(SAMPLERS)}), not _target_: "
            f"{cfg['_target_']}"
        )
    fn = sampler_named(cfg.pop("name", None))
    grid = {"steps": cfg.pop("steps", None), "spacing": cfg.pop("spacing", "karras")}
    noise = cfg.pop("noise", "gaussian")
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown sampler noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")
    check_keys(cfg, accepted_keywords(fn, skip=CALL_ARGS) or [], f"option of sampler {fn.__name__}")
    steps = steps or grid["steps"]
    positive_int(steps, "steps")
    spacing = spacing or grid["spacing"]
    if spacing not in SPACINGS:
        raise ValueError(f"unknown sampler spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return Sampling(functools.partial(fn, **cfg), steps, spacing, noise)


@dataclass(frozen=True)
class SamplingRequest:
    """How to draw items: the sampler; classifier-free guidance ``guidance`` (1: the plain model), active only at
    noise levels in ``guidance_interval``, against ``guide`` (autoguidance: a weaker module of the same domain,
    loaded from ``guide_ckpt``) when given; an observation file ``observe`` read by the domain with
    ``observe_options``, honoured as ``observe_with`` says (:data:`OBSERVE_WITH`) with ``resample`` jumps per
    step; the network's ``precision`` (the sampler's arithmetic stays in float32)."""

    sampler: Sampling
    guidance: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    guide: Any = None
    guide_ckpt: str | None = None
    observe: str | None = None
    observe_options: Mapping[str, Any] = field(default_factory=dict)
    observe_with: str = "auto"
    resample: int = 1
    precision: str = "32-true"

    def __post_init__(self) -> None:
        if self.guidance == 1.0 and (self.guide is not None or self.guidance_interval is not None):
            raise ValueError("guide_ckpt= and guidance_interval= act only when guidance != 1: set guidance, e.g. 2")
        if self.observe_with not in OBSERVE_WITH:
            raise ValueError(f"observe_with={self.observe_with}; valid: {', '.join(OBSERVE_WITH)}")
        positive_int(self.resample, "resample")  # (1: no resampling)
        if self.resample > 1 and self.sampler.noise == "brownian":
            raise ValueError("resampling needs independent noise draws over the same step: use sampler.noise=gaussian")
        if self.observe is None and self.observe_options:
            raise ValueError(f"observe_options ({', '.join(self.observe_options)}) need observe=FILE")
        if "seed" in self.observe_options:
            raise ValueError("observe_options.seed: an observation that draws something is seeded by its batch")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; valid: {', '.join(PRECISIONS)}")

    def observation(self, domain: Any, n: int, seed: int) -> Observation | None:
        """The ``observe`` file as the domain reads it for ``n`` items (``seed``: for what the domain draws, such as
        molecules' atom counts), refused when it holds NaN or infinity; None without one."""
        if self.observe is None:
            return None
        what = f"{domain.name} observation option (observe_options)"
        obs = call_strict(domain.observe, what, {**self.observe_options, "seed": seed}, n, Path(self.observe))
        if bad := count_nonfinite(obs.values)[0]:
            raise ValueError(f"observe={self.observe}: {bad} of its values are NaN or infinite; give a finite file")
        return obs

    def record(self) -> dict[str, Any]:
        """The request as JSON-able values (the guide by its checkpoint): what sample.py writes beside samples."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sampler", "guide")}
        plain["guidance_interval"] = None if self.guidance_interval is None else list(self.guidance_interval)
        plain["observe_options"] = dict(self.observe_options)
        return {**self.sampler.record(), **plain}


def segments_of(distilled: Mapping[str, Any] | None) -> int:
    """A student's ``distill.segments`` (1: a one-jump student, and any model or student that records none)."""
    return int((distilled or {}).get("segments", 1))


def jumps_of(distilled: Mapping[str, Any] | None) -> int | None:
    """The one step count a student samples in: K for a student that learned K jumps along fixed levels (a
    multistep consistency student, K > 1, or a trajectory student, any K); None for a one-jump consistency student
    (1-4 steps) and for a model that is no student."""
    k = segments_of(distilled)
    return k if distilled and (k > 1 or distilled.get("method") == "trajectory") else None


def request_from_config(cfg: DictConfig, module: Any, guide: Any = None, steps: int | None = None) -> SamplingRequest:
    """``conf/sample.yaml``'s request for ``module``: every :class:`SamplingRequest` field is read from the key of
    the same name (a new field needs only its key there), with these made concrete: the sampler built from its
    group (``steps`` and ``spacing`` overriding it), ``guide`` (the module ``guide_ckpt`` names, loaded by the
    caller), ``observe_with=auto`` resolved to what the model does, ``precision=auto`` to what its device
    computes natively, and the interval a tuple. A student of K jumps (:func:`jumps_of`) under the
    consistency sampler takes its K steps unless ``steps`` or ``sampler.steps`` says otherwise (which it then
    refuses). A student given no ``sampler=NAME`` on the command line samples with ``sampler=consistency``, the
    one that serves it, with any ``sampler.KEY=VALUE`` given (a sampler named for it is refused by name)."""
    distilled = getattr(module, "distilled", None)
    jumps = jumps_of(distilled)
    chosen = cfg.sampler
    named, options = sampler_overrides()
    if distilled and chosen.get("name") != "consistency" and not named:
        chosen = OmegaConf.merge(sampler_config("consistency"), OmegaConf.from_dotlist(options))
        log.info("a student: sampling with sampler=consistency (the only sampler that serves it)")
    if steps is None and jumps is not None and chosen.get("name") == "consistency":
        if chosen.get("steps") == sampler_config("consistency").get("steps"):  # no sampler.steps=N given
            steps = jumps
    plain = {
        f.name: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v := cfg.get(f.name)) else v
        for f in fields(SamplingRequest)
        if f.name not in ("sampler", "guide")
    }
    observe = plain["observe"] = None if plain["observe"] is None else str(plain["observe"])
    for key, default in (("observe_with", "auto"), ("resample", 1)):
        if observe is None and plain[key] != default:
            raise ValueError(f"{key}={plain[key]} needs observe=FILE: it acts on an observation")
    if observe is not None:
        plain["observe_with"] = module.observed_by(plain["observe_with"])
    interval = plain["guidance_interval"]
    plain.update(
        guidance=float(plain["guidance"]),
        guidance_interval=None if interval is None else (float(interval[0]), float(interval[1])),
        guide_ckpt=None if plain["guide_ckpt"] is None else str(plain["guide_ckpt"]),
        observe_options=plain["observe_options"] or {},
        precision=resolve_precision(plain["precision"], module.device),
    )
    return SamplingRequest(build_sampler(chosen, steps=steps, spacing=cfg.spacing), guide=guide, **plain)


def sampler_overrides() -> tuple[bool, list[str]]:
    """This run's command line as it concerns the sampler: whether it names one (``sampler=NAME``), and its
    ``sampler.KEY=VALUE`` options as ``KEY=VALUE``; ``(False, [])`` outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False, []
    named, options = False, []
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        named = named or key == "sampler" or key.startswith("sampler@")
        if key.startswith("sampler.") and not override.startswith("~"):  # a deletion is no option to apply
            options.append(f"{key.removeprefix('sampler.')}={value}")
    return named, options


def named_request(sampler: str = "dpmpp_2m", steps: int | None = None, **fields: Any) -> SamplingRequest:
    """A request for the sampler of ``conf/sampler/<sampler>.yaml`` (its grid and options; ``steps`` if given)
    with ``fields`` of :class:`SamplingRequest` (an unknown one is a TypeError): for scripts and notebooks."""
    return SamplingRequest(build_sampler(sampler_config(sampler), steps=steps), **fields)
