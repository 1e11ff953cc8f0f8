"""Threads: ``threads=auto`` takes the cores that are idle, a fixed count warns when others take its cores, and
OpenMP's idle workers spin briefly before they sleep."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from multidiff.threads import ThreadGovernor, busy_cores, resolve_threads, usable_cores


def test_explicit_threads_are_taken_as_given_and_bad_ones_named():
    assert resolve_threads(3, allowed=2) == 3
    for bad in (0, -1, "two", True):
        with pytest.raises(ValueError, match=f"threads={bad!r}: use a positive integer or auto"):
            resolve_threads(bad, allowed=2)


def test_auto_stays_within_what_the_environment_allows():
    assert resolve_threads("auto", allowed=1) == 1  # OMP_NUM_THREADS=1, or a joblib job's share
    assert 1 <= resolve_threads("auto", allowed=len(usable_cores())) <= len(usable_cores())


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_auto_leaves_a_busy_core_to_its_process():
    cores = len(usable_cores())
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores(usable_cores()) >= 0.6
        assert resolve_threads("auto", allowed=cores) <= max(1, cores - 1)
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_a_fixed_thread_count_is_kept_and_warns_once_when_other_processes_take_its_cores(caplog):
    import torch

    before = torch.get_num_threads()
    cores = len(usable_cores())
    if cores < 2:
        pytest.skip("one usable core: a fixed count of one thread never waits on another")
    code = "print('running', flush=True)\nwhile True: pass"
    busy = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "running"  # busy before the governor measures
        governor = ThreadGovernor(cores, every_s=0.5)
        with caplog.at_level(logging.WARNING, logger="multidiff.threads"):
            for _ in range(2):
                time.sleep(0.6)
                assert governor.update() == cores
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert f"beside this run's threads={cores}" in warnings[0] and "threads=auto" in warnings[0]
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)


WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "100000"}),  # a short spin, then sleep
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}),
        ({"GOMP_SPINCOUNT": "0"}, {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "0"}),
    ],
)
def test_openmp_waiting_defaults_to_a_short_spin_and_a_users_setting_stands(given, expected):
    # a fresh interpreter: the variables only count before the OpenMP runtime loads
    env = {k: v for k, v in os.environ.items() if k not in WAIT_KEYS} | given
    code = "import json, multidiff.env; print(json.dumps(multidiff.env.openmp_setting()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == expected
