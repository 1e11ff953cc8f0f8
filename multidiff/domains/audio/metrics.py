"""Audio sample quality under the SC09 protocol, applied to FSDD.

All scores come from the digit classifier of :mod:`multidiff.domains.audio.classifier`, trained and
cached by :mod:`multidiff.domains.audio.reference`:

- FID: Frechet distance between Gaussians fitted to its penultimate-layer features of the
  samples and of the real training split (lower is better).
- IS: ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the samples' mean prediction, over all
  samples at once (no splits); between 1 and the number of classes (higher is better).
- mIS (modified IS, Gurumurthy et al. 2017): ``exp(E_{x,x'} KL(p(y|x) || p(y|x')))`` over all
  ordered pairs of samples, computed exactly (higher is better). It grows exponentially with
  the classifier's confidence: with the default FSDD classifier the real test split scores
  about 4e5, so compare it only with the ``real_test`` value from the same classifier.
- AM score (Zhou et al. 2018): ``KL(p_train(y) || p(y)) + E_x H(p(y|x))`` where ``p_train(y)``
  is the classifier's mean prediction on the training split (lower is better).
- accuracy: the fraction of class-conditional samples classified as the digit they were
  generated for.

:func:`evaluate_folder` reports every score twice: for the samples, and for the real FSDD test
split (``real_test``), the ceiling a perfect generator would reach.

Requested digits of a folder of samples (for the accuracy): a ``manifest.json`` in the folder,
mapping file names to the digit (an int; ``null`` for unconditional samples; an object value
is read through its ``"label"`` key), takes precedence; otherwise a file name starting with the
digit and an underscore, optionally after ``digit`` (``7_0003.wav``, ``digit7_0003.wav``,
``7_jackson_12.wav``) gives it. Files with neither count as unconditional.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from multidiff.domains.audio.classifier import DigitClassifier
from multidiff.domains.audio.io import load_clip, read_wav
from multidiff.domains.audio.reference import get_classifier

MANIFEST = "manifest.json"
LABEL_IN_NAME = re.compile(r"^(?:digit)?(\d)_")
EPS = 1e-300  # only guards log(0): confident classifiers have tiny, but meaningful, tails


# -- scores from features and probabilities -------------------------------------------------
def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, float64."""
    f = features.double()
    if len(f) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(f)}")
    return f.mean(0), torch.cov(f.T)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the trace term from eigenvalues.

    ``tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2))`` with ``A = S1^(1/2)``; ``A S2 A`` is symmetric
    positive semi-definite, so a symmetric eigendecomposition gives it stably (no complex parts
    from a general matrix square root).
    """
    mu1, mu2, s1, s2 = (np.asarray(t, dtype=np.float64) for t in (mu1, mu2, sigma1, sigma2))
    w, v = np.linalg.eigh(s1)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(a @ s2 @ a), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _log(p: Tensor) -> Tensor:
    return p.double().clamp_min(EPS).log()


def inception_score(probs: Tensor) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` over ``(N, K)`` class probabilities."""
    p = probs.double()
    kl = (p * (_log(p) - _log(p.mean(0))[None])).sum(-1)
    return float(kl.mean().exp())


def modified_inception_score(probs: Tensor) -> float:
    """``exp(E_{i,j} KL(p_i || p_j))`` over all ordered pairs, in O(N K).

    ``E_{i,j} sum_k p_ik (log p_ik - log p_jk)
    = E_i sum_k p_ik log p_ik - sum_k mean_i(p_ik) mean_j(log p_jk)``.
    """
    p = probs.double()
    logp = _log(p)
    kl = (p * logp).sum(-1).mean() - (p.mean(0) * logp.mean(0)).sum()
    return float(kl.exp())


def am_score(probs: Tensor, ref_class_dist: Tensor) -> float:
    """``KL(p_ref(y) || p(y)) + E_x H(p(y|x))`` (Zhou et al. 2018); lower is better."""
    p, ref = probs.double(), ref_class_dist.double()
    kl = (ref * (_log(ref) - _log(p.mean(0)))).sum()
    entropy = -(p * _log(p)).sum(-1).mean()
    return float(kl + entropy)


def conditional_accuracy(probs: Tensor, labels: Tensor) -> float | None:
    """Fraction of items with a label (``>= 0``) whose most likely class is that label."""
    known = labels >= 0
    if not bool(known.any()):
        return None
    return float((probs[known].argmax(-1) == labels[known]).double().mean())


def scores(features: Tensor, probs: Tensor, reference: dict[str, Any], labels: Tensor | None = None) -> dict:
    """FID / IS / mIS / AM (+ accuracy) of one set against the classifier's training-split reference."""
    out: dict[str, Any] = {
        "fid": None,
        "is": inception_score(probs),
        "mis": modified_inception_score(probs),
        "am": am_score(probs, reference["train_class_dist"]),
        "accuracy": None if labels is None else conditional_accuracy(probs, labels),
    }
    if len(features) >= 2:
        mu, sigma = gaussian_stats(features)
        out["fid"] = frechet_distance(mu, sigma, reference["train_mu"], reference["train_sigma"])
    return out


