"""Train a diffusion model: python train.py domain=audio [key=value ...] (see conf/train.yaml)."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import multidiff.env  # noqa: F401  (before torch)

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from multidiff.build import build_autoencoder, build_module, latent_config, stored_domain_config
from multidiff.checkpoint import (
    check_trusted,
    checkpoint_meta,
    config_targets,
    evaluation_data_config,
    read_checkpoint,
)
from multidiff.core.latent import measure_latent_scale
from multidiff.distillation import build_student, resume_settings
from multidiff.loggers import end_wandb_run
from multidiff.objective import SAMPLE_QUALITY, check_objective, generate_items, logged_metric, score_items
from multidiff.precision import resolve_trainer_precision, sampling_precision
from multidiff.preemption import AtomicCheckpointIO, find_resume
from multidiff.runlock import hold
from multidiff.sampling import SamplingRequest, build_sampler
from multidiff.threads import ThreadGovernor
from multidiff.training import FollowLoad

log = logging.getLogger("multidiff.train")
LIGHTNING_KEYWORDS = ("last", "hpc", "best")
#: what train.py trains: a diffusion model (on data or, with latent=, on latents), latent diffusion's stage one, or
#: a few-step student of a trained model (experiment=distill teacher=...)
STAGES = ("diffusion", "autoencoder", "distill")


def train(cfg: DictConfig) -> pl.Trainer:
    """Train in ``cfg.paths.output_dir``, which one run at a time may use (:func:`run_folder_lock`)."""
    with run_folder_lock(cfg):
        return _train(cfg)


def run_folder_lock(cfg: DictConfig) -> AbstractContextManager:
    """The run folder's lock, on the process that starts the run (rank zero; the other ranks of a distributed run
    share its folder): a second launch into a running folder stops before it writes anything of its own."""
    if rank_zero_only.rank != 0:
        return nullcontext()
    return hold(
        cfg.paths.output_dir,
        "train",
        "Wait for it to end, or start another run in a new folder (hydra.run.dir=DIR).",
    )


def _train(cfg: DictConfig) -> pl.Trainer:
    check_strategy(cfg)
    governor = ThreadGovernor(cfg.threads)
    precision = resolve_trainer_precision(cfg.trainer)  # before anything stores the config
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    fill_from_data(cfg, datamodule)
    module = build_stage(cfg, datamodule)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks.append(FollowLoad(governor))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    plugins = [AtomicCheckpointIO(), *[instantiate(p) for p in cfg.trainer.get("plugins") or []]]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    net = module.autoencoder if cfg.stage == "autoencoder" else module.model.net
    log.info(
        "%s: %s, %.2fM trained parameters, precision %s, outputs in %s",
        module.domain.name,
        type(net).__name__,
        sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6,
        precision,
        cfg.paths.output_dir,
    )
    ckpt_path = resume_path(cfg, lambda path: verify_resume(path, cfg, module))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    save_final(trainer)
    return trainer


def fill_from_data(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Data config keys left null that the data decides (``data_config()``, e.g. a file data module's element
    vocabulary), set before anything reads them, so the checkpoint's config holds the values used."""
    decided = datamodule.data_config() if hasattr(datamodule, "data_config") else {}
    with open_dict(cfg.data):
        for key, value in decided.items():
            if key in cfg.data and cfg.data[key] is None:
                cfg.data[key] = value


