"""Samples in the loggers: a tiny run in each domain previews its samples into TensorBoard (clips in the audio tab,
clouds in the mesh plugin, the preview PNG as an image), read back from the event files; and into Weights & Biases
in offline mode, read back from its run folder."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from helpers import ROOT, TINY_AUDIO, TINY_PC, compose
from matplotlib.image import imread
from rdkit import Chem
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

import train
from multidiff.domains.pointcloud.io import read_ply
from multidiff.loggers import end_wandb_run

pytestmark = pytest.mark.slow  # trains and samples

PREVIEW = ["callbacks.samples.every_n_steps=1", "callbacks.samples.n=2", "sampler.steps=2", "trainer.max_steps=1"]


def overrides(domain, shared_datasets, qm9_root):
    if domain == "audio":
        tiny = ["domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    elif domain == "pointcloud":
        tiny = [f"paths.data_dir={shared_datasets}", *TINY_PC, "data=shapenet"]
    else:
        tiny = ["domain=molecule", f"data.root={qm9_root}", "data.max_molecules=64", "data.batch_size=8"]
        tiny += ["net.hidden=16", "net.layers=2", "callbacks.progress=null"]
    return [o for o in tiny if o != "callbacks.samples=null"] + PREVIEW


def run(domain, request, tmp_path, *extra):
    shared = request.getfixturevalue("shared_datasets") if domain != "molecule" else None
    qm9 = request.getfixturevalue("qm9_root") if domain == "molecule" else None
    out = tmp_path / "run"
    train.train(compose("train", [*overrides(domain, shared, qm9), *extra], out))
    samples = out / "samples" / "step_0000001"
    assert samples.is_dir()
    return out, samples


@pytest.mark.parametrize("domain", ["audio", "pointcloud", "molecule"])
def test_tensorboard_event_files_hold_the_samples(domain, request, tmp_path):
    out, samples = run(domain, request, tmp_path, "logger=many")
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"audio": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    previews = [t for t in tags["images"] if t.startswith("samples/")]
    assert len(previews) == 1
    image = events.Images(previews[0])[0]
    png = imread(next(samples.glob("*.png")))
    assert image.step == 1 and (image.height, image.width) == png.shape[:2]
    if domain == "audio":
        wavs = sorted(samples.glob("*.wav"))
        assert sorted(tags["audio"]) == sorted(f"samples/{w.stem}" for w in wavs) and len(wavs) == 2
        for w in wavs:
            logged = events.Audio(f"samples/{w.stem}")[0]
            heard, rate = soundfile.read(io.BytesIO(logged.encoded_audio_string))
            written, written_rate = soundfile.read(w)
            assert logged.step == 1 and rate == written_rate
            np.testing.assert_allclose(heard, written, atol=2 / 32767)  # both 16-bit PCM of the same clip
        return
    clouds = {t.removesuffix("_VERTEX") for t in tags["tensors"] if t.startswith("samples/") and t.endswith("_VERTEX")}
    assert len(clouds) == 2
    if domain == "pointcloud":
        for ply in sorted(samples.glob("*.ply")):
            vertices = make_ndarray(events.Tensors(f"samples/{ply.stem}_VERTEX")[0].tensor_proto)
            np.testing.assert_allclose(vertices[0], read_ply(ply), atol=1e-6)
    else:
        mols = list(Chem.SDMolSupplier(str(samples / "samples.sdf"), sanitize=False, removeHs=False))
        for i, mol in enumerate(mols):
            vertices = make_ndarray(events.Tensors(f"samples/sample_{i:04d}_VERTEX")[0].tensor_proto)[0]
            colors = make_ndarray(events.Tensors(f"samples/sample_{i:04d}_COLOR")[0].tensor_proto)[0]
            np.testing.assert_allclose(vertices, mol.GetConformer().GetPositions(), atol=1e-3)  # SDF: 4 decimals
            hydrogens = [a.GetSymbol() == "H" for a in mol.GetAtoms()]
            assert (colors[hydrogens] == 255).all() and not (colors[np.logical_not(hydrogens)] == 255).all()


@pytest.mark.parametrize("domain", ["audio", "pointcloud"])
def test_wandb_offline_run_holds_the_samples(domain, request, tmp_path, monkeypatch):
    """Audio through train.py itself (training, then the objective's validation logs to the same W&B run, then the
    run ends); point clouds in-process, the run ended as train.py's main ends it."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    extra = ["logger=wandb", "logger.wandb.offline=true"]
    if domain == "audio":
        out = tmp_path / "run"
        args = [*overrides("audio", request.getfixturevalue("shared_datasets"), None), *extra, f"hydra.run.dir={out}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
        proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "objective.json").is_file()
    else:
        out, _ = run(domain, request, tmp_path, *extra)
        end_wandb_run()
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    media = run_dir / "files" / "media"
    assert len(list((media / "images").rglob("*.png"))) == 1
    if domain == "audio":
        assert len(list((media / "audio").rglob("*.wav"))) == 2
    else:
        assert len(list((media / "object3D").rglob("*.pts.json"))) == 2
