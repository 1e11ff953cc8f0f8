"""Property predictor for checking property-conditioned generation (EDM, Hoogeboom et al. 2022, Sec. 5.3).

EDM judges a model conditioned on a QM9 property by an E(3)-invariant regressor trained on the first half of
QM9's training split (Da): the MAE between the regressor's prediction for each generated molecule and the
value that molecule was conditioned on. Two baselines bracket it, both on the second half (Db), which the
regressor never saw: the regressor against the true values ("QM9", a lower bound: its own error) and against
the true values shuffled ("Naive", an upper bound: no information about the molecule). EDM reports for alpha
0.10 / 9.01 bohr^3 (EDM itself 2.76). Here, on one CPU thread (hidden 64, 4 layers, 2500 steps of 64 molecules,
8 minutes): 1.01 / 8.96 bohr^3; the lower bound needs far longer training to approach EDM's.

The regressor is an EGNN of this package's :class:`~.net.EquivariantBlock` on fully connected molecules; its
readout uses only the invariant node features, summed over the molecule's atoms, so it is invariant to
rotations, translations and atom order. A predictor is saved as one torch file (weights and JSON-able
metadata) and read with ``torch.load(weights_only=True)``.

    python -m multidiff.domains.molecule.properties --data qm9 --property alpha --steps 20000 --out alpha.pt
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from multidiff.paths import data_dir, replaced

from .drugs import DrugsDataModule
from .elements import reindex_types
from .net import EquivariantBlock, _rows, _scatter_sum, fully_connected_edges
from .qm9 import QM9DataModule
from .structures import Molecule

FORMAT_VERSION = 1
EDM_HALVES_SEED = 42  # EDM's qm9/data/utils.py: np.random.seed(42); permutation of the training split


class PropertyRegressor(nn.Module):
    """One scalar per molecule from atom types, formal charges and coordinates (Angstrom), E(3)-invariant.

    Embedding of ``[one-hot type | charge]``, ``layers`` attention EGNN blocks on each molecule's fully
    connected graph, then ``MLP(h)`` per atom, summed over the molecule (properties like alpha are
    extensive), then an MLP to one value.
    """

    def __init__(
        self,
        num_atom_types: int,
        hidden: int = 128,
        layers: int = 4,
        coords_range: float = 15.0,
        aggregation_norm: float = 10.0,
    ):
        super().__init__()
        self.num_atom_types, self.hidden, self.layers = num_atom_types, hidden, layers
        self.coords_range, self.aggregation_norm = coords_range, aggregation_norm
        self.embed = nn.Linear(num_atom_types + 1, hidden)
        # the coordinate range is shared out over the layers, as the denoiser does (see net.py's docstring)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                hidden,
                attention=True,
                tanh=True,
                coords_range=coords_range / max(layers, 1),
                norm_constant=1.0,
                aggregation_norm=aggregation_norm,
            )
            for _ in range(layers)
        )
        self.node_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.graph_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, pos: Tensor, types: Tensor, charges: Tensor, batch: Tensor, num_items: int) -> Tensor:
        """``pos`` (A, 3), ``types``/``charges``/``batch`` (A,) long with ``batch`` sorted -> (num_items,)."""
        dtype = self.embed.weight.dtype
        pos = pos.to(dtype)
        counts = torch.bincount(batch, minlength=num_items).clamp(min=1).to(dtype)
        centre = pos.new_zeros(num_items, 3).index_add_(0, batch, pos) / counts[:, None]
        x = pos - centre[batch]  # centred: the coordinate updates then start from the molecule's own frame
        one_hot = nn.functional.one_hot(types, self.num_atom_types).to(dtype)
        h = self.embed(torch.cat([one_hot, charges[:, None].to(dtype)], dim=1))
        row, col = fully_connected_edges(batch, num_items)
        d0 = ((_rows(x, row) - _rows(x, col)) ** 2).sum(1, keepdim=True)
        for block in self.blocks:
            h, x = block(h, x, row, col, d0)
        # only h (invariant) is read out; x is discarded, so the output is invariant
        return self.graph_out(_scatter_sum(self.node_out(h), batch, num_items)).squeeze(1)


def _packed_batch(
    pos: Tensor, types: Tensor, charges: Tensor, ptr: np.ndarray, idx: np.ndarray
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The atoms of molecules ``idx`` of packed arrays, gathered without a loop over molecules."""
    starts = ptr[idx]
    sizes = ptr[idx + 1] - starts
    offsets = np.cumsum(sizes) - sizes
    atoms = torch.from_numpy(np.arange(int(sizes.sum())) + np.repeat(starts - offsets, sizes))
    batch = torch.from_numpy(np.repeat(np.arange(len(idx)), sizes))
    return pos[atoms], types[atoms], charges[atoms], batch


