"""Runs that survive preemption: a checkpoint on a wall-clock interval, one at the current step when the run is
stopped by a signal, atomic writes, and ckpt_path=auto continuing from the newest good checkpoint."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_AUDIO

import train
from multidiff.checkpoint import CheckpointFormatError
from multidiff.preemption import AtomicCheckpointIO

INTERVAL_S = 2  # the wall-clock checkpoint interval of these runs


# submitit installs its preemption handler (named so) before the job runs; this one stands in for it, leaving a
# mark where submitit would requeue the job, and exiting as submitit does
SUBMITIT_STANDIN = """
import os, runpy, signal, sys
def checkpoint_and_try_requeue(signum, frame):
    open(os.environ["REQUEUE_MARK"], "w").write("requeued")
    sys.exit(-1)
signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def start(run: Path, data: Path, *overrides: str, under_submitit: bool = False, env=None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        *(["-c", SUBMITIT_STANDIN] if under_submitit else []),
        "train.py",
        "domain=audio",
        f"paths.data_dir={data}",
        f"hydra.run.dir={run}",
        *TINY_AUDIO,
        "~callbacks.checkpoint_time.train_time_interval.minutes",
        f"+callbacks.checkpoint_time.train_time_interval.seconds={INTERVAL_S}",
        *overrides,
    ]
    # a shell starts commands with Ctrl-C at its default; a test process may have it ignored (Lightning ignores
    # SIGINT for good once it has handled one in-process), and a child would inherit that and never stop
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120, after: float = 0.0) -> float:
    """Wait until ``path`` exists with a modification time after ``after``; returns that time."""
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and path.stat().st_mtime > after:
            return path.stat().st_mtime
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{path} was not written within {timeout} s")


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def resume(run: Path, data: Path, max_steps: int) -> str:
    """The same command again (ckpt_path=auto is the default) with a new step budget; returns its log."""
    proc = start(run, data, f"trainer.max_steps={max_steps}")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


pytestmark = pytest.mark.slow  # trains in subprocesses and signals them


def wait_for_step(path: Path, proc: subprocess.Popen, step: int, timeout: float = 120) -> None:
    """Wait until the checkpoint at ``path`` (rewritten every INTERVAL_S, atomically) is at ``step`` or later."""
    end, after = time.time() + timeout, 0.0
    while time.time() < end:
        after = wait_for(path, proc, timeout=end - time.time(), after=after)
        if step_of(path) >= step:
            return
    proc.kill()
    raise AssertionError(f"{path} did not reach step {step} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_saves_the_current_step_and_resubmitting_continues(shared_datasets, tmp_path, signum):
    run = tmp_path / "run"
    proc = start(run, shared_datasets, "trainer.max_steps=100000")
    # training is under way and past the loss plot's first point (every 10 steps), which the resumed run keeps
    wait_for_step(run / "checkpoints" / "last.ckpt", proc, 10)
    time.sleep(1.0)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    # a stop is not a success: the scheduler (or shell) sees a failure, never status 0
    assert proc.returncode == (128 + signal.SIGTERM if signum != signal.SIGINT else 1), out[-3000:]
    stopped = re.search(r"stopped \((\w+)\) at step (\d+)", out)
    assert stopped, out[-3000:]
    at = int(stopped.group(2))
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    assert step_of(interrupted) == at >= step_of(run / "checkpoints" / "last.ckpt")

    log = resume(run, shared_datasets, at + 3)
    assert f"continuing from {interrupted}" in log
    assert step_of(run / "checkpoints" / "last.ckpt") == at + 3
    assert not interrupted.exists()  # the finished run removes it: the next resubmission starts from last.ckpt
    # the curves go on from before the stop: metrics.csv and the loss plot's history in the checkpoint
    steps = {int(r["step"]) for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("train/loss")}
    assert min(steps) < at < max(steps)
    callbacks = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    history = next(v["history"] for k, v in callbacks.items() if k.startswith("LossCurves"))
    assert min(p[0] for p in history["train/loss"]) < at


def test_submitit_preemption_saves_the_step_then_requeues(shared_datasets, tmp_path):
    run, mark = tmp_path / "run", tmp_path / "requeued"
    env = {**os.environ, "REQUEUE_MARK": str(mark)}
    proc = start(run, shared_datasets, "trainer.max_steps=100000", under_submitit=True, env=env)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=120)
    stopped = re.search(r"stopped \((\w+)\) at step (\d+)", out)
    assert stopped and proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    # the checkpoint of the step it was at came first (at a step boundary), then submitit's requeue
    assert step_of(run / "checkpoints" / "interrupted.ckpt") == int(stopped.group(2))
    assert mark.read_text() == "requeued"


