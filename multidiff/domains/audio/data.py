"""Audio datasets: the Free Spoken Digit Dataset and a generic folder of audio files.

Clips are loaded once into memory (FSDD at 8 kHz x 8,192 samples is ~100 MB), resampled with
torchaudio and padded/cropped by :func:`load_clip`.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from multidiff.distributed import per_device_batch
from multidiff.paths import exclusive

from .io import load_clip

log = logging.getLogger(__name__)

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")  # FSDD's speakers are lower-case names
NUM_TEST_TAKES = 5  # FSDD convention: takes 0-4 of every digit and speaker are the test split
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
NORMALIZATIONS = ("none", "peak")


class FSDDName(NamedTuple):
    digit: int
    speaker: str
    take: int


def parse_fsdd_name(name: str) -> FSDDName | None:
    """``"7_jackson_12.wav"`` -> ``FSDDName(7, "jackson", 12)``; None for any other name."""
    m = FSDD_NAME.match(name)
    return None if m is None else FSDDName(int(m.group(1)), m.group(2), int(m.group(3)))


def fsdd_recordings(root: str | Path) -> Path:
    """The folder of FSDD's WAV files: ``root/recordings`` when it exists, else ``root`` itself."""
    root = Path(root)
    return root / "recordings" if (root / "recordings").is_dir() else root


def fsdd_files(root: str | Path) -> dict[str, list[tuple[Path, int]]]:
    """FSDD recordings split by take: ``{"train": [(path, digit), ...], "test": [...]}``, each sorted by name.

    ``root`` holds ``recordings/`` or the ``{digit}_{speaker}_{take}.wav`` files directly. Other ``.wav`` names
    are skipped with one warning naming them; a folder without any FSDD name is an error.
    """
    folder = fsdd_recordings(root)
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    split: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    skipped = []
    for f in files:
        parsed = parse_fsdd_name(f.name)
        if parsed is None:
            skipped.append(f.name)
            continue
        split["test" if parsed.take < NUM_TEST_TAKES else "train"].append((f, parsed.digit))
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        log.warning(
            "skipping %d file(s) in %s not named {digit}_{speaker}_{take}.wav (speaker in lower case): %s",
            len(skipped),
            folder,
            shown,
        )
    if not split["train"] and not split["test"]:
        raise FileNotFoundError(
            f"no FSDD recordings in {folder}: expected {{digit}}_{{speaker}}_{{take}}.wav files"
            + (f" (found only {len(skipped)} other .wav name(s))" if skipped else "")
            + "; put the dataset's recordings/ folder there "
            "(git clone https://github.com/Jakobovski/free-spoken-digit-dataset), or train with data.download=true"
        )
    return split


def download_fsdd(root: Path) -> None:
    """Fetch FSDD's recordings from its public repository into ``root/recordings``."""
    log.info("downloading FSDD from %s", FSDD_URL)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "fsdd.zip"
        try:
            urllib.request.urlretrieve(FSDD_URL, archive)
        except OSError as e:
            raise FileNotFoundError(
                f"no FSDD recordings in {root} and the download from {FSDD_URL} failed ({e}); put the dataset's "
                "recordings/ folder there, or set data.root / MULTIDIFF_DATA to a folder holding fsdd/"
            ) from e
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if "/recordings/" in m and m.endswith(".wav")]
            z.extractall(tmp, members)
        (root / "recordings").mkdir(parents=True, exist_ok=True)
        for m in members:
            shutil.move(str(Path(tmp) / m), root / "recordings" / Path(m).name)