def real_test_scores(classifier: DigitClassifier) -> dict[str, Any]:
    """The same scores for the real FSDD test split (the ceiling), from the classifier's cache."""
    ref = classifier.reference
    return scores(ref["test_features"], ref["test_probs"], ref, ref["test_labels"])


# -- folders ----------------------------------------------------------------------------------
def list_samples(samples: str | Path) -> list[Path]:
    """The ``.wav`` files of a folder (sorted), or a single ``.wav`` file."""
    path = Path(samples)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"samples path does not exist: {path}")
    # broken links count too: they are reported as unreadable rather than silently left out
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav" and not p.is_dir())
    if not files:
        raise ValueError(f"no .wav files in {path}")
    return files


def check_readable(files: list[Path], samples: str | Path) -> None:
    """Raise naming ``samples`` and, per file, why it cannot be read, when any file cannot be.

    Scores over the readable rest would quietly describe another set than the one asked about.
    """
    problems = []
    for f in files:
        try:
            read_wav(f)
        except (ValueError, FileNotFoundError) as e:
            problems.append(str(e))  # names the file
    if problems:
        what = "no readable .wav file" if len(problems) == len(files) else f"{len(problems)} unreadable .wav file(s)"
        raise ValueError(f"{what} in {samples} ({len(files)} found):\n  " + "\n  ".join(problems))


def requested_labels(files: list[Path], manifest: str | Path | None = None) -> Tensor:
    """Requested digit per file (``-1``: unconditional), from the manifest or the file names."""
    labels = torch.full((len(files),), -1, dtype=torch.long)
    mpath = Path(manifest) if manifest is not None else files[0].parent / MANIFEST
    table: dict[str, Any] = {}
    if mpath.is_file():
        try:
            table = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"cannot parse {mpath}: {e}") from e
        if not isinstance(table, dict):
            raise ValueError(f"{mpath} must map file names to digits, got a {type(table).__name__}")
    for i, f in enumerate(files):
        if f.name in table:
            value = table[f.name]
            value = value.get("label") if isinstance(value, dict) else value
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"{mpath}: label of {f.name} must be an int or null, got {value!r}")
            labels[i] = -1 if value is None else value
        elif (m := LABEL_IN_NAME.match(f.name)) is not None:
            labels[i] = int(m.group(1))
    return labels


def evaluate_folder(
    samples_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    manifest: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    train_if_missing: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """SC09-protocol scores of a folder of WAV samples, each beside the real test split's.

    Clips are read with :func:`~multidiff.domains.audio.io.load_clip` at the classifier's
    sample rate and length (resampled, mixed down, padded or cropped); any unreadable file is an
    error naming each one. ``cache_dir`` holds the classifier (default: see
    :mod:`~multidiff.domains.audio.reference`; trained from ``data_root`` first if absent and
    ``train_if_missing``).
    Returns ``{"fid": {"samples": .., "real_test": ..}, "is": .., "mis": .., "am": ..,
    "accuracy": .., "num_samples", "num_labelled", "classifier": {...}, "protocol": ...}``;
    FID needs 2 samples, accuracy needs labelled ones (otherwise None).
    """
    files = list_samples(samples_dir)
    check_readable(files, samples_dir)  # before the classifier is loaded, or trained
    labels = requested_labels(files, manifest)
    classifier = get_classifier(cache_dir, data_root, train_if_missing=train_if_missing, progress=progress)
    classifier = classifier.to(device)
    cfg = classifier.config
    wav = torch.stack(
        [load_clip(f, cfg.sample_rate, cfg.length) for f in tqdm(files, desc="load samples", disable=not progress)]
    )
    feats, probs = classifier.embed(wav, batch_size=batch_size, progress=progress)
    mine = scores(feats, probs, classifier.reference, labels)
    real = real_test_scores(classifier)
    ref = classifier.reference
    result: dict[str, Any] = {k: {"samples": mine[k], "real_test": real[k]} for k in mine}
    result.update(
        num_samples=len(files),
        num_labelled=int((labels >= 0).sum()),
        samples=str(samples_dir),
        classifier={
            "test_accuracy": ref["test_accuracy"],
            "num_train": ref["num_train"],
            "num_test": ref["num_test"],
            "config_hash": cfg.hash(),
            "feature_dim": classifier.feature_dim,
        },
        protocol=(
            "SC09 protocol on FSDD: FID of classifier features vs the train split; IS and mIS over all "
            "samples; AM vs the train split's mean prediction; accuracy of labelled samples; real_test = "
            "the FSDD test split scored the same way"
        ),
    )
    return result
