"""Shared test utilities: the repository root and in-process composition of the real Hydra config."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MULTIDIFF_SHARED", ROOT.parent / "shared")) / "datasets"


# a denoiser and data small enough to train in seconds on one CPU core
TINY_AUDIO = [
    "data.max_clips=24",
    "data.length=1024",
    "data.batch_size=8",
    "data.download=false",
    "net.channels=[8,16]",
    "net.factors=[4]",
    "net.attn_levels=[1]",
    "net.heads=2",
    "net.emb_dim=32",
    "trainer.log_every_n_steps=1",
    "callbacks.samples=null",
    "callbacks.progress=null",
]


TINY_PC = [
    "domain=pointcloud",
    "data.limit_shapes=16",
    "data.batch_size=8",
    "data.n_points=256",
    "net.point_dim=16",
    "net.latent_dim=32",
    "net.num_latents=8",
    "net.depth=1",
    "net.latent_layers=1",
    "net.heads=2",
    "net.point_heads=1",
    "trainer.log_every_n_steps=1",
    "callbacks.samples=null",
    "callbacks.progress=null",
]


def compose(config_name: str, overrides: list[str], output_dir: Path):
    """The real Hydra config, composed in-process, with its run directory set to ``output_dir``."""
    from multidiff.config import compose_run

    return compose_run(config_name, overrides, output_dir)
