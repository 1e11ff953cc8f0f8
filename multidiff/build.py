"""Build a DiffusionModule from a configuration, or back from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from multidiff.module import CHECKPOINT_KEY, DiffusionModule


def build_module(cfg: DictConfig | dict, info: dict[str, Any] | None = None) -> DiffusionModule:
    """Domain, denoiser, schedule and process from their config groups, wrapped in the module."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    domain = instantiate(cfg.domain)
    if info is not None:
        domain.bind(info)
    return DiffusionModule(
        domain=domain,
        net=instantiate(cfg.net),
        process=instantiate(cfg.process),
        optimizer=instantiate(cfg.model.optimizer),
        lr_scheduler=instantiate(cfg.model.lr_scheduler) if cfg.model.get("lr_scheduler") else None,
        cond_drop_prob=cfg.model.cond_drop_prob,
        run_config=OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True),
    )


def load_checkpoint(
    path: str | Path, domain: str | None = None, map_location: str | torch.device = "cpu", weights: str = "ema"
) -> DiffusionModule:
    """A module with the checkpoint's weights.

    ``weights``: ``ema`` (the checkpoint's ``state_dict``: the EMA average when EMA was on) or
    ``current`` (the raw training weights that EMA checkpoints written during training keep beside it).
    ``domain``: refuse a checkpoint of another domain, saying which domain it holds.
    """
    if weights not in ("ema", "current"):
        raise ValueError(f"weights={weights!r}: use 'ema' or 'current'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    meta = ckpt.get(CHECKPOINT_KEY)
    if meta is None:
        raise ValueError(
            f"{path} is not a multidiff checkpoint (no '{CHECKPOINT_KEY}' entry); use a checkpoint written by train.py"
        )
    if domain is not None and meta["domain"] != domain:
        raise ValueError(
            f"{path} holds a {meta['domain']!r} model, not {domain!r}: the denoiser, data "
            f"and exporter differ between domains; use a {domain} checkpoint or domain={meta['domain']}"
        )
    module = build_module(meta["config"], meta["domain_info"])
    state = ckpt["state_dict"]
    if weights == "current":
        if "current_model_state" not in ckpt:
            raise ValueError(
                f"{path} keeps one set of weights only (written without EMA, or at the end of training, when "
                "the average replaces the training weights); use weights=ema"
            )
        state = ckpt["current_model_state"]
    module.load_state_dict(state)
    return module.eval()
