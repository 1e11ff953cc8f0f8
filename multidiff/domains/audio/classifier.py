"""Spoken-digit classifier for FSDD: the feature extractor behind the audio metrics.

The SC09 protocol (DiffWave, SaShiMi) scores generated speech with a digit classifier trained on
the real data: its penultimate-layer features give FID, its class probabilities IS, modified IS,
AM score and the accuracy of class-conditional samples. This module trains such a classifier on
FSDD (log-mel front end + small CNN) and caches, in one folder:

- ``classifier.pt``: weights, the config and its hash, the recorded test accuracy, and the real
  reference data for the metrics (train-split feature mean/covariance and mean class
  probabilities; test-split features, probabilities and labels for the "real data" ceiling);
- ``summary.json``: the same numbers, human-readable.

Loading from the cache never retrains, and nothing is ever downloaded: training reads the local
FSDD recordings. Train with ``python -m multidiff.domains.audio.classifier --data-root DIR``
(``--force`` retrains a config that is already cached).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchaudio.transforms as T
from torch import Tensor, nn
from tqdm.auto import tqdm

from multidiff.domains.audio.io import load_clip

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_FILE = "classifier.pt"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 1  # bump when the cached contents or the network code change meaning
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
NUM_TEST_TAKES = 5  # FSDD convention: takes 0-4 of every digit and speaker are the test split


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that determines the trained classifier; its hash names the cache entry."""

    sample_rate: int = 8000
    length: int = 8192
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 40
    channels: tuple[int, ...] = (64, 96, 128)
    num_classes: int = 10
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # augmentation, so that the classifier also sees imperfect audio
    aug_prob: float = 0.8
    max_shift: int = 800  # samples, either way, zero fill
    gain_db: tuple[float, float] = (-12.0, 6.0)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 40.0)
    train_limit: int = 0  # > 0: train on that many clips only (quick tests)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown classifier config keys {unknown}; valid: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def hash(self) -> str:
        blob = json.dumps({"version": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResBlock1d(nn.Module):
    """Two 3-tap convolutions over time (stride on the first) with a projected shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv1d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm1d(c_out),
        )
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class DigitClassifier(nn.Module):
    """Log-mel (dB) front end + residual CNN over time + average pooling + linear head.

    The convolutions run along time with the mel bins as channels (as in keyword-spotting
    networks such as TC-ResNet): for one-second clips this is about 30x cheaper on a CPU than
    2D convolutions over the spectrogram, at the same accuracy on spoken digits.
    Input: ``(B, 1, T)`` waveforms at ``config.sample_rate`` (``T = config.length``, clips
    padded/cropped like :func:`~multidiff.domains.audio.io.load_clip`).
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        cfg = config or ClassifierConfig()
        self.config = cfg
        self.mel = T.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            f_min=20.0,
            f_max=cfg.sample_rate / 2,
            power=2.0,
        )
        self.to_db = T.AmplitudeToDB("power", top_db=80.0)
        self.in_norm = nn.BatchNorm1d(cfg.n_mels)  # learns each mel bin's dB offset and spread
        c0 = cfg.channels[0]
        layers: list[nn.Module] = [
            nn.Conv1d(cfg.n_mels, c0, 3, 1, 1, bias=False),
            nn.BatchNorm1d(c0),
            nn.ReLU(),
        ]
        c_in = c0
        for c in cfg.channels:
            layers.append(ResBlock1d(c_in, c))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c_in, cfg.num_classes)
        self.feature_dim = c_in
        # reference data for the metrics, filled by training or loading (see module doc)
        self.reference: dict[str, Any] = {}

    def log_mel(self, wav: Tensor) -> Tensor:
        """``(B, 1, T)`` waveform -> ``(B, n_mels, frames)`` log-mel in dB."""
        if wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"classifier expects (B, 1, T) mono waveforms, got shape {tuple(wav.shape)}")
        return self.to_db(self.mel(wav.float()))[:, 0]

    def features_from_mel(self, mel: Tensor) -> Tensor:
        return self.body(self.in_norm(mel)).mean(dim=-1)

    def features(self, wav: Tensor) -> Tensor:
        """Penultimate-layer features ``(B, feature_dim)`` (the FID embedding)."""
        return self.features_from_mel(self.log_mel(wav))

    def logits(self, wav: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.drop(self.features(wav)))

    def forward(self, wav: Tensor) -> Tensor:
        return self.logits(wav)

    @torch.no_grad()
    def embed(self, wav: Tensor, batch_size: int = 128, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Features and class probabilities (float64) for many clips, in eval mode, batched."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        feats, probs = [], []
        for i in tqdm(range(0, len(wav), batch_size), desc="classifier", disable=not progress, leave=False):
            f = self.features(wav[i : i + batch_size].to(device))
            feats.append(f.double().cpu())
            probs.append(torch.softmax(self.head(f).double(), dim=-1).cpu())
        self.train(was_training)
        return torch.cat(feats), torch.cat(probs)


# -- data -------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    return REPO_ROOT / "datasets" / "fsdd_classifier"


def default_data_root() -> Path:
    return REPO_ROOT / "datasets" / "fsdd"


def fsdd_files(data_root: str | Path) -> dict[str, list[tuple[Path, int]]]:
    """FSDD recordings split by take index: ``{"train": [(path, digit)], "test": [...]}``.

    ``data_root`` is the folder of ``{digit}_{speaker}_{index}.wav`` files or its parent
    (holding ``recordings/``).
    """
    root = Path(data_root)
    if (root / "recordings").is_dir():
        root = root / "recordings"
    if not root.is_dir():
        raise FileNotFoundError(
            f"FSDD recordings not found at {root}: expected a folder of {{digit}}_{{speaker}}_{{index}}.wav "
            "files (the 'recordings' folder of the Free Spoken Digit Dataset)"
        )
    split: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for p in sorted(root.glob("*.wav")):
        m = FSDD_NAME.match(p.name)
        if m:
            split["test" if int(m.group(3)) < NUM_TEST_TAKES else "train"].append((p, int(m.group(1))))
    if not split["train"] or not split["test"]:
        raise FileNotFoundError(
            f"no FSDD train/test recordings named {{digit}}_{{speaker}}_{{index}}.wav in {root} "
            f"(found {len(split['train'])} train, {len(split['test'])} test)"
        )
    return split


def load_clips(files: list[tuple[Path, int]], cfg: ClassifierConfig, desc: str) -> tuple[Tensor, Tensor]:
    wavs = [load_clip(p, cfg.sample_rate, cfg.length) for p, _ in tqdm(files, desc=desc, leave=False)]
    return torch.stack(wavs), torch.tensor([d for _, d in files])


# -- training ---------------------------------------------------------------------------------
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
    """Train on the FSDD train split, measure the test split, and write the cache folder."""
    cfg = config or ClassifierConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    split = fsdd_files(data_root if data_root is not None else default_data_root())
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
    tmp = cache / (CACHE_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(cache / CACHE_FILE)  # atomic: a crashed run never leaves a half-written cache
    scalars = {k: v for k, v in model.reference.items() if not isinstance(v, Tensor)}
    summary = {"config_hash": model.config.hash(), "config": model.config.to_dict(), **scalars}
    (cache / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return cache / CACHE_FILE


def load_classifier(
    cache_dir: str | Path | None = None, config: ClassifierConfig | None = None, map_location: str = "cpu"
) -> DigitClassifier:
    """Load the cached classifier (never trains). With ``config``, its hash must match the cache's."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / CACHE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained digit classifier at {path}; train one with "
            f"`python -m multidiff.domains.audio.classifier --cache-dir {cache}`"
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
    """The cached classifier; trained first (from local FSDD) only when the cache is absent.

    Without ``config`` any cached classifier is used; with one, a cache of another config
    counts as absent.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        return load_classifier(cache, config)
    except FileNotFoundError:
        if not train_if_missing:
            raise
    except ValueError:
        if not train_if_missing or not (cache / CACHE_FILE).is_file():
            raise
    return train_classifier(data_root, cache, config, progress=progress)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train and cache the FSDD digit classifier used by the audio metrics.")
    p.add_argument("--data-root", default=None, help=f"FSDD recordings folder (default {default_data_root()})")
    p.add_argument("--cache-dir", default=None, help=f"cache folder (default {default_cache_dir()})")
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
