"""Generate samples from a checkpoint: python sample.py ckpt=PATH n=N sampler=NAME steps=K out=DIR seed=S."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from multidiff.build import build_sampler, load_checkpoint
from multidiff.core.observation import Observation
from multidiff.core.options import accepted_keywords, call_strict
from multidiff.core.state import State
from multidiff.posthoc_ema import load_ema_length
from multidiff.precision import resolve_precision

log = logging.getLogger("multidiff.sample")


def sample(cfg: DictConfig) -> list[Path]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    module = load_checkpoint(
        cfg.ckpt, domain=cfg.expect_domain, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
    ).to(device)
    if cfg.ema_length is not None:
        snapshots = Path(cfg.ema_snapshots or Path(cfg.ckpt).resolve().parent.parent / "posthoc_ema")
        load_ema_length(module, snapshots, float(cfg.ema_length), step=module.checkpoint_step or None)
    sampling = build_sampler(cfg.sampler, steps=cfg.steps, spacing=cfg.spacing)
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

    def observation(n: int, start: int) -> Observation | None:
        if cfg.observe is None:
            if observe_options:
                raise ValueError(f"{', '.join(observe_options)} need observe=FILE")
            return None
        options = {**observe_options, **({"seed": batch_seed(cfg.seed, start)} if seeded else {})}
        return call_strict(
            module.domain.observe, f"{module.domain.name} observation option", options, n, Path(cfg.observe)
        )

    observation(1, 0)  # a bad request fails here, before anything is generated or written
    if cfg.observe is None and cfg.observe_with != "auto":
        raise ValueError(f"observe_with={cfg.observe_with} needs observe=FILE")
    observed_by = module.observed_by(cfg.observe_with) if cfg.observe is not None else None
    states, observations = [], []
    for start in range(0, cfg.n, cfg.batch_size):
        n = min(cfg.batch_size, cfg.n - start)
        observations.append(observation(n, start))
        states.append(
            module.generate(
                n,
                sampler=sampling.fn,
                steps=sampling.steps,
                spacing=sampling.spacing,
                seed=batch_seed(cfg.seed, start),
                guidance=cfg.guidance,
                condition=request,
                noise=sampling.noise,
                guidance_interval=interval,
                guide=guide,
                observation=observations[-1],
                resample=cfg.resample,
                observe_with=cfg.observe_with,
                precision=precision,
            )
        )
    items = [
        item
        for s, obs in zip(states, observations)
        for item in module.domain.decode(State(s.x.cpu(), s.cond, s.ctx), obs)
    ]
    out = Path(cfg.out or cfg.paths.output_dir)
    meta = {
        "ckpt": str(cfg.ckpt),
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
    paths = module.domain.export(items, out, meta)
    (out / "sampling.json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %d files to %s", len(paths), out)
    return paths


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch starting at item ``start``: different runs' seeds never share a batch."""
    return seed if start == 0 else int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
