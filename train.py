"""Train a diffusion model: python train.py domain=audio [key=value ...] (see conf/train.yaml)."""

from __future__ import annotations

import logging
import sys

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from multidiff.build import build_module

log = logging.getLogger("multidiff.train")


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
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    return trainer


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except FloatingPointError as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
