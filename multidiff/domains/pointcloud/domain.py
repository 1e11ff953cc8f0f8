"""The point-cloud domain: fixed-size clouds as (B, N, 3) tensors, shape classes as the condition."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multidiff.core.domain import Domain, State, check_classes, check_info
from multidiff.core.media import Cloud, Media, pictures
from multidiff.core.observation import Observation
from multidiff.core.space import TensorSpace

from .export import render_grid
from .files import folder_files, load_shapes
from .io import read_points, write_ply
from .mesh import MESH_SUFFIX, reconstruct, write_mesh
from .normalize import PER_SHAPE, Normalizer, check_mode, resample

log = logging.getLogger(__name__)


class PointCloudDomain(Domain):
    """Point clouds of ``n_points`` points (from the data's ``info()`` unless set here).

    Samples are decoded back to data units when the data used the invertible ``global``
    normalisation, and stay in the per-shape normalised frame otherwise.
    """

    name = "pointcloud"
    info_spec = {
        "n_points": ("int>0", True),
        "num_classes": ("int>=0", True),
        "class_names": ("list[str]|none", False),
        "normalization": ("dict|none", False),
        "up_axis": ("str|none", False),
        "dataset": ("str", False),
        "root": ("str", False),
    }

    def __init__(
        self,
        n_points: int | None = None,
        ply_binary: bool = True,
        preview_shapes: int = 16,
        up_axis: str | None = None,
        mesh: bool = False,
    ):
        super().__init__()
        self.space = TensorSpace()
        self.n_points, self.ply_binary = n_points, ply_binary
        self.preview_shapes, self.up_axis = preview_shapes, up_axis
        self.mesh = mesh  # export a surface per shape too (:mod:`.mesh`); sample.py mesh=true sets it

    def bind(self, info: dict[str, Any]) -> None:
        super().bind(info)
        check_classes(info, self.name)
        if info.get("up_axis") not in (None, "x", "y", "z"):
            raise ValueError(f"pointcloud domain info: up_axis must be x, y or z, got {info['up_axis']!r}")
        norm = info.get("normalization") or {}
        check_info(
            norm,
            {"mode": ("str", False), "mean": ("list[number]", False), "std": ("number", False)},
            "pointcloud (normalization)",
        )
        if len(norm.get("mean", [0, 0, 0])) != 3:
            raise ValueError(f"pointcloud domain info: normalization.mean must hold 3 numbers, got {norm['mean']}")

    # -- training ---------------------------------------------------------------------------
    def _num_points(self) -> int:
        n = self.n_points or self.info.get("n_points")
        if not n:
            raise ValueError("the number of points is unknown: bind the data's info() or set domain.n_points")
        return int(n)

    def unpack(self, batch: Any) -> State:
        if isinstance(batch, dict):
            points, label = batch["points"], batch.get("label")
        else:
            points, label = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"expected point batches of shape (B, N, 3), got {tuple(points.shape)}")
        return State(points.float(), label if self.info.get("num_classes", 0) else None)

    # -- generation -------------------------------------------------------------------------
    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        return State(torch.zeros(n, self._num_points(), 3), cond)

    def condition(
        self,
        n: int,
        *,
        label: int | str | None = None,
        shape_class: int | str | None = None,
        category: int | str | None = None,
    ) -> Tensor | None:
        """``label=chair`` (a class name or index; ``shape_class``/``category`` are aliases)."""
        request = next((r for r in (label, shape_class, category) if r is not None), None)
        if request is None:
            return None
        names = [str(c) for c in self.info.get("class_names") or []]
        if not self.info.get("num_classes"):
            raise ValueError(
                "this point-cloud model was trained without classes: drop label= to sample unconditionally"
            )
        if str(request) in names:
            idx = names.index(str(request))
        elif str(request).isdigit() and int(request) < len(names):
            idx = int(request)
        else:
            raise ValueError(f"unknown shape class {request!r}; valid: {', '.join(names)}")
        return torch.full((n,), idx, dtype=torch.long)

    def decode(self, state: State, observation: Observation | None = None) -> list[dict[str, Any]]:
        """Clouds in data units (when the data's normalisation is invertible); completed from an observation,
        the observed points come first and exactly as read from its file."""
        norm = Normalizer.from_dict(self.info.get("normalization"))
        names = self.info.get("class_names") or []
        conds = state.cond.tolist() if state.cond is not None else [None] * len(state.x)
        items = []
        for x, c in zip(state.x, conds):
            points = norm.inverse(x.detach().float().cpu().numpy())
            given = np.zeros((0, 3), np.float32) if observation is None else observation.meta["points"]
            points[: len(given)] = given  # the file's values, not their round trip through the normaliser
            items.append({"points": points, "label": None if c is None else names[int(c)], "observed": len(given)})
        return items

    def observe(self, n: int, path: Path, *, seed: int = 0) -> Observation:
        """A partial cloud (any supported format) to complete: its points are kept, the model's remaining
        ``n_points - len(partial)`` are generated, in the training data's frame."""
        path = Path(path)
        points = read_points(path)
        total = self._num_points()
        if len(points) >= total:
            raise ValueError(
                f"observe={path}: {len(points)} points, but the model generates {total}: a partial cloud to "
                f"complete has fewer (subsample it to at most {total - 1})"
            )
        norm = Normalizer.from_dict(self.info.get("normalization"))
        if norm.mode in PER_SHAPE:
            log.warning(
                "observe=%s: %s normalisation is per shape; the partial cloud is normalised by itself", path, norm.mode
            )
        values = torch.zeros(n, total, 3)
        values[:, : len(points)] = torch.from_numpy(norm(points)).float()
        mask = torch.zeros(1, total, 1, dtype=torch.bool)
        mask[:, : len(points)] = True
        # decode returns data units for global / none normalisation, the normalised frame otherwise
        given = points if norm.mode in ("global", "none") else norm(points)
        return Observation(values, mask.expand(n, total, 3), {"points": given, "path": str(path)})

    def export(
        self, items: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any], start: int = 0, preview: bool = True
    ) -> list[Path]:
        """One PLY per shape (``{label}_sample_NNNN.ply`` when conditioned), with :attr:`mesh` its surface
        (``{name}.mesh.ply``), and ``preview.png``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        frame = Normalizer.from_dict(self.info.get("normalization")).mode
        comments = [f"multidiff pointcloud sample; frame: {'data units' if frame in ('global', 'none') else frame}"]
        comments += [f"{k}: {v}" for k, v in meta.items() if isinstance(v, (str, int, float))]
        paths, titles = [], []
        for i, it in enumerate(items, start):
            stem = f"{it['label']}_sample_{i:04d}" if it.get("label") is not None else f"sample_{i:04d}"
            paths.append(write_ply(out_dir / f"{stem}.ply", it["points"], binary=self.ply_binary, comments=comments))
            if self.mesh:
                try:
                    paths.append(write_mesh(out_dir / f"{stem}{MESH_SUFFIX}", reconstruct(it["points"])))
                except ValueError as e:  # one shape without a surface leaves the others theirs
                    log.warning("%s: %s; its points are written, no mesh", stem, e)
            titles.append(stem)
        if preview and items:
            paths.append(
                render_grid(
                    [it["points"] for it in items],
                    out_dir / "preview.png",
                    titles,
                    self.preview_shapes,
                    up=self.up_axis or self.info.get("up_axis", "y"),
                    observed=[int(it.get("observed", 0)) for it in items],
                )
            )
        return paths

    def media(self, items: list[dict[str, Any]], files: list[Path]) -> list[Media]:
        """Each shape as a cloud to turn, named as its PLY, and the preview grid."""
        plys = [f for f in files if Path(f).suffix == ".ply" and not Path(f).name.endswith(MESH_SUFFIX)]
        clouds = [Cloud(Path(f).stem, np.asarray(it["points"], dtype=np.float32)) for it, f in zip(items, plys)]
        return [*clouds, *pictures(files)]

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(
        self,
        samples: Path,
        *,
        reference: Path | str | None = None,
        normalize: str | None = None,
        n_points: int | None = None,
        emd: str = "multiscale",
        emd_points: int | None = 512,
        max_shapes: int | None = None,
        chamfer_backend: str = "auto",
        jsd_resolution: int = 28,
        seed: int = 0,
        data_config: dict | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """PointFlow metrics of the clouds under ``samples`` against ``reference``.

        ``reference``: a folder of clouds; None uses the evaluation split of ``data_config`` (the
        dataset the model was trained on, in data units). ``normalize``: the evaluation frame
        applied to both sets: a per-shape mode (``unit_sphere``, ``bbox``, ``shape_std``) or
        ``none``; None picks the training data's per-shape mode, else ``none`` (data units, as
        PointFlow). Clouds are resampled to ``n_points``; ``max_shapes`` caps each set. ``emd``:
        'multiscale' (default), 'exact', 'auction' or 'none' on ``emd_points`` points per cloud.
        """
        from .metrics import compute_all_metrics

        data_norm = (data_config or {}).get("normalize") or Normalizer.from_dict(self.info.get("normalization")).mode
        mode = normalize or (data_norm if data_norm in PER_SHAPE else "none")
        if check_mode(mode) == "global":
            raise ValueError("evaluation frames are per shape or 'none'; 'global' statistics would differ between sets")
        n_points = int(n_points or (data_config or {}).get("n_points") or self.info.get("n_points") or 2048)
        sample_res = load_shapes(folder_files(Path(samples))[0], desc="samples", require_any=True)
        ref_res, ref_name = self._reference(reference, data_config)
        rng = np.random.default_rng(seed)
        norm = Normalizer(mode)

        def prepare(shapes: list[np.ndarray]) -> Tensor:
            if max_shapes and len(shapes) > max_shapes:
                shapes = [shapes[i] for i in sorted(rng.choice(len(shapes), max_shapes, replace=False))]
            return torch.from_numpy(np.stack([norm(resample(s, n_points, rng)[0]) for s in shapes]))

        s, r = prepare(sample_res.shapes), prepare(ref_res.shapes)
        metrics = compute_all_metrics(
            s,
            r,
            emd=emd,
            emd_points=emd_points,
            chamfer_backend=chamfer_backend,
            jsd_resolution=jsd_resolution,
            progress=progress,
            seed=seed,
        )
        protocol = {
            "normalization": mode,
            "training_normalization": data_norm,
            "n_points": n_points,
            "num_samples": len(s),
            "num_reference": len(r),
            "reference": ref_name,
            "chamfer": "squared distances, mean over points, both directions summed",
            "emd": "none"
            if emd == "none"
            else f"{emd} matching, mean Euclidean distance, {emd_points or n_points} points",
            "jsd": f"{jsd_resolution}^3 grid in [-0.5, 0.5]^3 clipped to the ball of radius 0.5",
            "skipped_files": {"samples": len(sample_res.skipped), "reference": len(ref_res.skipped)},
        }
        return {**metrics, "normalization": mode, "protocol": protocol}

    def quality(self, metrics: dict[str, Any]) -> tuple[float, str]:
        return -abs(float(metrics["1-NNA-CD"]) - 0.5), "-|1-NNA-CD - 0.5| (0 is ideal)"

    def _reference(self, reference: Path | str | None, data_config: dict | None):
        if reference is not None:
            return load_shapes(folder_files(Path(reference))[0], desc="reference", require_any=True), str(reference)
        if not data_config or "_target_" not in data_config:
            raise ValueError("no reference: pass reference=FOLDER of clouds, or the data config of the training set")
        from hydra.utils import instantiate

        dm = instantiate(data_config)
        items = dm.split_items(dm.val_split)
        return load_shapes(items, dm.read, desc="reference", require_any=True), f"{dm.name}:{dm.root}:{dm.val_split}"

    def quick_metrics(self, items: list[dict[str, Any]]) -> dict[str, float]:
        """Spread and local density of generated clouds (cheap sanity checks during training)."""
        pts = torch.from_numpy(np.stack([it["points"] for it in items])).float()
        sub = pts[:, : min(512, pts.shape[1])]
        d = torch.cdist(sub, sub)
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        return {
            "coord_std": float(pts.std()),
            "extent": float((pts.amax(1) - pts.amin(1)).norm(dim=-1).mean()),
            "nn_dist_512": float(d.amin(-1).mean()),
            "non_finite": float((~torch.isfinite(pts)).float().mean()),
        }
