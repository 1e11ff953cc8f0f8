"""Build a DiffusionModule from a configuration, or back from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from multidiff.autoencoder import AutoencoderModule
from multidiff.checkpoint import CheckpointFormatError, check_trusted, checkpoint_meta, read_checkpoint
from multidiff.core.latent import LatentDomain
from multidiff.core.options import check_keys
from multidiff.module import DiffusionModule

#: the keys of the ``autoencoder`` config group
AUTOENCODER_KEYS = ("net", "kl_weight", "latent_noise")


def build_module(cfg: DictConfig | dict, info: dict[str, Any] | None = None) -> DiffusionModule:
    """Domain, denoiser, schedule and process from their config groups, wrapped in the module; with ``latent``
    set (a stage-one checkpoint, see :func:`latent_config`), the domain seen through ``autoencoder.net``."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    domain = instantiate(cfg.domain)
    if info is not None:
        domain.bind(info)
    if cfg.get("latent"):
        domain = LatentDomain(domain, _autoencoder_net(cfg))
    return DiffusionModule(
        domain=domain,
        net=instantiate(cfg.net),
        process=instantiate(cfg.process),
        optimizer=instantiate(cfg.model.optimizer),
        lr_scheduler=instantiate(cfg.model.lr_scheduler) if cfg.model.get("lr_scheduler") else None,
        cond_drop_prob=cfg.model.cond_drop_prob,
        masks=instantiate(cfg.mask) if cfg.get("mask") else None,
        run_config=_run_config(cfg),
    )


def _autoencoder_net(cfg: DictConfig) -> torch.nn.Module:
    check_keys(cfg.autoencoder, AUTOENCODER_KEYS, "key of the autoencoder config")
    return instantiate(cfg.autoencoder.net)


