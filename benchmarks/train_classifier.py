"""Train (or load) the FSDD digit classifier and measure the audio metrics on reference sets.

    nice python benchmarks/train_classifier.py --data-root ../shared/datasets/fsdd --threads 1

(from the repository root, with the package importable: installed, or PYTHONPATH=.)

Prints JSON: the classifier's test accuracy and training time, and FID / IS / mIS / AM /
accuracy for the real test clips, the real test clips with white noise added at 20 and 5 dB SNR,
and pure white noise, each through :func:`evaluate_folder` (the real-test ceiling beside them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import torch

from multidiff.domains.audio.classifier import ClassifierConfig
from multidiff.domains.audio.data import fsdd_files
from multidiff.domains.audio.io import load_clip, write_wav
from multidiff.domains.audio.metrics import evaluate_folder
from multidiff.domains.audio.reference import default_data_root, get_classifier


def write_set(out: Path, files: list[tuple[Path, int]], cfg: ClassifierConfig, snr_db: float | None) -> Path:
    gen = torch.Generator().manual_seed(0)
    out.mkdir(parents=True)
    for path, _ in files:
        wav = load_clip(path, cfg.sample_rate, cfg.length)
        if snr_db is not None:
            rms = wav.pow(2).mean().sqrt()
            wav = wav + torch.randn(wav.shape, generator=gen) * rms * 10 ** (-snr_db / 20)
        write_wav(out / path.name, wav, cfg.sample_rate)  # keeps the "{digit}_..." name: labelled
    return out


def write_noise(out: Path, n: int, cfg: ClassifierConfig, std: float = 0.1) -> Path:
    gen = torch.Generator().manual_seed(1)
    out.mkdir(parents=True)
    for i in range(n):
        write_wav(out / f"noise_{i:04d}.wav", torch.randn(1, cfg.length, generator=gen) * std, cfg.sample_rate)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None, help="FSDD folder (or its recordings/ folder)")
    p.add_argument("--cache-dir", default=None, help="classifier cache (default: fsdd_classifier/ beside the data)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    clf = get_classifier(args.cache_dir, args.data_root, ClassifierConfig())
    report: dict = {
        "classifier": {k: v for k, v in clf.reference.items() if not isinstance(v, torch.Tensor)}
        | {"config_hash": clf.config.hash(), "load_or_train_seconds": time.perf_counter() - start},
        "sets": {},
    }
    test = fsdd_files(args.data_root or default_data_root())["test"]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "real_test_clips": write_set(Path(tmp) / "real", test, clf.config, None),
            "real_test_snr20": write_set(Path(tmp) / "snr20", test, clf.config, 20.0),
            "real_test_snr5": write_set(Path(tmp) / "snr5", test, clf.config, 5.0),
            "white_noise": write_noise(Path(tmp) / "noise", len(test), clf.config),
        }
        for name, folder in sets.items():
            r = evaluate_folder(folder, cache_dir=args.cache_dir, data_root=args.data_root, progress=False)
            report["sets"][name] = {k: r[k]["samples"] for k in ("fid", "is", "mis", "am", "accuracy")}
        report["ceiling_real_test"] = {k: r[k]["real_test"] for k in ("fid", "is", "mis", "am", "accuracy")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
