"""Audio export: 16-bit WAV files and a PNG of waveforms with their mel spectrograms."""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio
from matplotlib.figure import Figure
from torch import Tensor

from .io import write_wav


def write_clips(clips: list[Tensor], out_dir: Path, sample_rate: int, names: list[str]) -> list[Path]:
    return [write_wav(out_dir / f"{name}.wav", clip, sample_rate) for clip, name in zip(clips, names)]


def generated_spans(known: Tensor) -> list[tuple[int, int]]:
    """[start, end) sample spans where ``known`` is False."""
    zero = torch.zeros(1, dtype=torch.int)
    edges = torch.diff(torch.cat([zero, (~known.bool()).int(), zero]))
    starts, ends = (edges == 1).nonzero().flatten(), (edges == -1).nonzero().flatten()
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def plot_clips(
    clips: list[Tensor],
    path: Path,
    sample_rate: int,
    titles: list[str],
    max_clips: int = 8,
    known: list[Tensor | None] | None = None,
) -> Path:
    """Waveform (top) and log-mel spectrogram (bottom) of up to ``max_clips`` clips; where ``known`` (a mask of
    observed samples per clip) is given, the generated spans are shaded."""
    clips, titles = clips[:max_clips], titles[:max_clips]
    known = (known or [None] * len(clips))[:max_clips]
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=512, hop_length=64, n_mels=64)
    fig = Figure(figsize=(2.6 * len(clips), 4.2))
    axes = fig.subplots(2, len(clips), squeeze=False)
    for j, (clip, title) in enumerate(zip(clips, titles)):
        wav = clip.detach().float().cpu().reshape(-1)
        t = torch.arange(len(wav)) / sample_rate
        axes[0, j].plot(t, wav, lw=0.4)
        axes[0, j].set_ylim(-1, 1)
        axes[0, j].set_title(title, fontsize=8)
        axes[1, j].imshow(
            (mel(wav) + 1e-6).log().numpy(),
            origin="lower",
            aspect="auto",
            extent=(0, len(wav) / sample_rate, 0, sample_rate / 2),
        )
        axes[1, j].set_xlabel("s", fontsize=7)
        if known[j] is not None:
            for a, b in generated_spans(known[j]):
                for ax in axes[:, j]:
                    ax.axvspan(a / sample_rate, b / sample_rate, color="tab:orange", alpha=0.25, lw=0)
        for ax in axes[:, j]:
            ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("amplitude", fontsize=7)
    axes[1, 0].set_ylabel("Hz (mel)", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
