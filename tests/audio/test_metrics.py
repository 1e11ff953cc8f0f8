"""Audio metrics: score formulas, the classifier cache, and real vs noise folders.

The tests train a small classifier (a few seconds on a CPU) into a temporary cache once per
session from the shared FSDD copy; the full classifier (``ClassifierConfig()``) is trained by
``python -m multidiff.domains.audio.classifier`` and measured in ``benchmarks/train_classifier.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from multidiff.domains.audio import classifier as clf_mod
from multidiff.domains.audio.classifier import ClassifierConfig, fsdd_files, get_classifier, load_classifier
from multidiff.domains.audio.io import write_wav
from multidiff.domains.audio.metrics import (
    am_score,
    evaluate_folder,
    frechet_distance,
    inception_score,
    modified_inception_score,
    requested_labels,
)

SMALL = ClassifierConfig(channels=(32, 48, 64), epochs=5, train_limit=1500)
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
            clf_mod.train_classifier(fsdd, cache, SMALL, progress=False)
        finally:
            torch.set_num_threads(threads)
        _TRAINED[fsdd] = cache
    return _TRAINED[fsdd]


def link_files(files: list[Path], folder: Path) -> Path:
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


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
    def no_training(*args, **kwargs):
        raise AssertionError("the classifier was retrained although a cache exists")

    monkeypatch.setattr(clf_mod, "fit", no_training)
    monkeypatch.setattr(clf_mod, "train_classifier", no_training)
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


def test_folder_errors_name_the_problem(small_cache, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .wav files"):
        evaluate_folder(empty, cache_dir=small_cache, progress=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate_folder(tmp_path / "missing", cache_dir=small_cache, progress=False)
    write_wav(empty / "0_ok.wav", torch.zeros(1, 100), 8000)
    (empty / "1_corrupt.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="1_corrupt.wav"):
        evaluate_folder(empty, cache_dir=small_cache, train_if_missing=False, progress=False)


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
