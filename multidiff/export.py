"""Models that travel: ``python -m multidiff.export ckpt=PATH out=DIR [dtype=float16] [weights=ema]``.

Writes the checkpoint's model as a folder that ``sample.py pretrained=DIR`` (and :func:`multidiff.build.load_model`)
reads: ``weights.safetensors`` (the weights, half precision by default: no pickle, no code), ``config.yaml``
(the run configuration and the dataset facts the model needs, trust-checked on loading like a checkpoint's)
and ``MODEL_CARD.md`` (domain, data, training steps, parameters, how to sample; edit it to add metrics).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from multidiff.build import MODEL_FILES, load_checkpoint
from multidiff.core.options import check_keys
from multidiff.module import DiffusionModule
from multidiff.paths import replaced

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def export_model(
    module: DiffusionModule,
    out: str | Path,
    dtype: str = "float16",
    card: str | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write ``module`` as a model folder (see the module's docstring); ``card``: the model card's text (None:
    one generated from what the module knows and the run's logged ``metrics``). Every file is written whole or
    not at all."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype}; valid: {', '.join(DTYPES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in module.state_dict().items()
    }
    with replaced(out / MODEL_FILES["weights"]) as tmp:
        save_file(state, str(tmp), metadata={"format": "multidiff", "domain": module.domain.name, "dtype": dtype})
    meta = {
        "kind": "diffusion",
        "domain": module.domain.name,
        "domain_info": module.domain.info,
        "config": portable(module.run_config),
        "step": int(getattr(module, "checkpoint_step", 0)),
    }
    with replaced(out / MODEL_FILES["config"]) as tmp:
        OmegaConf.save(OmegaConf.create(meta), tmp)
    with replaced(out / MODEL_FILES["card"]) as tmp:
        tmp.write_text(card if card is not None else model_card(module, out, dtype, metrics))
    return out


def portable(config: dict) -> dict:
    """``config`` with the training machine's folders (``paths``: its data, logs, run and root folders) written as
    a fresh checkout has them (``datasets``, ``logs``, ``run``, ``.``), so a model folder carries no absolute
    path of the machine it was trained on."""
    paths = config.get("paths") or {}
    folders = {paths.get("data_dir"): "datasets", paths.get("log_dir"): "logs", paths.get("output_dir"): "run"}
    folders[paths.get("root_dir")] = "."
    absolute = [(k, v) for k, v in folders.items() if isinstance(k, str) and Path(k).is_absolute()]
    prefixes = sorted(absolute, key=lambda kv: len(kv[0]), reverse=True)  # the deepest folder first

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            for prefix, short in prefixes:
                if node == prefix or node.startswith(prefix + "/"):
                    return short + node[len(prefix) :]
        return node

    return walk(config)


#: the logged metrics a model card shows besides ``train/loss``
SHOWN = ("val/", "samples/")


def run_metrics(ckpt: str | Path, step: int | None = None) -> dict[str, float]:
    """The last value of the training loss and of each validation and sample metric the checkpoint's run logged
    (its ``csv/metrics.csv``, beside ``checkpoints/``) up to ``step`` (the checkpoint's: later rows belong to
    other weights); empty when the run kept no CSV log."""
    path = Path(ckpt).resolve().parent.parent / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if step is not None and row.get("step") and int(float(row["step"])) > step:
                continue
            last.update({k: float(v) for k, v in row.items() if v and (k == "train/loss" or k.startswith(SHOWN))})
    return last


def model_card(module: DiffusionModule, out: Path, dtype: str, metrics: dict[str, float] | None = None) -> str:
    """A model card from what the module knows and the ``metrics`` its run logged; add measured metrics with the
    command that made them."""
    cfg = module.run_config
    params = sum(p.numel() for p in module.model.net.parameters()) / 1e6
    data = cfg.get("data", {}).get("_target_", "?").rsplit(".", 1)[-1]
    logged = "".join(f"| `{k}` | {v:.4g} |\n" for k, v in sorted((metrics or {}).items()))
    step = getattr(module, "checkpoint_step", 0)
    head = f"\nLogged in training up to step {step}, last values:\n\n| metric | value |\n|---|---|\n"
    table = head + logged if logged else ""
    return f"""# {out.name}

A multidiff {module.domain.name} model: `{cfg.get("net", {}).get("_target_", "?").rsplit(".", 1)[-1]}`, \
{params:.2f}M parameters, process `{cfg.get("process", {}).get("_target_", "?").rsplit(".", 1)[-1]}`, \
trained {getattr(module, "checkpoint_step", 0)} steps on `{data}`; weights in {dtype}.

```bash
python sample.py pretrained={out} n=8 out=samples/
```
{table}"""


def main(argv: list[str]) -> None:
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    if len(options) != len(argv) or "ckpt" not in options or "out" not in options:
        sys.exit("usage: python -m multidiff.export ckpt=PATH out=DIR [dtype=float16|bfloat16|float32] [weights=ema]")
    check_keys(options, ["ckpt", "out", "dtype", "weights"], "export option")
    module = load_checkpoint(options["ckpt"], weights=options.get("weights", "ema"))
    metrics = run_metrics(options["ckpt"], module.checkpoint_step)
    out = export_model(module, options["out"], options.get("dtype", "float16"), metrics=metrics)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
