"""Reading checkpoints as untrusted input.

A checkpoint is a file somebody else may have written. Its tensors are read with
``torch.load(weights_only=True)``, and the run configuration it carries is checked before anything in it
is instantiated: every ``_target_`` anywhere in it (nested in dicts and lists too) must be on
:data:`TRUSTED_TARGETS` or named by the user (``trust_targets``), interpolations are refused, and the
metadata (domain name and info) must have the expected types. Nothing is called before the whole
configuration has passed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidiff.core.samplers import SAMPLERS

#: the key under which train.py's checkpoints keep the run configuration and the domain info
CHECKPOINT_KEY = "multidiff"
#: what a checkpoint holds: a diffusion model (sample.py's input) or a stage-one autoencoder (latent diffusion);
#: the config sections each needs
KINDS = {"diffusion": ("domain", "net", "process", "model"), "autoencoder": ("domain", "autoencoder", "model")}

_SCHEDULES = {
    f"multidiff.core.schedules.{name}Schedule"
    for name in ("Cosine", "Karras", "Linear", "Polynomial", "Rectified", "Sigmoid")
}
# sampler configs name their sampler (``name: ddim``); configs stored by earlier versions named its function
_SAMPLERS = {f"{fn.__module__}.{fn.__name__}" for fn in SAMPLERS.values()}

_AUTOENCODERS = {
    "multidiff.domains.audio.autoencoder.ConvAutoencoder1d",
    "multidiff.domains.molecule.autoencoder.EquivariantAutoencoder",
    "multidiff.domains.pointcloud.autoencoder.PointAutoencoder",
}

#: What a checkpoint's configuration may name, per top-level section ("slot"): multidiff's own components and
#: the optimisers, schedulers, Lightning callbacks and loggers its configs use, each only where it belongs (a
#: Trainer named as the domain is refused). One place; ``tests/test_checkpoint_trust.py`` checks that every
#: ``_target_`` under ``conf/`` is here, in its section, so a new component is trusted on purpose.
TRUSTED: dict[str, frozenset[str]] = {
    "domain": frozenset(
        {
            "multidiff.domains.audio.AudioDomain",
            "multidiff.domains.molecule.MoleculeDomain",
            "multidiff.domains.pointcloud.PointCloudDomain",
        }
    ),
    "net": frozenset(
        {
            "multidiff.domains.audio.nets.DiffWave",
            "multidiff.domains.audio.nets.UNet1d",
            "multidiff.domains.molecule.EGNN",
            "multidiff.domains.pointcloud.PointRINDenoiser",
        }
    ),
    "process": frozenset(
        {
            "multidiff.core.processes.EDMProcess",
            "multidiff.core.processes.FlowProcess",
            "multidiff.core.processes.VPProcess",
            *_SCHEDULES,
        }
    ),
    "schedule": frozenset(_SCHEDULES),
    "mask": frozenset(
        {
            "multidiff.domains.audio.masks.SpanMasks",
            "multidiff.domains.molecule.masks.FragmentMasks",
            "multidiff.domains.pointcloud.masks.HalfSpaceMasks",
        }
    ),
    "sampler": frozenset(_SAMPLERS),
    # latent diffusion: the autoencoder of stage one, and the copy of its config a latent model keeps
    "autoencoder": frozenset(_AUTOENCODERS),
    "latent": frozenset(_AUTOENCODERS),
    "model": frozenset(
        {
            "torch.optim.Adam",
            "torch.optim.AdamW",
            "torch.optim.SGD",
            "torch.optim.lr_scheduler.LambdaLR",
            "torch.optim.lr_scheduler.CosineAnnealingLR",
            "torch.optim.lr_scheduler.LinearLR",
            "torch.optim.lr_scheduler.SequentialLR",
            "torch.optim.lr_scheduler.ConstantLR",
            "multidiff.training.Warmup",
        }
    ),
    "data": frozenset(
        {
            "multidiff.domains.audio.data.AudioFolderDataModule",
            "multidiff.domains.audio.data.FSDDDataModule",
            "multidiff.domains.molecule.QM9DataModule",
            "multidiff.domains.molecule.DrugsDataModule",
            "multidiff.domains.molecule.MoleculeFilesDataModule",
            "multidiff.domains.molecule.GeomDrugsDataModule",
            "multidiff.domains.pointcloud.ShapeNetDataModule",
            "multidiff.domains.pointcloud.ModelNetDataModule",
            "multidiff.domains.pointcloud.FolderDataModule",
        }
    ),
    # stored with the training run for the record; never instantiated from a checkpoint
    "callbacks": frozenset(
        {
            "multidiff.training.EMA",
            "multidiff.training.LossCurves",
            "multidiff.training.SampleCallback",
            "multidiff.posthoc_ema.PostHocEMASnapshots",
            "multidiff.preemption.InterruptCheckpoint",
            "datetime.timedelta",  # the wall-clock checkpoint interval
            "pytorch_lightning.callbacks.LearningRateMonitor",
            "pytorch_lightning.callbacks.ModelCheckpoint",
            "pytorch_lightning.callbacks.TQDMProgressBar",
            *_SAMPLERS,  # the preview callback's sampler
        }
    ),
    "logger": frozenset(
        {
            "multidiff.training.ResumableCSVLogger",
            "pytorch_lightning.loggers.CSVLogger",
            "pytorch_lightning.loggers.TensorBoardLogger",
            "pytorch_lightning.loggers.WandbLogger",
        }
    ),
    "trainer": frozenset({"pytorch_lightning.Trainer"}),
}
#: every trusted target, whatever its section
TRUSTED_TARGETS: frozenset[str] = frozenset().union(*TRUSTED.values())


class UntrustedCheckpointError(ValueError):
    """A checkpoint's configuration names something multidiff will not call on the file's say-so."""


class CheckpointFormatError(ValueError):
    """A file that is not a readable multidiff checkpoint (another file, a truncated one, bad metadata)."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What train.py stores beside the weights: the domain's name, its ``info``, the run configuration, and
    the kind of model (:data:`KINDS`; files written before autoencoders existed hold diffusion models)."""

    domain: str
    domain_info: dict[str, Any]
    config: dict[str, Any]
    kind: str = "diffusion"

    def expect(self, kind: str, path: str | Path) -> None:
        """Refuse a checkpoint of another kind, saying what it holds and what to use instead."""
        if self.kind == kind:
            return
        if kind == "diffusion":
            raise ValueError(
                f"{path} holds an autoencoder of {self.domain} data (train.py stage=autoencoder), not a diffusion "
                f"model: train one on its latents (python train.py domain={self.domain} latent={path}) and sample that"
            )
        raise ValueError(
            f"{path} holds a diffusion model of {self.domain} data, not an autoencoder: latent= needs a checkpoint of "
            f"python train.py stage=autoencoder domain={self.domain}"
        )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, read with ``weights_only=True``; any failure is a
    :class:`CheckpointFormatError` naming the file and what it looks like."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes means 'not a checkpoint'
        raise CheckpointFormatError(
            f"{path} is not a readable multidiff checkpoint ({_describe(path)}); torch.load could not read it as a "
            f"weights-only checkpoint: {type(e).__name__}: {_first_line(e)}. Use a .ckpt written by train.py; "
            "checkpoints holding arbitrary Python objects are never loaded."
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointFormatError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dictionary")
    return ckpt


def checkpoint_meta(ckpt: dict[str, Any], path: str | Path) -> CheckpointMeta:
    """The validated multidiff metadata of a loaded checkpoint."""
    meta = ckpt.get(CHECKPOINT_KEY)
    if meta is None:
        raise CheckpointFormatError(
            f"{path} is not a multidiff checkpoint (no '{CHECKPOINT_KEY}' entry; keys: {sorted(map(str, ckpt))[:8]}); "
            "use a checkpoint written by train.py"
        )
    if not isinstance(meta, dict):
        raise CheckpointFormatError(f"{path}: '{CHECKPOINT_KEY}' must be a dict, got {type(meta).__name__}")
    for key, kind in (("domain", str), ("domain_info", dict), ("config", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointFormatError(
                f"{path}: '{CHECKPOINT_KEY}.{key}' must be a {kind.__name__}, got {type(meta.get(key)).__name__}"
            )
    kind = meta.get("kind", "diffusion")
    if kind not in KINDS:
        raise CheckpointFormatError(f"{path}: '{CHECKPOINT_KEY}.kind' is {kind!r}; valid: {', '.join(KINDS)}")
    for key in KINDS[kind]:
        if not isinstance(meta["config"].get(key), dict):
            raise CheckpointFormatError(f"{path}: the stored config of this {kind} model has no '{key}' section")
    if "state_dict" not in ckpt or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointFormatError(f"{path}: no 'state_dict' of weights")
    return CheckpointMeta(meta["domain"], meta["domain_info"], meta["config"], kind)


def evaluation_data_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored data config (``config``: the stored run config), for tools that instantiate it to
    find evaluation references (test splits, the audio classifier's data): trust-checked with the checkpoint,
    and never allowed to download."""
    data = dict(config.get("data") or {})
    if "download" in data:
        data["download"] = False
    return data


