"""Score generated samples: python evaluate.py domain=NAME samples=PATH [reference=PATH]; prints JSON."""

from __future__ import annotations

import os

# idle OpenMP workers sleep instead of spinning: spinning threads stall every parallel op when
# another process holds a core (10-20x slower on a shared small CPU); must precede torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


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
