"""Build a DiffusionModule from a configuration, or back from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from multidiff.checkpoint import CheckpointFormatError, check_trusted, checkpoint_meta, read_checkpoint
from multidiff.module import DiffusionModule


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
    path: str | Path,
    domain: str | None = None,
    map_location: str | torch.device = "cpu",
    weights: str = "ema",
    trust_targets: Sequence[str] = (),
) -> DiffusionModule:
    """A module with the checkpoint's weights, rebuilt only from components multidiff trusts.

    ``weights``: ``ema`` (the checkpoint's ``state_dict``: the EMA average when EMA was on) or
    ``current`` (the raw training weights that EMA checkpoints written during training keep beside it).
    ``domain``: refuse a checkpoint of another domain, saying which domain it holds.
    ``trust_targets``: the user's own components the stored config may name besides
    :data:`~multidiff.checkpoint.TRUSTED_TARGETS` (dotted names or patterns such as ``mypkg.*``).
    """
    if weights not in ("ema", "current"):
        raise ValueError(f"weights={weights!r}: use 'ema' or 'current'")
    ckpt = read_checkpoint(path, map_location)
    meta = checkpoint_meta(ckpt, path)
    if domain is not None and meta.domain != domain:
        raise ValueError(
            f"{path} holds a {meta.domain!r} model, not {domain!r}: the denoiser, data "
            f"and exporter differ between domains; use a {domain} checkpoint or domain={meta.domain}"
        )
    check_trusted(meta.config, path, trust_targets)
    try:
        module = build_module(meta.config, meta.domain_info)
    except ValueError as e:
        raise CheckpointFormatError(f"{path}: {e}") from e
    if module.domain.name != meta.domain:
        raise CheckpointFormatError(
            f"{path}: metadata says domain {meta.domain!r} but its config builds a {module.domain.name!r} domain"
        )
    state = ckpt["state_dict"]
    if weights == "current":
        if "current_model_state" not in ckpt:
            raise ValueError(
                f"{path} keeps one set of weights only (written without EMA, or at the end of training, when "
                "the average replaces the training weights); use weights=ema"
            )
        state = ckpt["current_model_state"]
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointFormatError(f"{path}: its weights do not fit the model its config describes: {e}") from None
    return module.eval()
