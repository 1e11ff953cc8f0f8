"""Models that travel by URL: an exported folder or a checkpoint fetched through fsspec (its in-memory file
system here, as hf://, https:// or s3:// would be) once into a cache, then loaded and trust-checked as a local one."""

import fsspec
import numpy as np
import pytest
import soundfile
from helpers import compose
from rdkit import Chem

import sample
from multidiff.checkpoint import UntrustedCheckpointError
from multidiff.domains.pointcloud.io import read_ply
from multidiff.export import main as export
from multidiff.remote import fetch, is_url

DOMAINS = {"audio": "tiny_audio_ckpt", "pointcloud": "tiny_points_ckpt", "molecule": "tiny_molecule_ckpt"}


@pytest.fixture
def memory(monkeypatch, tmp_path):
    """fsspec's in-memory file system, emptied after the test; fetched copies cached under tmp_path."""
    monkeypatch.setenv("MULTIDIFF_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    yield fs
    fs.rm("/", recursive=True) if fs.exists("/models") else None


def contents(folder):
    """What a sample folder holds, as numbers: clips, point sets, molecules' elements and coordinates."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.suffix == ".wav":
            out[p.name] = soundfile.read(p)[0]
        elif p.suffix == ".ply":
            out[p.name] = read_ply(p)
        elif p.suffix == ".sdf":
            mols = Chem.SDMolSupplier(str(p), sanitize=False, removeHs=False)
            out[p.name] = [([a.GetSymbol() for a in m.GetAtoms()], m.GetConformer().GetPositions()) for m in mols]
    assert out, f"no samples in {folder}"
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):  # molecules
            assert [s for s, _ in a[k]] == [s for s, _ in b[k]], k
            for (_, x), (_, y) in zip(a[k], b[k]):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("domain", DOMAINS)
def test_checkpoint_folder_and_url_give_the_same_samples(domain, request, memory, tmp_path):
    ckpt = request.getfixturevalue(DOMAINS[domain])
    export([f"ckpt={ckpt}", f"out={tmp_path / 'model'}", "dtype=float32"])
    memory.put(str(tmp_path / "model"), "/models/tiny", recursive=True)
    memory.put_file(str(ckpt), "/models/run/last.ckpt")
    args = ["n=3", "steps=3", "seed=5"]
    outs = {}
    for name, source in {
        "checkpoint": f"ckpt={ckpt}",
        "folder": f"ckpt={tmp_path / 'model'}",
        "folder_url": "ckpt=memory://models/tiny",
        "checkpoint_url": "ckpt=memory://models/run/last.ckpt",
    }.items():
        sample.sample(compose("sample", [source, f"out={tmp_path / name}", *args], tmp_path / f"h_{name}"))
        outs[name] = contents(tmp_path / name)
    for name in ("folder", "folder_url", "checkpoint_url"):
        assert_same(outs["checkpoint"], outs[name])


def test_a_url_is_fetched_once_whole_and_trust_checked(tiny_audio_ckpt, memory, tmp_path):
    export([f"ckpt={tiny_audio_ckpt}", f"out={tmp_path / 'model'}", "dtype=float32"])
    memory.put(str(tmp_path / "model"), "/models/tiny", recursive=True)
    local = fetch("memory://models/tiny")
    assert sorted(p.name for p in local.iterdir()) == [
        "MODEL_CARD.md",
        "config.yaml",
        "source.json",
        "weights.safetensors",
    ]
    memory.rm("/models/tiny", recursive=True)  # gone at the source: the cached copy serves
    assert fetch("memory://models/tiny") == local
    with pytest.raises(FileNotFoundError, match="memory://models/tiny: no file config.yaml"):
        fetch("memory://models/tiny", refresh=True)
    assert (local / "weights.safetensors").is_file()  # a failed refresh keeps the old copy
    # a folder without weights: named, and nothing of it cached
    memory.put_file(str(tmp_path / "model" / "config.yaml"), "/models/half/config.yaml")
    with pytest.raises(FileNotFoundError, match="no file weights.safetensors there; expected a model folder"):
        fetch("memory://models/half")
    assert [p.name for p in (tmp_path / "cache" / "remote").iterdir() if not p.name.startswith(".")] == [local.name]
    # the stored config is checked exactly as a local folder's
    config = tmp_path / "model" / "config.yaml"
    config.write_text(config.read_text().replace("multidiff.domains.audio.nets.UNet1d", "os.system"))
    memory.put(str(tmp_path / "model"), "/models/evil", recursive=True)
    with pytest.raises(UntrustedCheckpointError, match="os.system"):
        sample.sample(compose("sample", ["ckpt=memory://models/evil", "n=1"], tmp_path / "h"))
    with pytest.raises(ValueError, match="nosuch://x: not a URL multidiff can fetch"):
        fetch("nosuch://x")


def test_processes_fetching_one_url_at_once_share_one_whole_copy(tiny_audio_ckpt, memory, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    memory.put_file(str(tiny_audio_ckpt), "/models/run/last.ckpt")
    with ThreadPoolExecutor(4) as pool:  # as the shards of one sample.py run do
        copies = list(pool.map(lambda _: fetch("memory://models/run/last.ckpt"), range(4)))
    assert len(set(copies)) == 1 and copies[0].read_bytes() == tiny_audio_ckpt.read_bytes()
    assert fetch("memory://models/run/last.ckpt", refresh=True) == copies[0] and copies[0].is_file()


def test_what_is_a_url():
    assert is_url("hf://org/repo") and is_url("https://host/a/last.ckpt") and is_url("memory://m")
    assert not is_url("runs/x/last.ckpt") and not is_url("fsdd-digits") and not is_url("C:\\models\\x")


def test_a_source_that_is_nothing_names_what_would_be():
    from multidiff.build import load_any

    with pytest.raises(FileNotFoundError, match="fsdd-digitz: no such checkpoint or model folder.*fsdd-digits.*hf://"):
        load_any("fsdd-digitz")
    with pytest.raises(ValueError, match="weights='bogus': use 'ema' or 'current'"):
        load_any("fsdd-digits", weights="bogus")
    with pytest.raises(ValueError, match="weights=current needs a training checkpoint; fsdd-digits is a model folder"):
        load_any("fsdd-digits", weights="current")
