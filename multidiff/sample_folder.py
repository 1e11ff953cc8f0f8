"""A folder of samples written batch by batch, so that a long sampling run can be stopped, resumed and split.

The run is a fixed list of batches (:func:`plan`), each with its own seed, so any batch can be generated alone
and comes out the same. Each batch is exported into a staging folder under ``<out>/.batches/`` that is renamed
into place when complete: a batch is on disk whole or not at all, and a rerun of the same request skips the
batches on disk. Shards (``shard=i num_shards=k``) take every k-th batch and write into the same folder; the
process that completes the last batch joins the batches into the final files (per-item files moved, files the
domain lists in ``concatenated`` joined in batch order, the first batch's preview kept) and writes
``sampling.json``. The final folder is the same whether it was written in one run, resumed after a crash or
split between jobs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multidiff.core.options import positive_int
from multidiff.paths import exclusive, replaced

log = logging.getLogger(__name__)

#: the record of a finished folder: the request and its batches
RECORD = "sampling.json"
STAGING = ".batches"


@dataclass(frozen=True)
class Batch:
    """Items ``start .. start + count - 1`` of a run, drawn from ``seed``; ``index`` is the batch's place."""

    index: int
    start: int
    count: int
    seed: int


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch starting at item ``start``: different runs' seeds never share a batch."""
    return seed if start == 0 else int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def plan(n: int, batch_size: int, seed: int) -> list[Batch]:
    """The batches of a run of ``n`` items: the same for every shard and every rerun."""
    return [
        Batch(k, start, min(batch_size, n - start), batch_seed(seed, start))
        for k, start in enumerate(range(0, n, batch_size))
    ]


def shard_of(batches: Sequence[Batch], shard: int, num_shards: int) -> list[Batch]:
    """Shard ``shard`` of ``num_shards``: every ``num_shards``-th batch, so shards finish at about the same time."""
    positive_int(num_shards, "num_shards")
    if not (isinstance(shard, int) and 0 <= shard < num_shards):
        raise ValueError(f"shard={shard!r}: must be an integer in 0..{num_shards - 1} (num_shards={num_shards})")
    return [b for b in batches if b.index % num_shards == shard]


class SampleFolder:
    """``out`` as the destination of one sampling request (``request``: a JSON-able record of everything that
    decides the samples). ``concatenated``: the files a domain's export writes whole for its items in formats
    whose records simply follow each other (SDF, multi-frame XYZ), joined in batch order."""

    def __init__(self, out: str | Path, request: dict[str, Any], concatenated: Sequence[str] = ()):
        self.out, self.request = Path(out), json.loads(json.dumps(request))
        self.concatenated = tuple(concatenated)
        self.staging = self.out / STAGING

    # -- the request ------------------------------------------------------------------------------
    def open(self) -> bool:
        """Claim ``out`` for the request, or find it claimed by the same request (a rerun, another shard).
        Returns whether the folder is already finished. A folder holding another request's samples is refused,
        naming what differs."""
        self.out.mkdir(parents=True, exist_ok=True)
        with exclusive(self.staging / "request"):
            for path in (self.out / RECORD, self.staging / "request.json"):
                if path.is_file():
                    theirs = json.loads(path.read_text())
                    self._same_request({k: v for k, v in theirs.items() if k != "batches"})
                    return path.name == RECORD
            with replaced(self.staging / "request.json") as tmp:
                tmp.write_text(json.dumps(self.request, indent=2))
        return False

    def _same_request(self, theirs: dict[str, Any]) -> None:
        differ = sorted(k for k in {*theirs, *self.request} if theirs.get(k) != self.request.get(k))
        if differ:
            what = "; ".join(f"{k}: {theirs.get(k)!r} there, {self.request.get(k)!r} now" for k in differ)
            raise FileExistsError(
                f"out={self.out} holds samples of another request ({what}): rerun with the same settings to resume, "
                "or choose another out="
            )

    # -- batches ----------------------------------------------------------------------------------
    def _dir(self, batch: Batch) -> Path:
        return self.staging / f"{batch.index:06d}"

    def done(self, batch: Batch) -> bool:
        return self._dir(batch).is_dir()

    @contextmanager
    def writing(self, batch: Batch) -> Iterator[Path]:
        """A fresh folder to export ``batch`` into, moved into place when the block ends without error (and
        removed otherwise): a batch is on disk whole or not at all."""
        tmp = self.staging / f"{batch.index:06d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            (tmp / "batch.json").write_text(json.dumps(asdict(batch)))
            try:
                os.rename(tmp, self._dir(batch))
            except OSError:
                if not self.done(batch):  # else another writer of the same request got there first: same files
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the final folder -------------------------------------------------------------------------
    def finish(self, batches: Sequence[Batch]) -> list[Path] | None:
        """Join the batches into the final folder when all are on disk (else None: other shards still run), and
        return the final files. Safe to repeat, and safe against a crash halfway: the record is written last."""
        with exclusive(self.staging / "finish"):
            if not (self.out / RECORD).is_file():
                missing = [b.index for b in batches if not self.done(b)]
                if missing:
                    log.info(
                        "%d of %d batches on disk; the process that writes the last one joins them",
                        len(batches) - len(missing),
                        len(batches),
                    )
                    return None
                self._join(batches)
        shutil.rmtree(self.staging, ignore_errors=True)
        return self.files()

    def _join(self, batches: Sequence[Batch]) -> None:
        parts: dict[str, list[Path]] = {name: [] for name in self.concatenated}
        for b in batches:
            for f in sorted(self._dir(b).iterdir()):
                if f.name == "batch.json":
                    continue
                if f.name in parts:
                    parts[f.name].append(f)
                elif (self.out / f.name).exists():
                    # (a file moved by a join that crashed halfway is gone from its batch: never seen here)
                    raise FileExistsError(
                        f"{self.out / f.name} exists and is not from batch {b.index} of this request: a file of "
                        "another run, or a domain that names files alike in several batches (per-item files are "
                        "numbered from the batch's start; files joined across batches are listed in the domain's "
                        "`concatenated`). Choose another out="
                    )
                else:
                    os.replace(f, self.out / f.name)
        for name, files in parts.items():
            if files:
                with replaced(self.out / name) as tmp, open(tmp, "wb") as joined:
                    for f in files:
                        with open(f, "rb") as part:
                            shutil.copyfileobj(part, joined)
        with replaced(self.out / RECORD) as tmp:
            tmp.write_text(json.dumps({**self.request, "batches": [asdict(b) for b in batches]}, indent=2))
        log.info("joined %d batches into %s", len(batches), self.out)

    @contextmanager
    def tidied(self) -> Iterator[None]:
        """After the block, whatever happened in it, remove the staging folder (its locks) when the folder is
        finished (a refused second request leaves it as it was) or when it holds no batch, written or in
        progress (a run that failed before its first batch leaves nothing, ``out`` too if it is empty)."""
        try:
            yield
        finally:
            started = self.staging.is_dir() and any(p.is_dir() for p in self.staging.iterdir())
            if (self.out / RECORD).is_file() or not started:
                shutil.rmtree(self.staging, ignore_errors=True)
                try:
                    self.out.rmdir()
                except OSError:  # not empty: the samples, or a run folder's own files
                    pass

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if not p.name.startswith("."))
