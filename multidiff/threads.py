"""How many CPU threads a process takes: the cores it can use, not all the cores there are.

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()`` threads and wait for the slowest.
When another process keeps one of those cores busy, every operation waits for the thread that shares it, and
a 2-thread job beside one busy process runs at a fraction of what one thread alone would (measured in
``benchmarks/contended.py``). ``threads=auto`` therefore takes the cores that are idle when the run starts,
within the process's CPU affinity and within what the environment already allows (``OMP_NUM_THREADS``, which
Hydra's joblib launcher sets to each job's share), and follows the machine's load while it runs
(:class:`ThreadGovernor`).
"""

from __future__ import annotations

import logging
import math
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


def _cores_busy(cpus: set[int], before: tuple[float, float], after: tuple[float, float]) -> float:
    """How many of ``cpus`` were busy between two :func:`_cpu_times` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return len(cpus) * busy / total if total > 0 else 0.0


def _threads_for(cpus: set[int], others: float, allowed: int) -> int:
    """One thread per core that other processes (using ``others`` cores) leave free: at least 1, at most
    ``allowed``."""
    return max(1, min(allowed, len(cpus) - math.floor(others + 0.5)))


def busy_cores(cpus: set[int], window_s: float = 0.3) -> float:
    """How many of ``cpus`` other processes keep busy, measured over ``window_s`` while this one sleeps; 0.0
    where /proc/stat cannot be read (not Linux)."""
    try:
        before = _cpu_times(cpus)
        time.sleep(window_s)
        return _cores_busy(cpus, before, _cpu_times(cpus))
    except (OSError, ValueError):
        return 0.0


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
        return _threads_for(cpus, busy_cores(cpus), allowed)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: use a positive integer or auto (the cores idle at start)")
    return threads


class ThreadGovernor:
    """Torch's intra-op threads for this process, as ``threads`` says (:func:`resolve_threads`); with ``auto``,
    re-measured at :meth:`update` (at most every ``every_s`` seconds) from what the other processes used since
    the last measurement: the machine's busy time (/proc/stat) less this process's own CPU time. Two jobs that
    start together both find the machine idle; a few seconds later each sees the other and takes one core.
    A job left alone again takes the cores back. A fixed count is kept, with one warning when other processes
    hold the cores its threads need (its threads then wait on each other at every parallel op)."""

    def __init__(self, threads: int | str, every_s: float = 5.0):
        import torch

        self.adaptive, self.every_s, self.warned = threads == "auto", every_s, False
        self._times: tuple[float, float] | None = None
        self.allowed, self.cpus = torch.get_num_threads(), usable_cores()
        self.threads = resolve_threads(threads, self.allowed)
        self._set(self.threads)
        log.info("%d CPU thread%s (threads=%s)", self.threads, "" if self.threads == 1 else "s", threads)
        self._mark()

    def _set(self, n: int) -> None:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.threads = n

    def _mark(self) -> None:
        self._wall, self._own = time.monotonic(), time.process_time()
        try:
            self._times = _cpu_times(self.cpus)
        except (OSError, ValueError):
            self._times = None  # no /proc/stat: keep the threads chosen at start

    def update(self) -> int:
        """The thread count now (changed when other processes took or gave back cores since the last call)."""
        wall = time.monotonic() - self._wall
        # a fixed count is watched until it warns; one thread never waits on another
        watching = self.allowed > 1 if self.adaptive else self.threads > 1 and not self.warned
        if self._times is None or not watching or wall < self.every_s:
            return self.threads
        own = (time.process_time() - self._own) / wall
        before = self._times
        self._mark()
        if self._times is None:  # /proc/stat unreadable since: keep the count
            return self.threads
        others = max(0.0, _cores_busy(self.cpus, before, self._times) - own)
        if not self.adaptive:
            # more threads than cores is the user's choice (and OpenMP does not spin then): warn about others only
            if min(self.threads, len(self.cpus)) > _threads_for(self.cpus, others, self.threads):
                log.warning(
                    "other processes use %.1f of %d cores beside this run's threads=%d: each parallel op waits "
                    "for a thread that shares a core, and the run slows to a fraction of its speed; "
                    "threads=auto follows the load (or set OMP_WAIT_POLICY=PASSIVE: idle threads sleep at once)",
                    others, len(self.cpus), self.threads,
                )  # fmt: skip
                self.warned = True
            return self.threads
        n = _threads_for(self.cpus, others, self.allowed)
        if n != self.threads:
            log.info("other processes use %.1f cores: %d CPU thread%s now", others, n, "" if n == 1 else "s")
            self._set(n)
        return n
