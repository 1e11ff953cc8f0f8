"""Surviving preemption, signals and crashes: atomic checkpoint writes, a checkpoint when the run is stopped
(SIGTERM, SIGUSR1, Ctrl-C, a scheduler's exit), and finding the checkpoint a resubmitted run continues from."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment

from multidiff.checkpoint import CheckpointFormatError
from multidiff.paths import replaced

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # the file name (without .ckpt) a stopped run leaves


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in its own folder, flush it to disk, then rename it into place:
    a process killed mid-write leaves the previous file whole. (Lightning's transaction writes the temporary
    file in the system's temp folder; moving it onto another file system, as from a node's /tmp to shared
    storage, is a copy that a kill can truncate.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with replaced(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint


def is_interrupt(exception: BaseException) -> bool:
    """A stop from outside (a signal, Ctrl-C, a scheduler's exit), not a failure of the run itself: the weights
    are those of a finished step and worth keeping. A NaN guard or any other error is not one: its weights may
    be the reason it failed, and the last periodic checkpoint stays the one to resume from."""
    return isinstance(exception, KeyboardInterrupt | SystemExit)


class InterruptCheckpoint(Checkpoint):
    """A checkpoint written only when the run is stopped from outside (see :func:`is_interrupt`). Lightning turns
    SIGTERM into a stop after the current batch; SIGUSR1 (what SLURM sends ahead of a preemption or time limit,
    with ``--signal``) is made to do the same unless Lightning's SLURM auto-requeue handles it (then Lightning
    saves ``hpc_ckpt_*.ckpt`` and requeues); so is submitit's preemption signal, whose requeue then follows the
    save. The file is removed when the run later finishes normally. Not Lightning's ``OnExceptionCheckpoint``:
    with one of those configured, ``fit(ckpt_path=None)`` restores the folder's ``last`` checkpoint, so that
    ``ckpt_path=null`` could not start afresh."""

    def __init__(self, dirpath: str, filename: str = INTERRUPTED):
        super().__init__()
        self.dirpath, self.filename = dirpath, filename
        self._requeue: Any = None
        self._requeue_pending = False

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)  # a run that ends normally leaves no stop behind

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        stop = signal.getsignal(signal.SIGTERM)  # Lightning's: stop after the current step, all ranks together
        env = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        if not slurm_requeue and signal.getsignal(signal.SIGUSR1) in (None, signal.SIG_DFL):
            signal.signal(signal.SIGUSR1, stop)  # Lightning restores the original handlers at teardown
        # submitit's preemption handler (SIGUSR2 by default) requeues the job and exits at once, wherever the
        # step and the other processes are; instead stop as for SIGTERM, save, then let it requeue
        submitit = signal.getsignal(signal.SIGUSR2)
        if getattr(submitit, "__name__", "") == "checkpoint_and_try_requeue":
            self._requeue = submitit

            def stop_then_requeue(signum: int, frame: Any) -> None:
                self._requeue_pending = True
                stop(signum, frame)

            signal.signal(signal.SIGUSR2, stop_then_requeue)

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if not is_interrupt(exception) or trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            log.warning(
                "stopped (%s) at step %d: checkpoint %s; the same command with ckpt_path=auto and the same run "
                "directory continues from it",
                type(exception).__name__,
                trainer.global_step,
                self.ckpt_path,
            )
        if self._requeue_pending and trainer.is_global_zero:
            try:
                self._requeue(signal.SIGUSR2, None)
            except SystemExit:  # submitit exits once the job is requeued; the stop goes on as for SIGTERM
                pass


def resume_candidates(run_dir: Path) -> list[Path]:
    """Checkpoints a run directory may continue from, newest first: ``last.ckpt`` (step and time intervals),
    ``interrupted.ckpt`` (a stop), Lightning's ``hpc_ckpt_*.ckpt`` (SLURM requeue) and the periodic ones."""
    folder = run_dir / "checkpoints"
    found = [*folder.glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_resume(run_dir: Path, verify: Callable[[Path], None]) -> Path | None:
    """The newest checkpoint under ``run_dir`` that ``verify`` accepts (the checks any resume gets); one that is
    not a readable checkpoint (corrupt, truncated) is passed over with a warning naming it, so the previous good
    one is used. Any other refusal (another domain, an untrusted config) is raised. None: a fresh run."""
    for path in resume_candidates(run_dir):
        try:
            verify(path)
        except CheckpointFormatError as e:
            log.warning("ckpt_path=auto: passing over %s: %s", path, e)
            continue
        return path
    return None
