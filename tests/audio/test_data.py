"""FSDD file names are parsed in one place (data.fsdd_files), for the data module and the classifier alike."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from multidiff.domains.audio.data import NUM_TEST_TAKES, FSDDDataModule, FSDDName, fsdd_files, parse_fsdd_name


def touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).touch()


def test_parse_fsdd_name():
    assert parse_fsdd_name("7_jackson_12.wav") == FSDDName(7, "jackson", 12)
    assert parse_fsdd_name("0_george_0.wav") == FSDDName(0, "george", 0)
    for odd in ("7_Jackson_12.wav", "12_jackson_1.wav", "7_jackson.wav", "7_jackson_1.flac", "x_jackson_1.wav"):
        assert parse_fsdd_name(odd) is None, odd


def test_fsdd_files_split_by_take_and_skip_odd_names_with_a_warning(tmp_path, caplog):
    good = ["3_ann_0.wav", "3_ann_4.wav", "3_ann_5.wav", "8_bob_17.wav"]
    touch(tmp_path / "fsdd" / "recordings", [*good, "3_Ann_9.wav", "readme.wav", "notes.txt"])
    with caplog.at_level(logging.WARNING):
        split = fsdd_files(tmp_path / "fsdd")
    assert fsdd_files(tmp_path / "fsdd" / "recordings") == split  # the folder or its parent
    assert [(p.name, d) for p, d in split["test"]] == [("3_ann_0.wav", 3), ("3_ann_4.wav", 3)]
    assert [(p.name, d) for p, d in split["train"]] == [("3_ann_5.wav", 3), ("8_bob_17.wav", 8)]
    assert all(parse_fsdd_name(p.name).take < NUM_TEST_TAKES for p, _ in split["test"])
    assert "3_Ann_9.wav" in caplog.text and "readme.wav" in caplog.text and "notes.txt" not in caplog.text


def test_folder_without_fsdd_names_is_an_error_naming_it(tmp_path):
    touch(tmp_path / "clips", ["3_Ann_0.wav", "take1.wav"])
    with pytest.raises(FileNotFoundError, match="found only 2 other") as e:
        fsdd_files(tmp_path / "clips")
    assert str(tmp_path / "clips") in str(e.value)
    with pytest.raises(FileNotFoundError, match="free-spoken-digit-dataset"):
        fsdd_files(tmp_path / "nowhere")


def test_data_module_uses_the_same_split(tmp_path):
    touch(tmp_path / "recordings", ["1_ann_0.wav", "1_ann_7.wav", "2_Ann_7.wav", "2_bob_30.wav"])
    split = fsdd_files(tmp_path)
    records = FSDDDataModule(str(tmp_path), download=False).records()
    assert sorted((p, d) for p, d, s in records if s == "train") == split["train"]
    assert sorted((p, d) for p, d, s in records if s == "val") == split["test"]
    assert len(records) == 3


def test_real_fsdd_split(shared_datasets):
    root = shared_datasets / "fsdd" / "recordings"
    if not root.is_dir():
        pytest.skip(f"FSDD recordings not found at {root}")
    split = fsdd_files(root)
    wavs = list(root.glob("*.wav"))
    assert len(split["train"]) + len(split["test"]) == len(wavs)  # every real file parses
    takes = {s: {parse_fsdd_name(p.name).take for p, _ in split[s]} for s in split}
    assert takes["test"] == set(range(NUM_TEST_TAKES)) and min(takes["train"]) == NUM_TEST_TAKES
    assert {d for _, d in split["test"]} == set(range(10))
