"""Audio clips: a player per WAV (the file embedded as a data URI) and its spectrogram (a PNG drawn here)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .discover import ReportError
from .markup import data_uri, esc

#: the dynamic range a spectrogram shows below its loudest cell
FLOOR_DB = 80.0
#: clips shown per folder (each is its WAV inlined, a few tens of kB per second)
MAX_CLIPS = 12


def spectrogram_png(clip: np.ndarray, rate: int, title: str = "") -> bytes:
    """A log-power spectrogram (Hann window of 32 ms, 75 % overlap) of a mono clip, as PNG bytes."""
    n_fft = max(64, 1 << int(np.log2(rate * 0.032)))
    hop = n_fft // 4
    x = np.pad(np.asarray(clip, dtype=np.float64), (n_fft // 2, n_fft // 2))
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    window = np.hanning(n_fft)
    stack = np.stack([x[k * hop : k * hop + n_fft] * window for k in range(frames)], axis=1)
    if stack.shape[0] < n_fft:  # a clip shorter than one window
        stack = np.pad(stack, ((0, n_fft - stack.shape[0]), (0, 0)))
    power = np.abs(np.fft.rfft(stack, axis=0)) ** 2
    db = 10 * np.log10(power + 1e-12)
    db = np.maximum(db, db.max() - FLOOR_DB)  # a silent clip is one colour, not -120 dB noise

    fig = Figure(figsize=(3.6, 1.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.13, 0.26, 0.85, 0.68))
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, len(clip) / rate, 0, rate / 2000))
    ax.set_xlabel("time (s)", fontsize=7, labelpad=1)
    ax.set_ylabel("kHz", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6, length=2, pad=1)
    if title:
        ax.set_title(title, fontsize=7, pad=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def clip_html(path: Path, clip_id: str) -> str:
    """One clip: its name and length, the player and the spectrogram."""
    try:
        data, rate = sf.read(path, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ReportError(f"{path}: not a readable audio file ({e})") from e
    if len(data) == 0:
        raise ReportError(f"{path}: an audio file with no samples")
    seconds = len(data) / rate
    png = spectrogram_png(data.mean(axis=1), rate)
    return (
        f'<div class="clip" id="{esc(clip_id)}" data-file="{esc(path.name)}"><div class="name">{esc(path.name)} '
        f'<span class="dim">{seconds:.3f} s, {rate} Hz</span></div>'
        f'<audio controls preload="metadata" '
        f'src="{data_uri(path.read_bytes(), "audio/wav")}"></audio>'
        f'<img class="spec" alt="spectrogram of {esc(path.name)}" src="{data_uri(png, "image/png")}"></div>'
    )


def audio_html(paths: list[Path], set_id: str) -> str:
    """The clips of one sample folder (the first :data:`MAX_CLIPS`, saying how many there are), in a wrapping grid."""
    note = f'<p class="note">{len(paths)} clips; the first {MAX_CLIPS} are shown.</p>' if len(paths) > MAX_CLIPS else ""
    clips = "".join(clip_html(p, f"{set_id}-clip{k}") for k, p in enumerate(paths[:MAX_CLIPS]))
    return f'{note}<div class="clips">{clips}</div>'
