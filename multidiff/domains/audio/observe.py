"""A user's clip as an observation: read, checked against the model, and which samples are kept."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchaudio.functional as AF
from torch import Tensor

from .io import read_wav

log = logging.getLogger(__name__)
KEEP_UNITS = ("fraction", "s")


def read_clip(path: Path, sample_rate: int, length: int) -> tuple[Tensor, int]:
    """The mono clip at the model's rate, at most the model's window long; ``(wav (1, T), rate)``."""
    wav, rate = read_wav(path)
    if wav.shape[0] != 1:
        raise ValueError(f"observe={path}: {wav.shape[0]} channels; the model generates mono clips: give a mono file")
    if rate != sample_rate:
        log.warning("observe=%s: resampled from %d Hz to the model's %d Hz", path, rate, sample_rate)
        wav = AF.resample(wav, rate, sample_rate)
    if wav.shape[-1] > length:
        raise ValueError(
            f"observe={path}: {wav.shape[-1]} samples ({wav.shape[-1] / sample_rate:.3f} s at {sample_rate} Hz) is "
            f"longer than the model's window of {length} samples ({length / sample_rate:.3f} s): trim the clip"
        )
    return wav, sample_rate


def keep_mask(path: Path, keep: list | None, unit: str, clip_length: int, rate: int, length: int) -> Tensor:
    """A (length,) boolean mask of the kept samples: the spans of ``keep`` within the clip."""
    if unit not in KEEP_UNITS:
        raise ValueError(f"keep_unit={unit!r}; valid: {', '.join(KEEP_UNITS)}")
    if keep is None:
        raise ValueError(
            f"observe={path}: say which spans to keep, e.g. keep=[[0,0.3],[0.7,1]] (fractions of the clip)"
        )
    spans = [keep] if len(keep) == 2 and all(isinstance(v, int | float) for v in keep) else list(keep)
    total = 1.0 if unit == "fraction" else clip_length / rate
    mask = torch.zeros(length, dtype=torch.bool)
    for span in spans:
        if not (isinstance(span, list | tuple) and len(span) == 2 and all(isinstance(v, int | float) for v in span)):
            raise ValueError(f"keep: each span is [start, end], got {span!r}")
        start, end = float(span[0]), float(span[1])
        if not 0 <= start < end <= total + 1e-9:
            raise ValueError(
                f"keep span {list(span)} is outside the clip: spans need 0 <= start < end <= {total:g} "
                f"({'fractions of the clip' if unit == 'fraction' else f'seconds; the clip lasts {total:.3f} s'})"
            )
        a, b = (
            (round(start * clip_length), round(end * clip_length))
            if unit == "fraction"
            else (round(start * rate), round(end * rate))
        )
        mask[a : min(b, clip_length)] = True
    return mask
