"""Generate samples from a checkpoint: python sample.py ckpt=PATH n=N sampler=NAME steps=K out=DIR seed=S."""

from __future__ import annotations

import os

# idle OpenMP workers sleep instead of spinning: spinning threads stall every parallel op when
# another process holds a core (10-20x slower on a shared small CPU); must precede torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from multidiff.build import load_checkpoint  # noqa: E402
from multidiff.domains.base import State  # noqa: E402

log = logging.getLogger("multidiff.sample")


def sample(cfg: DictConfig) -> list[Path]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    module = load_checkpoint(
        cfg.ckpt, domain=cfg.expect_domain, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
    ).to(device)
    steps = cfg.steps or cfg.sampler.steps
    spacing = cfg.spacing or cfg.sampler.spacing
    request = {k: v for k, v in {"digit": cfg.digit, **OmegaConf.to_container(cfg.condition)}.items() if v is not None}
    states = []
    for start in range(0, cfg.n, cfg.batch_size):
        n = min(cfg.batch_size, cfg.n - start)
        states.append(
            module.generate(
                n,
                sampler=cfg.sampler.name,
                steps=steps,
                spacing=spacing,
                seed=cfg.seed + start,
                guidance=cfg.guidance,
                sampler_options=OmegaConf.to_container(cfg.sampler.options) if cfg.sampler.get("options") else None,
                **request,
            )
        )
    items = [item for s in states for item in module.domain.decode(State(s.x.cpu(), s.cond, s.ctx))]
    out = Path(cfg.out or cfg.paths.output_dir)
    meta = {
        "ckpt": str(cfg.ckpt),
        "sampler": cfg.sampler.name,
        "steps": steps,
        "spacing": spacing,
        "seed": cfg.seed,
        "guidance": cfg.guidance,
        "weights": cfg.weights,
        **request,
    }
    paths = module.domain.export(items, out, meta)
    (out / "sampling.json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %d files to %s", len(paths), out)
    return paths


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
