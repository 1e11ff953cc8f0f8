"""The project's Hydra configuration (``conf/``) composed in-process, as the entry points see it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def compose_run(config_name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """``train`` / ``sample`` / ``evaluate`` config with its run directory set to ``run_dir`` (created), so
    that ``${hydra:...}`` interpolations resolve outside ``@hydra.main`` (scripts, tests, notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"hydra.run.dir={run_dir}", *overrides], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig().set_config(cfg)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def sampler_config(name: str) -> DictConfig:
    """``conf/sampler/<name>.yaml`` on its own (for tools that try several samplers in one run)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(f.stem for f in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(valid)}")
    return OmegaConf.load(path)
