"""Audio metrics: score formulas, the classifier cache, and real vs noise folders.

The tests train a small classifier (a few seconds on a CPU) into a temporary cache once per
session from the shared FSDD copy; the full classifier (``ClassifierConfig()``) is trained by
``python -m multidiff.domains.audio.reference`` and measured in ``benchmarks/train_classifier.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from multidiff.domains.audio import metrics as metrics_mod
from multidiff.domains.audio import reference as ref_mod
from multidiff.domains.audio.classifier import ClassifierConfig, DigitClassifier
from multidiff.domains.audio.data import fsdd_files
from multidiff.domains.audio.io import write_wav
from multidiff.domains.audio.metrics import (
    am_score,
    evaluate_folder,
    frechet_distance,
    inception_score,
    modified_inception_score,
    requested_labels,
)
from multidiff.domains.audio.reference import default_cache_dir, get_classifier, load_classifier

SMALL = ClassifierConfig(channels=(32, 48, 64), epochs=5, train_limit=1500)
TINY = ClassifierConfig(channels=(8,), epochs=1)  # never trained: for where the cache goes
_TRAINED: dict[Path, Path] = {}  # FSDD folder -> cache folder, filled once per session


@pytest.fixture
def fsdd(shared_datasets: Path) -> Path:
    root = shared_datasets / "fsdd" / "recordings"
    if not root.is_dir():
        pytest.skip(f"FSDD recordings not found at {root}")
    return root


@pytest.fixture
def small_cache(fsdd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding a small classifier, trained once per session."""
    if fsdd not in _TRAINED:
        cache = tmp_path_factory.mktemp("fsdd_classifier")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small convolutions: extra threads only add contention on a shared CPU
        try:
            ref_mod.train_classifier(fsdd, cache, SMALL, progress=False)
        finally:
            torch.set_num_threads(threads)
        _TRAINED[fsdd] = cache
    return _TRAINED[fsdd]


def link_files(files: list[Path], folder: Path) -> Path:
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def no_training(*args, **kwargs):
    raise AssertionError("the classifier was retrained although a cache exists")


# -- formulas ---------------------------------------------------------------------------------
def test_scores_on_ideal_and_degenerate_predictions():
    onehot = torch.eye(10).repeat(5, 1)
    uniform_ref = torch.full((10,), 0.1)
    assert inception_score(onehot) == pytest.approx(10.0)
    assert inception_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0)
    assert inception_score(torch.eye(10)[[3] * 20]) == pytest.approx(1.0)  # confident but no diversity
    assert am_score(onehot, uniform_ref) == pytest.approx(0.0, abs=1e-6)
    smoothed = torch.full((10,), 0.01).index_fill(0, torch.tensor([3]), 0.91)
    collapsed = smoothed.expand(20, 10)  # every sample the same digit
    expected = (uniform_ref * (uniform_ref / smoothed).log()).sum() - (smoothed * smoothed.log()).sum()
    assert am_score(collapsed, uniform_ref) == pytest.approx(float(expected), rel=1e-5)
    assert am_score(collapsed, uniform_ref) > 1.0


def test_modified_is_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(40, 10, generator=g, dtype=torch.float64), -1)
    kl = (p[:, None] * (p[:, None].log() - p[None].log())).sum(-1)  # KL(p_i || p_j) for all i, j
    assert modified_inception_score(p) == pytest.approx(float(kl.mean().exp()), rel=1e-9)


def test_frechet_distance_matches_sqrtm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 1.0
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_requested_labels_from_manifest_then_names(tmp_path):
    names = ["digit7_0003.wav", "4_jackson_1.wav", "sample_0001.wav", "5_x.wav"]
    files = [tmp_path / n for n in names]
    assert requested_labels(files).tolist() == [7, 4, -1, 5]
    (tmp_path / "manifest.json").write_text(json.dumps({"sample_0001.wav": 2, "5_x.wav": None}))
    assert requested_labels(files).tolist() == [7, 4, 2, -1]
    (tmp_path / "manifest.json").write_text(json.dumps({"sample_0001.wav": {"label": 8}}))
    assert requested_labels(files).tolist() == [7, 4, 8, 5]
    (tmp_path / "manifest.json").write_text(json.dumps({"sample_0001.wav": "two"}))
    with pytest.raises(ValueError, match="sample_0001.wav"):
        requested_labels(files)