def _normalize(clips: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "peak":
        return 0.95 * clips / clips.abs().amax(dim=-1, keepdim=True).clamp(min=1e-4)
    return clips


class AudioDataModule(pl.LightningDataModule):
    """Shared loading, splitting and batching; subclasses list ``(path, label, split)`` records."""

    def __init__(
        self,
        root: str,
        sample_rate: int = 8000,
        length: int = 8192,
        batch_size: int = 16,
        num_workers: int = 0,
        normalize: str = "peak",
        num_classes: int = 0,
        max_clips: int | None = None,
    ):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown audio normalize {normalize!r}; valid: {', '.join(NORMALIZATIONS)}")
        self.root, self.sample_rate, self.length = Path(root), sample_rate, length
        self.batch_size, self.num_workers, self.normalize = batch_size, num_workers, normalize
        self.num_classes, self.max_clips = num_classes, max_clips
        self.class_names: list[str] = []
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def records(self) -> list[tuple[Path, int, str]]:
        raise NotImplementedError

    def _load(self, records: list[tuple[Path, int, str]], split: str) -> TensorDataset:
        recs = [r for r in records if r[2] == split]
        if self.max_clips is not None:
            recs = recs[: self.max_clips]
        clips, labels, bad = [], [], []
        for path, label, _ in tqdm(recs, desc=f"loading {split} audio", leave=False):
            try:
                clips.append(load_clip(path, self.sample_rate, self.length))
                labels.append(label)
            except (ValueError, FileNotFoundError) as e:
                bad.append(str(e))
        if bad:
            log.warning("skipped %d unreadable audio file(s):\n  %s", len(bad), "\n  ".join(bad))
        if not clips:
            raise ValueError(
                f"no readable audio files for split {split!r} under {self.root}" + (f": {bad[0]}" if bad else "")
            )
        x = _normalize(torch.stack(clips), self.normalize)
        return TensorDataset(x, torch.tensor(labels, dtype=torch.long))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            records = self.records()
            self.train_set = self._load(records, "train")
            has_val = any(r[2] == "val" for r in records)
            self.val_set = self._load(records, "val") if has_val else None

    def train_dataloader(self) -> DataLoader:
        batch = per_device_batch(self.batch_size, self.trainer)
        return DataLoader(
            self.train_set,
            batch,
            shuffle=True,
            drop_last=len(self.train_set) > batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, per_device_batch(self.batch_size, self.trainer), num_workers=self.num_workers)

    def info(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "length": self.length,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "normalize": self.normalize,
        }


class FSDDDataModule(AudioDataModule):
    """Free Spoken Digit Dataset, split by :func:`fsdd_files`; its test split (takes 0-4) is the validation set.

    ``root`` holds ``recordings/`` (or the WAV files directly). With ``download=True`` a missing
    folder is fetched from the dataset's public repository.
    """

    def __init__(self, root: str, download: bool = True, **kwargs: Any):
        kwargs.setdefault("num_classes", 10)
        super().__init__(root, **kwargs)
        self.download = download
        self.class_names = [str(d) for d in range(10)]

    def prepare_data(self) -> None:
        if not any(fsdd_recordings(self.root).glob("*.wav")) and self.download:
            with exclusive(self.root):  # one process downloads; the others wait, then find the clips
                if not any(fsdd_recordings(self.root).glob("*.wav")):
                    download_fsdd(self.root)

    def records(self) -> list[tuple[Path, int, str]]:
        split = fsdd_files(self.root)
        return [(p, d, "train") for p, d in split["train"]] + [(p, d, "val") for p, d in split["test"]]


class AudioFolderDataModule(AudioDataModule):
    """Any folder of audio files. ``labels="folder"`` takes the class from each file's parent
    folder name; ``val_fraction`` of the files (every k-th, deterministic) is held out."""

    def __init__(self, root: str, labels: str | None = None, val_fraction: float = 0.1, **kwargs: Any):
        super().__init__(root, **kwargs)
        if labels not in (None, "folder"):
            raise ValueError(f"unknown audio_folder labels {labels!r}; valid: null, folder")
        self.labels, self.val_fraction = labels, val_fraction

    def records(self) -> list[tuple[Path, int, str]]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"audio folder {self.root} does not exist (set data.root)")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {self.root}")
        if self.labels == "folder":
            self.class_names = sorted({f.parent.name for f in files})
            self.num_classes = len(self.class_names)
        every = max(2, round(1 / self.val_fraction)) if self.val_fraction > 0 else 0
        return [
            (
                f,
                self.class_names.index(f.parent.name) if self.labels else 0,
                "val" if every and i % every == 0 else "train",
            )
            for i, f in enumerate(files)
        ]
