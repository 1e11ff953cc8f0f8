"""Spoken-digit classifier for FSDD: the feature extractor behind the audio metrics.

The SC09 protocol (DiffWave, SaShiMi) scores generated speech with a digit classifier trained on
the real data: its penultimate-layer features give FID, its class probabilities IS, modified IS,
AM score and the accuracy of class-conditional samples. This module holds the network (log-mel
front end + small CNN) and the config that determines it; training it on FSDD and its cache are
in :mod:`multidiff.domains.audio.reference`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchaudio.transforms as T
from torch import Tensor, nn
from tqdm.auto import tqdm

FORMAT_VERSION = 1  # bump when the cached contents or the network code change meaning


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
        # reference data for the metrics, filled by training or loading (see reference.py)
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
