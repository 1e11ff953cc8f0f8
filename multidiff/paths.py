"""Folders outside a Hydra run: the defaults of ``conf/paths/default.yaml``, and a writable place for a cache
whose preferred folder (beside read-only shared data) cannot be written."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)


def data_dir() -> Path:
    """``paths.data_dir`` as the config resolves it: ``$MULTIDIFF_DATA``, else ``<root>/datasets`` with root
    ``$MULTIDIFF_ROOT`` or the working directory."""
    if os.environ.get("MULTIDIFF_DATA"):
        return Path(os.environ["MULTIDIFF_DATA"])
    return Path(os.environ.get("MULTIDIFF_ROOT") or Path.cwd()) / "datasets"


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/multidiff/<name>`` (default ``~/.cache``): survives reboots, unlike a temporary folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multidiff" / name


def is_writable(folder: str | Path) -> bool:
    """Whether ``folder`` (or, while absent, its nearest existing parent) can be written."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    # root passes os.access everywhere; a folder without any write bit is read-only by intent (shared data)
    return path.is_dir() and bool(path.stat().st_mode & 0o222) and os.access(path, os.W_OK | os.X_OK)


def writable_dir(preferred: str | Path, name: str) -> Path:
    """``preferred``, created, when it can be written; else :func:`user_cache_dir` ``(name)``, logged."""
    preferred = Path(preferred)
    if is_writable(preferred):
        try:
            preferred.mkdir(parents=True, exist_ok=True)
            return preferred
        except OSError:
            pass
    fallback = user_cache_dir(name)
    fallback.mkdir(parents=True, exist_ok=True)
    log.warning("%s is not writable; writing the %s cache to %s instead", preferred, name, fallback)
    return fallback


@contextmanager
def replaced(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write, renamed onto ``path`` when the block ends without error and
    removed otherwise: a process killed mid-write leaves the previous file (or none) whole, and concurrent
    writers never expose half a file. In the same folder because a rename across file systems is a copy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold the lock ``<path>.lock`` while building ``path``: of several processes that need it at once (the
    ranks of a distributed run, the jobs of a sweep) one builds it while the others wait, then find it built."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        yield
