"""Generate samples: python sample.py ckpt=PATH|pretrained=NAME n=N sampler=NAME steps=K out=DIR seed=S
[shard=I num_shards=K]; rerunning a stopped command continues it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from multidiff.build import load_any, shipped_models
from multidiff.core.options import call_strict, positive_int
from multidiff.core.parts import Parts, count_nonfinite
from multidiff.core.state import State
from multidiff.module import DiffusionModule, sampling_levels
from multidiff.posthoc_ema import load_ema_length
from multidiff.remote import is_url
from multidiff.runlock import hold
from multidiff.sample_folder import Batch, SampleFolder, plan, shard_of
from multidiff.sampling import request_from_config
from multidiff.threads import ThreadGovernor

log = logging.getLogger("multidiff.sample")


def sample(cfg: DictConfig) -> list[Path]:
    """Generate the request's batches not yet in ``out`` (this shard's, with ``num_shards`` > 1), each exported as
    soon as it is drawn; the process that writes the last batch joins them (:mod:`multidiff.sample_folder`).
    Returns the final files, or an empty list while other shards still run."""
    n, batch_size = positive_int(cfg.n, "n"), positive_int(cfg.batch_size, "batch_size")
    steps = None if cfg.steps is None else positive_int(cfg.steps, "steps")
    shard, num_shards = cfg.shard, cfg.num_shards
    batches = plan(n, batch_size, cfg.seed)
    mine = shard_of(batches, shard, num_shards)
    if num_shards > 1 and cfg.out is None:
        raise ValueError(f"num_shards={num_shards}: the shards write into one folder; name it with out=DIR")
    device = shard_device(cfg.device, shard, num_shards)
    governor = ThreadGovernor(cfg.threads)
    module = load_source(cfg).to(device)
    if cfg.mesh:
        shapes = getattr(module.domain, "data", module.domain)  # a latent model's data domain writes the files
        if not hasattr(shapes, "mesh"):
            raise ValueError(f"mesh=true: the {module.domain.name} domain has no surfaces; meshes are for point clouds")
        shapes.mesh = True
    if cfg.ema_length is not None:
        source = Path(cfg.ckpt if cfg.ckpt is not None else cfg.pretrained)  # a local checkpoint (load_source)
        snapshots = Path(cfg.ema_snapshots or source.resolve().parent.parent / "posthoc_ema")
        load_ema_length(module, snapshots, float(cfg.ema_length), step=module.checkpoint_step or None)
    guide = None
    if cfg.guide_ckpt:
        guide = load_any(
            cfg.guide_ckpt, domain=module.domain.name, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
        ).to(device)
    request = request_from_config(cfg, module, guide, steps=steps)
    condition = OmegaConf.to_container(cfg.condition, resolve=True)
    # a bad request fails here, before anything is generated or written
    call_strict(module.domain.condition, "condition", condition, 1)
    request.observation(module.domain, 1, batches[0].seed)
    meta = {
        "ckpt": None if cfg.ckpt is None else str(cfg.ckpt),
        "pretrained": None if cfg.pretrained is None else str(cfg.pretrained),
        "n": n,
        "batch_size": batch_size,
        "seed": cfg.seed,
        "weights": cfg.weights if cfg.ema_length is None else f"post-hoc EMA, length {cfg.ema_length}",
        "condition": condition,
        **({"mesh": True} if cfg.mesh else {}),
        **request.record(),
        # a student's chosen jump levels (distill.jumps_at), which its steps and spacing do not say
        **(
            {"levels": sampling_levels(request.sampler, module.process.schedule, module.distilled).tolist()}
            if (module.distilled or {}).get("jumps_at") is not None
            else {}
        ),
    }
    out = Path(cfg.out or cfg.paths.output_dir)
    folder = SampleFolder(out, meta, module.domain.concatenated)
    what = f"shard {shard}/{num_shards}: " if num_shards > 1 else ""
    with folder.tidied(), hold(folder.staging, f"shard-{shard}-of-{num_shards}", "Wait for it, or choose another out="):
        if folder.open():
            log.info("%s already holds these %d samples", out, n)
            return folder.finish(batches) or []
        todo = [b for b in mine if not folder.done(b)]
        if len(todo) < len(mine):
            log.info("%sresuming %s: %d of %d batches already on disk", what, out, len(mine) - len(todo), len(mine))
        for batch in tqdm(todo, desc=f"{what}{n} samples, batches", unit="batch", disable=not todo):
            obs = request.observation(module.domain, batch.count, batch.seed)
            state = module.generate(batch.count, request, seed=batch.seed, condition=condition, observation=obs)
            check_finite(state.x, batch, request.precision)
            items = module.domain.decode(State(state.x.cpu(), state.cond, state.ctx), obs)
            with folder.writing(batch) as staging:
                batch_meta = {**meta, "batch": batch.index, "batch_seed": batch.seed}
                module.domain.export(items, staging, batch_meta, start=batch.start, preview=batch.index == 0)
            governor.update()
        paths = folder.finish(batches)
    if paths is None:
        log.info("%sdone; %s is complete when every shard is", what, out)
        return []
    log.info("wrote %d files to %s", len(paths), out)
    return paths


def load_source(cfg: DictConfig) -> DiffusionModule:
    """The model to sample, exactly one of ``ckpt=`` (a training checkpoint, an exported model folder, or a URL of
    either: ``hf://ORG/REPO``, ``https://...``, any fsspec URL) and ``pretrained=`` (a shipped model by name, or
    as ``ckpt=``), loaded by :func:`multidiff.build.load_any`."""
    if (cfg.ckpt is None) == (cfg.pretrained is None):
        shipped = ", ".join(shipped_models()) or "none"
        raise ValueError(
            f"give ckpt=PATH|DIR|URL (a training checkpoint or exported model folder) or pretrained=NAME (a shipped "
            f"model: {shipped}), one of them"
        )
    source = cfg.ckpt if cfg.ckpt is not None else cfg.pretrained
    module = load_any(source, domain=cfg.expect_domain, weights=cfg.weights, trust_targets=list(cfg.trust_targets))
    if cfg.ema_length is not None and (is_url(str(source)) or not Path(source).is_file()):
        raise ValueError(f"ema_length={cfg.ema_length} needs ckpt= a local training checkpoint beside its snapshots")
    return module


def shard_device(device: str, shard: int, num_shards: int) -> str:
    """``device=auto``: the GPU if there is one; with several GPUs and several shards on one machine, shard i
    takes GPU ``i mod count``, so one job per device spreads a run over all of them."""
    if device != "auto":
        return device
    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    return f"cuda:{shard % count}" if num_shards > 1 and count > 1 else "cuda"


def check_finite(x: torch.Tensor | Parts, batch: Batch, precision: str) -> None:
    """Refuse a batch with NaN or infinite values before anything of it is written."""
    bad, total = count_nonfinite(x)
    if bad:
        raise FloatingPointError(
            f"batch {batch.index} (items {batch.start}..{batch.start + batch.count - 1}, seed {batch.seed}): the "
            f"model produced {bad} NaN or infinite values of {total}; nothing of this batch was written. Likely "
            f"causes: weights that overflow at precision={precision} (try precision=32-true), or a model that "
            "diverged in training (sample an earlier checkpoint)"
        )


def moved_option(argv: list[str]) -> str | None:
    """A message for a top-level ``key=value`` that ``conf/sample.yaml`` does not declare: the domain's own
    options (observation options, conditions) are given under their group, and Hydra alone would only say
    'not in struct'."""
    declared = OmegaConf.load(Path(__file__).parent / "conf" / "sample.yaml")
    known = {k for k in declared if k != "defaults"} | {
        d if isinstance(d, str) else next(iter(d)) for d in declared.defaults
    }
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key == "model":  # `model` is the optimizer's config group: a shipped model is named otherwise
            return f"{arg}: a shipped or exported model is given as pretrained={value} (model is a config group)"
        if eq and key.isidentifier() and key not in known:
            return (
                f"{arg}: sample.py has no option {key!r}. An option of the observation file is given as "
                f"+observe_options.{key}={value}, a condition as +condition.{key}={value}; sample.py's own options "
                f"are in conf/sample.yaml"
            )
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    if message := moved_option(sys.argv[1:]):
        sys.exit(f"Error: {message}")
    main()