# -- classifier cache -------------------------------------------------------------------------
def test_classifier_loads_from_cache_without_training(small_cache, monkeypatch):
    monkeypatch.setattr(ref_mod, "fit", no_training)
    monkeypatch.setattr(ref_mod, "train_classifier", no_training)
    model = get_classifier(small_cache, data_root="/nonexistent")
    summary = json.loads((small_cache / "summary.json").read_text())
    assert model.config == SMALL and model.reference["test_accuracy"] == summary["test_accuracy"]
    assert model.reference["test_accuracy"] > 0.9
    assert load_classifier(small_cache, SMALL).config.hash() == SMALL.hash()
    with pytest.raises(ValueError, match="config hash"):
        load_classifier(small_cache, ClassifierConfig())
    with pytest.raises(FileNotFoundError, match="no trained digit classifier"):
        get_classifier(small_cache / "empty", train_if_missing=False)


def test_classifier_shapes(small_cache):
    model = load_classifier(small_cache)
    wav = torch.randn(3, 1, SMALL.length) * 0.05
    assert model.features(wav).shape == (3, model.feature_dim)
    assert model.logits(wav).shape == (3, 10)


@pytest.fixture
def fake_fsdd(tmp_path, monkeypatch) -> Path:
    """``data/fsdd/recordings`` with FSDD names (2 train, 2 test); training gives an untrained TINY classifier
    on random clips, so that only where the cache goes is tested. Returns the data folder."""
    data = tmp_path / "data"
    (data / "fsdd" / "recordings").mkdir(parents=True)
    for name in ("0_ann_0.wav", "1_ann_0.wav", "0_ann_5.wav", "1_ann_5.wav"):
        (data / "fsdd" / "recordings" / name).touch()
    g = torch.Generator().manual_seed(0)

    def random_clips(files, cfg, desc):
        return 0.1 * torch.randn(len(files), 1, cfg.length, generator=g), torch.tensor([d for _, d in files])

    monkeypatch.setattr(ref_mod, "load_clips", random_clips)
    monkeypatch.setattr(ref_mod, "fit", lambda *args, **kwargs: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    monkeypatch.delenv("MULTIDIFF_ROOT", raising=False)
    return data


def test_cache_defaults_to_the_data_dir(fake_fsdd, tmp_path, monkeypatch):
    fsdd = fake_fsdd / "fsdd"
    expected = fake_fsdd / "fsdd_classifier"
    assert default_cache_dir(fsdd) == default_cache_dir(fsdd / "recordings") == expected
    monkeypatch.setenv("MULTIDIFF_DATA", str(fake_fsdd))  # what paths.data_dir resolves to
    assert default_cache_dir() == expected
    get_classifier(config=TINY, progress=False)
    assert (expected / "classifier.pt").is_file() and not (tmp_path / "user_cache").exists()
    monkeypatch.setattr(ref_mod, "train_classifier", no_training)
    assert get_classifier(data_root=fsdd / "recordings", progress=False).config == TINY


def test_read_only_data_dir_caches_in_the_user_cache(fake_fsdd, tmp_path, monkeypatch, caplog):
    fsdd, other = fake_fsdd / "fsdd", ClassifierConfig(channels=(4,), epochs=1)
    ref_mod.save_classifier(DigitClassifier(other), fake_fsdd / "fsdd_classifier")  # a cache of another config
    fallback = tmp_path / "user_cache" / "multidiff" / "fsdd_classifier"
    fake_fsdd.chmod(0o555)
    (fake_fsdd / "fsdd_classifier").chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING):
            get_classifier(data_root=fsdd, config=TINY, progress=False)  # other config: trains, into the fallback
        assert (fallback / "classifier.pt").is_file()
        assert f"{fake_fsdd / 'fsdd_classifier'} is not writable" in caplog.text and str(fallback) in caplog.text
        monkeypatch.setattr(ref_mod, "train_classifier", no_training)
        assert get_classifier(data_root=fsdd, config=TINY, progress=False).config == TINY
        assert get_classifier(data_root=fsdd, progress=False).config == other  # the data dir's cache comes first
    finally:
        (fake_fsdd / "fsdd_classifier").chmod(0o755)
        fake_fsdd.chmod(0o755)
    with pytest.raises(ValueError, match="config hash"):  # an explicit folder is the only one looked in
        get_classifier(fake_fsdd / "fsdd_classifier", config=TINY, train_if_missing=False)


