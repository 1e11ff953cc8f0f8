"""The preconditioned denoiser D(x; sigma) that samplers call, with classifier-free guidance."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .categorical import categorical_of
from .processes import Process
from .state import State


class Preconditioned(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) around a domain network F; on the space's categorical
    blocks (:mod:`.categorical`), scale * softmax(F) instead."""

    def __init__(self, net: nn.Module, process: Process, space):
        super().__init__()
        self.net, self.process, self.space = net, process, space

    @property
    def guided(self) -> bool:
        """Whether the network takes the guidance scale as an input (a guidance-distilled student): guidance then
        costs one network call, not two."""
        return getattr(self.net, "guidance_embed", None) is not None

    @property
    def observable(self) -> bool:
        """Whether the network was trained to take an observation mask (observation-conditioned training)."""
        return bool(getattr(self.net, "observable", False))

    def raw(
        self,
        x: Tensor,
        sigma: Tensor,
        state: State,
        cond_drop: Tensor | None = None,
        known: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """The network output F for per-item ``sigma`` (B,) (on the space's categorical blocks: the log prior
        that :meth:`forward` adds the blocks' own likelihood to). ``known``: where ``x`` holds clean observed values
        (an observable net only), ``guidance``: the guidance scale per item (a guided net only); each passed on
        only when given, so other nets keep their signature."""
        s = self.space.per_item(sigma, x, state.ctx)
        _, _, c_in = self.process.scalings(s)
        extra = {} if known is None else {"known": known}
        if guidance is not None:
            extra["guidance"] = guidance
        return self.net(
            c_in * x, self.process.c_noise(sigma), cond=state.cond, cond_drop=cond_drop, **extra, **state.ctx
        )

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        state: State,
        cond_drop: Tensor | None = None,
        known: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        s = self.space.per_item(sigma, x, state.ctx)
        c_skip, c_out, _ = self.process.scalings(s)
        raw = self.raw(x, sigma, state, cond_drop, known, guidance)
        d = c_skip * x + c_out * raw
        categorical = categorical_of(self.space)
        # one-hot blocks are class probabilities times their scale, whatever the process predicts elsewhere
        return d if categorical is None else categorical.denoise(d, raw, x, s)


def sampling_denoiser(
    model: Preconditioned,
    state: State,
    guidance: float = 1.0,
    interval: tuple[float, float] | None = None,
    guide: Preconditioned | None = None,
    known: Tensor | None = None,
):
    """A closure ``D(x, sigma_scalar)`` for the samplers, with guidance.

    ``guidance != 1``: D_ref + guidance * (D - D_ref), where D_ref is the unconditional prediction
    (classifier-free guidance, Ho & Salimans 2022; guidance 0 is unconditional, 1 the plain model) or, with
    ``guide``, a weaker model of the same data given the same condition (autoguidance, Karras et al. 2024;
    also for unconditional models). ``interval=(lo, hi)``: guide only at noise levels lo <= sigma <= hi and
    use the plain model elsewhere (Kynkaanniemi et al. 2024). ``known``: the observation mask for a model
    trained with observations (``x`` then holds the clean observed values there); the guide gets it too.
    A guided model (a guidance-distilled student, :attr:`Preconditioned.guided`) takes ``guidance`` as an input:
    one call per step, whatever the scale.
    """
    n = model.space.num_items(state.x, state.ctx)
    if getattr(model, "guided", False):  # a closed-form denoiser in its place takes no scale
        if guide is not None or interval is not None:
            raise ValueError(
                "a guidance-distilled student takes the guidance scale as an input: it cannot be combined with a "
                "guide model (guide_ckpt=) or a guidance interval"
            )
        if guidance != 1.0 and state.cond is None:
            raise ValueError(f"guidance={guidance} needs a condition (+condition.KEY=VALUE) for this student")
        # without a condition the student is the plain model, which it learned at scale 0 (D_plain + 0 (...))
        guidance = guidance if state.cond is not None else 0.0

        def denoise_guided(x: Tensor, sigma: Tensor) -> Tensor:
            scale = torch.full((n,), float(guidance), device=x.device)
            return model(x, sigma.to(x.dtype).expand(n).to(x.device), state, known=known, guidance=scale)

        return denoise_guided
    if guidance != 1.0 and state.cond is None and guide is None:
        raise ValueError(
            f"guidance={guidance} needs a condition (classifier-free guidance) or a guide model (autoguidance); "
            "this request has neither: use guidance=1, a condition, or guide_ckpt="
        )
    if known is not None and guide is not None and not guide.observable:
        raise ValueError(
            "the guide model was not trained with observations (mask=...): an observation-conditioned model "
            "needs an observation-conditioned guide"
        )
    if interval is not None and not (len(interval) == 2 and 0 <= interval[0] <= interval[1]):
        raise ValueError(f"guidance interval must be [lo, hi] with 0 <= lo <= hi, got {list(interval)}")

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        sig = sigma.to(x.dtype).expand(n).to(x.device)
        active = guidance != 1.0 and (interval is None or interval[0] <= float(sigma) <= interval[1])
        if not active:
            return model(x, sig, state, known=known)
        if guide is not None:
            ref = guide(x, sig, state, known=known)
        else:
            ref = model(x, sig, state, cond_drop=torch.ones(n, dtype=torch.bool, device=x.device), known=known)
        if guidance == 0.0:
            return ref
        return ref + guidance * (model(x, sig, state, known=known) - ref)

    return denoise
