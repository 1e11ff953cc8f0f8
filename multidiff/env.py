"""Process environment that must be set before torch loads (imported first by ``multidiff`` itself and by
the entry points, so it is written once)."""

import os

# Idle OpenMP workers spin briefly, then sleep (read by the OpenMP runtime when torch loads). Sleeping at once
# (PASSIVE alone) costs each of a training step's hundreds of parallel ops a wake-up; spinning long (ACTIVE, or
# GNU OpenMP's default of about 3 ms) stalls every parallel op when another process holds a core (10-20x slower
# on a shared small CPU). PASSIVE with a spin count: GNU OpenMP spins up to GOMP_SPINCOUNT turns
# (about a millisecond by its own estimate), and not at all when it runs more threads than it has CPUs.
# Measured in docs/benchmarks.md ("Waiting threads"). A user's own setting of either variable stands.
OPENMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "100000"}
if not any(k in os.environ for k in OPENMP_WAIT):
    os.environ.update(OPENMP_WAIT)


def openmp_setting() -> dict[str, str | None]:
    """The waiting variables as this process has them (None: unset), for a benchmark's record."""
    return {k: os.environ.get(k) for k in OPENMP_WAIT}


def _keep_freed_memory() -> None:
    """glibc hands large freed blocks back to the kernel and maps them afresh on the next allocation, so a
    network call that frees and reallocates the same activations pays page faults every time (up to 1.5x
    the time of a molecule sampling step, measured). Keep blocks up to 32 MiB in the heap and trim
    it only past 2 GiB of free memory, unless the user set glibc's own variables."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 2**31 - 1)  # the largest value mallopt takes (an int)


_keep_freed_memory()
