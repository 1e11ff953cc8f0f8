"""Samples in the run's loggers: what a domain shows of its items (:mod:`multidiff.core.media`), drawn by each logger
its own way. TensorBoard: the audio tab, the mesh plugin (turnable point clouds), images; Weights & Biases: its
Audio, Object3D and Image panels. Loggers that hold numbers only (CSV) get none."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from matplotlib.image import imread
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from multidiff.core.media import Clip, Cloud, Media, Picture


def log_media(loggers: Iterable[Logger], media: Sequence[Media], step: int, prefix: str = "samples") -> None:
    """Send ``media`` to every logger that can show them, under ``prefix/<name>`` at ``step``."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _tensorboard(logger, media, step, prefix)
        elif isinstance(logger, WandbLogger):
            _wandb(logger, media, step, prefix)


def end_wandb_run(failed: bool = False) -> None:
    """End the process's W&B run, if one is open, as failed or finished: W&B keeps one run per process, which the
    next training run in the same process (a Hydra multirun's next job) would otherwise log into."""
    wandb = sys.modules.get("wandb")  # never imported here when no WandbLogger was built
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _rgb(picture: Picture) -> np.ndarray:
    pixels = imread(picture.path)  # float in [0, 1], RGB or RGBA
    return (pixels[..., :3] * 255).round().astype(np.uint8)


def _tensorboard(logger: TensorBoardLogger, media: Sequence[Media], step: int, prefix: str) -> None:
    writer = logger.experiment
    for m in media:
        tag = f"{prefix}/{m.name}"
        if isinstance(m, Clip):
            writer.add_audio(tag, torch.from_numpy(m.samples).clamp(-1, 1)[None], step, sample_rate=m.rate)
        elif isinstance(m, Cloud):
            colors = None if m.colors is None else torch.from_numpy(m.colors)[None]
            writer.add_mesh(tag, vertices=torch.from_numpy(m.points)[None], colors=colors, global_step=step)
        elif isinstance(m, Picture):
            writer.add_image(tag, _rgb(m), step, dataformats="HWC")
    writer.flush()


def _wandb(logger: WandbLogger, media: Sequence[Media], step: int, prefix: str) -> None:
    import wandb  # present whenever a WandbLogger could be built

    panels = {}
    for m in media:
        if isinstance(m, Clip):
            panels[m.name] = wandb.Audio(m.samples, sample_rate=m.rate, caption=m.name)
        elif isinstance(m, Cloud):
            # Object3D's point format: x, y, z, r, g, b
            rgb = m.colors if m.colors is not None else np.full((len(m.points), 3), 90, np.uint8)
            panels[m.name] = wandb.Object3D(np.hstack([m.points, rgb.astype(np.float32)]))
        elif isinstance(m, Picture):
            panels[m.name] = wandb.Image(str(m.path), caption=m.name)
    # through log_metrics so W&B's x-axis is the trainer's step, as Lightning logs the scalars
    logger.log_metrics({f"{prefix}/{k}": v for k, v in panels.items()}, step)