def test_sigkill_loses_at_most_one_interval(shared_datasets, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = start(run, shared_datasets, "trainer.max_steps=100000")
    first = wait_for(last, proc)
    wait_for(last, proc, after=first)  # rewritten: the interval, not only the first save
    time.sleep(INTERVAL_S * 0.75)
    killed_at = time.time()
    proc.kill()  # SIGKILL: no handler runs, no checkpoint at the end
    proc.communicate(timeout=60)
    assert not (run / "checkpoints" / "interrupted.ckpt").exists()
    saved_at = last.stat().st_mtime
    assert killed_at - saved_at < INTERVAL_S + 1.0, (killed_at, saved_at)  # one interval (+ a step) at most
    step = step_of(last)
    assert step > 0

    log = resume(run, shared_datasets, step + 2)
    assert f"continuing from {last}" in log
    assert step_of(last) == step + 2


def test_corrupt_checkpoint_is_refused_and_auto_uses_the_previous_good_one(audio_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    train.train(audio_cfg("trainer.max_steps=4", "callbacks.checkpoint.every_n_train_steps=2", out=run))
    last, good = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "step_0000004.ckpt"
    assert step_of(good) == 4
    last.write_bytes(last.read_bytes()[:5000])  # truncated, and the newest file

    with pytest.raises(CheckpointFormatError, match=re.escape(str(last))):
        train.train(audio_cfg("trainer.max_steps=6", f"ckpt_path={last}", out=run))

    with caplog.at_level("WARNING", logger="multidiff.preemption"):
        trainer = train.train(audio_cfg("trainer.max_steps=6", out=run))  # ckpt_path=auto
    assert f"passing over {last}" in caplog.text
    assert trainer.global_step == 6 and step_of(last) == 6  # went on from step 4


def test_fresh_run_directory_starts_afresh(audio_cfg, tmp_path):
    trainer = train.train(audio_cfg("trainer.max_steps=2", out=tmp_path / "run"))  # ckpt_path=auto, nothing there
    assert trainer.global_step == 2


def test_atomic_write_keeps_the_previous_file_when_killed_mid_write(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def dies_mid_write(obj, f):
        f.write(b"PK\x03\x04 partial")  # a zip header and no more, as a kill mid-write leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_second_launch_into_a_running_folder_is_refused_and_the_first_finishes(shared_datasets, tmp_path):
    run = tmp_path / "run"
    first = start(run, shared_datasets, "trainer.max_steps=120")
    wait_for(run / ".train.lock.json", first)
    second = start(run, shared_datasets, "trainer.max_steps=120")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 1, out[-3000:]
    assert f"{run} is in use by process {first.pid}" in out and "hydra.run.dir" in out
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert step_of(run / "checkpoints" / "last.ckpt") == 120
    assert not (run / ".train.lock.json").exists()


def test_lock_of_a_killed_run_is_taken_over(shared_datasets, tmp_path):
    run = tmp_path / "run"
    proc = start(run, shared_datasets, "trainer.max_steps=100000")
    wait_for(run / ".train.lock.json", proc)
    proc.kill()  # SIGKILL: its note stays behind, the operating system releases its lock
    proc.communicate(timeout=60)
    assert (run / ".train.lock.json").exists()
    resume(run, shared_datasets, 3)


def test_resuming_another_model_names_the_settings_that_differ(audio_cfg, tmp_path):
    run = tmp_path / "run"
    train.train(audio_cfg("trainer.max_steps=1", out=run))
    with pytest.raises(ValueError, match=r"net\.channels: \[8, 16\] in the checkpoint, \[8, 24\] now.*hydra\.run\.dir"):
        train.train(audio_cfg("trainer.max_steps=2", "net.channels=[8,24]", out=run))
    # data and trainer settings may change between a run and its continuation
    assert train.train(audio_cfg("trainer.max_steps=2", "data.batch_size=4", out=run)).global_step == 2
    # ckpt_path=null starts afresh in the folder: the other model, from step 0 (nothing restored behind its back)
    fresh = train.train(audio_cfg("trainer.max_steps=1", "net.channels=[8,24]", "ckpt_path=null", out=run))
    assert fresh.global_step == 1 and step_of(run / "checkpoints" / "last.ckpt") == 1
