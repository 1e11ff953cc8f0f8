"""Sampling at scale: batches written as they are drawn, a stopped run resumed, shards joined, bad requests refused
with nothing written."""

import filecmp
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import ROOT, compose

import sample
from multidiff.checkpoint import CheckpointFormatError
from multidiff.sample_folder import STAGING, Batch, SampleFolder, plan, shard_of

# one thread in every process, as in this one (conftest), so that separate processes draw the same numbers
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def same_folders(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()), (names, sorted(p.name for p in b.iterdir()))
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


# -- the folder on its own -------------------------------------------------------------------------------------------
def test_plan_and_shards_cover_every_item_once():
    batches = plan(10, 4, seed=3)
    assert [(b.start, b.count) for b in batches] == [(0, 4), (4, 4), (8, 2)]
    assert batches[0].seed == 3 and len({b.seed for b in batches}) == 3  # each batch its own seed
    assert plan(10, 4, seed=4)[1].seed != batches[1].seed
    shards = [shard_of(batches, i, 2) for i in range(2)]
    assert sorted(b.index for s in shards for b in s) == [0, 1, 2]
    for bad in ({"shard": 2, "num_shards": 2}, {"shard": 0, "num_shards": 0}, {"shard": -1, "num_shards": 1}):
        with pytest.raises(ValueError, match="shard"):
            shard_of(batches, **bad)


def write_batch(folder: SampleFolder, batch: Batch) -> None:
    with folder.writing(batch) as staging:
        for i in range(batch.start, batch.start + batch.count):
            (staging / f"item_{i}.txt").write_text(f"{i}\n")
        (staging / "all.txt").write_text("".join(f"{i}\n" for i in range(batch.start, batch.start + batch.count)))
        if batch.index == 0:
            (staging / "preview.txt").write_text("first\n")


def test_folder_joins_batches_in_order_whatever_order_they_were_written(tmp_path):
    batches = plan(7, 3, seed=0)
    folder = SampleFolder(tmp_path / "out", {"seed": 0}, concatenated=["all.txt"])
    assert folder.open() is False
    for b in reversed(batches[1:]):
        write_batch(folder, b)
    assert folder.finish(batches) is None  # batch 0 missing: not joined yet
    assert not (tmp_path / "out" / "sampling.json").exists()
    write_batch(folder, batches[0])
    files = folder.finish(batches)
    out = tmp_path / "out"
    assert (out / "all.txt").read_text() == "".join(f"{i}\n" for i in range(7))
    assert sorted(p.name for p in files) == sorted(
        ["all.txt", "preview.txt", "sampling.json", *(f"item_{i}.txt" for i in range(7))]
    )
    assert not (out / STAGING).exists()
    record = json.loads((out / "sampling.json").read_text())
    assert record["seed"] == 0 and [b["start"] for b in record["batches"]] == [0, 3, 6]
    # the same request again finds it finished; another request is refused, naming what differs
    assert SampleFolder(out, {"seed": 0}).open() is True
    with pytest.raises(FileExistsError, match="seed: 0 there, 1 now"):
        SampleFolder(out, {"seed": 1}).open()


def test_a_batch_that_fails_while_written_leaves_nothing(tmp_path):
    folder = SampleFolder(tmp_path, {"seed": 0})
    folder.open()
    batch = plan(4, 2, seed=0)[1]
    with pytest.raises(RuntimeError), folder.writing(batch) as staging:
        (staging / "item_2.txt").write_text("half")
        raise RuntimeError("killed mid-export")
    assert not folder.done(batch) and not [p for p in (tmp_path / STAGING).iterdir() if p.is_dir()]


def test_molecule_batches_join_into_one_sdf_rdkit_reads(tmp_path):
    from rdkit import Chem

    from multidiff.domains.molecule import MoleculeDomain
    from multidiff.domains.molecule.structures import Molecule

    domain = MoleculeDomain()
    domain.bind({"elements": ["H", "C", "O"], "node_counts": {"values": [3], "counts": [1]}})
    water = lambda k: Molecule(  # noqa: E731
        np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]) + k, ["O", "H", "H"]
    )
    batches = plan(5, 2, seed=0)
    folder = SampleFolder(tmp_path / "out", {"seed": 0}, domain.concatenated)
    folder.open()
    for b in batches:
        with folder.writing(b) as staging:
            items = [water(k) for k in range(b.start, b.start + b.count)]
            domain.export(items, staging, {"batch": b.index}, start=b.start, preview=b.index == 0)
    folder.finish(batches)
    records = [m for m in Chem.SDMolSupplier(str(tmp_path / "out" / "samples.sdf"), removeHs=False)]
    assert [m.GetProp("_Name") for m in records] == [f"sample_{i}" for i in range(5)]
    assert [m.GetIntProp("batch") for m in records] == [0, 0, 1, 1, 2]
    assert [m.GetConformer().GetAtomPosition(0).x for m in records] == [float(k) for k in range(5)]
    assert (tmp_path / "out" / "samples.xyz").read_text().count("sample_") == 5
    assert (tmp_path / "out" / "samples.png").is_file()