def build_autoencoder(cfg: DictConfig | dict, info: dict[str, Any] | None = None) -> AutoencoderModule:
    """Stage one of latent diffusion: the domain and its ``autoencoder`` config group, in the training module."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    domain = instantiate(cfg.domain)
    if info is not None:
        domain.bind(info)
    return AutoencoderModule(
        domain=domain,
        autoencoder=_autoencoder_net(cfg),
        optimizer=instantiate(cfg.model.optimizer),
        lr_scheduler=instantiate(cfg.model.lr_scheduler) if cfg.model.get("lr_scheduler") else None,
        kl_weight=cfg.autoencoder.kl_weight,
        latent_noise=cfg.autoencoder.latent_noise,
        run_config=_run_config(cfg),
    )


def _run_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def latent_config(cfg: DictConfig, info: dict[str, Any], trust_targets: Sequence[str] = ()) -> AutoencoderModule:
    """Prepare ``cfg`` (in place) for a diffusion model on the latents of ``cfg.latent``, a stage-one checkpoint:
    its autoencoder's config replaces the ``autoencoder`` group, and the denoiser's input width is set to the
    latent's (:meth:`~multidiff.core.protocols.Autoencoder.net_inputs`). Refuses a checkpoint that is not an
    autoencoder, one of another domain, one trained on data of another shape (``info``: this run's data), or a
    net that has no such input setting. Returns the trained autoencoder, whose weights the new model starts with."""
    path = Path(str(cfg.latent))
    stage_one = load_autoencoder(path, domain=instantiate(cfg.domain).name, trust_targets=trust_targets)
    ae = stage_one.autoencoder
    for key in ae.data_keys:
        theirs, ours = stage_one.domain.info.get(key), info.get(key)
        if theirs != ours:
            raise ValueError(
                f"latent={path}: its autoencoder was trained on data with {key}={theirs}; this run's data has "
                f"{key}={ours}, which its latents do not fit. Train an autoencoder on this data (stage=autoencoder)"
            )
    with open_dict(cfg):
        cfg.autoencoder = OmegaConf.create(stage_one.run_config["autoencoder"])
        for key, value in ae.net_inputs().items():
            if key not in cfg.net:
                raise ValueError(
                    f"latent={path}: net {cfg.net.get('_target_')} has no '{key}' setting, which the latent needs "
                    f"({key}={value}); use a net of the {stage_one.domain.name} domain"
                )
            cfg.net[key] = value
    return stage_one


def load_autoencoder(
    path: str | Path,
    domain: str | None = None,
    map_location: str | torch.device = "cpu",
    trust_targets: Sequence[str] = (),
) -> AutoencoderModule:
    """A stage-one checkpoint (``train.py stage=autoencoder``) as its module, rebuilt only from trusted
    components; ``domain``: refuse one of another domain."""
    module, ckpt = _rebuild(path, "autoencoder", domain, map_location, trust_targets, build_autoencoder)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointFormatError(
            f"{path}: its weights do not fit the autoencoder its config describes: {e}"
        ) from None
    return module.eval()


def _rebuild(
    path: str | Path,
    kind: str,
    domain: str | None,
    map_location: str | torch.device,
    trust_targets: Sequence[str],
    build: Callable[[dict, dict], Any],
) -> tuple[Any, dict[str, Any]]:
    """A checkpoint's module of ``kind`` (see :data:`~multidiff.checkpoint.KINDS`), built from its config after the
    trust check, without its weights yet; and the checkpoint's contents. ``domain``: refuse one of another domain."""
    ckpt = read_checkpoint(path, map_location)
    meta = checkpoint_meta(ckpt, path)
    meta.expect(kind, path)
    what = "model" if kind == "diffusion" else kind
    if domain is not None and meta.domain != domain:
        raise ValueError(
            f"{path} holds a {meta.domain!r} {what}, not {domain!r}: the networks, data and exporter differ between "
            f"domains; use a {domain} checkpoint or domain={meta.domain}"
        )
    check_trusted(meta.config, path, trust_targets)
    try:
        module = build(meta.config, meta.domain_info)
    except Exception as e:  # noqa: BLE001 - after the trust check, any failure is a malformed stored config
        why = f"{type(e).__name__}: {e}"
        raise CheckpointFormatError(f"{path}: its stored config does not build a {what}: {why}") from e
    if module.domain.name != meta.domain:
        raise CheckpointFormatError(
            f"{path}: metadata says domain {meta.domain!r} but its config builds a {module.domain.name!r} domain"
        )
    return module, ckpt


def load_checkpoint(
    path: str | Path,
    domain: str | None = None,
    map_location: str | torch.device = "cpu",
    weights: str = "ema",
    trust_targets: Sequence[str] = (),
) -> DiffusionModule:
    """A module with the checkpoint's weights, rebuilt only from components multidiff trusts.

    ``weights``: ``ema`` (the checkpoint's ``state_dict``: the EMA average when EMA was on) or
    ``current`` (the raw training weights that EMA checkpoints written during training keep beside it).
    ``domain``: refuse a checkpoint of another domain, saying which domain it holds.
    ``trust_targets``: the user's own components the stored config may name besides
    :data:`~multidiff.checkpoint.TRUSTED_TARGETS` (dotted names or patterns such as ``mypkg.*``).
    """
    if weights not in ("ema", "current"):
        raise ValueError(f"weights={weights!r}: use 'ema' or 'current'")
    module, ckpt = _rebuild(path, "diffusion", domain, map_location, trust_targets, build_module)
    state = ckpt["state_dict"]
    if weights == "current":
        if "current_model_state" not in ckpt:
            raise ValueError(
                f"{path} keeps one set of weights only (written without EMA, or at the end of training, when "
                "the average replaces the training weights); use weights=ema"
            )
        state = ckpt["current_model_state"]
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointFormatError(f"{path}: its weights do not fit the model its config describes: {e}") from None
    _check_finite(state, path)
    module.checkpoint_step = int(ckpt.get("global_step") or 0)  # which snapshots post-hoc EMA may use
    return module.eval()


def _check_finite(state: Mapping[str, Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or infinity: every sample drawn from them would be too."""
    bad = [k for k, t in state.items() if torch.is_tensor(t) and t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointFormatError(
            f"{path}: {len(bad)} weight tensors hold NaN or infinite values ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the model diverged or the file is damaged: use an earlier checkpoint"
        )