# -- folders ----------------------------------------------------------------------------------
def test_real_test_halves_near_ceiling_and_noise_far(fsdd, small_cache, tmp_path):
    test = [p for p, _ in fsdd_files(fsdd)["test"]]
    halves = [link_files(test[0::2], tmp_path / "half_a"), link_files(test[1::2], tmp_path / "half_b")]
    noise_dir = tmp_path / "noise"
    g = torch.Generator().manual_seed(0)
    for i in range(60):
        write_wav(noise_dir / f"noise_{i:03d}.wav", 0.1 * torch.randn(1, SMALL.length, generator=g), 8000)

    real = [evaluate_folder(h, cache_dir=small_cache, train_if_missing=False, progress=False) for h in halves]
    noise = evaluate_folder(noise_dir, cache_dir=small_cache, train_if_missing=False, progress=False)
    ceiling = {k: real[0][k]["real_test"] for k in ("fid", "is", "mis", "am", "accuracy")}
    assert ceiling["accuracy"] == pytest.approx(real[0]["classifier"]["test_accuracy"])
    for r in real:
        assert r["num_samples"] == 150 and r["num_labelled"] == 150  # labels from FSDD names
        assert r["is"]["samples"] > 0.9 * ceiling["is"]
        assert r["am"]["samples"] < ceiling["am"] + 0.2
        assert abs(r["accuracy"]["samples"] - ceiling["accuracy"]) < 0.05
        assert r["fid"]["samples"] < 0.05 * noise["fid"]["samples"]
    assert noise["num_labelled"] == 0 and noise["accuracy"]["samples"] is None
    assert noise["is"]["samples"] < 0.5 * ceiling["is"]
    assert noise["mis"]["samples"] < 0.5 * ceiling["mis"]
    assert noise["am"]["samples"] > ceiling["am"] + 0.5
    json.dumps(noise)  # the result is JSON-able


def test_accuracy_follows_the_manifest(fsdd, small_cache, tmp_path):
    test = fsdd_files(fsdd)["test"][::15]  # 20 clips, all digits
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, (p, _) in enumerate(test):
        shutil.copy(p, folder / f"sample_{i:04d}.wav")
    manifest = {f"sample_{i:04d}.wav": d for i, (_, d) in enumerate(test)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    right = evaluate_folder(folder, cache_dir=small_cache, train_if_missing=False, progress=False)
    (folder / "manifest.json").write_text(json.dumps({k: (d + 1) % 10 for k, d in manifest.items()}))
    wrong = evaluate_folder(folder, cache_dir=small_cache, train_if_missing=False, progress=False)
    assert right["num_labelled"] == 20
    assert right["accuracy"]["samples"] >= 0.8
    assert wrong["accuracy"]["samples"] <= 0.3


def test_folder_without_readable_wav_fails_before_any_classifier(tmp_path, monkeypatch):
    def no_classifier(*args, **kwargs):
        raise AssertionError("the classifier was loaded for a folder that cannot be scored")

    monkeypatch.setattr(metrics_mod, "get_classifier", no_classifier)
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a sample")
    with pytest.raises(ValueError, match="no .wav files") as e:
        evaluate_folder(folder, progress=False)
    assert str(folder) in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate_folder(tmp_path / "missing", progress=False)

    (folder / "0_empty.wav").write_bytes(b"")
    (folder / "1_corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    (folder / "2_gone.wav").symlink_to(tmp_path / "deleted.wav")
    with pytest.raises(ValueError) as e:
        evaluate_folder(folder, progress=False)
    message = str(e.value)
    assert "no readable .wav file" in message and str(folder) in message
    lines = message.splitlines()[1:]
    for name, why in [("0_empty.wav", "cannot read"), ("1_corrupt.wav", "cannot read"), ("2_gone.wav", "not found")]:
        [line] = [ln for ln in lines if name in ln]  # one line per file, with its reason
        assert why in line
    assert "notes.txt" not in message

    write_wav(folder / "3_ok.wav", 0.1 * torch.ones(1, 800), 8000)
    with pytest.raises(ValueError, match="3 unreadable .wav file") as e:
        evaluate_folder(folder, progress=False)
    assert "3_ok.wav" not in str(e.value)


def test_evaluate_entry_point_scores_an_audio_folder(fsdd, small_cache, tmp_path):
    """``python evaluate.py domain=audio samples=DIR`` through the real config (data config passed on)."""
    from helpers import compose

    import evaluate as evaluate_script

    test = fsdd_files(fsdd)["test"][::10]
    folder = link_files([p for p, _ in test], tmp_path / "samples")
    cfg = compose(
        "evaluate",
        [
            "domain=audio",
            f"samples={folder}",
            f"data.root={fsdd.parent}",
            f"+options.cache_dir={small_cache}",
            "+options.train_if_missing=false",
            "+options.progress=false",
        ],
        tmp_path / "run",
    )
    metrics = evaluate_script.evaluate(cfg)
    assert metrics["num_samples"] == len(test) == metrics["num_labelled"]
    assert metrics["accuracy"]["samples"] >= 0.8
    assert metrics["is"]["samples"] > 0.7 * metrics["is"]["real_test"]  # real clips score near the ceiling
