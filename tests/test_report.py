"""python -m multidiff.report: one offline HTML page per training run or sample folder, built from tiny real runs and
sample folders of each domain and loaded in headless Chromium: no errors, no network, every viewer draws."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import trimesh
import yaml
from helpers import ROOT, TINY_AUDIO, TINY_PC, compose

import sample
import train
from multidiff.domains.pointcloud.io import read_ply
from multidiff.report import ReportError, build_report, write_report
from multidiff.report.__main__ import main
from multidiff.report.browser import CHROMIUM, headless_chromium
from multidiff.report.commands import sample_args
from multidiff.report.molecules import record_info, sdf_records

end_to_end = pytest.mark.slow  # trains and samples tiny models (pyproject: slow = end-to-end runs)


# -- tiny real folders, one per domain --------------------------------------------------------------------------------
def _sample(ckpt: Path, out: Path, *overrides: str) -> Path:
    sample.sample(compose("sample", [f"ckpt={ckpt}", f"out={out}", *overrides], out.parent / f"{out.name}_hydra"))
    return out


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory, shared_datasets) -> Path:
    """A tiny audio run of 2 steps whose SampleCallback wrote samples/step_0000002 (2 clips), with the
    ``.hydra/overrides.yaml`` that ``python train.py`` would write (composing in-process writes none)."""
    run = tmp_path_factory.mktemp("report_audio") / "run"
    overrides = [
        "domain=audio",
        f"paths.data_dir={shared_datasets}",
        *(o for o in TINY_AUDIO if o != "callbacks.samples=null"),
        "trainer.max_steps=2",
        "callbacks.samples.every_n_steps=2",
        "callbacks.samples.n=2",
        "sampler.steps=3",
    ]
    train.train(compose("train", overrides, run))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run


@pytest.fixture(scope="module")
def audio_samples(audio_run) -> Path:
    return _sample(audio_run / "checkpoints" / "last.ckpt", audio_run.parent / "samples", "n=2", "steps=3", "seed=3")


@pytest.fixture(scope="module")
def point_samples(tmp_path_factory, shared_datasets) -> Path:
    """Three clouds sampled from a tiny ShapeNet model trained one step, and a triangle mesh ``sample_0000.mesh.ply``
    (an icosphere written by trimesh) beside the first."""
    tmp = tmp_path_factory.mktemp("report_points")
    cfg = compose("train", [f"paths.data_dir={shared_datasets}", *TINY_PC, "data=shapenet", "trainer.max_steps=1"], tmp)
    train.train(cfg)
    out = _sample(tmp / "checkpoints" / "last.ckpt", tmp / "samples", "n=3", "steps=3")
    trimesh.creation.icosphere(subdivisions=2).export(out / "sample_0000.mesh.ply")
    return out


@pytest.fixture(scope="module")
def molecule_samples(tmp_path_factory, qm9_root) -> Path:
    """Five molecules from a tiny graph model (its own bonds in the SDF) trained one step on 64 QM9 molecules."""
    tmp = tmp_path_factory.mktemp("report_molecules")
    tiny = ["data.max_molecules=64", "data.batch_size=8", "net.hidden=16", "net.layers=2", "trainer.max_steps=1"]
    overrides = ["domain=molecule", "domain.bonds=true", f"data.root={qm9_root}", *tiny, "callbacks.samples=null"]
    train.train(compose("train", [*overrides, "callbacks.progress=null"], tmp))
    return _sample(tmp / "checkpoints" / "last.ckpt", tmp / "samples", "n=5", "steps=3")


# -- the browser ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, or a skip saying what is missing (asked for first, so a skip trains nothing)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/chromium)")
    with headless_chromium() as chromium:
        yield chromium


class Loaded:
    """A report opened in Chromium, with what the page logged and asked for, once every viewer reported and every
    audio element knows its duration (or an error was shown)."""

    def __init__(self, browser, html: Path):
        self.html, self.console_errors, self.page_errors, self.requests = html, [], [], []
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(html.as_uri())
        self.page.wait_for_function(
            """() => window.reportErrors.length > 0 || (
                window.reportViewers.length >= document.querySelectorAll('[data-viewer-id]').length
                && [...document.querySelectorAll('audio')].every(a => a.readyState >= 1))""",
            timeout=60_000,
        )
        self.viewers = {v["id"]: v for v in self.page.evaluate("window.reportViewers")}

    def check_clean(self) -> None:
        """No JS error, nothing fetched but the file itself (media are data: URIs, three's modules blob: URLs)."""
        assert not self.page_errors and not self.console_errors, (self.page_errors, self.console_errors)
        assert self.page.evaluate("window.reportErrors") == []
        fetched = [u for u in self.requests if not u.startswith(("data:", "blob:")) and u != self.html.as_uri()]
        assert not fetched, fetched

    def check_viewers(self) -> dict:
        """Each viewer the page lays out reported drawing something, and its picture is not blank."""
        ids = self.page.eval_on_selector_all("[data-viewer-id]", "els => els.map(e => e.dataset.viewerId)")
        assert ids and sorted(ids) == sorted(self.viewers), (ids, list(self.viewers))
        for viewer_id, record in self.viewers.items():
            assert record["drawn"] > 0, record
            assert self.drawn_fraction(viewer_id) > 0.01, f"{viewer_id}: the viewer's picture is blank"
        return self.viewers

    def drawn_fraction(self, viewer_id: str) -> float:
        """The share of the viewer's pixels that differ from its white background (3 px trimmed off each side, where
        a cell's border could lie)."""
        from PIL import Image

        png = self.page.locator(f'[data-viewer-id="{viewer_id}"]').screenshot()
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)[3:-3, 3:-3]
        return float((np.abs(pixels - 255).max(axis=2) > 16).mean())

    def check_audio(self, folder: Path) -> int:
        """Each player plays its whole clip (the duration the browser decoded equals the file's), and each
        spectrogram image decoded. Returns the number of players."""
        players = self.page.eval_on_selector_all(
            ".clip", "els => els.map(e => [e.dataset.file, e.querySelector('audio').duration])"
        )
        for name, duration in players:
            info = sf.info(folder / name)
            assert duration == pytest.approx(info.frames / info.samplerate, abs=1e-3), name
        assert self.page.eval_on_selector_all("img.spec", "els => els.every(i => i.complete && i.naturalWidth > 0)")
        return len(players)


