"""How many CPU threads a process takes: the cores it can use, not all the cores there are.

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()`` threads and wait for the slowest.
When another process keeps one of those cores busy, every operation waits for the thread that shares it, and
a 2-thread job beside one busy process runs at a fraction of what one thread alone would (measured in
``benchmarks/contended.py``). ``threads=auto`` therefore takes the cores that are idle when the run starts,
within the process's CPU affinity and within what the environment already allows (``OMP_NUM_THREADS``, which
Hydra's joblib launcher sets to each job's share).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def _cpu_times(cpus: set[int]) -> tuple[float, float]:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat."""
    busy = total = 0.0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            busy += sum(values) - idle
            total += sum(values)
    return busy, total


def busy_cores(cpus: set[int], window_s: float = 0.3) -> float:
    """How many of ``cpus`` other processes keep busy, measured over ``window_s`` while this one sleeps; 0.0
    where /proc/stat cannot be read (not Linux)."""
    try:
        busy0, total0 = _cpu_times(cpus)
        time.sleep(window_s)
        busy1, total1 = _cpu_times(cpus)
    except (OSError, ValueError):
        return 0.0
    if total1 <= total0:
        return 0.0
    return len(cpus) * (busy1 - busy0) / (total1 - total0)


def usable_cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def resolve_threads(threads: int | str, allowed: int) -> int:
    """``threads``: a positive integer, or ``auto``: the idle cores among those this process may use, at least
    one and at most ``allowed`` (the environment's limit, e.g. ``torch.get_num_threads()`` as
    ``OMP_NUM_THREADS`` set it)."""
    if threads == "auto":
        if allowed <= 1:  # nothing to choose: no need to measure
            return 1
        cpus = usable_cores()
        idle = len(cpus) - round(busy_cores(cpus))
        return max(1, min(allowed, idle))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: use a positive integer or auto (the cores idle at start)")
    return threads


def use_threads(threads: int | str) -> int:
    """Set torch's intra-op threads as :func:`resolve_threads` says, log it, and return the number."""
    import torch

    allowed = torch.get_num_threads()
    n = resolve_threads(threads, allowed)
    if n != allowed:
        torch.set_num_threads(n)
    log.info("%d CPU thread%s (threads=%s)", n, "" if n == 1 else "s", threads)
    return n
