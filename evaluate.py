"""Score generated samples: python evaluate.py domain=NAME samples=PATH [reference=PATH]; prints JSON."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def evaluate(cfg: DictConfig) -> dict:
    domain = instantiate(cfg.domain)
    options = OmegaConf.to_container(cfg.options)
    if cfg.reference is not None:
        options["reference"] = Path(cfg.reference)
    options["data_config"] = OmegaConf.to_container(cfg.data, resolve=True)
    return domain.evaluate(Path(cfg.samples), **options)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = evaluate(cfg)
    text = json.dumps(metrics, indent=2, default=str)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text)


if __name__ == "__main__":
    main()