def report(folder: Path, tmp_path: Path) -> Path:
    return write_report(folder, tmp_path / "report.html")


# -- the pages --------------------------------------------------------------------------------------------------------
@end_to_end
def test_training_run_page(browser, audio_run, tmp_path):
    html = report(audio_run, tmp_path)
    text = html.read_text()
    assert "python train.py domain=audio" in text and "callbacks.samples.every_n_steps=2" in text
    assert re.search(r'<svg class="chart"[^>]*aria-label="loss"', text) and "<polyline" in text  # drawn from the CSV
    assert "train/loss" in text and "samples at step 2" in text and "SampleCallback" in text
    page = Loaded(browser, html)
    page.check_clean()
    assert page.check_audio(audio_run / "samples" / "step_0000002") == 2
    page.page.close()


@end_to_end
def test_audio_sample_folder_page(browser, audio_samples, tmp_path):
    html = report(audio_samples, tmp_path)
    assert f"python sample.py ckpt={audio_samples.parent / 'run' / 'checkpoints' / 'last.ckpt'} n=2" in html.read_text()
    page = Loaded(browser, html)
    page.check_clean()
    assert page.check_audio(audio_samples) == 2
    page.page.close()


@end_to_end
def test_sample_command_reproduces_the_folder(audio_samples, tmp_path):
    """The command shown for a sample folder, run again, draws the same clips."""
    request = json.loads((audio_samples / "sampling.json").read_text())
    again = tmp_path / "again"
    sample.sample(compose("sample", sample_args(request, out=again), tmp_path / "hydra"))
    wavs = sorted(p.name for p in audio_samples.glob("*.wav"))
    assert wavs and wavs == sorted(p.name for p in again.glob("*.wav"))
    assert all((again / w).read_bytes() == (audio_samples / w).read_bytes() for w in wavs)


def test_sample_command_composes_every_recorded_field(tmp_path):
    """Each field sample.py records becomes an option that Hydra accepts and reads back as recorded."""
    request = {
        "ckpt": "/runs/a b/last.ckpt",
        "pretrained": None,
        "n": 4,
        "batch_size": 2,
        "seed": 1,
        "weights": "post-hoc EMA, length 0.05",
        "condition": {"digit": 7},
        "sampler": "dpmpp_2m",
        "sampler_options": {"eta": 0.5},  # not in conf/sampler/dpmpp_2m.yaml: added with +
        "steps": 10,
        "spacing": "karras",
        "noise": "brownian",
        "guidance": 2.0,
        "guidance_interval": [0.1, 5.0],
        "guide_ckpt": "/runs/weak.ckpt",
        "observe": "/data/clip.wav",
        "observe_options": {"keep": [0, 0.5]},
        "observe_with": "replacement",
        "resample": 2,
        "precision": "32-true",
    }
    cfg = compose("sample", sample_args(request, out=tmp_path / "out"), tmp_path / "hydra")
    assert (cfg.ckpt, cfg.n, cfg.batch_size, cfg.seed) == ("/runs/a b/last.ckpt", 4, 2, 1)
    assert (cfg.steps, cfg.spacing) == (10, "karras")
    assert (cfg.sampler.name, cfg.sampler.eta, cfg.sampler.noise, cfg.ema_length) == ("dpmpp_2m", 0.5, "brownian", 0.05)
    assert (cfg.guidance, list(cfg.guidance_interval), cfg.guide_ckpt) == (2.0, [0.1, 5.0], "/runs/weak.ckpt")
    assert (cfg.condition.digit, list(cfg.observe_options.keep), cfg.observe_with) == (7, [0, 0.5], "replacement")
    assert (cfg.observe, cfg.resample, cfg.precision) == ("/data/clip.wav", 2, "32-true")
    assert cfg.out == str(tmp_path / "out")