@dataclass
class PropertyPredictor:
    """A trained :class:`PropertyRegressor` for one property, with what it takes to read its output.

    The regressor predicts ``(value - mean) / std``; :meth:`predict` returns physical units (``unit``).
    ``summary``: how it was trained and its baselines (``mae_heldout``, ``mae_shuffled``, split sizes, ...).
    """

    model: PropertyRegressor
    prop: str
    unit: str
    elements: list[str]
    mean: float
    std: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @torch.no_grad()
    def _predict_packed(
        self, pos: Tensor, types: Tensor, charges: Tensor, ptr: np.ndarray, indices: np.ndarray, batch_size: int
    ) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            p, t, c, b = (v.to(self.device) for v in _packed_batch(pos, types, charges, ptr, idx))
            out.append(self.model(p, t, c, b, len(idx)).double().cpu().numpy())
        self.model.train(was_training)
        pred = np.concatenate(out) if out else np.zeros(0)
        return pred * self.std + self.mean

    def predict_arrays(self, arrays: dict[str, Any], indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predictions for molecules ``indices`` of a data module's packed arrays (see :mod:`.data`)."""
        types = torch.from_numpy(
            reindex_types(arrays["types"], arrays["elements"], self.elements, f"{self.prop} predictor")
        )
        pos = torch.from_numpy(np.asarray(arrays["pos"]))
        charges = torch.from_numpy(arrays["charges"].astype(np.int64))
        return self._predict_packed(pos, types, charges, arrays["ptr"], np.asarray(indices, np.int64), batch_size)

    def predict(self, molecules: Sequence[Molecule], batch_size: int = 256) -> np.ndarray:
        """The property of each molecule, in ``unit``; elements outside the vocabulary raise ValueError."""
        index = {e: k for k, e in enumerate(self.elements)}
        for k, mol in enumerate(molecules):
            unknown = sorted({e for e in mol.elements if e not in index})
            if unknown:
                raise ValueError(
                    f"molecule {mol.name or f'#{k}'!r} has elements {unknown} that the {self.prop} predictor "
                    f"does not know (it was trained on {self.elements})"
                )
        sizes = np.array([len(m) for m in molecules], np.int64)
        ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if len(molecules):
            pos = torch.from_numpy(np.concatenate([m.positions for m in molecules]).reshape(-1, 3))
            types = torch.tensor([index[e] for m in molecules for e in m.elements], dtype=torch.long)
            charges = torch.from_numpy(np.concatenate([m.charges for m in molecules]).astype(np.int64))
        else:
            pos, types, charges = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return self._predict_packed(pos, types, charges, ptr, np.arange(len(molecules)), batch_size)

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, JSON-able."""
        return {
            "format_version": FORMAT_VERSION,
            "property": self.prop,
            "unit": self.unit,
            "elements": list(self.elements),
            "mean": float(self.mean),
            "std": float(self.std),
            "model": {
                "hidden": self.model.hidden,
                "layers": self.model.layers,
                "coords_range": self.model.coords_range,
                "aggregation_norm": self.model.aggregation_norm,
            },
            "summary": self.summary,
        }

    def save(self, path: str | Path) -> Path:
        """One torch file (weights + :meth:`metadata`), written atomically."""
        path = Path(path)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with replaced(path) as tmp:  # a crashed run never leaves half a file
            torch.save({"metadata": self.metadata(), "state_dict": state}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> PropertyPredictor:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no property predictor at {path}; train one with "
                f"`python -m multidiff.domains.molecule.properties --property NAME --out {path}`"
            )
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read the property predictor {path}: {e}") from e
        meta = payload.get("metadata") if isinstance(payload, dict) else None
        if not isinstance(meta, dict) or "state_dict" not in payload:
            raise ValueError(f"{path} is not a property predictor (no metadata and state_dict)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"property predictor {path} has format {meta.get('format_version')}, this code reads "
                f"{FORMAT_VERSION}; retrain it"
            )
        arch = meta["model"]
        model = PropertyRegressor(
            len(meta["elements"]), arch["hidden"], arch["layers"], arch["coords_range"], arch["aggregation_norm"]
        )
        model.load_state_dict(payload["state_dict"])
        model.to(map_location).eval()
        return cls(
            model, meta["property"], meta["unit"], list(meta["elements"]), meta["mean"], meta["std"], meta["summary"]
        )


def edm_halves(train_indices: np.ndarray, seed: int = EDM_HALVES_SEED) -> tuple[np.ndarray, np.ndarray]:
    """EDM's two halves of the training split: (Da, the predictor's; Db, the baselines' and, in EDM, the
    conditional diffusion model's). With seed 42 and QM9's EDM split these are EDM's ``qm9_first_half`` and
    ``qm9_second_half``."""
    train_indices = np.asarray(train_indices)
    perm = np.random.RandomState(seed).permutation(len(train_indices))
    half = len(train_indices) // 2
    return train_indices[perm[:half]], train_indices[perm[half:]]


def train_predictor(
    arrays: dict[str, Any],
    prop: str,
    *,
    train_idx: np.ndarray,
    eval_idx: np.ndarray,
    steps: int,
    batch_size: int = 128,
    hidden: int = 128,
    layers: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    unit: str = "",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> PropertyPredictor:
    """Train a predictor of ``prop`` on molecules ``train_idx`` of packed ``arrays``; record its baselines on
    ``eval_idx``: ``mae_heldout`` (true targets) and ``mae_shuffled`` (the targets in a seeded permutation).

    L1 loss on targets standardised with the training molecules' mean/std, Adam, cosine decay to 0.
    """
    names = [str(n) for n in arrays["prop_names"]]
    if prop not in names:
        raise ValueError(f"unknown property {prop!r}; the data has {names}")
    train_idx, eval_idx = np.asarray(train_idx, np.int64), np.asarray(eval_idx, np.int64)
    if len(train_idx) == 0 or len(eval_idx) == 0:
        raise ValueError(f"need training and evaluation molecules, got {len(train_idx)} and {len(eval_idx)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    values = np.asarray(arrays["props"])[:, names.index(prop)].astype(np.float64)
    mean, std = float(values[train_idx].mean()), float(values[train_idx].std())
    std = std if std > 0 else 1.0  # a constant property must not divide by 0
    target = torch.from_numpy((values - mean) / std).float()

    elements = [str(e) for e in arrays["elements"]]
    pos = torch.from_numpy(np.asarray(arrays["pos"], np.float32))
    types = torch.from_numpy(arrays["types"].astype(np.int64))
    charges = torch.from_numpy(arrays["charges"].astype(np.int64))
    ptr = arrays["ptr"]

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PropertyRegressor(len(elements), hidden, layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    start, loss_avg = time.perf_counter(), None
    bar = tqdm(range(steps), desc=f"train {prop} predictor", disable=not progress)
    order, cursor = rng.permutation(train_idx), 0
    for step in bar:
        if cursor + batch_size > len(order) and cursor > 0:  # epochs without replacement
            order, cursor = rng.permutation(train_idx), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        p, t, c, b = (v.to(device) for v in _packed_batch(pos, types, charges, ptr, idx))
        loss = (model(p, t, c, b, len(idx)) - target[torch.from_numpy(idx)].to(device)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(train_mae=f"{loss_avg * std:.3g} {unit}".strip())
    train_seconds = time.perf_counter() - start
    model.eval()

    predictor = PropertyPredictor(model, prop, unit, elements, mean, std)
    pred = predictor._predict_packed(pos, types, charges, ptr, eval_idx, 256)
    truth = values[eval_idx]
    shuffled = truth[np.random.default_rng(seed).permutation(len(truth))]
    predictor.summary = {
        "property": prop,
        "unit": unit,
        "num_train": len(train_idx),
        "num_eval": len(eval_idx),
        "steps": steps,
        "batch_size": batch_size,
        "hidden": hidden,
        "layers": layers,
        "lr": lr,
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "final_train_mae": float(loss_avg * std),  # running average over the last ~50 steps
        "mae_heldout": float(np.abs(pred - truth).mean()),
        "mae_shuffled": float(np.abs(pred - shuffled).mean()),
    }
    return predictor


def property_mae(molecules: Sequence[Molecule], prop: str, predictor: PropertyPredictor) -> dict[str, Any]:
    """MAE between ``predictor`` on generated ``molecules`` and the values in their ``properties[prop]`` (the
    ones they were conditioned on), beside the predictor's baselines (EDM's "QM9" and "Naive")."""
    if predictor.prop != prop:
        raise ValueError(f"the predictor predicts {predictor.prop!r}, not {prop!r}")
    if not molecules:
        raise ValueError("property_mae needs at least one molecule")
    missing = [k for k, m in enumerate(molecules) if m.properties.get(prop) is None]
    if missing:
        first = molecules[missing[0]].name or f"#{missing[0]}"
        raise ValueError(
            f"{len(missing)} of {len(molecules)} molecules have no {prop!r} value in their properties "
            f"(the value they were conditioned on), the first {first!r}"
        )
    try:
        target = np.array([float(m.properties[prop]) for m in molecules], np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{prop!r} values must be numbers: {e}") from e
    pred = predictor.predict(molecules)
    return {
        "property": prop,
        "unit": predictor.unit,
        "mae": float(np.abs(pred - target).mean()),
        "num_molecules": len(molecules),
        "baseline_heldout": predictor.summary.get("mae_heldout"),
        "baseline_shuffled": predictor.summary.get("mae_shuffled"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a property predictor on the first half of a training split.")
    p.add_argument("--data", choices=["qm9", "drugs"], default="qm9")
    p.add_argument("--root", default=None, help=f"data root (default {data_dir()})")
    p.add_argument("--property", required=True, help="property name, e.g. alpha")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, help="where to save the predictor (.pt)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-molecules", type=int, default=None, help="use the first N training molecules")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.root if args.root is not None else data_dir()
    module = QM9DataModule if args.data == "qm9" else DrugsDataModule
    dm = module(root=root, max_molecules=args.max_molecules, progress=True)
    arrays = dm.load()
    first, second = edm_halves(dm.split_indices("train"))
    predictor = train_predictor(
        arrays,
        args.property,
        train_idx=first,
        eval_idx=second,
        steps=args.steps,
        batch_size=args.batch_size,
        hidden=args.hidden,
        layers=args.layers,
        lr=args.lr,
        seed=args.seed,
        unit=dm.property_units().get(args.property, ""),
        device=args.device,
    )
    predictor.summary["dataset"] = dm.name
    predictor.save(args.out)
    print(json.dumps({**predictor.summary, "saved": str(args.out)}, indent=2))


if __name__ == "__main__":
    main()
