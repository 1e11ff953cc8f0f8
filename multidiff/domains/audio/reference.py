"""What the audio metrics compare against: the digit classifier trained on FSDD, and its cache.

Training reads the local FSDD recordings (nothing is ever downloaded) and writes, in one folder:

- ``classifier.pt``: weights, the config and its hash, the recorded test accuracy, and the real
  reference data for the metrics (train-split feature mean/covariance and mean class
  probabilities; test-split features, probabilities and labels for the "real data" ceiling);
- ``summary.json``: the same numbers, human-readable.

The cache folder is ``fsdd_classifier/`` beside the FSDD folder, i.e. ``<paths.data_dir>/fsdd_classifier``
under the default config. When that folder cannot be written (shared read-only data), training writes to
``~/.cache/multidiff/fsdd_classifier`` (``$XDG_CACHE_HOME``) instead, and loading looks there second.
An explicit ``cache_dir`` is used as given. Loading never retrains.

    python -m multidiff.domains.audio.reference [--data-root DIR] [--cache-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from multidiff.domains.audio.classifier import FORMAT_VERSION, ClassifierConfig, DigitClassifier
from multidiff.domains.audio.data import fsdd_files
from multidiff.domains.audio.io import load_clip
from multidiff.paths import data_dir, replaced, user_cache_dir, writable_dir

CACHE_NAME = "fsdd_classifier"
CACHE_FILE = "classifier.pt"
SUMMARY_FILE = "summary.json"


# -- where ------------------------------------------------------------------------------------
def default_data_root() -> Path:
    return data_dir() / "fsdd"


def default_cache_dir(data_root: str | Path | None = None) -> Path:
    """``fsdd_classifier/`` beside the FSDD folder (``data_root``, default ``<data_dir>/fsdd``)."""
    fsdd = Path(data_root) if data_root is not None else default_data_root()
    if fsdd.name == "recordings":  # FSDD's own layout: the dataset folder is its parent
        fsdd = fsdd.parent
    return fsdd.parent / CACHE_NAME


def cache_candidates(cache_dir: str | Path | None, data_root: str | Path | None) -> list[Path]:
    """The folders a cache is looked up in, in order: ``cache_dir`` alone, or the default and the fallback."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return list(dict.fromkeys([default_cache_dir(data_root), user_cache_dir(CACHE_NAME)]))


# -- training ---------------------------------------------------------------------------------
def load_clips(files: list[tuple[Path, int]], cfg: ClassifierConfig, desc: str) -> tuple[Tensor, Tensor]:
    wavs = [load_clip(p, cfg.sample_rate, cfg.length) for p, _ in tqdm(files, desc=desc, leave=False)]
    return torch.stack(wavs), torch.tensor([d for _, d in files])


def augment(wav: Tensor, cfg: ClassifierConfig, gen: torch.Generator) -> Tensor:
    """Random time shift (zero fill), gain, and white noise at a random SNR, per clip."""
    b, _, t = wav.shape
    on = torch.rand(b, generator=gen) < cfg.aug_prob
    shift = torch.randint(-cfg.max_shift, cfg.max_shift + 1, (b,), generator=gen) * on
    src = torch.arange(t)[None] - shift[:, None]
    out = wav[:, 0].gather(1, src.clamp(0, t - 1)) * ((src >= 0) & (src < t))
    lo, hi = cfg.gain_db
    gain_db = (lo + (hi - lo) * torch.rand(b, generator=gen)) * on
    out = out * 10 ** (gain_db[:, None] / 20)
    noisy = on & (torch.rand(b, generator=gen) < cfg.noise_prob)
    lo, hi = cfg.snr_db
    snr = lo + (hi - lo) * torch.rand(b, generator=gen)
    rms = out.pow(2).mean(dim=1).sqrt()
    noise = torch.randn(b, t, generator=gen) * (rms * 10 ** (-snr / 20) * noisy)[:, None]
    return (out + noise).clamp(-1, 1)[:, None]


