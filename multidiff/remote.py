"""Models fetched by URL: ``hf://ORG/REPO``, ``https://...``, ``s3://...`` or any other fsspec URL.

A URL ending in ``.ckpt`` names a training checkpoint; any other names a model folder written by
``python -m multidiff.export`` (its ``config.yaml``, ``weights.safetensors`` and ``MODEL_CARD.md`` are fetched by
name, so a plain web server serves one as well as the Hugging Face Hub). The copy is made once into a cache
folder (``$MULTIDIFF_CACHE``, else ``~/.cache/multidiff``), whole or not at all, and then read exactly as a local
checkpoint or folder is: the trust check of the stored config applies to it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import fsspec
from filelock import FileLock

log = logging.getLogger(__name__)

#: a URL has a scheme (``hf://``, ``https://``, ``memory://``); a Windows drive (``C:\\``) is a path, not a URL
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: what a model folder holds, fetched by name; True: required
FOLDER_FILES = {"config.yaml": True, "weights.safetensors": True, "MODEL_CARD.md": False}


def is_url(source: str | Path) -> bool:
    """Whether ``source`` is a URL for fsspec rather than a local path or a shipped model's name."""
    return isinstance(source, str) and bool(_URL.match(source))


def cache_root() -> Path:
    """Where fetched models are kept: ``$MULTIDIFF_CACHE`` or ``~/.cache/multidiff``."""
    return Path(os.environ.get("MULTIDIFF_CACHE") or Path.home() / ".cache" / "multidiff") / "remote"


def fetch(url: str, cache: Path | None = None, refresh: bool = False) -> Path:
    """The local copy of the checkpoint or model folder at ``url``, fetched on first use (``refresh``: again).

    The copy's name is derived from the URL, so the same URL is fetched once: by one process at a time (a lock per
    URL, so the shards of a run share one download), into a temporary folder renamed into place only when every
    file has arrived (``source.json`` written last marks a whole copy)."""
    cache = Path(cache) if cache is not None else cache_root()
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    home = cache / f"{digest}-{name}"
    target = home / name if url.endswith(".ckpt") else home
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / f".{digest}.lock"):
        if (home / "source.json").is_file() and not refresh:
            log.info("%s: using the copy in %s", url, home)
            return target
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as e:  # an unknown protocol, or one whose package is not installed
            raise ValueError(f"{url}: not a URL multidiff can fetch ({e}); e.g. hf://, https://, s3://") from None
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache))
        old = cache / f".{digest}.old"
        try:
            if url.endswith(".ckpt"):
                _get(fs, path, staging / name, url)
            else:
                for file, required in FOLDER_FILES.items():
                    if required or fs.exists(f"{path.rstrip('/')}/{file}"):
                        _get(fs, f"{path.rstrip('/')}/{file}", staging / file, url)
            (staging / "source.json").write_text(json.dumps({"url": url}) + "\n")
            if home.exists():  # a refresh, or a copy a killed fetch left without source.json: moved aside first
                shutil.rmtree(old, ignore_errors=True)
                home.rename(old)
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    log.info("%s: fetched into %s", url, home)
    return target


def _get(fs: fsspec.AbstractFileSystem, path: str, dest: Path, url: str) -> None:
    try:
        fs.get_file(path, str(dest))
    except FileNotFoundError:
        what = "a checkpoint" if url.endswith(".ckpt") else "a model folder (written by python -m multidiff.export)"
        raise FileNotFoundError(f"{url}: no file {path.rsplit('/', 1)[-1]} there; expected {what}") from None