def check_trusted(config: Any, source: str | Path, trust_targets: Sequence[str] = ()) -> None:
    """Refuse ``config`` unless every ``_target_`` in it is trusted in its section and nothing in it is an
    interpolation.

    ``trust_targets``: the user's own extra targets: exact dotted names, or ``pkg.*`` for everything *defined*
    in the package ``pkg`` (the name is resolved and its defining module checked, so ``pkg.os.remove`` does not
    pass as ``pkg.*``). Raises :class:`UntrustedCheckpointError` naming ``source``, the key and the target.
    """
    patterns = _patterns(trust_targets)
    for key, node in _walk(config, ""):
        if isinstance(node, str) and "${" in node:
            raise UntrustedCheckpointError(
                f"{source}: config key '{key}' holds an interpolation ({node!r}); stored configurations are "
                "resolved when saved, so this checkpoint was edited and is refused"
            )
        if not isinstance(node, dict):
            continue
        target = node.get("_target_")
        if target is None:
            continue
        where = f"{key}._target_" if key else "_target_"
        if not isinstance(target, str):
            raise UntrustedCheckpointError(f"{source}: config key '{where}' must be a dotted name, got {target!r}")
        slot = key.split(".")[0].split("[")[0]
        user_trusted = _user_trusted(target, patterns)
        if target not in TRUSTED.get(slot, ()) and not user_trusted:
            place = f"in '{slot}'" if target in TRUSTED_TARGETS else "at all"
            raise UntrustedCheckpointError(
                f"{source}: config key '{where}' names {target!r}, which multidiff does not trust {place}: loading "
                f"would call it. If you wrote this component and trust the file, pass trust_targets=[{target}] "
                "(or a pattern such as mypkg.*); see docs/sharing.md."
            )
        if "_args_" in node and not user_trusted:
            raise UntrustedCheckpointError(
                f"{source}: config key '{key}._args_' passes positional arguments to {target!r}; multidiff's "
                "configs never do, so the file was edited. Trust the target by name to allow it."
            )
        for flag in ("_partial_", "_recursive_"):
            if flag in node and not isinstance(node[flag], bool):
                raise UntrustedCheckpointError(f"{source}: config key '{key}.{flag}' must be true or false")