def build_stage(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """``stage=autoencoder``: latent diffusion's stage one. ``stage=diffusion``: a diffusion model, on the data or,
    with ``latent=`` a stage-one checkpoint, on its latents (encoded on the fly, standardised by a scale measured
    here on training batches and kept in the checkpoint)."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage={cfg.stage}; valid: {', '.join(STAGES)}")
    info = datamodule.info()
    if cfg.stage == "autoencoder":
        for key, why in (
            ("latent", "trains a diffusion model on an autoencoder's latents"),
            ("mask", "is for diffusion"),
        ):
            if cfg.get(key):
                raise ValueError(f"{key}= {why}; stage=autoencoder trains the autoencoder: drop one of them")
        if cfg.optimized_metric == SAMPLE_QUALITY:
            raise ValueError("an autoencoder generates nothing to score: use optimized_metric=val/loss")
        return build_autoencoder(cfg, info)
    if cfg.stage == "distill":
        module = build_student(cfg)
        check_objective(cfg.optimized_metric, module.domain, cfg.sample_quality.evaluate)
        return module
    stage_one = latent_config(cfg, info, list(cfg.trust_targets)) if cfg.get("latent") else None
    module = build_module(cfg, info)
    if stage_one is not None:
        module.autoencoder.load_state_dict(stage_one.autoencoder.state_dict())
        scale = measure_latent_scale(module.autoencoder, module.domain.data, datamodule.train_dataloader())
        module.autoencoder.latent_scale.fill_(scale)
        log.info("latent=%s: diffusion on its latents (encoded on the fly), standardised by x%.4g", cfg.latent, scale)
    check_objective(cfg.optimized_metric, module.domain, cfg.sample_quality.evaluate)
    return module


def check_strategy(cfg: DictConfig) -> None:
    """Lightning's ``ddp`` starts the other processes by running this command line again; under a local
    multirun (``-m``) each would start the whole sweep again. Where srun or torchrun starts them, it is right."""
    t = cfg.trainer
    several = t.get("devices", 1) not in (1, "1", [0]) or t.get("num_nodes", 1) > 1
    if t.get("strategy") != "ddp" or not several or not HydraConfig.initialized():
        return
    if HydraConfig.get().mode != RunMode.MULTIRUN or SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return
    raise ValueError(
        "trainer.strategy=ddp re-runs the command line to start its processes, which under a local multirun (-m) "
        "would start the sweep again: use trainer.strategy=ddp_spawn for local sweeps, or "
        "hydra/launcher=submitit_slurm (srun starts one process per device)"
    )


def resume_path(cfg: DictConfig, verify: Callable[[Path], None]) -> str | None:
    """``ckpt_path``: a file, one of Lightning's keywords, null (a fresh run) or ``auto``: the newest readable
    checkpoint in this run's directory (``last.ckpt``, a stopped run's ``interrupted.ckpt``, SLURM's
    ``hpc_ckpt_*.ckpt``), so resubmitting the same command in the same run directory continues the run.
    A file (given or found) passes ``verify`` first; keywords name this run's own files."""
    if cfg.ckpt_path != "auto":
        if cfg.ckpt_path and str(cfg.ckpt_path) not in LIGHTNING_KEYWORDS:
            verify(Path(cfg.ckpt_path))
        return cfg.ckpt_path
    found = find_resume(Path(cfg.paths.output_dir), verify)
    if found is not None:
        log.info("ckpt_path=auto: continuing from %s", found)
    return str(found) if found else None


