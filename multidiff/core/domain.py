"""The contract between the domain-agnostic core and one kind of data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .media import Media, pictures
from .observation import Observation
from .protocols import Space
from .state import State


class Domain:
    """A kind of data: its space, how batches become states, how samples become files.

    ``info`` is a JSON-able dict the datamodule provides at training time (class names, node
    count histogram, normalisation, ...); it is stored in every checkpoint so that sampling
    needs no dataset.
    """

    name: str = "base"
    space: Space

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    # -- training ---------------------------------------------------------------------------
    #: the ``info`` keys this domain reads: key -> (kinds, required); checked by :meth:`bind`
    info_spec: dict[str, tuple[str, bool]] = {}

    @classmethod
    def stored_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's domain config as this version must read it: where a value's meaning has changed since
        such a config could be written, the value it meant then. Run configs store resolved choices
        (:meth:`signature`), so only configs from before a change need this; as it is by default."""
        return cfg

    def signature(self) -> dict[str, Any]:
        """The domain settings that decide what the model means (state layout, how parts are denoised), as this
        instance resolved them: a run resumes only from a checkpoint whose domain gives the same."""
        return {}

    def bind(self, info: dict[str, Any]) -> None:
        """Receive the datamodule's ``info()`` (or the checkpoint's copy of it), checked against
        :attr:`info_spec` so that a malformed one fails here, naming the key, not deep inside sampling."""
        check_info(info, self.info_spec, self.name)
        self.info = dict(info)

    def unpack(self, batch: Any) -> State:
        """Turn one dataloader batch into a :class:`State`."""
        raise NotImplementedError

    # -- generation -------------------------------------------------------------------------
    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        """A zero state shaped for ``n`` new items (e.g. drawing atom counts per molecule)."""
        raise NotImplementedError

    def condition(self, n: int) -> Tensor | None:
        """The condition tensor for a user request, given as keyword arguments a domain names explicitly
        (``digit=7``, ``label=chair``, ``gap=6.5``); nothing requested is None (unconditional). Callers pass a
        user's request through :func:`multidiff.core.options.call_strict`, so an unknown key is an error
        naming the valid ones."""
        return None

    def decode(self, state: State, observation: Observation | None = None) -> list[Any]:
        """Split a sampled state into per-item objects (waveforms, point sets, molecules); with the
        ``observation`` it was generated from, mapped back to the observed file's units and marked."""
        raise NotImplementedError

    def observe(self, n: int, path: Path, *, seed: int = 0) -> Observation:
        """A user's file as an observation of ``n`` items in this domain's state layout (a clip with a gap, a
        partial scan, ...), with options as keyword arguments the domain names explicitly (callers check them with
        :func:`~multidiff.core.options.call_strict`); ``seed`` fixes whatever the observation draws (each batch
        of a run passes its own)."""
        raise ValueError(f"the {self.name} domain does not generate from observations; sample without observe=")

    #: files :meth:`export` writes whole for the items it is given, in formats whose records simply follow each
    #: other (SDF, multi-frame XYZ): a folder written batch by batch joins them in batch order
    #: (:mod:`multidiff.sample_folder`); every other file is named per item
    concatenated: tuple[str, ...] = ()

    def export(
        self, items: list[Any], out_dir: Path, meta: dict[str, Any], start: int = 0, preview: bool = True
    ) -> list[Path]:
        """Write items in the domain's file format, plus a PNG preview when ``preview``; return the paths.
        ``start``: the run-wide index of the first item (sampling writes batch by batch), from which per-item
        file names and record names are numbered, so that the batches of one run never write the same name
        (except the files named in :attr:`concatenated`)."""
        raise NotImplementedError

    def media(self, items: list[Any], files: list[Path]) -> list[Media]:
        """What loggers show of ``items``, given the ``files`` :meth:`export` wrote for them: here its PNG previews;
        domains add what a logger can play or turn (clips, point clouds)."""
        return pictures(files)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, samples: Path) -> dict[str, Any]:
        """Metrics for a file or folder of samples, as a JSON-able dict (no NaN: null with a reason).
        Options are keyword arguments each domain names explicitly (``data_config``: the data the model was
        trained on, for references; ``reference``: a file or folder to compare against, ...)."""
        raise NotImplementedError

    def quality(self, metrics: dict[str, Any]) -> tuple[float, str]:
        """One number, higher is better, from :meth:`evaluate`'s metrics, and what it is: what tuning
        (``tune_sampling.py``) optimises against the number of network evaluations."""
        raise NotImplementedError(f"the {self.name} domain names no quality metric for tuning")

    def quick_metrics(self, items: list[Any]) -> dict[str, float]:
        """Cheap metrics logged during training on freshly generated items."""
        return {}


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "none":
        return value is None
    if kind in ("int", "int>0", "int>=0"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok and (kind == "int" or value > 0 or (kind == "int>=0" and value == 0))
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if kind.startswith("list[") and kind.endswith("]"):
        inner = kind[5:-1]
        return isinstance(value, list | tuple) and all(_kind_ok(v, inner) for v in value)
    raise ValueError(f"unknown info kind {kind!r}")


def check_info(info: Any, spec: dict[str, tuple[str, bool]], domain: str) -> None:
    """Check a domain ``info`` dict against ``spec`` (key -> (kinds such as ``"int|none"`` or
    ``"list[str]"``, required)); raises ValueError naming the key, its value's type and what is valid."""
    if not isinstance(info, dict) or not all(isinstance(k, str) for k in info):
        raise ValueError(f"{domain} domain info must be a dict with string keys, got {type(info).__name__}")
    for key, (kinds, required) in spec.items():
        if key not in info:
            if required:
                raise ValueError(f"{domain} domain info: missing {key!r} (has {sorted(info)})")
            continue
        if not any(_kind_ok(info[key], k) for k in kinds.split("|")):
            raise ValueError(
                f"{domain} domain info: {key!r} must be {kinds.replace('|', ' or ')}, "
                f"got {type(info[key]).__name__} {str(info[key])[:80]}"
            )


def check_classes(info: dict[str, Any], domain: str) -> None:
    """``num_classes`` classes need as many ``class_names`` (the names sampling requests and exports use)."""
    names = info.get("class_names") or []
    if info.get("num_classes") and len(names) != info["num_classes"]:
        raise ValueError(
            f"{domain} domain info: num_classes is {info['num_classes']} but class_names has {len(names)} entries"
        )
