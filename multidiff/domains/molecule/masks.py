"""Observation masks for training molecule models to grow molecules from fragments (the ``mask`` config group)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multidiff.core.masks import check_fraction_range, check_probabilities, kinds, uniform
from multidiff.core.parts import Parts
from multidiff.core.state import State


class FragmentMasks:
    """Per molecule (node rows ``[pos | features]`` grouped by ``ctx["batch"]``): nothing known
    (``p_unconditional``), or a fragment: the atoms nearest to a random atom, a fraction drawn from ``size`` of the
    molecule (at least one atom, never all). With probability ``p_heavy`` the fragment is drawn among the heavy
    atoms only, as user fragments often come without hydrogens; ``elements`` (the data's vocabulary) tells which
    feature column marks hydrogen. For a graph state (``Parts`` of atom and pair rows) the pairs of two known atoms
    are known too: a fragment comes with its bonds."""

    domain = "molecule"

    def __init__(
        self,
        elements: Sequence[str],
        p_unconditional: float = 0.1,
        size: Sequence[float] = (0.1, 0.7),
        p_heavy: float = 0.5,
    ):
        name = type(self).__name__
        check_probabilities(name, p_unconditional=p_unconditional)
        check_probabilities(name, p_heavy=p_heavy)
        self.p_unconditional, self.p_heavy = p_unconditional, p_heavy
        self.size = check_fraction_range("size", size, name)
        elements = list(elements)
        self.hydrogen = 3 + elements.index("H") if "H" in elements else None

    def __call__(self, state: State, generator: torch.Generator | None = None) -> Tensor | Parts:
        graph = isinstance(state.x, Parts)
        x = (state.x["node"] if graph else state.x).detach().cpu()
        batch = state.ctx["batch"].cpu()
        m = int(state.ctx["num_items"])
        counts = torch.bincount(batch, minlength=m).tolist()
        keep = kinds(m, [self.p_unconditional], generator) != 0
        heavy_only = torch.rand(m, generator=generator) < self.p_heavy
        fraction = uniform(m, self.size, generator)
        pick = torch.rand(m, generator=generator)
        known = torch.zeros(len(x), dtype=torch.bool)
        start = 0
        for i, count in enumerate(counts):
            rows = x[start : start + count]
            eligible = torch.ones(count, dtype=torch.bool)
            if heavy_only[i] and self.hydrogen is not None:
                heavy = rows[:, self.hydrogen] <= 0
                eligible = heavy if heavy.sum() >= 2 else eligible
            pool = int(eligible.sum())
            k = min(max(1, round(float(fraction[i]) * count)), pool, count - 1)
            if keep[i] and count > 1:
                seed = eligible.nonzero()[int(pick[i] * pool), 0]
                dist = ((rows[:, :3] - rows[seed, :3]) ** 2).sum(1).masked_fill(~eligible, float("inf"))
                known[start + dist.argsort()[:k]] = True
            start += count
        if graph:
            i, j = state.ctx["pair_index"].cpu()
            return Parts({"node": known[:, None], "pair": (known[i] & known[j])[:, None]}).to(state.x.device)
        return known[:, None].to(state.x.device)