@end_to_end
def test_point_cloud_page(browser, point_samples, tmp_path):
    page = Loaded(browser, report(point_samples, tmp_path))
    page.check_clean()
    viewers = page.check_viewers()
    points = sorted(v["drawn"] for v in viewers.values() if v["kind"] == "points")
    assert points == sorted(len(read_ply(p)) for p in point_samples.glob("sample_000?.ply"))
    (mesh,) = [v for v in viewers.values() if v["kind"] == "mesh"]
    assert mesh["drawn"] == len(trimesh.load(point_samples / "sample_0000.mesh.ply", force="mesh").faces)
    # the cell can be turned: a drag changes its picture
    view = page.page.locator(f'[data-viewer-id="{mesh["id"]}"]')
    before = view.screenshot()
    box = view.bounding_box()
    page.page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + 160, box["y"] + 90, steps=5)
    page.page.mouse.up()
    page.page.wait_for_timeout(300)
    assert view.screenshot() != before
    page.page.close()


@end_to_end
def test_molecule_page(browser, molecule_samples, tmp_path):
    html = report(molecule_samples, tmp_path)
    assert "5 molecules in samples.sdf" in html.read_text()
    page = Loaded(browser, html)
    page.check_clean()
    viewers = page.check_viewers()
    records = sdf_records((molecule_samples / "samples.sdf").read_text())
    assert len(viewers) == len(records) == 5
    for k, record in enumerate(records):
        (drawn,) = [v for name, v in viewers.items() if name.endswith(f"-mol{k}")]
        assert drawn["drawn"] == record_info(record)["atoms"]
        assert drawn["bonds"] == int(record.splitlines()[3][3:6]) > 0  # the SDF's own bonds, drawn as sticks
    page.page.close()


def test_molecule_count_is_capped_with_a_note(tmp_path):
    sdf = (ROOT / "docs" / "fragment_c4.sdf").read_text()
    (tmp_path / "samples.sdf").write_text(sdf * 20)
    text = build_report(tmp_path)
    assert "20 molecules in samples.sdf; the first 12 are drawn" in text
    assert len(re.findall(r'data-viewer-id="[^"]*-mol\d+"', text)) == 12


# -- the command line -------------------------------------------------------------------------------------------------
def test_cli_refuses_unknown_option_and_empty_folder_writing_nothing(tmp_path, capsys):
    (tmp_path / "x.wav").write_bytes(b"")  # something to report would be there: the option alone is refused
    assert main([str(tmp_path), "output=r.html"]) == 2
    err = capsys.readouterr().err
    assert "output=r.html: unknown option 'output'" in err and "valid: out=FILE.html" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), f"out={tmp_path / 'r.html'}"]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: nothing to report" in err and "sampling.json" in err and "csv/metrics.csv" in err
    assert not any(empty.iterdir()) and not (tmp_path / "r.html").exists()

    assert main([str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert main([]) == 2 and "give one run or sample folder" in capsys.readouterr().err
    with pytest.raises(ReportError, match="nothing to report"):
        build_report(empty)


@end_to_end
def test_cli_writes_report_html_in_the_folder(point_samples):
    command = [sys.executable, "-m", "multidiff.report", str(point_samples)]
    proc = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = point_samples / "report.html"
    assert proc.stdout.strip() == f"wrote {out}" and out.stat().st_size > 100_000
    assert not [p for p in point_samples.iterdir() if p.name.startswith(".report.html")]  # no temporary left
    out.unlink()


def test_core_does_not_import_the_report():
    core = ROOT / "multidiff" / "core"
    importers = [p for p in core.rglob("*.py") if re.search(r"multidiff\.report|from \.\.report", p.read_text())]
    assert not importers, importers
