"""The molecule domain: PyG batches <-> GraphSpace states, samples -> SDF/XYZ/PNG, metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multidiff.core.categorical import Block, Categorical, DiscreteCategorical
from multidiff.core.domain import Domain, State, check_info
from multidiff.core.media import Cloud, Media, pictures
from multidiff.core.observation import Observation
from multidiff.core.parts import Parts
from multidiff.core.space import GraphSpace, PairGraphSpace, pair_context, pair_ids

from .elements import element_colors
from .export import draw_grid, write_sdf, write_xyz
from .fragments import check_fragment_bonds, fragment_metrics
from .graphs import BOND_ORDERS
from .io import read_molecules
from .metrics import BOND_SOURCES, MoleculeAnalysis, analysis_metrics
from .properties import PropertyPredictor, property_mae
from .protocol import PROTOCOLS, corrected_metrics
from .reference import reference_from_molecules, training_smiles
from .structures import Molecule

log = logging.getLogger(__name__)

#: how the one-hot blocks are denoised (``domain.categorical``)
CATEGORICAL = ("gaussian", "softmax", "discrete", "auto")


class MoleculeDomain(Domain):
    """Molecules with explicit hydrogens as node rows
    ``[pos(3) | one-hot * onehot_scale | charge * charge_scale]``.

    EDM (Hoogeboom et al. 2022) scales the one-hot block by 0.25 and its integer feature by 0.1
    (``normalize_factors [1, 4, 10]``); EDM's integer feature is the atomic number, here it is the
    formal charge (the element is already in the one-hot block).

    ``bonds=True`` makes it a graph model: the state is :class:`~multidiff.core.parts.Parts` of those node rows
    and one row per atom pair, the one-hot bond order (none, single, double, triple) times ``bond_scale``
    (:class:`~multidiff.core.space.PairGraphSpace`), denoised jointly with the atoms (a continuous relaxation of
    the categorical parts, as JODO, Huang et al. 2023, so every sampler applies); samples carry the model's bonds
    and charges. A part's scale sets when it is decided: at a noise level sigma a part scaled by s has the
    signal-to-noise ratio of unscaled data at sigma / s, so a smaller scale is noised earlier in the forward
    process and settled later in sampling.

    ``categorical``: how the one-hot blocks (atom types; bond orders of a graph model) are denoised: ``gaussian``
    like every other column (EDM's way; the process's prediction), ``softmax`` as class probabilities trained by
    cross-entropy (:mod:`multidiff.core.categorical`), ``discrete`` as discrete classes (a D3PM-style process
    from the data's class marginals, trained by the same cross-entropy; :class:`DiscreteCategorical`), ``auto`` =
    ``discrete`` for a graph model (measured best, docs/molecules.md), ``gaussian`` for a point cloud (the config's
    default; run configs store the resolved choice; a stored config without the key, written before it existed,
    means ``gaussian``, and a stored ``auto``, written before discrete, ``softmax``). ``type_weight``: the
    atom-type cross-entropy's weight (``softmax`` and ``discrete``).

    Config keys: ``onehot_scale``, ``charge_scale``, ``include_charges``, ``bonds``, ``bond_scale``,
    ``pair_weight`` (the pair rows' share of the loss), ``categorical``, ``type_weight``, ``num_atoms`` (None: draw
    atom counts from the training histogram; an int fixes them), ``strain_max_molecules``, ``png_max_molecules``.
    """

    name = "molecule"
    info_spec = {
        "elements": ("list[str]", True),
        "node_counts": ("dict", True),
        "charge_range": ("list[int]", False),
        "atom_types": ("dict", False),
        "bond_lengths": ("dict", False),
        "bond_orders": ("list[number]", False),
        "dataset": ("str", False),
        "data_root": ("str", False),
        "condition": ("dict|none", False),
    }

    def __init__(
        self,
        onehot_scale: float = 0.25,
        charge_scale: float = 0.1,
        include_charges: bool = True,
        bonds: bool = False,
        bond_scale: float = 0.5,
        pair_weight: float = 1.0,
        categorical: str = "gaussian",
        type_weight: float = 1.0,
        num_atoms: int | None = None,
        strain_max_molecules: int = 1000,
        png_max_molecules: int = 48,
    ):
        super().__init__()
        self.bonds, self.bond_scale = bonds, bond_scale
        self.space = PairGraphSpace(com_dims=3, pair_weight=pair_weight) if bonds else GraphSpace(com_dims=3)
        if categorical not in CATEGORICAL:
            raise ValueError(f"domain.categorical={categorical!r}; valid: {', '.join(CATEGORICAL)}")
        if type_weight < 0:
            raise ValueError(f"domain.type_weight={type_weight}: a loss weight must be >= 0")
        self.categorical = ("discrete" if bonds else "gaussian") if categorical == "auto" else categorical
        if self.categorical == "gaussian" and type_weight != 1.0:
            raise ValueError(
                f"domain.type_weight={type_weight} weighs the atom-type cross-entropy of categorical=softmax|discrete; "
                "this model denoises types as Gaussian columns (categorical=gaussian): leave type_weight at 1"
            )
        self.type_weight = type_weight
        self.onehot_scale, self.charge_scale = onehot_scale, charge_scale
        self.include_charges = include_charges
        self.num_atoms = num_atoms
        self.strain_max_molecules = strain_max_molecules
        self.png_max_molecules = png_max_molecules

    @classmethod
    def stored_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        # run configs store the resolved choice since auto became discrete for graphs; an 'auto' stored before meant
        # softmax blocks for a graph model
        if cfg.get("categorical") == "auto":
            return {**cfg, "categorical": "softmax" if cfg.get("bonds") else "gaussian"}
        return cfg

    def signature(self) -> dict[str, Any]:
        keys = ("include_charges", "onehot_scale", "charge_scale", "bonds", "bond_scale", "categorical")
        return {k: getattr(self, k) for k in keys}

    # -- info ---------------------------------------------------------------------------------
    def bind(self, info: dict[str, Any]) -> None:
        super().bind(info)
        if not info["elements"]:
            raise ValueError("molecule domain info: 'elements' is empty")
        self.space.categorical = self._categorical_blocks(len(info["elements"]))
        hist = info["node_counts"]
        check_info(hist, {"values": ("list[int]", True), "counts": ("list[number]", True)}, "molecule (node_counts)")
        if not hist["values"] or len(hist["values"]) != len(hist["counts"]) or min(hist["values"]) < 1:
            raise ValueError(
                "molecule domain info: node_counts needs equally long, non-empty 'values' (atom counts >= 1) and "
                f"'counts', got {len(hist['values'])} values and {len(hist['counts'])} counts"
            )
        if min(hist["counts"]) < 0 or sum(hist["counts"]) <= 0:
            raise ValueError("molecule domain info: node_counts.counts must be >= 0 with a positive sum")
        if len(info.get("charge_range", [0, 0])) != 2:
            raise ValueError(f"molecule domain info: charge_range must be [low, high], got {info['charge_range']}")
        cond = info.get("condition")
        if cond is not None:
            spec = {"names": ("list[str]", True), "mean": ("list[number]", True), "std": ("list[number]", True)}
            check_info(cond, spec, "molecule (condition)")
            if not len(cond["names"]) == len(cond["mean"]) == len(cond["std"]):
                raise ValueError("molecule domain info: condition names, mean and std differ in length")

    def _categorical_blocks(self, k: int) -> Categorical | None:
        """The one-hot blocks denoised as probabilities (``categorical=softmax``, or ``discrete`` with the data's
        class marginals as the process's prior): atom types (with one element there is no choice to make) and, for
        a graph model, bond orders."""
        if self.categorical == "gaussian":
            return None
        discrete = self.categorical == "discrete"
        part = "node" if self.bonds else None
        blocks = []
        if k > 1:
            prior = self._prior("atom_types", [self.info.get("atom_types", {}).get(e) for e in self.elements])
            blocks.append(Block(part, 3, 3 + k, self.onehot_scale, self.type_weight, prior if discrete else None))
        if self.bonds:
            prior = self._prior("bond_orders", self.info.get("bond_orders") or [None] * len(BOND_ORDERS))
            blocks.append(Block("pair", 0, len(BOND_ORDERS), self.bond_scale, prior=prior if discrete else None))
        return (DiscreteCategorical if discrete else Categorical)(blocks)

    def _prior(self, key: str, freqs: list[float | None]) -> tuple[float, ...] | None:
        """Class marginals from the data's info (each at least 1e-6, so every class stays reachable)."""
        if self.categorical != "discrete":
            return None
        if any(f is None for f in freqs) or len(freqs) == 0:
            raise ValueError(
                f"domain.categorical=discrete starts its process from the data's class marginals, and the data's "
                f"info has no complete {key!r} ({self.info.get(key)!r}); use categorical=softmax, or data that "
                "reports them (the molecule datamodules do)"
            )
        floored = [max(float(f), 1e-6) for f in freqs]
        return tuple(f / sum(floored) for f in floored)

    @property
    def elements(self) -> list[str]:
        if "elements" not in self.info:
            raise RuntimeError("molecule domain is not bound: call bind(datamodule.info()) or load a checkpoint")
        return list(self.info["elements"])

    @property
    def num_features(self) -> int:
        return 3 + len(self.elements) + int(self.include_charges)

    def _condition_info(self) -> dict[str, Any] | None:
        return self.info.get("condition")

    # -- training -----------------------------------------------------------------------------
    def unpack(self, batch: Any) -> State:
        """PyG batch (pos, atom_type, charge[, cond]) -> zero-CoM state."""
        k = len(self.elements)
        parts = [batch.pos.float(), F.one_hot(batch.atom_type.long(), k).float() * self.onehot_scale]
        if self.include_charges:
            parts.append(batch.charge.float().unsqueeze(1) * self.charge_scale)
        n = int(batch.num_graphs)
        cond = getattr(batch, "cond", None) if self._condition_info() else None
        if not self.bonds:
            ctx = {"batch": batch.batch, "num_items": n}
            return State(self.space.remove_com(torch.cat(parts, dim=1), ctx), cond, ctx)
        if getattr(batch, "bond_order", None) is None:
            raise ValueError("a graph model (domain.bonds=true) trains on data with bonds: this batch has none")
        ctx = pair_context(batch.batch, n)
        pair = torch.zeros(ctx["pair_index"].shape[1], len(BOND_ORDERS), device=batch.pos.device)
        pair[:, 0] = 1.0  # no bond
        ids = pair_ids(batch.edge_index, ctx["pair_index"], batch.num_nodes)
        pair[ids] = F.one_hot(batch.bond_order.long(), len(BOND_ORDERS)).float()
        node = self.space.remove_com(torch.cat(parts, dim=1), ctx)
        return State(Parts({"node": node, "pair": pair * self.bond_scale}), cond, ctx)

    # -- generation -----------------------------------------------------------------------------
    def sample_num_atoms(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        hist = self.info["node_counts"]
        values = torch.tensor(hist["values"], dtype=torch.long)
        probs = torch.tensor(hist["counts"], dtype=torch.float64)
        return values[torch.multinomial(probs, n, replacement=True, generator=generator)]

    def template(
        self, n: int, cond: Tensor | None, generator: torch.Generator, num_atoms: int | list[int] | Tensor | None = None
    ) -> State:
        """Zero rows for ``n`` molecules; atom counts from ``num_atoms`` (argument, else the config
        key) or drawn from the training histogram."""
        num_atoms = self.num_atoms if num_atoms is None else num_atoms
        if num_atoms is None:
            counts = self.sample_num_atoms(n, generator)
        else:
            counts = torch.as_tensor(num_atoms, dtype=torch.long).reshape(-1)
            if counts.numel() not in (1, n):
                raise ValueError(f"num_atoms: give one count or {n}, got {counts.numel()}")
            counts = counts.expand(n).clone()
            if (counts < 1).any():
                raise ValueError(f"num_atoms must be >= 1, got {counts.tolist()}")
        batch = torch.repeat_interleave(torch.arange(n), counts)
        x = torch.zeros(len(batch), self.num_features)
        if not self.bonds:
            return State(x, cond, {"batch": batch, "num_items": n})
        ctx = pair_context(batch, n)
        return State(Parts({"node": x, "pair": torch.zeros(ctx["pair_index"].shape[1], len(BOND_ORDERS))}), cond, ctx)

    def condition(self, n: int, **request: Any) -> Tensor | None:
        """Normalised property condition from raw values, e.g. ``gap=6.5`` (one value or one per item).

        No request: None (unconditional; a conditional net then uses its null condition).
        """
        info = self._condition_info()
        if not request:
            return None
        if info is None:
            raise ValueError(f"this model is unconditional; got condition request {sorted(request)}")
        names = info["names"]
        unknown = sorted(set(request) - set(names))
        missing = [c for c in names if c not in request]
        if unknown or missing:
            raise ValueError(
                f"condition request {sorted(request)}: the model is conditioned on {names} "
                f"(unknown: {unknown}, missing: {missing})"
            )
        cols = []
        for name, mean, std in zip(names, info["mean"], info["std"]):
            v = torch.as_tensor(request[name], dtype=torch.float32).reshape(-1)
            if v.numel() not in (1, n):
                raise ValueError(f"condition {name}: give one value or {n}, got {v.numel()}")
            cols.append(((v - mean) / std).expand(n))
        return torch.stack(cols, dim=1)

    # -- observations: growing molecules from a fragment ----------------------------------------------
    def observe(self, n: int, path: Path, *, n_atoms: int | None = None, seed: int = 0) -> Observation:
        """The first molecule of ``path`` (SDF or XYZ) as a fragment every one of ``n`` molecules starts from:
        its atoms come first in each molecule, with their elements, charges and coordinates. ``n_atoms``: the
        total per molecule; None draws it per molecule from the training histogram above the fragment's size
        (``seed`` fixes the draw). Errors name the file and what would be valid: an element outside the
        model's vocabulary, a fragment as large as the model's largest molecules, an ``n_atoms`` not above
        the fragment's size."""
        path = Path(path)
        try:
            result = read_molecules(path, self.elements)
        except ValueError as e:
            raise ValueError(f"observe={path}: {e} (this model knows {', '.join(self.elements)})") from e
        result.require_molecules()
        fragment = result.molecules[0]
        k = len(fragment)
        lo, hi = self.info.get("charge_range", [0, 0])
        if self.include_charges and not ((fragment.charges >= lo) & (fragment.charges <= hi)).all():
            bad = sorted({int(c) for c in fragment.charges if not lo <= c <= hi})
            raise ValueError(
                f"observe={path}: formal charge(s) {bad} outside this model's range [{lo}, {hi}] (its training data)"
            )
        largest = max(self.info["node_counts"]["values"])
        if n_atoms is None:
            if k >= largest:
                raise ValueError(
                    f"observe={path}: the fragment has {k} atoms; this model's molecules have at most {largest}, "
                    f"so it can add none (give n_atoms= above {k} to grow it anyway)"
                )
            counts = self._counts_above(n, k, seed)
        else:
            if not isinstance(n_atoms, int) or isinstance(n_atoms, bool) or n_atoms <= k:
                raise ValueError(f"n_atoms={n_atoms!r}: the total must be an integer above the fragment's {k} atoms")
            counts = torch.full((n,), n_atoms, dtype=torch.long)
        batch = torch.repeat_interleave(torch.arange(n), counts)
        start = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
        local = torch.arange(len(batch)) - start[batch]
        given = local < k  # the first k rows of every molecule
        row = torch.zeros(self.num_features)
        frag = torch.zeros(k, self.num_features)
        centre = fragment.positions.mean(0)
        frag[:, :3] = torch.as_tensor(fragment.positions - centre, dtype=torch.float32)
        frag[torch.arange(k), 3 + torch.tensor([self.elements.index(e) for e in fragment.elements])] = self.onehot_scale
        if self.include_charges:
            frag[:, 3 + len(self.elements)] = torch.as_tensor(fragment.charges, dtype=torch.float32) * self.charge_scale
        values = row.repeat(len(batch), 1)
        values[given] = frag.repeat(n, 1)
        meta = {"path": str(path), "fragment": fragment, "centre": centre, "given": k}
        if not self.bonds:
            return Observation(values, given.unsqueeze(1), meta, {"batch": batch, "num_items": n})
        check_fragment_bonds(fragment, f"observe={path}", result.bond_errors.get(result.records[0]))
        ctx = pair_context(batch, n)
        i, j = ctx["pair_index"]
        pair_given = given[i] & given[j]  # pairs of two given atoms: their bond (or its absence) is known
        orders = torch.as_tensor(fragment.bonds, dtype=torch.long)[local[i].clamp(max=k - 1), local[j].clamp(max=k - 1)]
        pair = F.one_hot(orders, len(BOND_ORDERS)).float() * self.bond_scale * pair_given.unsqueeze(1)
        mask = Parts({"node": given.unsqueeze(1), "pair": pair_given.unsqueeze(1)})
        return Observation(Parts({"node": values, "pair": pair}), mask, meta, ctx)

    def _counts_above(self, n: int, k: int, seed: int) -> Tensor:
        hist = self.info["node_counts"]
        values = torch.tensor(hist["values"], dtype=torch.long)
        probs = torch.tensor(hist["counts"], dtype=torch.float64) * (values > k)
        gen = torch.Generator().manual_seed(seed)
        return values[torch.multinomial(probs, n, replacement=True, generator=gen)]

    def decode(self, state: State, observation: Observation | None = None) -> list[Molecule]:
        """Rows -> molecules: positions, element by argmax of the one-hot block, charge rounded and
        clipped to the training data's range (an untrained net may emit any value). Grown from a fragment
        (``observation``), each molecule is moved into the fragment file's frame (its given atoms land on the
        fragment's coordinates) and lists them in the ``given_atoms`` property (1-based atom numbers)."""
        k = len(self.elements)
        if observation is not None:
            state = self._into_fragment_frame(state, observation)
        x = (
            (state.x["node"] if self.bonds else state.x).detach().double().cpu().numpy()
        )  # float64: a fragment keeps its file coordinates
        if not np.isfinite(x).all():
            log.warning("decode: %d non-finite values set to 0", int((~np.isfinite(x)).sum()))
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        batch = state.ctx["batch"].detach().cpu().numpy()
        n = int(state.ctx["num_items"])
        types = x[:, 3 : 3 + k].argmax(1)
        lo, hi = self.info.get("charge_range", [-1, 1])
        charges = (
            np.clip(np.rint(x[:, 3 + k] / self.charge_scale), lo, hi).astype(np.int64)
            if self.include_charges
            else np.zeros(len(x), np.int64)
        )
        props = self._raw_condition(state.cond, n)
        order = np.argsort(batch, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(batch, minlength=n))])
        molecules = []
        bonds = self._bond_matrices(state, bounds) if self.bonds else [None] * n
        for i in range(n):
            rows = order[bounds[i] : bounds[i + 1]]
            elements = [self.elements[t] for t in types[rows]]
            molecules.append(Molecule(x[rows, :3], elements, charges[rows], props[i], bonds=bonds[i]))
            if self.bonds:
                molecules[-1].properties["bond_source"] = "model"
        if observation is not None:
            given = " ".join(str(j + 1) for j in range(int(observation.meta["given"])))
            for mol in molecules:
                mol.properties["given_atoms"] = given
                mol.properties["fragment"] = observation.meta["path"]
        return molecules

    def _bond_matrices(self, state: State, bounds: np.ndarray) -> list[np.ndarray]:
        """Each molecule's ``(n, n)`` bond orders: the most likely class of each of its pair rows."""
        pair = state.x["pair"].detach().float().cpu()
        orders = torch.nan_to_num(pair).argmax(1).numpy() if len(pair) else np.zeros(0, np.int64)
        i, j = state.ctx["pair_index"].cpu().numpy()
        batch = state.ctx["batch"].cpu().numpy()
        out = [np.zeros((bounds[m + 1] - bounds[m],) * 2, np.int64) for m in range(len(bounds) - 1)]
        for a, b, o in zip(i[orders > 0], j[orders > 0], orders[orders > 0]):
            m = batch[a]
            out[m][a - bounds[m], b - bounds[m]] = out[m][b - bounds[m], a - bounds[m]] = BOND_ORDERS[o]
        return out

    def _into_fragment_frame(self, state: State, observation: Observation) -> State:
        """Translate every molecule so that its given atoms' centroid is the fragment's, in float64: the given
        atoms then sit on the fragment's coordinates (they hold its shape exactly, see Space.align)."""
        graph = self.bonds
        x = (state.x["node"] if graph else state.x).detach().double().cpu()
        batch = state.ctx["batch"].cpu()
        values = (observation.values["node"] if graph else observation.values).double().cpu()
        mask = observation.mask["node"] if graph else observation.mask
        known = torch.broadcast_to(mask.cpu(), x.shape)[:, 0]
        n = int(state.ctx["num_items"])
        centroid = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, batch[known], x[known, :3])
        centroid /= torch.bincount(batch[known], minlength=n).clamp(min=1).unsqueeze(1)
        # every atom moves with the given ones: the generated ones keep their place relative to them
        offset = torch.as_tensor(observation.meta["centre"], dtype=torch.float64)
        moved = x.clone()
        moved[:, :3] += offset - centroid[batch]
        # the given rows exactly as observed: the file's coordinates, not their float32 round trip
        moved[known] = values[known]
        moved[known, :3] = torch.as_tensor(observation.meta["fragment"].positions, dtype=torch.float64).repeat(n, 1)
        return State(state.x.replace(node=moved) if graph else moved, state.cond, state.ctx)

    def _raw_condition(self, cond: Tensor | None, n: int) -> list[dict[str, float]]:
        info = self._condition_info()
        if cond is None or info is None:
            return [{} for _ in range(n)]
        c = cond.detach().float().cpu().numpy().reshape(n, -1)
        raw = c * np.asarray(info["std"]) + np.asarray(info["mean"])
        return [{name: float(v) for name, v in zip(info["names"], row)} for row in raw]

    concatenated = ("samples.sdf", "samples.xyz")

    def export(
        self, items: list[Molecule], out_dir: Path, meta: dict[str, Any], start: int = 0, preview: bool = True
    ) -> list[Path]:
        """``samples.sdf`` (bonds, charges, ``valid`` flag, condition fields), ``samples.xyz`` and
        ``samples.png``; unnamed molecules (sampled ones) named ``sample_{start + i}``."""
        out_dir = Path(out_dir)
        paths = [
            write_sdf(items, out_dir / "samples.sdf", meta, start),
            write_xyz(items, out_dir / "samples.xyz", start),
        ]
        if preview:
            paths.append(draw_grid(items, out_dir / "samples.png", self.png_max_molecules))
        return paths

    def media(self, items: list[Molecule], files: list[Path]) -> list[Media]:
        """Each molecule's atoms as a cloud coloured by element (CPK colours), and the grid of 2D drawings."""
        clouds = [
            Cloud(m.name or f"sample_{i:04d}", m.positions.astype(np.float32), element_colors(m.elements))
            for i, m in enumerate(items)
        ]
        return [*clouds, *pictures(files)]

    # -- evaluation -----------------------------------------------------------------------------
    def reference(self, novelty: bool = True, path: Path | None = None, progress: bool = True) -> dict[str, Any]:
        """Training statistics for the distribution metrics and novelty.

        From ``info`` (atom types, bond lengths; training SMILES from the cache in ``data_root``), or
        from ``path``: a ``.txt`` of SMILES (EDM form, one per line), an ``.sdf``/``.xyz`` of reference
        molecules, or a data folder holding the processed cache.
        """
        ref: dict[str, Any] = {k: self.info[k] for k in ("atom_types", "bond_lengths") if k in self.info}
        if path is not None:
            path = Path(path)
            if path.is_dir():
                smiles = training_smiles(path, self.info.get("dataset", ""), progress)
                if smiles is None:
                    raise FileNotFoundError(
                        f"reference {path}: no processed {self.info.get('dataset')} cache in this folder"
                    )
                ref["smiles"] = smiles
            elif path.suffix.lower() == ".txt":
                ref["smiles"] = set(path.read_text().split())
                if not ref["smiles"]:
                    raise ValueError(f"reference {path}: no SMILES in this file (one per line expected)")
            else:
                result = read_molecules(path, self.info.get("elements"))
                result.require_molecules()  # an empty reference would make every distance meaningless
                ref.update(reference_from_molecules(result.molecules, self.info.get("elements")))
        elif novelty and "data_root" in self.info and Path(self.info["data_root"]).exists():
            smiles = training_smiles(self.info["data_root"], self.info.get("dataset", ""), progress)
            if smiles is not None:
                ref["smiles"] = smiles
        return ref

    def evaluate(
        self,
        samples: Path,
        *,
        strain: bool = True,
        strain_max_molecules: int | None = None,
        novelty: bool = True,
        reference: Path | str | None = None,
        data_config: dict | None = None,
        fragment: Path | str | None = None,
        bonds: str = "auto",
        protocol: str = "edm",
        xtb_max_molecules: int = 100,
        posebusters_max_molecules: int = 100,
        property: str | None = None,
        predictor: Path | str | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Metrics of an SDF/XYZ file (or a folder holding one), as a JSON-able dict.

        ``strain``: MMFF strain of up to ``strain_max_molecules`` valid molecules; ``novelty``: against the
        training SMILES from the cache named in ``info['data_root']`` (computed once); ``reference``: see
        :meth:`reference`; ``data_config``: a data config used to bind an unbound domain; ``fragment``: the file
        the molecules were grown from (``observe=``), adding how well they keep it
        (:func:`~.fragments.fragment_metrics`); ``bonds``: ``perceived`` from distances (EDM's metrics), ``file``
        (each molecule's own, e.g. a graph model's or a data file's), or ``auto``: ``file`` when every record was
        written by a graph model (its ``bond_source`` field), else ``perceived``; ``protocol``: ``edm`` (EDM's
        metrics) or ``corrected``: those and Nikitin et al.'s (:mod:`.protocol`: charge-aware valence table,
        valid and connected, the median GFN2-xTB relaxation energy of up to ``xtb_max_molecules`` and PoseBusters'
        checks of up to ``posebusters_max_molecules`` valid molecules); ``property`` with ``predictor`` (a file of
        ``python -m multidiff.domains.molecule.properties``): the MAE between the predicted property of each
        molecule and the value it was conditioned on (its SDF field), beside the predictor's two baselines
        (:func:`~.properties.property_mae`, under ``property_mae``). Malformed records are
        listed in ``malformed_records`` and skipped; a file without any readable molecule is a ValueError. An
        undefined metric is None, with its reason under ``null_reasons``.
        """
        if not self.info and data_config:
            from hydra.utils import instantiate

            datamodule = instantiate(data_config)
            self.bind(datamodule.info())
        vocabulary = self.info.get("elements")
        result = read_molecules(Path(samples), vocabulary)
        result.require_molecules()  # before the (possibly slow) reference: nothing to score
        for err in result.errors:
            log.warning("%s: %s", result.path, err)
        if bonds not in ("auto", *BOND_SOURCES):
            raise ValueError(f"bonds={bonds!r}; valid: auto, {', '.join(BOND_SOURCES)}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if (property is None) != (predictor is None):
            raise ValueError(
                "property= and predictor= go together: the property name and the file of its predictor "
                "(python -m multidiff.domains.molecule.properties --property NAME --out FILE)"
            )
        property_model = PropertyPredictor.load(predictor) if predictor is not None else None  # fail before scoring
        if bonds == "auto":
            generated = all(m.properties.get("bond_source") == "model" for m in result.molecules)
            bonds = "file" if generated else "perceived"
        ref = self.reference(novelty, reference, progress)
        analysis = MoleculeAnalysis(result.molecules, vocabulary, bonds)
        metrics = analysis_metrics(
            analysis, ref, strain=strain, strain_max_molecules=int(strain_max_molecules or self.strain_max_molecules)
        )
        if protocol == "corrected":
            reasons = metrics.setdefault("null_reasons", {})
            metrics.update(corrected_metrics(analysis, xtb_max_molecules, posebusters_max_molecules, progress, reasons))
            metrics["protocol"] = "edm+corrected"
            if not reasons:
                del metrics["null_reasons"]
        if "smiles" not in ref:  # say why there are no training SMILES, more telling than the generic reason
            root = self.info.get("data_root")
            where = f"no processed {self.info.get('dataset')} cache in {root}" if root else "info names no data_root"
            reasons = metrics.setdefault("null_reasons", {})
            reasons["novelty"] = "novelty=false" if not novelty else f"no training SMILES: {where}"
        if property_model is not None:
            metrics["property_mae"] = property_mae(result.molecules, property, property_model)
        if fragment is not None:
            given = read_molecules(Path(fragment))
            given.require_molecules()
            metrics.update(fragment_metrics(result.molecules, given.molecules[0]))
        metrics.update(
            {"file": str(result.path), "num_records": result.num_records, "malformed_records": result.errors}
        )
        return metrics

    def quality(self, metrics: dict[str, Any]) -> tuple[float, str]:
        stable, valid = metrics.get("mol_stable") or 0.0, metrics.get("validity") or 0.0
        return float(stable) + float(valid), "molecule stability + validity"

    def quick_metrics(self, items: list[Molecule]) -> dict[str, float]:
        analysis = MoleculeAnalysis(items, self.info.get("elements"), "file" if self.bonds else "perceived")
        out = analysis.stability()
        out["validity"] = float(analysis.valid.mean()) if items else None
        return {k: float(v) for k, v in out.items() if v is not None}  # undefined metrics are left out
