"""What every few-step student shares: a :class:`DiffusionModule` trained against a frozen teacher (kept outside
the state dict: a checkpoint holds the student only), the condition dropped and the guidance scale drawn per item
as the teacher is asked, and a loss that stops the run when it is not finite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from multidiff.core.distill import check_huber, guided_teacher
from multidiff.core.domain import State
from multidiff.module import DiffusionModule


class StudentModule(DiffusionModule):
    """A student of ``teacher`` that jumps along ``segments`` runs of the noise levels. ``guidance=(lo, hi)``:
    guidance-conditioned distillation (Meng et al. 2023), the scale an input of the student's network;
    ``huber`` c: the pseudo-Huber distance (None: squared). Subclasses give :meth:`distill_loss`."""

    def __init__(
        self,
        teacher: DiffusionModule,
        guidance: tuple[float, float] | None = None,
        segments: int = 1,
        huber: float | None = None,
        **module: Any,
    ):
        super().__init__(**module)
        check_huber(huber)
        self.guidance, self.segments, self.huber = guidance, segments, huber
        object.__setattr__(self, "teacher", teacher)  # a plain attribute: neither trained nor saved

    def on_fit_start(self) -> None:
        self.teacher.to(self.device).eval()

    def draw_asks(self, n: int, cond: Tensor | None, generator: torch.Generator | None, device: torch.device):
        """Per item: whether the condition is dropped (the student learns the unconditional map too) and, for a
        guidance-conditioned student, the scale (a dropped condition is scale 0, the plain model)."""
        drop, w = None, None
        if cond is not None and self.cond_drop_prob > 0:
            drop = torch.rand(n, generator=generator).to(device) < self.cond_drop_prob
        if self.guidance is not None:
            lo, hi = self.guidance
            w = lo + (hi - lo) * torch.rand(n, generator=generator).to(device)
            if drop is not None:
                w = torch.where(drop, torch.zeros_like(w), w)
        return drop, w

    def teacher_of(self, state: State, drop: Tensor | None, w: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The teacher's denoiser D(x, sigma per item) for these items: guided at scale ``w`` when given."""
        if w is None:
            return lambda x, sigma: self.teacher.model(x, sigma, state, drop)
        n = w.shape[0]
        unconditional = torch.ones(n, dtype=torch.bool, device=w.device)
        return guided_teacher(
            lambda x, sigma: self.teacher.model(x, sigma, state, unconditional),
            lambda x, sigma: self.teacher.model(x, sigma, state),
            w,
            lambda v: self.domain.space.per_item(v, state.x, state.ctx),
        )

    def student_of(self, state: State, drop: Tensor | None, w: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The student's denoiser D(x, sigma per item) for these items."""
        return lambda x, sigma: self.model(x, sigma, state, cond_drop=drop, guidance=w)

    def distill_loss(self, batch: Any, generator: torch.Generator | None = None, train: bool = True) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        losses = self.distill_loss(batch)
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite distillation loss ({loss.item()}) at step {self.global_step}; the run stops here and "
                "the last good checkpoint is kept. Lower the learning rate."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=losses.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        losses = self.distill_loss(batch, torch.Generator().manual_seed(batch_idx), train=False)
        self.log("val/loss", losses.mean(), prog_bar=True, batch_size=losses.shape[0], sync_dist=True)