# -- sample.py: stopped and resumed, split into shards ---------------------------------------------------------------
def sample_cmd(ckpt: Path, out: Path, *overrides: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "sample.py", *(["-m"] if multirun else []), f"ckpt={ckpt}", f"out={out}", *overrides]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])  # deterministic, and one drawing noise
def test_sigkill_then_rerun_gives_the_files_of_an_uninterrupted_run(tiny_audio_ckpt, tmp_path, sampler):
    args = ["n=16", "batch_size=2", "steps=8", f"sampler={sampler}", "seed=3"]
    whole = tmp_path / "whole"
    sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"out={whole}", *args], tmp_path / "h0"))

    out = tmp_path / "out"
    cmd = sample_cmd(tiny_audio_ckpt, out, *args, f"hydra.run.dir={tmp_path / 'h1'}")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = lambda: [p for p in (out / STAGING).glob("*") if re.fullmatch(r"\d{6}", p.name)]  # noqa: E731
    end = time.time() + 120
    while len(done()) < 2 and proc.poll() is None and time.time() < end:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    written = len(done())
    assert 2 <= written < 8 and not (out / "sampling.json").exists(), written  # stopped mid-run

    cmd = sample_cmd(tiny_audio_ckpt, out, *args, f"hydra.run.dir={tmp_path / 'h2'}")
    again = subprocess.run(cmd, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{written} of 8 batches already on disk" in again.stdout + again.stderr
    same_folders(out, whole)


@pytest.mark.slow
def test_four_shards_through_joblib_equal_one_job(tiny_audio_ckpt, tmp_path):
    args = ["n=14", "batch_size=3", "steps=4", "seed=1"]
    whole = tmp_path / "whole"
    sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"out={whole}", *args], tmp_path / "h0"))
    out = tmp_path / "sharded"
    cmd = sample_cmd(
        tiny_audio_ckpt,
        out,
        *args,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "shard=0,1,2,3",
        "num_shards=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        multirun=True,
    )
    run = subprocess.run(cmd, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    same_folders(out, whole)
    assert len(list(out.glob("sample_*.wav"))) == 14


# -- bad requests: a clear error, exit status 1, nothing written -----------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("n=0", "n=0: must be a positive integer"),
        ("n=abc", "n='abc': must be a positive integer"),
        ("steps=0", "steps=0: must be a positive integer"),
        ("batch_size=-2", "batch_size=-2: must be a positive integer"),
        ("shard=1", r"shard=1: must be an integer in 0..0"),
    ],
)
def test_bad_counts_are_refused_naming_the_option(tiny_audio_ckpt, tmp_path, override, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", f"out={out}", override], tmp_path / "h"))
    assert not out.exists()


def test_cli_bad_request_exits_1_and_writes_nothing(tiny_audio_ckpt, tmp_path):
    out = tmp_path / "out"
    cmd = sample_cmd(tiny_audio_ckpt, out, "n=abc", f"hydra.run.dir={tmp_path / 'h'}")
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "n='abc': must be a positive integer" in run.stderr
    assert not out.exists()


def test_shards_need_one_named_folder(tiny_audio_ckpt, tmp_path):
    with pytest.raises(ValueError, match="name it with out=DIR"):
        sample.sample(compose("sample", [f"ckpt={tiny_audio_ckpt}", "num_shards=2"], tmp_path / "h"))


def test_observation_with_nan_is_refused_naming_the_file(tiny_audio_ckpt, tmp_path):
    clip = np.sin(np.linspace(0, 60, 1024)).astype(np.float32) * 0.5
    clip[700:720] = np.nan  # in the part to be generated: the file is still damaged
    wav = tmp_path / "nan.wav"
    sf.write(wav, clip, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    args = [
        f"ckpt={tiny_audio_ckpt}",
        f"observe={wav}",
        "+observe_options.keep=[0,0.5]",
        f"out={out}",
        "n=2",
        "steps=2",
    ]
    with pytest.raises(ValueError, match=f"{wav} holds 20 NaN or infinite samples"):
        sample.sample(compose("sample", args, tmp_path / "h"))
    assert not out.exists()


def test_checkpoint_with_nan_weights_is_refused_naming_a_tensor(tiny_audio_ckpt, tmp_path):
    ckpt = torch.load(tiny_audio_ckpt, weights_only=True)
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ckpt["state_dict"][name].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.ckpt"
    torch.save(ckpt, bad)
    out = tmp_path / "out"
    with pytest.raises(CheckpointFormatError, match=re.escape(name)):
        sample.sample(compose("sample", [f"ckpt={bad}", f"out={out}", "n=2"], tmp_path / "h"))
    assert not out.exists()


def test_non_finite_samples_are_refused_and_nothing_of_the_batch_is_written(tiny_audio_ckpt, tmp_path):
    # finite weights whose outputs overflow float32: the guard on what is generated, not on the file
    ckpt = torch.load(tiny_audio_ckpt, weights_only=True)
    for k, v in ckpt["state_dict"].items():
        if v.is_floating_point() and k.endswith("weight"):
            v.mul_(1e30)
    big = tmp_path / "big.ckpt"
    torch.save(ckpt, big)
    out = tmp_path / "out"
    args = [f"ckpt={big}", f"out={out}", "n=4", "batch_size=2", "steps=2", "precision=32-true"]
    with pytest.raises(FloatingPointError, match=r"batch 0 \(items 0..1, seed 0\).*precision=32-true"):
        sample.sample(compose("sample", args, tmp_path / "h"))
    assert not out.exists()
