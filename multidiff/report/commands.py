"""The command lines that made a run (``.hydra/overrides.yaml``) and a sample folder (``sampling.json``)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the request's values that change nothing (the plain model, no observation): left off the command line
_NEUTRAL = {"guidance": 1.0, "guidance_interval": None, "guide_ckpt": None, "resample": 1}


def train_command(overrides: list[str]) -> str:
    """``python train.py <overrides>``, each override quoted for a POSIX shell where it needs it."""
    return " ".join(["python", "train.py", *(shlex.quote(o) for o in overrides)])


def hydra_value(value: Any) -> str:
    """``value`` as a Hydra override writes it: ``null``, ``true``, lists ``[a,b]``, strings as they are unless
    Hydra's grammar would read them otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and (not value or any(c in value for c in " ,[]{}()=:'\"\\")):
        return json.dumps(value)  # quoted: Hydra reads a double-quoted string as it is
    return str(value)


def _sampler_keys(name: str) -> set[str]:
    """The keys ``conf/sampler/<name>.yaml`` declares (given as ``sampler.KEY=``; others need ``+sampler.KEY=``);
    all keys count as undeclared when the file is gone, which ``+`` then adds."""
    from omegaconf import OmegaConf

    from multidiff.config import CONF_DIR

    path = CONF_DIR / "sampler" / f"{name}.yaml"
    return set(OmegaConf.load(path)) if path.is_file() else set()


def _flat(prefix: str, options: Mapping[str, Any]) -> list[str]:
    """``+prefix.key=value`` for every key of a dict option (``condition``, ``observe_options``)."""
    return [f"+{prefix}.{k}={hydra_value(v)}" for k, v in options.items()]


def sample_args(request: Mapping[str, Any], out: str | Path | None = None) -> list[str]:
    """The ``sample.py`` arguments that reproduce ``request`` (a ``sampling.json`` as ``sample.py`` writes it): the
    model, the count and batch plan, the sampler with its grid and every option, and whatever of the guidance and
    observation is not neutral. The precision is the one the run resolved (``auto`` depends on the machine)."""
    r = dict(request)
    args = []
    for key in ("ckpt", "pretrained"):
        if r.get(key) is not None:
            args.append(f"{key}={hydra_value(r[key])}")
    args += [f"{k}={hydra_value(r[k])}" for k in ("n", "batch_size", "seed", "sampler", "steps", "spacing") if k in r]
    # every sampler option, the noise too: defaults differ between samplers and may change in conf/sampler/
    declared = _sampler_keys(str(r.get("sampler")))
    options = {**(r.get("sampler_options") or {}), **({"noise": r["noise"]} if "noise" in r else {})}
    args += [f"{'' if k in declared else '+'}sampler.{k}={hydra_value(v)}" for k, v in options.items()]
    weights = str(r.get("weights") or "ema")
    if weights.startswith("post-hoc EMA, length "):  # sample.py records ema_length=X so
        args.append(f"ema_length={weights.rsplit(' ', 1)[-1]}")
    elif weights != "ema":
        args.append(f"weights={weights}")
    if r.get("mesh"):
        args.append("mesh=true")
    for key in ("guidance", "guidance_interval", "guide_ckpt", "resample"):
        if key in r and r[key] != _NEUTRAL[key]:
            args.append(f"{key}={hydra_value(r[key])}")
    args += _flat("condition", r.get("condition") or {})
    if r.get("observe") is not None:
        args.append(f"observe={hydra_value(r['observe'])}")
        args += _flat("observe_options", r.get("observe_options") or {})
        if r.get("observe_with") not in (None, "auto"):
            args.append(f"observe_with={r['observe_with']}")
    if r.get("precision") is not None:
        args.append(f"precision={r['precision']}")
    if out is not None:
        args.append(f"out={hydra_value(str(out))}")
    return args


def sample_command(request: Mapping[str, Any], out: str | Path | None = None) -> str:
    """``python sample.py ...`` for ``request``, quoted for a POSIX shell."""
    return " ".join(["python", "sample.py", *(shlex.quote(a) for a in sample_args(request, out))])
