"""Post-hoc EMA (Karras et al. 2024, EDM2, sec. 3): training keeps snapshots of two power-function EMAs; any
other EMA length is reconstructed after training as the least-squares combination of the snapshots.

The EMAs and the combination weights are ``ema-pytorch``'s (``KarrasEMA``, ``solve_weights``); this module
writes the snapshots beside the run's checkpoints and reads them back safely (tensors only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from ema_pytorch.post_hoc_ema import PostHocEMA, sigma_rel_to_gamma, solve_weights

SNAPSHOT = re.compile(r"^(\d+)\.(\d+)\.pt$")  # <profile index>.<step>.pt, as ema-pytorch names them
PROFILES = "profiles.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class PostHocEMASnapshots(pl.Callback):
    """Track power-function EMAs of the denoiser with relative lengths ``sigma_rels`` (EDM2's 0.05 and 0.10
    span the useful range) and write a snapshot of each every ``every_n_steps`` optimizer steps to
    ``<run dir>/posthoc_ema/``. ``sample.py ema_length=X`` reconstructs any length from them."""

    def __init__(
        self,
        sigma_rels: tuple[float, ...] = (0.05, 0.10),
        every_n_steps: int = 2000,
        dtype: str = "float16",
        dirname: str = "posthoc_ema",
    ):
        if len(set(sigma_rels)) < 2 or not all(0 < s < 0.3 for s in sigma_rels):
            raise ValueError(f"post-hoc EMA needs at least two different sigma_rels in (0, 0.3), got {sigma_rels}")
        if every_n_steps < 1:
            raise ValueError(f"post-hoc EMA every_n_steps must be >= 1, got {every_n_steps}")
        if dtype not in DTYPES:
            raise ValueError(f"post-hoc EMA dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.sigma_rels, self.every_n_steps, self.dtype, self.dirname = tuple(sigma_rels), every_n_steps, dtype, dirname
        self.ema: PostHocEMA | None = None
        self._pending: dict[str, Any] | None = None
        self._last_step = -1

    def folder(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.dirname

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        folder = self.folder(trainer)
        # the denoiser; training an autoencoder (stage one), the autoencoder
        tracked = module.model if hasattr(module, "model") else module.autoencoder
        self.ema = PostHocEMA(
            tracked,
            sigma_rels=self.sigma_rels,
            update_every=1,
            checkpoint_every_num_steps="manual",
            checkpoint_folder=str(folder),
            checkpoint_dtype=DTYPES[self.dtype],
        )
        self.ema.to(module.device)
        if self._pending is not None:  # resumed: continue the averages where the checkpoint left them
            self.ema.load_state_dict(self._pending)
            self._pending = None
        if trainer.is_global_zero:
            profiles = {"sigma_rels": list(self.sigma_rels), "gammas": list(self.ema.gammas)}
            (folder / PROFILES).write_text(json.dumps(profiles))

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step:  # gradient accumulation: not an optimizer step
            return
        self._last_step = step
        self.ema.update()
        if step % self.every_n_steps == 0 and trainer.is_global_zero:
            self.ema.checkpoint()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.ema is None else self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is not None and state:
            self.ema.load_state_dict(state)
        else:
            self._pending = state or None


def load_ema_length(module: torch.nn.Module, folder: str | Path, sigma_rel: float, step: int | None = None) -> None:
    """Replace the denoiser weights of a :class:`~multidiff.module.DiffusionModule` by the post-hoc EMA of
    length ``sigma_rel`` (see :func:`snapshot_weights`)."""
    state = module.model.state_dict()
    found = snapshot_weights(folder, sigma_rel, step)
    missing = sorted(k for k, v in state.items() if v.is_floating_point() and k not in found)
    if missing:
        raise ValueError(f"the snapshots in {folder} do not hold this model's weights (missing {missing[:3]}...)")
    module.model.load_state_dict({k: found[k].to(v) if k in found else v for k, v in state.items()})


def snapshot_weights(folder: str | Path, sigma_rel: float, step: int | None = None) -> dict[str, torch.Tensor]:
    """The denoiser's state dict (``Preconditioned`` keys) for EMA length ``sigma_rel`` at ``step`` (default: the
    last snapshot), reconstructed from the snapshots in ``folder``."""
    folder = Path(folder)
    profiles_path = folder / PROFILES
    if not profiles_path.is_file():
        raise FileNotFoundError(
            f"no post-hoc EMA snapshots in {folder} ({PROFILES} missing): train with callbacks.posthoc_ema enabled"
        )
    profiles = json.loads(profiles_path.read_text())
    gammas = profiles.get("gammas")
    if not isinstance(gammas, list) or not all(isinstance(g, int | float) for g in gammas):
        raise ValueError(f"{profiles_path}: 'gammas' must be a list of numbers, got {gammas!r}")
    if not 0 < sigma_rel < 0.3:
        raise ValueError(f"ema_length={sigma_rel}: a relative EMA length in (0, 0.3), e.g. 0.05 or 0.1")
    files = [(f, *map(int, m.groups())) for f in sorted(folder.iterdir()) if (m := SNAPSHOT.match(f.name))]
    files = [(f, k, t) for f, k, t in files if t > 0]
    if not files:
        raise FileNotFoundError(f"no snapshot files (<profile>.<step>.pt) in {folder}")
    if any(k >= len(gammas) for _, k, _ in files):
        raise ValueError(f"{folder}: a snapshot names a profile beyond the {len(gammas)} in {PROFILES}")
    if step is not None:  # a checkpoint's step: only the snapshots it had seen
        files = [(f, k, t) for f, k, t in files if t <= step]
        if not files:
            raise ValueError(f"no snapshot in {folder} at or before step {step}: an earlier EMA cannot be rebuilt")
    step = max(t for _, _, t in files) if step is None else step
    t_i = torch.tensor([t for _, _, t in files], dtype=torch.float64)
    gamma_i = torch.tensor([gammas[k] for _, k, _ in files], dtype=torch.float64)
    weights = solve_weights(
        t_i, gamma_i, torch.tensor([float(step)]), torch.tensor([sigma_rel_to_gamma(sigma_rel)])
    ).squeeze(-1)
    total: dict[str, torch.Tensor] = {}
    for (path, _, _), w in zip(files, weights.tolist()):
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key, value in state.items():
            if key.startswith("ema_model.") and value.is_floating_point():
                name = key.removeprefix("ema_model.")
                total[name] = total.get(name, 0) + w * value.double()
    return {k: v.float() for k, v in total.items()}
