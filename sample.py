"""Generate samples from a checkpoint: python sample.py ckpt=PATH n=N sampler=NAME steps=K out=DIR seed=S
[shard=I num_shards=K]; rerunning a stopped command continues it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import multidiff.env  # noqa: F401  (before torch)

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from multidiff.build import build_sampler, load_checkpoint
from multidiff.core.observation import Observation
from multidiff.core.options import accepted_keywords, call_strict
from multidiff.core.state import State
from multidiff.posthoc_ema import load_ema_length
from multidiff.precision import resolve_precision
from multidiff.runlock import hold
from multidiff.sample_folder import Batch, SampleFolder, plan, shard_of

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
    module = load_checkpoint(
        cfg.ckpt, domain=cfg.expect_domain, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
    ).to(device)
    if cfg.ema_length is not None:
        snapshots = Path(cfg.ema_snapshots or Path(cfg.ckpt).resolve().parent.parent / "posthoc_ema")
        load_ema_length(module, snapshots, float(cfg.ema_length), step=module.checkpoint_step or None)
    sampling = build_sampler(cfg.sampler, steps=steps, spacing=cfg.spacing)
    precision = resolve_precision(cfg.precision, device)
    guide = None
    if cfg.guide_ckpt:
        guide = load_checkpoint(
            cfg.guide_ckpt, domain=module.domain.name, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
        ).to(device)
    interval = None if cfg.guidance_interval is None else tuple(float(v) for v in cfg.guidance_interval)
    if cfg.guidance == 1.0 and (guide is not None or interval is not None):
        raise ValueError("guide_ckpt= and guidance_interval= act only when guidance != 1: set guidance, e.g. 2")
    request = OmegaConf.to_container(cfg.condition, resolve=True)
    observe_options = {k: v for k in ("keep", "keep_unit", "n_atoms") if (v := _plain(cfg.get(k))) is not None}

    # an observation that draws something (molecules' atom counts) takes the batch's seed
    seeded = "seed" in (accepted_keywords(module.domain.observe) or [])

    def observation(batch: Batch) -> Observation | None:
        if cfg.observe is None:
            if observe_options:
                raise ValueError(f"{', '.join(observe_options)} need observe=FILE")
            return None
        options = {**observe_options, **({"seed": batch.seed} if seeded else {})}
        obs = call_strict(
            module.domain.observe, f"{module.domain.name} observation option", options, batch.count, Path(cfg.observe)
        )
        if bad := int((~torch.isfinite(obs.values)).sum()):
            raise ValueError(f"observe={cfg.observe}: {bad} of its values are NaN or infinite; give a finite file")
        return obs

    # a bad request fails here, before anything is generated or written
    call_strict(module.domain.condition, "condition", request, 1)
    observation(batches[0])
    if cfg.observe is None and cfg.observe_with != "auto":
        raise ValueError(f"observe_with={cfg.observe_with} needs observe=FILE")
    observed_by = module.observed_by(cfg.observe_with) if cfg.observe is not None else None
    meta = {
        "ckpt": str(cfg.ckpt),
        "n": n,
        "batch_size": batch_size,
        "sampler": sampling.name,
        "sampler_options": sampling.options,
        "steps": sampling.steps,
        "spacing": sampling.spacing,
        "noise": sampling.noise,
        "seed": cfg.seed,
        "precision": precision,
        "guidance": cfg.guidance,
        "guidance_interval": None if interval is None else list(interval),
        "guide_ckpt": None if cfg.guide_ckpt is None else str(cfg.guide_ckpt),
        "weights": cfg.weights if cfg.ema_length is None else f"post-hoc EMA, length {cfg.ema_length}",
        "condition": request,
        "observe": None if cfg.observe is None else str(cfg.observe),
        **observe_options,
        "resample": cfg.resample,
        "observed_by": observed_by,
    }
    out = Path(cfg.out or cfg.paths.output_dir)
    folder = SampleFolder(out, meta, module.domain.concatenated)
    what = f"shard {shard} of {num_shards} of " if num_shards > 1 else ""
    with folder.tidied(), hold(folder.staging, f"shard-{shard}-of-{num_shards}", "Wait for it, or choose another out="):
        if folder.open():
            log.info("%s already holds these %d samples", out, n)
            return folder.finish(batches) or []
        todo = [b for b in mine if not folder.done(b)]
        if len(todo) < len(mine):
            log.info("resuming %s%s: %d of %d batches already on disk", what, out, len(mine) - len(todo), len(mine))
        for batch in tqdm(todo, desc=f"{what}{n} samples, batches", unit="batch", disable=not todo):
            obs = observation(batch)
            state = module.generate(
                batch.count,
                sampler=sampling.fn,
                steps=sampling.steps,
                spacing=sampling.spacing,
                seed=batch.seed,
                guidance=cfg.guidance,
                condition=request,
                noise=sampling.noise,
                guidance_interval=interval,
                guide=guide,
                observation=obs,
                resample=cfg.resample,
                observe_with=cfg.observe_with,
                precision=precision,
            )
            check_finite(state.x, batch, precision)
            items = module.domain.decode(State(state.x.cpu(), state.cond, state.ctx), obs)
            with folder.writing(batch) as staging:
                batch_meta = {**meta, "batch": batch.index, "batch_seed": batch.seed}
                module.domain.export(items, staging, batch_meta, start=batch.start, preview=batch.index == 0)
        paths = folder.finish(batches)
    if paths is None:
        log.info("%swritten; %s is complete when every shard is", what, out)
        return []
    log.info("wrote %d files to %s", len(paths), out)
    return paths


def positive_int(value: Any, name: str) -> int:
    """``value`` as given on the command line, checked: a positive integer, or an error naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer, e.g. {name}=16")
    return value


def shard_device(device: str, shard: int, num_shards: int) -> str:
    """``device=auto``: the GPU if there is one; with several GPUs and several shards on one machine, shard i
    takes GPU ``i mod count``, so one job per device spreads a run over all of them."""
    if device != "auto":
        return device
    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    return f"cuda:{shard % count}" if num_shards > 1 and count > 1 else "cuda"


def check_finite(x: torch.Tensor, batch: Batch, precision: str) -> None:
    """Refuse a batch with NaN or infinite values before anything of it is written."""
    if bad := int((~torch.isfinite(x)).sum()):
        raise FloatingPointError(
            f"batch {batch.index} (items {batch.start}..{batch.start + batch.count - 1}, seed {batch.seed}): the "
            f"model produced {bad} NaN or infinite values of {x.numel()}; nothing of this batch was written. Likely "
            f"causes: weights that overflow at precision={precision} (try precision=32-true), or a model that "
            "diverged in training (sample an earlier checkpoint)"
        )


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
