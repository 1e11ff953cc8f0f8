"""One writer per folder: a lock held for a whole run, naming its holder to whoever else tries.

The lock is ``filelock``'s (``flock`` on POSIX), which the operating system releases when its process dies, so
the lock of a killed run is taken over by the next launch without anyone deleting a file. Beside it, a JSON
note says who holds it (process, host, start time, command line), for the refusal message.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


@contextmanager
def hold(folder: str | Path, name: str = "run", hint: str = "") -> Iterator[None]:
    """Hold ``<folder>/.<name>.lock`` for the block, or fail at once with :class:`FolderBusyError` naming the
    process that holds it (``hint``: what to do instead, appended to the message)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, note = FileLock(folder / f".{name}.lock"), folder / f".{name}.lock.json"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderBusyError(f"{folder} is in use by {_holder(note)}; it was left untouched. {hint}".strip()) from None
    try:
        note.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(sys.argv),
                }
            )
        )
        yield
    finally:
        note.unlink(missing_ok=True)
        lock.release()


def _holder(note: Path) -> str:
    try:
        who = json.loads(note.read_text())
        return f"process {who['pid']} on {who['host']} (started {who['started']}: {who['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"
