"""Build a DiffusionModule from a configuration, or back from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import load_file
from torch import Tensor

from multidiff.autoencoder import AutoencoderModule
from multidiff.checkpoint import (
    CHECKPOINT_KEY,
    CheckpointFormatError,
    check_trusted,
    checkpoint_meta,
    read_checkpoint,
)
from multidiff.core.latent import LatentDomain
from multidiff.core.options import check_keys
from multidiff.module import DiffusionModule
from multidiff.remote import fetch, is_url

#: the keys of the ``autoencoder`` config group
AUTOENCODER_KEYS = ("net", "kl_weight", "latent_noise")


def build_module(
    cfg: DictConfig | dict,
    info: dict[str, Any] | None = None,
    make: Callable[..., DiffusionModule] = DiffusionModule,
) -> DiffusionModule:
    """Domain, denoiser, schedule and process from their config groups, wrapped in the module; with ``latent``
    set (a stage-one checkpoint, see :func:`latent_config`), the domain seen through ``autoencoder.net``.
    ``make``: the module class (or a partial of it) given these parts, e.g. a distillation's student module.
    A config with ``stage: distill`` builds a student (sampled with ``sampler=consistency`` only)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    domain = instantiate(cfg.domain)
    if info is not None:
        domain.bind(info)
    if cfg.get("latent"):
        domain = LatentDomain(domain, _autoencoder_net(cfg))
    return make(
        domain=domain,
        net=instantiate(cfg.net),
        process=instantiate(cfg.process),
        optimizer=instantiate(cfg.model.optimizer),
        lr_scheduler=instantiate(cfg.model.lr_scheduler) if cfg.model.get("lr_scheduler") else None,
        cond_drop_prob=cfg.model.cond_drop_prob,
        masks=instantiate(cfg.mask) if cfg.get("mask") else None,
        run_config=_run_config(cfg, domain.signature()),
        distilled=OmegaConf.to_container(cfg.distill, resolve=True) if cfg.get("stage") == "distill" else None,
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


def _run_config(cfg: DictConfig, resolved: dict[str, Any] | None = None) -> dict:
    """The config a checkpoint stores; ``resolved``: the domain's choices as it resolved them (``auto`` made
    explicit), so that the checkpoint keeps meaning what it was trained as when a default changes."""
    out = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    if resolved:
        out["domain"] = {**out["domain"], **resolved}
    return out


def stored_domain_config(domain: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's (trust-checked) domain config read as this version must
    (:meth:`~multidiff.core.domain.Domain.stored_config`)."""
    return get_class(domain["_target_"]).stored_config(domain)


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with its domain config read by :func:`stored_domain_config`."""
    domain = config.get("domain")
    if not isinstance(domain, dict) or "_target_" not in domain:
        return config
    return {**config, "domain": stored_domain_config(domain)}


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
    ckpt = read_checkpoint(path, map_location)
    module = _rebuild(ckpt, path, "autoencoder", domain, trust_targets, build_autoencoder)
    return _with_weights(module, ckpt["state_dict"], path, "autoencoder").eval()


def _rebuild(
    ckpt: dict[str, Any],
    path: str | Path,
    kind: str,
    domain: str | None,
    trust_targets: Sequence[str],
    build: Callable[[dict, dict], Any],
) -> Any:
    """The module of ``kind`` (see :data:`~multidiff.checkpoint.KINDS`) that checkpoint contents ``ckpt`` (read
    from ``path``) describe, built from its config after the trust check, without its weights yet. ``domain``:
    refuse one of another domain."""
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
        module = build(stored_config(meta.config), meta.domain_info)
    except Exception as e:  # noqa: BLE001 - after the trust check, any failure is a malformed stored config
        why = f"{type(e).__name__}: {e}"
        raise CheckpointFormatError(f"{path}: its stored config does not build a {what}: {why}") from e
    if module.domain.name != meta.domain:
        raise CheckpointFormatError(
            f"{path}: metadata says domain {meta.domain!r} but its config builds a {module.domain.name!r} domain"
        )
    return module


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
    ckpt = read_checkpoint(path, map_location)
    module = _rebuild(ckpt, path, "diffusion", domain, trust_targets, build_module)
    state = ckpt["state_dict"]
    if weights == "current":
        if "current_model_state" not in ckpt:
            raise ValueError(
                f"{path} keeps one set of weights only (written without EMA, or at the end of training, when "
                "the average replaces the training weights); use weights=ema"
            )
        state = ckpt["current_model_state"]
    _with_weights(module, state, path, "model")
    module.checkpoint_step = int(ckpt.get("global_step") or 0)  # which snapshots post-hoc EMA may use
    return module.eval()


#: the models shipped with the package, by name: folders of ``multidiff/models/`` (see :func:`load_model`)
SHIPPED_MODELS = Path(__file__).parent / "models"
#: what an exported model folder holds (:mod:`multidiff.export`)
MODEL_FILES = {"weights": "weights.safetensors", "config": "config.yaml", "card": "MODEL_CARD.md"}


def shipped_models() -> list[str]:
    """The names ``pretrained=`` takes for the models shipped with the package."""
    return sorted(p.name for p in SHIPPED_MODELS.iterdir() if p.is_dir()) if SHIPPED_MODELS.is_dir() else []


def model_folder(model: str | Path) -> Path:
    """A shipped model's folder by name (``fsdd-digits``), or an exported model folder's path."""
    shipped = shipped_models()
    if str(model) in shipped:
        return SHIPPED_MODELS / str(model)
    folder = Path(model)
    if not (folder / MODEL_FILES["config"]).is_file() or not (folder / MODEL_FILES["weights"]).is_file():
        raise FileNotFoundError(
            f"pretrained={model}: neither a shipped model ({', '.join(shipped) or 'none'}) nor a folder holding "
            f"{MODEL_FILES['config']} and {MODEL_FILES['weights']} (written by python -m multidiff.export)"
        )
    return folder


def load_model(model: str | Path, domain: str | None = None, trust_targets: Sequence[str] = ()) -> DiffusionModule:
    """A shipped or exported model (:func:`model_folder`) as its module: the config is trust-checked as a
    checkpoint's is, the ``safetensors`` weights (no pickle) are loaded into the model it describes."""
    folder = model_folder(model)
    meta = OmegaConf.to_container(OmegaConf.load(folder / MODEL_FILES["config"]), resolve=False)
    try:
        state = load_file(folder / MODEL_FILES["weights"])
    except Exception as e:  # noqa: BLE001 - any failure to parse the file means 'not a weights file'
        raise CheckpointFormatError(
            f"{folder / MODEL_FILES['weights']}: not a readable safetensors file: {e}"
        ) from None
    module = _rebuild(
        {CHECKPOINT_KEY: meta, "state_dict": state}, folder, "diffusion", domain, trust_targets, build_module
    )
    _with_weights(module, state, folder, "model")  # (half-precision weights are cast to the model's float32)
    module.checkpoint_step = int(meta.get("step") or 0)
    return module.eval()


def load_any(
    source: str | Path, domain: str | None = None, weights: str = "ema", trust_targets: Sequence[str] = ()
) -> DiffusionModule:
    """A model from wherever it is: a training checkpoint, an exported model folder, a shipped model's name, or
    a URL of a checkpoint or folder (``hf://``, ``https://``, any fsspec URL; fetched once, :mod:`multidiff.remote`),
    each trust-checked and loaded as :func:`load_checkpoint` or :func:`load_model` does."""
    if weights not in ("ema", "current"):
        raise ValueError(f"weights={weights!r}: use 'ema' or 'current'")
    local = fetch(str(source)) if is_url(str(source)) else Path(source)
    shipped = shipped_models()
    if local.is_dir() or str(source) in shipped:
        if weights != "ema":
            raise ValueError(f"weights={weights} needs a training checkpoint; {source} is a model folder (one set)")
        return load_model(local if local.is_dir() else str(source), domain, trust_targets)
    if not local.exists():
        raise FileNotFoundError(
            f"{source}: no such checkpoint or model folder; also not a shipped model ({', '.join(shipped) or 'none'}) "
            "or a URL (hf://ORG/REPO, https://..., any fsspec URL)"
        )
    return load_checkpoint(local, domain, weights=weights, trust_targets=trust_targets)


def _with_weights(module: Any, state: Mapping[str, Tensor], source: str | Path, what: str) -> Any:
    """``module`` with ``state`` loaded, refused (naming ``source``) when the weights do not fit the ``what`` its
    config describes or hold NaN or infinity, which every sample drawn from them would too."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointFormatError(f"{source}: its weights do not fit the {what} its config describes: {e}") from None
    bad = [k for k, t in state.items() if torch.is_tensor(t) and t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointFormatError(
            f"{source}: {len(bad)} weight tensors hold NaN or infinite values ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the model diverged or the file is damaged: use an earlier checkpoint"
        )
    return module
