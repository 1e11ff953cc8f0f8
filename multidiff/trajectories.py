"""Direct distillation on stored teacher trajectories (``distill.method=trajectory``): the teacher solves its
probability-flow ODE once per stored item, with its best deterministic solver on the Karras grid of
``segments * teacher_steps + 1`` levels, from the prior to the data; the states at the K levels where a K-jump
student starts its jumps (the ``karras_open`` levels of K steps, or the prior's level and ``jumps_at``, through
which the solver's grid then passes) and the end are kept. The student then learns
each jump as a regression onto the teacher's own solution (Luhman & Luhman 2021, in K jumps): no teacher call,
no target network and nothing bootstrapped while it trains, so a step costs one forward and backward pass.

The trajectories are drawn for the conditions of training items (a share ``cond_drop_prob`` of them
unconditional, a guidance scale each for a guidance-conditioned student) and kept in the run folder in parts of
one batch (``trajectories/part_NNNNN.pt``, written atomically): a stopped run continues where it stopped, a
resumed run trains on the same trajectories, and a run given a copy of them and a larger count solves only the
new ones (part p: noise seeded by p, the conditions of the loader's p-th batch). Items of one shape (audio, point
clouds, latents) are drawn from every part alike; items of varying size (molecules) train a part at a time, each
item at its own jump.

Blocks of a discrete process (a graph's atom types and bond orders) move by posterior draws along the solve, as
the sampler's chain draws them: the stored states hold the chain's classes at each kept level and the end its last
class probabilities, so the student's estimate learns the probabilities of the classes the solve ends in, as a
consistency student's does, and its coordinates the mean over the draws within a jump.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from multidiff.checkpoint import weights_digest
from multidiff.core.categorical import discrete_of
from multidiff.core.distill import (
    balanced,
    check_jumps_at,
    jump_pair,
    jump_tops,
    run_grid,
    trajectory_loss,
    trajectory_states,
)
from multidiff.core.domain import State
from multidiff.core.parts import Parts
from multidiff.core.samplers import sample_dpmpp_2m
from multidiff.module import DiffusionModule
from multidiff.student import StudentModule

log = logging.getLogger(__name__)
#: the teacher's solver: deterministic, second order, one evaluation per step (the project's default sampler)
SOLVER = sample_dpmpp_2m
#: how each jump's distance counts: ``uniform`` as it is; ``sample`` scaled by sigma_data^2 / (sigma_data^2 + s^2),
#: the share of an error at the jump's end s that reaches the sample (the flow's contraction on a Gaussian of the
#: data's scale), so the fine jumps are not outweighed by the coarse ones, whose states are mostly noise; ``root``
#: by its square root, between the two (``sample`` left the coarse jumps' errors unlearnt on QM9); ``balanced``
#: divided by a running mean of that jump's own distance, so that each jump counts alike relative to its size
#: (EDM2's learned per-level loss weights, Karras et al. 2024, at their optimum; validation keeps the plain distance)
JUMP_WEIGHTS = ("uniform", "sample", "root", "balanced")
#: how slowly the running mean of each jump's distance moves (``balanced``), per training batch; it restarts from
#: the first batch on resume (a few hundred batches to settle)
BALANCE_DECAY = 0.99
#: one part in this many (at least one, with two or more parts) is held out for the validation loss
HELD_OUT_EVERY = 16


def check_trajectory_settings(trajectories: Any, teacher_steps: Any, jump_weight: Any = "uniform") -> None:
    """Refuse a count of trajectories that is no whole number >= 1, fewer than 2 solver steps per jump, or an
    unknown weighting of the jumps."""
    if jump_weight not in JUMP_WEIGHTS:
        raise ValueError(f"distill.jump_weight={jump_weight!r}; valid: {', '.join(JUMP_WEIGHTS)}")
    if not isinstance(trajectories, int) or isinstance(trajectories, bool) or trajectories < 1:
        raise ValueError(
            f"distill.trajectories={trajectories!r}: give how many teacher trajectories to store (e.g. 1024)"
        )
    if not isinstance(teacher_steps, int) or teacher_steps < 2:
        raise ValueError(
            f"distill.teacher_steps={teacher_steps!r}: with method=trajectory it is the teacher's solver steps per "
            "jump; give a whole number >= 2 (12 per jump for 4 jumps: the teacher at 49 steps)"
        )


class TrajectoryModule(StudentModule):
    """A student that learns each of its ``segments`` jumps from ``trajectories`` stored teacher solutions of
    ``segments * teacher_steps + 1`` steps, kept in ``folder``."""

    def __init__(
        self,
        teacher: DiffusionModule,
        trajectories: int,
        teacher_steps: int,
        folder: str,
        seed: int = 0,
        guidance: tuple[float, float] | None = None,
        segments: int = 1,
        huber: float | None = None,
        jump_weight: str = "uniform",
        jumps_at: list[float] | None = None,
        **module: Any,
    ):
        super().__init__(teacher, guidance, segments, huber, **module)
        schedule = self.process.schedule
        check_jumps_at(jumps_at, segments, schedule.sigma_min, schedule.sigma_max)
        self.jump_weight, self.jumps_at = jump_weight, None if jumps_at is None else [float(v) for v in jumps_at]
        self.trajectories, self.teacher_steps, self.folder, self.seed = trajectories, teacher_steps, Path(folder), seed
        # where each jump starts and ends (0: the data): the karras_open levels of K steps, or the prior's level and
        # jumps_at; the solver's grid passes through them, teacher_steps steps per jump (the Karras grid of
        # K * teacher_steps + 1 levels for the karras_open ones)
        tops = jump_tops(schedule, segments, self.jumps_at)
        self.register_buffer("fine", run_grid(tops, schedule.sigma_min, teacher_steps), persistent=False)
        self.register_buffer("tops", tops, persistent=False)
        # each jump's running mean distance (jump_weight=balanced; 0 until seen): rebuilt within steps on resume
        self.register_buffer("jump_scale", torch.zeros(segments), persistent=False)
        self.bank: dict[str, Any] | None = None
        self.wanted = self.settings(weights_digest(teacher))
        self.check_folder()  # before train.py looks for a checkpoint to continue from, or anything is written

    # -- the stored trajectories ------------------------------------------------------------------
    def settings(self, digest: str) -> dict[str, Any]:
        """What the stored trajectories depend on (``bank.json``)."""
        return {
            "teacher_digest": digest,
            "segments": self.segments,
            "teacher_steps": self.teacher_steps,
            "trajectories": self.trajectories,
            "seed": self.seed,
            "guidance": None if self.guidance is None else list(self.guidance),
            "cond_drop_prob": self.cond_drop_prob,
            # (only when chosen: a folder stored before the option keeps matching its record)
            **({} if self.jumps_at is None else {"jumps_at": self.jumps_at}),
        }

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.world_size > 1:  # each process would solve and write the same parts
            raise ValueError(
                f"distill.method=trajectory runs in one process ({self.trainer.world_size} here): distil on one "
                "device (trainer.devices=1), or use distill.method=consistency"
            )

    def on_train_start(self) -> None:
        if self.bank is None:
            self.bank = self.fill()

    def check_folder(self) -> None:
        """Refuse a folder whose stored trajectories were drawn with other settings (before anything runs)."""
        record = self.folder / "bank.json"
        if not record.exists():
            return
        found = json.loads(record.read_text())
        # the count may change: part p depends on p alone (its noise seed, the loader's p-th batch), so a larger
        # bank keeps every stored part and solves the rest, a smaller one trains on the first parts
        diff = {
            k: (found.get(k), self.wanted.get(k))
            for k in {**found, **self.wanted}
            if k != "trajectories" and found.get(k) != self.wanted.get(k)
        }
        if diff:
            raise ValueError(
                f"{self.folder} holds trajectories drawn with other settings (stored, now): {diff}; remove the "
                "folder or train in another run folder (hydra.run.dir=DIR)"
            )

    def fill(self) -> dict[str, Any]:
        """Load the folder's parts and solve the missing ones (one training batch each, for its items'
        conditions) until ``trajectories``; a part that cannot be read is solved again."""
        self.check_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "bank.json").write_text(json.dumps(self.wanted, indent=1))
        parts, have, p, batches, drawn = [], 0, 0, None, 0
        bar = tqdm(total=self.trajectories, desc="teacher trajectories", leave=False)
        while have < self.trajectories:
            path = self.folder / f"part_{p:05d}.pt"
            part = None
            if path.exists():
                try:
                    part = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as e:  # noqa: BLE001 (a truncated or damaged file: solved again)
                    log.warning("teacher trajectories: %s cannot be read (%s); solving it again", path, e)
            if part is None:
                if batches is None:
                    batches = self._batches()
                for _ in range(p - drawn):  # part p takes the p-th batch, as a bank solved in one go would
                    next(batches)
                batch, drawn = next(batches), p + 1
                part = self.solve(self.domain.unpack(self.transfer_batch_to_device(batch, self.device, 0)), p)
                tmp = path.with_suffix(".tmp")
                torch.save(part, tmp)
                os.replace(tmp, path)  # a part is there whole or not at all
            parts.append(part)
            have += _items(part)
            bar.update(_items(part))
            p += 1
            if p % 10 == 0:
                log.info("teacher trajectories: %d of %d", min(have, self.trajectories), self.trajectories)
        bar.close()
        held = max(1, len(parts) // HELD_OUT_EVERY) if len(parts) > 1 else 0
        train, val = parts[: len(parts) - held], parts[len(parts) - held :] or parts
        if parts[0].get("ctx"):  # items of varying size: a training step takes one part whole
            return {"train": train, "val": val}
        # a training step draws as many pairs as a loader batch holds items (the batch itself is not needed)
        return {"train": _join(train), "val": _join(val), "batch": _items(parts[0])}

    def _batches(self) -> Iterator[Any]:
        """The training loader's batches, pass after pass (another pass for more conditions than the data has)."""
        while True:
            empty = True
            for batch in self._loader():
                empty = False
                yield batch
            if empty:
                raise ValueError("the training data loader gives no batches to draw teacher trajectories for")

    def _loader(self) -> Any:
        """The training data's loader (before fitting starts, as in Lightning's sanity validation: the
        datamodule's own)."""
        loader = self.trainer.train_dataloader
        return loader if loader is not None else self.trainer.datamodule.train_dataloader()

    @torch.no_grad()
    def solve(self, state: State, part: int) -> dict[str, Any]:
        """One batch of teacher trajectories from the prior, for the conditions (and, for graphs, the sizes) of
        ``state``'s items."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + part)
        space = self.domain.space
        n = space.num_items(state.x, state.ctx)
        drop, w = self.draw_asks(n, state.cond, gen, state.x.device)
        teacher = self.teacher_of(state, drop, w)
        x = space.noise(state.x, state.ctx, generator=gen) * self.process.prior_std()
        denoise = lambda x, sigma: teacher(x, sigma.expand(n))  # noqa: E731
        discrete = discrete_of(space)
        states = trajectory_states(SOLVER, denoise, x.float(), self.fine, self.teacher_steps, discrete, gen).cpu()
        out = {
            # Parts stored as their dict of tensors: the file loads with weights_only
            "states": dict(states.items()) if isinstance(states, Parts) else states,
            "cond": None if state.cond is None else state.cond.cpu(),
            "drop": None if drop is None else drop.cpu(),
            "w": None if w is None else w.cpu(),
        }
        if state.ctx:  # the graphs' layout (node and pair rows of each item)
            out["ctx"] = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.ctx.items()}
        return out

    # -- training ----------------------------------------------------------------------------------
    def distill_loss(self, batch: Any, generator: torch.Generator | None = None, train: bool = True) -> Tensor:
        if self.bank is None:  # validation before training (Lightning's sanity check) or alone
            self.bank = self.fill()
        if isinstance(bank := self.bank["train" if train else "val"], list):
            return self.part_loss(bank, generator)
        # items of one shape: as many as a loader batch holds, drawn from every part
        i = torch.randint(0, bank["states"].shape[1], (self.bank["batch"],), generator=generator)
        take = lambda v: None if v is None else v[i].to(self.device)  # noqa: E731
        states = bank["states"][:, i].to(self.device)
        return self.jump_loss(states, {}, take(bank["cond"]), take(bank["drop"]), take(bank["w"]), generator)

    def part_loss(self, parts: list[dict[str, Any]], generator: torch.Generator | None) -> Tensor:
        """The loss of one stored part drawn whole (items of varying size)."""
        part = parts[int(torch.randint(0, len(parts), (1,), generator=generator))]
        to = lambda v: v.to(self.device) if isinstance(v, Tensor) else v  # noqa: E731
        stored = part["states"]
        states = (Parts(stored) if isinstance(stored, dict) else stored).to(self.device)
        ctx = {key: to(v) for key, v in part["ctx"].items()}
        return self.jump_loss(states, ctx, to(part["cond"]), to(part["drop"]), to(part["w"]), generator)

    def jump_loss(
        self,
        states: Tensor | Parts,
        ctx: dict[str, Any],
        cond: Tensor | None,
        drop: Tensor | None,
        w: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Per item: the student's jump from its stored state at a level of its own to the teacher's next one
        (``states`` ``(K + 1, rows, ...)``, the items' stored levels)."""
        space, first = self.domain.space, states.select(0, 0)
        b = lambda v: space.per_item(v, first, ctx)  # noqa: E731
        k = torch.randint(0, self.segments, (space.num_items(first, ctx),), generator=generator).to(self.device)
        discrete = discrete_of(space)
        x, aim = jump_pair(states, k, b, discrete)
        return self.weighted(
            trajectory_loss(
                self.student_of(State(x, cond, ctx), drop, w),
                x,
                self.tops[k],
                self.tops[k + 1],
                aim,
                b,
                lambda err: space.item_mean(err, ctx),
                self.huber,
                discrete,
            ),
            k,
        )

    def weighted(self, losses: Tensor, k: Tensor) -> Tensor:
        """Each item's jump distance as ``jump_weight`` counts it (``k``: each item's jump)."""
        if self.jump_weight == "uniform":
            return losses
        if self.jump_weight == "balanced":
            if not (self.training and torch.is_grad_enabled()):
                return losses  # val/loss stays the plain distance, comparable across runs and steps
            return balanced(losses, k, self.jump_scale, True, BALANCE_DECAY)
        s = self.tops[k + 1]
        data = self.process.sigma_data**2
        share = data / (data + s.to(losses.dtype) ** 2)
        return losses * (share if self.jump_weight == "sample" else share.sqrt())


def _items(part: dict[str, Any]) -> int:
    """How many items a stored part holds."""
    return int(part["ctx"]["num_items"]) if part.get("ctx") else part["states"].shape[1]


def _join(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Parts concatenated along the items."""
    joined: dict[str, Any] = {"states": torch.cat([p["states"] for p in parts], dim=1)}
    for key in ("cond", "drop", "w"):
        joined[key] = None if parts[0][key] is None else torch.cat([p[key] for p in parts])
    return joined


def bank_folder(output_dir: str) -> str:
    """Where a run keeps its trajectories."""
    return str(Path(output_dir) / "trajectories")
