"""hardware=ddp_cpu: two processes (gloo) train, validate, stop on a NaN, checkpoint and resume as one process
does, with the same global batch, and only rank zero writes samples."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, TINY_AUDIO, compose

import sample
from multidiff.distributed import per_device_batch

pytestmark = pytest.mark.slow  # trains in subprocesses


def run_train(run: Path, *overrides: str, check: bool = True, samples: bool = False) -> subprocess.CompletedProcess:
    # audio_folder has no download option; samples=True keeps the preview callback
    drop = {"data.download=false", *(["callbacks.samples=null"] if samples else [])}
    tiny = [
        o for o in TINY_AUDIO if o not in drop or (o == "data.download=false" and "data=audio_folder" not in overrides)
    ]
    cmd = [sys.executable, "train.py", "domain=audio", f"hydra.run.dir={run}", *tiny, *overrides]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


def curve(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


def test_ddp_cpu_trains_resumes_and_samples_like_one_process(shared_datasets, tmp_path):
    common = [
        f"paths.data_dir={shared_datasets}",
        "callbacks.ema.update_starting_at_step=0",
        "callbacks.checkpoint.every_n_train_steps=3",
        "model.lr_scheduler=null",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    run_train(one, *common, "trainer.max_steps=9")
    run_train(
        two,
        *common,
        "hardware=ddp_cpu",
        "trainer.max_steps=6",
        "callbacks.samples.every_n_steps=3",
        "callbacks.samples.n=2",
        "sampler.steps=3",
        samples=True,
    )
    # the global batch is the same: 24 clips in batches of 8 are 3 steps per epoch in both runs
    # (each process loads 4 of its 12 clips per step; without the split it would be 1 step per epoch)
    epochs_one = {int(r["step"]): r["epoch"] for r in metrics(one) if r.get("train/loss")}
    epochs_two = {int(r["step"]): r["epoch"] for r in metrics(two) if r.get("train/loss")}
    assert epochs_two == {s: e for s, e in epochs_one.items() if s in epochs_two} and max(epochs_two) >= 5

    # resume the two-process run from its last checkpoint (ckpt_path=auto) to step 9
    run_train(two, *common, "hardware=ddp_cpu", "trainer.max_steps=9")
    assert torch.load(two / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9

    # validation (synchronised over the processes) follows the single-process curve within noise
    val_one, val_two = curve(metrics(one), "val/loss"), curve(metrics(two), "val/loss")
    shared = sorted(set(val_one) & set(val_two))
    assert len(shared) >= 2, (val_one, val_two)
    for step in shared:
        assert val_two[step] == pytest.approx(val_one[step], rel=0.1), (step, val_one, val_two)

    # samples came from rank zero alone: n files per step, logged by one process
    for step in (3, 6):
        assert len(list((two / "samples" / f"step_{step:07d}").glob("*.wav"))) == 2
    assert "samples in" not in (two / "train_ddp_process_1.log").read_text()

    # the checkpoint samples as any other
    out = tmp_path / "wavs"
    cfg = compose("sample", [f"ckpt={two}/checkpoints/last.ckpt", "n=2", "steps=3", f"out={out}"], tmp_path / "s")
    sample.sample(cfg)
    assert len(list(out.glob("*.wav"))) == 2


def test_ddp_cpu_non_finite_loss_on_one_process_stops_both(tmp_path):
    # a folder of clips, one of them extreme enough that its loss overflows: only the process that draws it
    # sees a non-finite loss, and both must stop (not leave the other waiting in the all-reduce)
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(15):
        sf.write(folder / f"clip_{i:02d}.wav", 0.3 * rng.standard_normal(1024).astype(np.float32), 8000)
    sf.write(folder / "clip_huge.wav", np.full(1024, 3e38, np.float32), 8000, subtype="FLOAT")
    run = tmp_path / "run"
    r = run_train(
        run,
        "data=audio_folder",
        f"data.root={folder}",
        "data.sample_rate=8000",
        "data.normalize=none",
        "data.val_fraction=0.0",
        "hardware=ddp_cpu",
        "trainer.max_steps=20",
        check=False,
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "non-finite training loss" in r.stdout + r.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert not last.exists() or all(
        torch.isfinite(v).all() for v in torch.load(last, weights_only=True)["state_dict"].values()
    )


def test_global_batch_must_split_over_the_processes():
    class Trainer:
        world_size = 3

    assert per_device_batch(12, Trainer()) == 4 and per_device_batch(12, None) == 12
    with pytest.raises(ValueError, match=r"data.batch_size=16 .* over 3 processes.*multiple of 3"):
        per_device_batch(16, Trainer())