def _user_trusted(target: str, patterns: list[str]) -> bool:
    """Named exactly, or defined in a package the user trusts as ``pkg.*`` (checked after resolving the name:
    a pattern must not reach what that package merely imports)."""
    if target in patterns:
        return True
    packages = [p[:-2] for p in patterns if p.endswith(".*")]
    if not any(target.startswith(f"{pkg}.") for pkg in packages):
        return False
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - an unresolvable name is simply not trusted
        return False
    module = getattr(obj, "__module__", None) or ""
    return any(module == pkg or module.startswith(f"{pkg}.") for pkg in packages)


def config_targets(config: Any) -> set[str]:
    """Every ``_target_`` named anywhere in a (container) config."""
    return {
        node["_target_"]
        for _, node in _walk(config, "")
        if isinstance(node, dict) and isinstance(node.get("_target_"), str)
    }


def _patterns(trust_targets: Sequence[str] | str | None) -> list[str]:
    if trust_targets is None:
        return []
    items = [trust_targets] if isinstance(trust_targets, str) else list(trust_targets)
    for p in items:
        body = p[:-2] if isinstance(p, str) and p.endswith(".*") else p
        if (
            not isinstance(body, str)
            or not body
            or "*" in body
            or not all(part.isidentifier() for part in body.split("."))
        ):
            raise ValueError(f"trust_targets: {p!r} is neither a dotted name nor a package pattern such as mypkg.*")
    return items


def _walk(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    yield key, node
    children: Iterable[tuple[str, Any]] = ()
    if isinstance(node, dict):
        children = ((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
    elif isinstance(node, list | tuple):
        children = ((f"{key}[{i}]", v) for i, v in enumerate(node))
    for k, v in children:
        yield from _walk(v, k)


def _describe(path: Path) -> str:
    head = path.open("rb").read(8)
    size = path.stat().st_size
    if head.startswith(b"PK"):
        return f"a zip archive of {size} bytes, truncated or not written by torch.save"
    if head[:1] == b"\x80":
        return f"a pickle of {size} bytes"
    if not head:
        return "an empty file"
    return f"{size} bytes starting with {head!r}"


def _first_line(e: BaseException) -> str:
    # torch's own message goes on to recommend weights_only=False, the unsafe opposite of what to do
    return (str(e).strip().splitlines() or [""])[0][:200]


def weights_digest(module: torch.nn.Module) -> str:
    """A short digest of a module's weights and buffers (which teacher a student came from, which autoencoder a
    latent model needs), beyond any path."""
    digest = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]
