"""Choose how to sample after training: python tune_sampling.py ckpt=PATH [trials=30] (see conf/tune_sampling.yaml).

Optuna searches sampler x steps (x guidance, x post-hoc EMA length) for two objectives, the domain's quality
metric (higher is better) and the network evaluations per item, on the same seeds every trial. Writes
``trials.json``, ``pareto.md`` (the non-dominated settings) and ``pareto.png`` (quality against evaluations).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import multidiff.env  # noqa: F401  (before torch)

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from multidiff.build import load_any
from multidiff.checkpoint import evaluation_data_config
from multidiff.config import sampler_config
from multidiff.objective import generate_items, score_items
from multidiff.posthoc_ema import PROFILES, load_ema_length
from multidiff.sampling import SamplingRequest, build_sampler, jumps_of
from multidiff.threads import ThreadGovernor

log = logging.getLogger("multidiff.tune_sampling")


class CountCalls:
    """Network evaluations: forward calls of the denoiser networks (the guide's too), until :meth:`close`."""

    def __init__(self, *nets: torch.nn.Module):
        self.calls = 0
        self.handles = [net.register_forward_pre_hook(self.hook) for net in nets]

    def hook(self, *args: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def tune(cfg: DictConfig) -> list[dict[str, Any]]:
    import optuna

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    governor = ThreadGovernor(cfg.threads)
    module = load_any(cfg.ckpt, weights=cfg.weights, trust_targets=list(cfg.trust_targets)).to(device)
    guide = None
    if cfg.guide_ckpt:
        guide = load_any(
            cfg.guide_ckpt, module.domain.name, weights=cfg.weights, trust_targets=list(cfg.trust_targets)
        ).to(device)
    original = {k: v.clone() for k, v in module.model.state_dict().items()}
    # a local checkpoint's run keeps post-hoc EMA snapshots beside it; a model folder or URL has none
    snapshots = Path(str(cfg.ckpt)).resolve().parent.parent / "posthoc_ema"
    space = cfg.space
    if module.distilled:  # a student serves one sampler, in a few evaluations
        jumps = jumps_of(module.distilled)  # a student of K jumps samples in exactly K steps
        steps = [1, 2, 3, 4] if jumps is None else [jumps]
        log.info("a %s student: searching sampler=consistency at steps %s", module.distilled.get("method"), steps)
        space = OmegaConf.merge(space, {"samplers": ["consistency"], "steps": steps})
    request = OmegaConf.to_container(cfg.condition, resolve=True)
    guided = bool(request) or guide is not None
    has_ema = (snapshots / PROFILES).is_file() and any(snapshots.glob("*.pt"))
    options = OmegaConf.to_container(cfg.evaluate, resolve=True)
    options.setdefault("data_config", evaluation_data_config(module.run_config))
    if cfg.reference is not None:
        options["reference"] = Path(cfg.reference)
    out = Path(cfg.out or cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counter = CountCalls(module.model.net, *([] if guide is None else [guide.model.net]))
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        name = trial.suggest_categorical("sampler", list(space.samplers))
        steps = trial.suggest_categorical("steps", list(space.steps))
        guidance = trial.suggest_float("guidance", *space.guidance) if guided else 1.0
        ema_length = trial.suggest_float("ema_length", *space.ema_length) if has_ema else None
        module.model.load_state_dict(original)
        if ema_length is not None:
            load_ema_length(module, snapshots, ema_length, step=module.checkpoint_step or None)
        sampling = build_sampler(sampler_config(name), steps=steps)
        # (a guide acts only at guidance != 1)
        sampled = SamplingRequest(sampling, guidance=guidance, guide=guide if guidance != 1.0 else None)
        counter.calls = 0
        governor.update()  # follows the machine's load between trials (threads=auto)
        items, batches = generate_items(module, sampled, cfg.n, cfg.seed, cfg.batch_size, condition=request)
        nfe = counter.calls / batches
        quality, meaning, metrics = score_items(module.domain, items, options, out)
        row = {
            "trial": trial.number,
            "sampler": name,
            "steps": steps,
            "guidance": guidance,
            "ema_length": ema_length,
            "nfe": nfe,
            "quality": quality,
            "quality_is": meaning,
            "metrics": metrics,
        }
        rows.append(row)
        (out / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
        log.info(
            "trial %d: %s, %d steps -> %.4g (%s) at %.0f evaluations", trial.number, name, steps, quality, meaning, nfe
        )
        return quality, nfe

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    try:
        study.optimize(objective, n_trials=cfg.trials)
    finally:
        counter.close()
        module.model.load_state_dict(original)
    front = pareto_front(rows)
    write_table(front, rows, out / "pareto.md")
    plot(front, rows, out / "pareto.png")
    log.info("Pareto front of %d settings in %s", len(front), out)
    return front


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings no other beats on both quality (higher) and evaluations (fewer), by evaluations."""

    def dominated(r: dict[str, Any]) -> bool:
        return any(
            o["quality"] >= r["quality"]
            and o["nfe"] <= r["nfe"]
            and (o["quality"] > r["quality"] or o["nfe"] < r["nfe"])
            for o in rows
        )

    return sorted((r for r in rows if not dominated(r)), key=lambda r: r["nfe"])


def write_table(front: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    what = rows[0]["quality_is"] if rows else "quality"
    lines = [f"Pareto front of {len(rows)} trials ({what}, higher is better)", ""]
    lines += [
        "| sampler | steps | guidance | EMA length | evaluations per item | quality |",
        "|---|---|---|---|---|---|",
    ]
    for r in front:
        ema = "-" if r["ema_length"] is None else f"{r['ema_length']:.3f}"
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['guidance']:.2f} | {ema} | {r['nfe']:.0f} | {r['quality']:.4g} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(front: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for name in sorted({r["sampler"] for r in rows}):
        pts = [(r["nfe"], r["quality"]) for r in rows if r["sampler"] == name]
        ax.scatter(*zip(*pts), label=name, s=18, alpha=0.7)
    ax.plot([r["nfe"] for r in front], [r["quality"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel="network evaluations per item", ylabel=rows[0]["quality_is"] if rows else "quality")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@hydra.main(version_base="1.3", config_path="conf", config_name="tune_sampling")
def main(cfg: DictConfig) -> None:
    tune(cfg)


if __name__ == "__main__":
    main()