def fit(model: DigitClassifier, wav: Tensor, labels: Tensor, progress: bool = True) -> None:
    """Train ``model`` in place: AdamW + one-cycle LR, cross-entropy, augmented batches."""
    cfg = model.config
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(wav) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    model.train()
    bar = tqdm(range(cfg.epochs), desc="train classifier", disable=not progress)
    for _ in bar:
        perm = torch.randperm(len(wav), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(wav), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            x, y = augment(wav[idx], cfg, gen), labels[idx]
            with torch.no_grad():
                mel = model.log_mel(x)
            logits = model.head(model.drop(model.features_from_mel(mel)))
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(y)
            correct += (logits.argmax(-1) == y).sum().item()
            loss_sum += loss.item() * len(y)
        bar.set_postfix(loss=f"{loss_sum / total:.3f}", train_acc=f"{correct / total:.3f}")
    model.eval()


def train_classifier(
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    config: ClassifierConfig | None = None,
    *,
    progress: bool = True,
) -> DigitClassifier:
    """Train on the FSDD train split, measure the test split, and write the cache folder.

    Without ``cache_dir``: the default folder for ``data_root``, or the fallback when it is read-only.
    """
    cfg = config or ClassifierConfig()
    data_root = Path(data_root) if data_root is not None else default_data_root()
    cache = Path(cache_dir) if cache_dir is not None else writable_dir(default_cache_dir(data_root), CACHE_NAME)
    split = fsdd_files(data_root)
    if not split["train"] or not split["test"]:
        raise FileNotFoundError(
            f"the classifier needs FSDD train and test recordings in {data_root} "
            f"(found {len(split['train'])} train, {len(split['test'])} test)"
        )
    torch.manual_seed(cfg.seed)
    train_files = split["train"]
    if cfg.train_limit > 0:
        g = torch.Generator().manual_seed(cfg.seed)
        train_files = [train_files[i] for i in torch.randperm(len(train_files), generator=g)[: cfg.train_limit]]
    train_wav, train_y = load_clips(train_files, cfg, "load train clips")
    test_wav, test_y = load_clips(split["test"], cfg, "load test clips")

    model = DigitClassifier(cfg)
    start = time.perf_counter()
    fit(model, train_wav, train_y, progress=progress)
    train_seconds = time.perf_counter() - start

    train_feat, train_probs = model.embed(train_wav, progress=progress)
    test_feat, test_probs = model.embed(test_wav, progress=progress)
    test_acc = (test_probs.argmax(-1) == test_y).double().mean().item()
    model.reference = {
        "train_mu": train_feat.mean(0),
        "train_sigma": torch.cov(train_feat.T),
        "train_class_dist": train_probs.mean(0),
        "test_features": test_feat,
        "test_probs": test_probs,
        "test_labels": test_y,
        "test_accuracy": test_acc,
        "train_accuracy": (train_probs.argmax(-1) == train_y).double().mean().item(),
        "num_train": len(train_y),
        "num_test": len(test_y),
        "train_seconds": train_seconds,
    }
    save_classifier(model, cache)
    return model


# -- cache ------------------------------------------------------------------------------------
def save_classifier(model: DigitClassifier, cache_dir: str | Path) -> Path:
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "config_hash": model.config.hash(),
        "state_dict": model.state_dict(),
        "reference": model.reference,
    }
    with replaced(cache / CACHE_FILE) as tmp:  # a crashed run never leaves a half-written cache
        torch.save(payload, tmp)
    scalars = {k: v for k, v in model.reference.items() if not isinstance(v, Tensor)}
    summary = {"config_hash": model.config.hash(), "config": model.config.to_dict(), **scalars}
    (cache / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return cache / CACHE_FILE


def load_classifier(
    cache_dir: str | Path, config: ClassifierConfig | None = None, map_location: str = "cpu"
) -> DigitClassifier:
    """Load the classifier cached in ``cache_dir`` (never trains). With ``config``, its hash must match."""
    path = Path(cache_dir) / CACHE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained digit classifier at {path}; train one with "
            f"`python -m multidiff.domains.audio.reference --cache-dir {cache_dir}`"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read the classifier cache {path}: {e}") from e
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"classifier cache {path} has format {payload.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}; retrain it"
        )
    cached = ClassifierConfig.from_dict(payload["config"])
    if config is not None and config.hash() != payload["config_hash"]:
        raise ValueError(
            f"classifier cache {path} was trained with config hash {payload['config_hash']}, "
            f"requested {config.hash()}; retrain it or point cache_dir elsewhere"
        )
    model = DigitClassifier(cached)
    model.load_state_dict(payload["state_dict"])
    model.reference = payload["reference"]
    return model.eval()


def get_classifier(
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    config: ClassifierConfig | None = None,
    *,
    train_if_missing: bool = True,
    progress: bool = True,
) -> DigitClassifier:
    """The cached classifier (see :func:`cache_candidates`); trained first, from local FSDD, only when
    no folder holds a usable one.

    Without ``config`` any cached classifier is used; with one, a cache of another config counts as absent.
    """
    folders = cache_candidates(cache_dir, data_root)
    problems = []
    for folder in folders:
        if (folder / CACHE_FILE).is_file():
            try:
                return load_classifier(folder, config)
            except ValueError as e:  # another config or an unreadable file: look on, or retrain
                problems.append(str(e))
    if not train_if_missing:
        if problems:
            raise ValueError("; ".join(problems))
        raise FileNotFoundError(
            f"no trained digit classifier in {', '.join(map(str, folders))}; train one with "
            f"`python -m multidiff.domains.audio.reference`" + (f" --cache-dir {cache_dir}" if cache_dir else "")
        )
    return train_classifier(data_root, cache_dir, config, progress=progress)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train and cache the FSDD digit classifier used by the audio metrics.")
    p.add_argument("--data-root", default=None, help=f"FSDD folder or its recordings/ (default {default_data_root()})")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: fsdd_classifier/ beside the data)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--force", action="store_true", help="retrain even if the cache holds this config")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ClassifierConfig() if args.epochs is None else ClassifierConfig(epochs=args.epochs)
    if args.force:
        model = train_classifier(args.data_root, args.cache_dir, cfg)
    else:
        model = get_classifier(args.cache_dir, args.data_root, cfg)
    scalars = {k: v for k, v in model.reference.items() if not isinstance(v, Tensor)}
    print(json.dumps({"config_hash": cfg.hash(), **scalars}, indent=2))


if __name__ == "__main__":
    main()
