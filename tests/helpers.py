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


def compose(config_name: str, overrides: list[str], output_dir: Path):
    """The real Hydra config, composed in-process, with its run directory set to ``output_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            config_name, overrides=[f"hydra.run.dir={output_dir}", *overrides], return_hydra_config=True
        )
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg
