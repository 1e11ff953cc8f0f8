"""What a folder holds that a report shows: a training run's metrics, its command and config, its samples written
during training (``samples/step_*``), sample folders written by ``sample.py`` (``sampling.json``) inside or as the
folder itself, and evaluation JSON files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multidiff.sample_folder import RECORD

#: how many of a run's ``samples/step_*`` folders a page shows (the newest), and how many other sample folders: each
#: folder of 3D items is one WebGL context, and browsers keep only about 16 alive per page
MAX_STEP_FOLDERS = 4
MAX_SAMPLE_FOLDERS = 6
#: how deep below the folder sample folders (``sampling.json``) and JSON files are looked for
MAX_DEPTH = 3
#: folders that hold nothing a report shows (weights, EMA snapshots, the loggers' files: the CSV is read on its own);
#: hidden ones (.hydra, a sample folder's unfinished .batches) are skipped too
SKIPPED = {"checkpoints", "posthoc_ema", "csv", "tensorboard"}
#: JSON files that are not metrics: a sample folder's record (shown as its command), post-hoc EMA's snapshot list
NOT_METRICS = {RECORD, "profiles.json"}

VALID = (
    "a training run folder (csv/metrics.csv from Lightning's CSVLogger, samples/step_*/, .hydra/overrides.yaml) or a "
    "sample folder (sampling.json, with *.wav, *.ply or samples.sdf)"
)


class ReportError(ValueError):
    """A folder that cannot be reported; the message names it and what would be valid."""


@dataclass
class SampleSet:
    """One folder of samples: its files by kind and what made them."""

    folder: Path
    title: str
    wavs: list[Path] = field(default_factory=list)
    clouds: list[Path] = field(default_factory=list)
    meshes: list[Path] = field(default_factory=list)
    sdfs: list[Path] = field(default_factory=list)
    request: dict[str, Any] | None = None  # sampling.json, for a folder written by sample.py
    metrics: dict[str, Any] | None = None  # metrics.json, for a folder written during training
    step: int | None = None  # the training step of samples/step_<k>

    @property
    def empty(self) -> bool:
        return not (self.wavs or self.clouds or self.meshes or self.sdfs)


@dataclass
class Contents:
    """Everything found in ``root``; ``left_out``: what was found but not shown, said on the page."""

    root: Path
    metrics_csv: Path | None = None
    overrides: list[str] | None = None
    config: Path | None = None
    json_files: list[Path] = field(default_factory=list)
    sample_sets: list[SampleSet] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def is_run(self) -> bool:
        return self.metrics_csv is not None or self.overrides is not None

    @property
    def kind(self) -> str:
        if self.is_run:
            return "training run"
        own = [s for s in self.sample_sets if s.folder == self.root]
        return "sample folder" if own else "folder"


def natural_key(path: Path) -> list[Any]:
    """Sort ``sample_2`` before ``sample_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def sample_set(folder: Path, title: str, step: int | None = None) -> SampleSet:
    """The sample files directly in ``folder`` (``<stem>.mesh.ply``: a triangle mesh of the shape ``<stem>``)."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
    plys = [p for p in files if p.suffix.lower() == ".ply"]
    found = SampleSet(
        folder,
        title,
        wavs=[p for p in files if p.suffix.lower() == ".wav"],
        clouds=[p for p in plys if not p.name.lower().endswith(".mesh.ply")],
        meshes=[p for p in plys if p.name.lower().endswith(".mesh.ply")],
        sdfs=[p for p in files if p.suffix.lower() == ".sdf"],
        step=step,
    )
    if (folder / RECORD).is_file():
        found.request = read_json(folder / RECORD)
    if (folder / "metrics.json").is_file():
        found.metrics = read_json(folder / "metrics.json")
    return found


def read_json(path: Path) -> Any:
    """A JSON file's content; a file that is not JSON is an error naming it (a report must not hide a broken file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not a readable JSON file ({e})") from e


def _walk(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """The folders below ``root`` down to ``depth`` levels, hidden and :data:`SKIPPED` ones left out."""
    found, level = [], [root]
    for _ in range(depth):
        level = [
            c
            for d in level
            for c in sorted(d.iterdir(), key=natural_key)
            if c.is_dir() and not c.name.startswith(".") and c.name not in SKIPPED
        ]
        found += level
    return found


def _is_step_folder(folder: Path, root: Path) -> bool:
    """A ``samples/step_*`` folder of the run: its ``metrics.json`` is in the run's curves (``samples/*``)."""
    return folder.parent == root / "samples" and folder.name.startswith("step_")


def discover(root: str | Path) -> Contents:
    """What ``root`` holds; :class:`ReportError` when it is not a folder or holds nothing to report."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder; give {VALID}")
    found = Contents(root.resolve())
    root = found.root
    if (root / "csv" / "metrics.csv").is_file():
        found.metrics_csv = root / "csv" / "metrics.csv"
    if (root / ".hydra" / "overrides.yaml").is_file():
        found.overrides = [str(o) for o in yaml.safe_load((root / ".hydra" / "overrides.yaml").read_text()) or []]
    if (root / ".hydra" / "config.yaml").is_file():
        found.config = root / ".hydra" / "config.yaml"

    own = sample_set(root, "this folder")
    if not own.empty or own.request is not None:
        found.sample_sets.append(own)

    steps = sorted((p for p in (root / "samples").glob("step_*") if p.is_dir()), key=natural_key)
    if len(steps) > MAX_STEP_FOLDERS:
        shown = steps[-MAX_STEP_FOLDERS:]
        found.left_out.append(
            f"{len(steps) - len(shown)} older samples/step_* folders ({steps[0].name} .. "
            f"{steps[-len(shown) - 1].name}); the newest {len(shown)} are shown"
        )
        steps = shown
    for folder in steps:
        step = int(m.group(1)) if (m := re.fullmatch(r"step_(\d+)", folder.name)) else None
        title = f"samples at step {step}" if step is not None else f"samples/{folder.name}"
        found.sample_sets.append(sample_set(folder, title, step))

    in_sets = {s.folder for s in found.sample_sets}
    nested = [d for d in _walk(root) if (d / RECORD).is_file() and d not in in_sets]
    if len(nested) > MAX_SAMPLE_FOLDERS:
        found.left_out.append(
            f"{len(nested) - MAX_SAMPLE_FOLDERS} more sample folders: "
            + ", ".join(str(d.relative_to(root)) for d in nested[MAX_SAMPLE_FOLDERS:])
        )
        nested = nested[:MAX_SAMPLE_FOLDERS]
    found.sample_sets += [sample_set(d, str(d.relative_to(root))) for d in nested]

    in_sets = {s.folder for s in found.sample_sets}
    found.json_files = [
        p
        for d in [root, *_walk(root)]
        for p in sorted(d.glob("*.json"), key=natural_key)
        if not p.name.startswith(".")  # locks' notes and other tools' state
        and p.name not in NOT_METRICS
        and not (p.name == "metrics.json" and (d in in_sets or _is_step_folder(d, root)))
    ]
    if not (found.is_run or found.json_files or any(not s.empty for s in found.sample_sets)):
        raise ReportError(f"{root}: nothing to report in this folder; give {VALID}")
    return found
