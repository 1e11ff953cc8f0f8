"""Score generated samples: python evaluate.py domain=NAME samples=PATH [reference=PATH] [+options.KEY=VALUE];
prints JSON (a metric that could not be computed is null, with the reason under "null_reasons")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import multidiff.env  # noqa: F401  (before torch)

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from multidiff.core.options import call_strict
from multidiff.threads import ThreadGovernor


def evaluate(cfg: DictConfig) -> dict:
    ThreadGovernor(cfg.threads)  # the metrics' networks and distances take the cores idle at start
    domain = instantiate(cfg.domain)
    options = OmegaConf.to_container(cfg.options, resolve=True)
    if cfg.reference is not None:
        options["reference"] = Path(cfg.reference)
    # the data config of the chosen domain: where references (test splits, the audio classifier) come from
    options.setdefault("data_config", OmegaConf.to_container(cfg.data, resolve=True))
    samples = Path(cfg.samples)
    if not samples.exists():
        raise FileNotFoundError(f"samples={samples}: no such file or folder")
    metrics = call_strict(domain.evaluate, f"{domain.name} evaluation option", options, samples)
    return finite_or_null(metrics)


def finite_or_null(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf are not JSON: each becomes null, its reason recorded under ``null_reasons`` (key path -> why),
    beside any reasons the domain gave."""
    reasons: dict[str, str] = dict(metrics.get("null_reasons") or {})

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            reasons.setdefault(path, f"not computable on these samples ({value})")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    out = clean({k: v for k, v in metrics.items() if k != "null_reasons"}, "")
    if reasons:
        out["null_reasons"] = reasons
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = evaluate(cfg)
    text = json.dumps(metrics, indent=2, default=str, allow_nan=False)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text)


if __name__ == "__main__":
    main()
