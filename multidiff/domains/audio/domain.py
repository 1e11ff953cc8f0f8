"""The audio domain: waveforms as (B, 1, T) tensors, digit labels as the class condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multidiff.core.domain import Domain, State, check_classes
from multidiff.core.media import Clip, Media, pictures
from multidiff.core.observation import Observation
from multidiff.core.space import TensorSpace

from .export import plot_clips, write_clips
from .io import fix_length
from .observe import keep_mask, read_clip


class AudioDomain(Domain):
    name = "audio"
    info_spec = {
        "sample_rate": ("int>0", True),
        "length": ("int>0", True),
        "num_classes": ("int>=0", True),
        "class_names": ("list[str]|none", False),
        "normalize": ("str|none", False),
    }

    def __init__(self, preview_clips: int = 8):
        super().__init__()
        self.space = TensorSpace()
        self.preview_clips = preview_clips

    def bind(self, info: dict[str, Any]) -> None:
        super().bind(info)
        check_classes(info, self.name)

    def unpack(self, batch: Any) -> State:
        wav, label = batch
        return State(wav, label if self.info.get("num_classes", 0) else None)

    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        return State(torch.zeros(n, 1, int(self.info["length"])), cond)

    def condition(self, n: int, *, digit: int | str | None = None, label: int | str | None = None) -> Tensor | None:
        """``digit=7`` (FSDD) or ``label=NAME`` (folder datasets); None draws unconditionally."""
        request = digit if digit is not None else label
        if request is None:
            return None
        names = self.info.get("class_names") or []
        if not self.info.get("num_classes"):
            raise ValueError(
                "this audio model was trained without classes: drop digit=/label= to sample unconditionally"
            )
        if str(request) not in names:
            raise ValueError(f"unknown class {request!r}; valid: {', '.join(names)}")
        return torch.full((n,), names.index(str(request)), dtype=torch.long)

    def decode(self, state: State, observation: Observation | None = None) -> list[dict[str, Any]]:
        """Clips in [-1, 1]; generated from an observation, back at the observed file's amplitude (its known
        samples as they were) with ``known``, the mask of observed samples."""
        names = self.info.get("class_names") or []
        scale = 1.0 if observation is None else float(observation.meta["scale"])
        known = None if observation is None else observation.mask[0].reshape(-1).cpu()
        return [
            {
                "wav": (x.clamp(-1, 1) / scale).clamp(-1, 1),
                "label": None if state.cond is None else names[int(c)],
                "known": known,
            }
            for x, c in zip(state.x, state.cond if state.cond is not None else [None] * len(state.x))
        ]

    def observe(
        self, n: int, path: Path, *, keep: list | None = None, keep_unit: str = "fraction", seed: int = 0
    ) -> Observation:
        """A clip with the spans in ``keep`` known (``[[start, end], ...]`` or one ``[start, end]``, as fractions
        of the clip or, with ``keep_unit=s``, in seconds); the rest, and anything after a clip shorter than the
        model's window, is generated: ``keep=[0, 0.5]`` continues the first half. A clip at another sample rate
        is resampled (and said so); it is scaled as the training clips were and scaled back on output."""
        path = Path(path)
        wav, rate = read_clip(path, int(self.info["sample_rate"]), int(self.info["length"]))
        mask = keep_mask(path, keep, keep_unit, wav.shape[-1], rate, int(self.info["length"]))
        clip = fix_length(wav, int(self.info["length"]))
        scale = 1.0
        if self.info.get("normalize", "peak") == "peak":  # as the data module scaled its clips
            scale = 0.95 / float(clip.abs().max().clamp(min=1e-4))
        values = (clip * scale).expand(n, 1, -1).clone()
        return Observation(values, mask.expand(n, 1, -1), {"scale": scale, "path": str(path)})

    def export(
        self, items: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any], start: int = 0, preview: bool = True
    ) -> list[Path]:
        """``{digit}_sample_{i}.wav`` when conditioned (the metrics read the digit from the name)."""
        out_dir = Path(out_dir)
        names = [
            f"{it['label']}_sample_{i:04d}" if it["label"] is not None else f"sample_{i:04d}"
            for i, it in enumerate(items, start)
        ]
        clips = [it["wav"] for it in items]
        paths = write_clips(clips, out_dir, int(self.info["sample_rate"]), names)
        rate, known = int(self.info["sample_rate"]), [it.get("known") for it in items]
        if preview and items:
            paths.append(plot_clips(clips, out_dir / "preview.png", rate, names, self.preview_clips, known))
        return paths

    def media(self, items: list[dict[str, Any]], files: list[Path]) -> list[Media]:
        """Each clip to listen to, named as its WAV, and the preview's waveforms and spectrograms."""
        wavs = [f for f in files if Path(f).suffix == ".wav"]
        rate = int(self.info["sample_rate"])
        clips = [
            Clip(Path(f).stem, it["wav"].detach().reshape(-1).float().cpu().numpy(), rate) for it, f in zip(items, wavs)
        ]
        return [*clips, *pictures(files)]

    def evaluate(
        self,
        samples: Path,
        *,
        data_config: dict | None = None,
        data_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
        manifest: str | Path | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        train_if_missing: bool = True,
        progress: bool = True,
    ) -> dict[str, Any]:
        """SC09-protocol scores (see :func:`~.metrics.evaluate_folder` for the options).

        Without ``cache_dir`` the classifier is cached beside ``data_config``'s FSDD copy (a writable
        fallback when that folder is read-only, see :mod:`~.reference`), and trained from it when absent.
        """
        from .metrics import evaluate_folder

        if data_root is None and data_config and data_config.get("root"):
            data_root = data_config["root"]
        return evaluate_folder(
            samples,
            cache_dir=cache_dir,
            data_root=data_root,
            manifest=manifest,
            batch_size=batch_size,
            device=device,
            train_if_missing=train_if_missing,
            progress=progress,
        )

    def quality(self, metrics: dict[str, Any]) -> tuple[float, str]:
        fid = (metrics.get("fid") or {}).get("samples")
        return (float("-inf") if fid is None else -float(fid)), "-FID (classifier features)"

    def quick_metrics(self, items: list[dict[str, Any]]) -> dict[str, float]:
        wav = torch.stack([it["wav"] for it in items])
        return {"rms": wav.pow(2).mean().sqrt().item(), "clipped_fraction": (wav.abs() >= 0.999).float().mean().item()}
