"""Train a diffusion model: python train.py domain=audio [key=value ...] (see conf/train.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from multidiff.build import build_module
from multidiff.checkpoint import check_trusted, checkpoint_meta, config_targets, read_checkpoint

log = logging.getLogger("multidiff.train")
LIGHTNING_KEYWORDS = ("last", "hpc", "best")


def train(cfg: DictConfig) -> pl.Trainer:
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.info())
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info(
        "%s: %s, %.2fM parameters, outputs in %s",
        module.domain.name,
        type(module.model.net).__name__,
        sum(p.numel() for p in module.parameters()) / 1e6,
        cfg.paths.output_dir,
    )
    if cfg.ckpt_path and str(cfg.ckpt_path) not in LIGHTNING_KEYWORDS:  # keywords name this run's own files
        verify_resume(cfg, module.domain.name)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    save_final(trainer)
    return trainer


def verify_resume(cfg: DictConfig, domain: str) -> None:
    """Check a checkpoint to resume from as sample.py does (readable weights-only, multidiff metadata of this
    domain, a stored config naming only trusted targets) before Lightning restores from it. Targets in this
    run's own config are the user's and so trusted."""
    path = Path(cfg.ckpt_path)
    meta = checkpoint_meta(read_checkpoint(path), path)
    if meta.domain != domain:
        raise ValueError(f"ckpt_path={path} holds a {meta.domain!r} model; this run trains {domain!r}")
    own = config_targets(OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    check_trusted(meta.config, path, [*cfg.get("trust_targets", []), *sorted(own)])


def save_final(trainer: pl.Trainer) -> Path | None:
    """Write last.ckpt at the step training ended on. ModelCheckpoint saves on its own schedule only,
    so a run stopped by max_time (or max_steps between two saves) would otherwise lose its last steps.
    Not reached when training fails (a NaN guard or any other error), so the last good file stays."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.dirpath or not callback.save_last:
        return None
    if trainer.interrupted or trainer.global_step == 0:
        return None
    path = Path(callback.dirpath) / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except FloatingPointError as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