def objective(cfg: DictConfig, trainer: pl.Trainer) -> float | None:
    """The number named by ``optimized_metric`` (for a sweeper): a logged metric such as ``val/loss`` (a
    validation metric is measured again on the final weights, as training may end between two validations), or
    ``sample_quality``, the domain's score of items generated now with the run's sampler (higher is better;
    e.g. -FID for audio). Written with the run's overrides to ``objective.json`` in the run directory. Called on
    every rank (validation is collective); returns the value on rank zero and None on the others."""
    name = cfg.optimized_metric
    module = trainer.lightning_module
    if name.startswith("val/") and not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # (under ddp_spawn the processes are gone: the metrics they sent back are used as they are)
        trainer.validate(module, datamodule=trainer.datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    if name == SAMPLE_QUALITY:
        opts = cfg.sample_quality
        options = OmegaConf.to_container(opts.evaluate, resolve=True)
        options.setdefault("data_config", evaluation_data_config(module.run_config))
        request = SamplingRequest(build_sampler(cfg.sampler), precision=sampling_precision(cfg.trainer.precision))
        items, _ = generate_items(module, request, opts.n, opts.seed, opts.batch_size)
        value, meaning, metrics = score_items(module.domain, items, options, Path(cfg.paths.output_dir))
        value = value if math.isfinite(value) else math.nan
    else:
        value, meaning, metrics = logged_metric(trainer, name), name, {}
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = {
        "optimized_metric": name,
        "value": None if math.isnan(value) else value,
        "meaning": meaning,
        "step": trainer.global_step,
        "overrides": overrides,
        "metrics": metrics,
    }
    out = Path(cfg.paths.output_dir) / "objective.json"
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    log.info("%s = %.6g (%s)", name, value, meaning)
    return value


def verify_resume(ckpt_path: str | Path, cfg: DictConfig, module: pl.LightningModule) -> None:
    """Check a checkpoint to resume from as sample.py does (readable weights-only, multidiff metadata of this
    domain, a stored config naming only trusted targets) before Lightning restores from it, and that it holds
    the model this run configures (:func:`check_same_model`). Targets in this run's own config are the user's
    and so trusted."""
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path)
    meta = checkpoint_meta(ckpt, path)
    meta.expect("autoencoder" if cfg.stage == "autoencoder" else "diffusion", path)  # a student is a diffusion model
    if meta.domain != module.domain.name:
        raise ValueError(f"ckpt_path={path} holds a {meta.domain!r} model; this run trains {module.domain.name!r}")
    own = config_targets(OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    check_trusted(meta.config, path, [*cfg.get("trust_targets", []), *sorted(own)])
    check_same_model(path, meta.config, ckpt.get("state_dict", {}), cfg, module)


#: the config groups that decide the model a checkpoint holds (the rest, such as data, optimizer and trainer
#: settings, may change between a run and its continuation)
MODEL_GROUPS = ("net", "process", "autoencoder", "mask", "latent", "stage", "distill")


def check_same_model(path: Path, stored: dict, state: dict, cfg: DictConfig, module: pl.LightningModule) -> None:
    """Refuse to resume from a checkpoint of another model, naming the settings that differ and what to do."""
    ours = {
        g: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v := cfg.get(g)) else v for g in MODEL_GROUPS
    }
    ours["distill"] = resume_settings(ours["distill"])
    stored = {**stored, "distill": resume_settings(stored.get("distill"))}
    differ = [
        f"{key}: {theirs!r} in the checkpoint, {mine!r} now"
        for group in MODEL_GROUPS
        if not (group == "autoencoder" and not ours.get("latent") and ours.get("stage") != "autoencoder")
        for key, theirs, mine in _differences(stored.get(group), ours.get(group), group)
    ]
    differ += domain_differences(stored.get("domain"), module.domain)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    misfit = sorted(
        k for k in {*shapes, *state} if k not in shapes or k not in state or tuple(state[k].shape) != shapes[k]
    )
    if not differ and not misfit:
        return
    what = "; ".join(differ[:6]) + ("; ..." if len(differ) > 6 else "")
    if not differ:
        what = f"its weights do not fit this model ({', '.join(misfit[:3])}{', ...' if len(misfit) > 3 else ''})"
    raise ValueError(
        f"{path} holds another model than this run configures ({what}). To continue that run, use its settings; "
        "to train this model, start a new run folder (hydra.run.dir=DIR) or start afresh here (ckpt_path=null)"
    )


def domain_differences(stored: dict | None, domain: Any) -> list[str]:
    """What the checkpoint's domain config resolves to (its :meth:`~multidiff.core.domain.Domain.signature`; a
    key it lacks takes the default it was trained with) against this run's domain, where they differ."""
    if not stored or "_target_" not in stored:
        return []
    theirs, mine = instantiate(stored_domain_config(stored)).signature(), domain.signature()
    return [
        f"domain.{k}: {theirs.get(k)!r} in the checkpoint, {mine.get(k)!r} now"
        for k in mine
        if theirs.get(k) != mine.get(k)
    ]


def _differences(theirs: Any, mine: Any, key: str) -> list[tuple[str, Any, Any]]:
    if isinstance(theirs, dict) and isinstance(mine, dict):
        return [d for k in sorted({*theirs, *mine}) for d in _differences(theirs.get(k), mine.get(k), f"{key}.{k}")]
    return [] if theirs == mine else [(key, theirs, mine)]


def save_final(trainer: pl.Trainer) -> Path | None:
    """Write last.ckpt at the step training ended on. ModelCheckpoint saves on its own schedule only,
    so a run stopped by max_time (or max_steps between two saves) would otherwise lose its last steps.
    Not reached when training fails (a NaN guard or any other error), so the last good file stays."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.dirpath or not callback.save_last:
        return None
    if trainer.interrupted or trainer.global_step == 0:
        return None
    path = Path(callback.dirpath) / "last.ckpt"
    trainer.save_checkpoint(path, weights_only=False)  # the full training state, to resume from
    return path


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    failed = True
    try:
        trainer = train(cfg)
        score = objective(cfg, trainer) if cfg.optimized_metric else None  # logs to the run's loggers too
        failed = False
        return score
    except FloatingPointError as e:
        log.error("%s", e)
        sys.exit(1)
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)  # stopped from outside: a failure to the scheduler, not a finished run
    finally:
        end_wandb_run(failed)  # the next job of an in-process sweep starts its own W&B run


if __name__ == "__main__":
    main()
