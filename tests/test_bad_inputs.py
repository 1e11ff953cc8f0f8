"""Bad input gets a clear error naming what is wrong and what would be valid."""

import subprocess
import sys

import pytest
import torch
from helpers import ROOT, compose

import sample
import train
from multidiff.build import load_checkpoint
from multidiff.domains.audio.data import AudioFolderDataModule, FSDDDataModule
from multidiff.sampling import named_request


def test_missing_fsdd_folder_names_path_and_source(tmp_path):
    dm = FSDDDataModule(str(tmp_path / "nowhere"), download=False)
    with pytest.raises(FileNotFoundError) as e:
        dm.setup()
    assert str(tmp_path / "nowhere") in str(e.value) and "free-spoken-digit-dataset" in str(e.value)


def test_unreadable_audio_file_is_named(tmp_path, caplog, shared_datasets):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    for f in sorted((shared_datasets / "fsdd" / "recordings").glob("3_theo_1*.wav"))[:4]:
        (folder / f.name).write_bytes(f.read_bytes())
    dm = AudioFolderDataModule(str(folder), val_fraction=0, length=1024)
    dm.setup()
    assert len(dm.train_set) == 4
    assert "broken.wav" in caplog.text


def test_folder_with_only_unreadable_audio_fails(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.wav"):
        AudioFolderDataModule(str(tmp_path), val_fraction=0).setup()


def test_checkpoint_from_another_domain_is_refused(audio_cfg, tmp_path):
    run = tmp_path / "run"
    train.train(audio_cfg("trainer.max_steps=1", out=run))
    with pytest.raises(ValueError, match="holds a 'audio' model, not 'molecule'"):
        load_checkpoint(run / "checkpoints" / "last.ckpt", domain="molecule")
    cfg = compose(
        "sample", [f"ckpt={run}/checkpoints/last.ckpt", "expect_domain=pointcloud", f"out={tmp_path}/o"], tmp_path / "s"
    )
    with pytest.raises(ValueError, match="pointcloud"):
        sample.sample(cfg)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a multidiff checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_unknown_class_request_lists_valid_ones(audio_cfg, tmp_path):
    run = tmp_path / "run"
    train.train(audio_cfg("trainer.max_steps=1", out=run))
    module = load_checkpoint(run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="0, 1, 2"):
        module.generate(2, named_request(steps=2), condition={"digit": 11}, progress=False)


@pytest.mark.slow
def test_cli_unknown_config_value_lists_options(tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "sampler=magic", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "dpmpp_2m" in r.stderr and "heun" in r.stderr
