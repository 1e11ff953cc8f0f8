"""Checkpoints are untrusted input: loading one never calls anything its stored config names unless trusted."""

import copy
import hashlib
from pathlib import Path

import pytest
import torch
from helpers import ROOT, compose

import sample
import train
from multidiff.build import load_checkpoint
from multidiff.checkpoint import (
    TRUSTED_TARGETS,
    CheckpointFormatError,
    UntrustedCheckpointError,
)


@pytest.fixture
def good_ckpt(tiny_audio_ckpt) -> Path:
    return tiny_audio_ckpt


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def hostile(good: Path, out: Path, edit) -> Path:
    ckpt = torch.load(good, weights_only=True)
    config = copy.deepcopy(ckpt["multidiff"]["config"])
    edit(config)
    ckpt["multidiff"]["config"] = config
    torch.save(ckpt, out)
    return out


def payloads(victim: Path, created: Path) -> dict[str, object]:
    """Config edits, each of which would delete, create or write a file if its target were called."""
    return {
        "unlink": lambda c: c.update(net={"_target_": "pathlib.Path.unlink", "_args_": [str(victim)]}),
        "open": lambda c: c.update(net={"_target_": "builtins.open", "file": str(created), "mode": "w"}),
        "torch_save": lambda c: c.update(net={"_target_": "torch.save", "obj": 1, "f": str(victim)}),
        "subprocess": lambda c: c.update(process={"_target_": "subprocess.run", "args": ["touch", str(created)]}),
        "import_module": lambda c: c.update(domain={"_target_": "importlib.import_module", "name": "antigravity"}),
        "nested_in_list": lambda c: c["net"].update(
            channels=[8, {"_target_": "pathlib.Path.touch", "_args_": [str(created)]}]
        ),
        "args_on_trusted": lambda c: c["domain"].update(
            _args_=[{"_target_": "builtins.open", "file": str(created), "mode": "w"}]
        ),
        "deep_in_optimizer": lambda c: c["model"]["lr_scheduler"]["lr_lambda"].update(
            _target_="os.remove", path=str(victim)
        ),
        "interpolation": lambda c: c["net"].update(heads="${oc.env:HOME}"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "unlink",
        "open",
        "torch_save",
        "subprocess",
        "import_module",
        "nested_in_list",
        "args_on_trusted",
        "deep_in_optimizer",
        "interpolation",
    ],
)
def test_hostile_checkpoint_is_refused_and_touches_nothing(good_ckpt, tmp_path, name):
    victim, created = tmp_path / "victim.txt", tmp_path / "created.txt"
    victim.write_text("precious")
    ckpt = hostile(good_ckpt, tmp_path / f"{name}.ckpt", payloads(victim, created)[name])
    before = snapshot(tmp_path)
    with pytest.raises(UntrustedCheckpointError) as e:
        load_checkpoint(ckpt)
    message = str(e.value)
    assert str(ckpt) in message and "config key" in message
    assert snapshot(tmp_path) == before and victim.read_text() == "precious" and not created.exists()
    # sample.py and resume refuse it the same way, before anything runs
    cfg = compose("sample", [f"ckpt={ckpt}", "n=1", "steps=2", f"out={tmp_path}/out"], tmp_path / "s")
    with pytest.raises(UntrustedCheckpointError):
        sample.sample(cfg)
    assert not (tmp_path / "out").exists() and not created.exists() and victim.read_text() == "precious"


def test_refusal_names_key_target_and_how_to_trust(good_ckpt, tmp_path):
    ckpt = hostile(good_ckpt, tmp_path / "h.ckpt", lambda c: c.update(net={"_target_": "builtins.open", "file": "x"}))
    with pytest.raises(UntrustedCheckpointError, match=r"'net\._target_' names 'builtins\.open'.*trust_targets"):
        load_checkpoint(ckpt)
    # trusting some other name does not open the gate
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(ckpt, trust_targets=["mypkg.*"])


def test_resume_refuses_hostile_checkpoint(good_ckpt, tmp_path, audio_cfg):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ckpt = hostile(
        good_ckpt, tmp_path / "h.ckpt", lambda c: c.update(net={"_target_": "torch.save", "obj": 1, "f": str(victim)})
    )
    with pytest.raises(UntrustedCheckpointError, match="torch.save"):
        train.train(audio_cfg("trainer.max_steps=2", f"ckpt_path={ckpt}", out=tmp_path / "run"))
    assert victim.read_text() == "precious"


def test_users_own_component_loads_only_when_named(good_ckpt, tmp_path):
    ckpt = hostile(good_ckpt, tmp_path / "mine.ckpt", lambda c: c["net"].update(_target_="user_components.MyUNet"))
    with pytest.raises(UntrustedCheckpointError, match="user_components.MyUNet"):
        load_checkpoint(ckpt)
    for trust in (["user_components.MyUNet"], ["user_components.*"]):
        module = load_checkpoint(ckpt, trust_targets=trust)
        assert type(module.model.net).__name__ == "MyUNet"
    # the same flag through sample.py
    out = tmp_path / "out"
    cfg = compose(
        "sample", [f"ckpt={ckpt}", "n=1", "steps=2", f"out={out}", "trust_targets=[user_components.*]"], tmp_path / "s"
    )
    sample.sample(cfg)
    assert len(list(out.glob("*.wav"))) == 1


def test_trusted_hostile_target_is_the_users_choice(good_ckpt, tmp_path):
    """The hatch is the only gate: named explicitly, a target is called (here: creates a file)."""
    created = tmp_path / "created.txt"
    ckpt = hostile(
        good_ckpt,
        tmp_path / "h.ckpt",
        lambda c: c.update(net={"_target_": "pathlib.Path.touch", "_args_": [str(created)]}),
    )
    with pytest.raises(Exception):  # noqa: B017 - Path.touch returns None, not a network
        load_checkpoint(ckpt, trust_targets=["pathlib.Path.touch"])
    assert created.exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(domain=3), "multidiff.domain' must be a str"),
        (lambda m: m.update(domain_info=[1, 2]), "domain_info' must be a dict"),
        (lambda m: m["domain_info"].update(length="long"), "'length' must be int"),
        (lambda m: m["domain_info"].update(class_names=[1, 2]), "'class_names' must be list"),
        (lambda m: m["domain_info"].update(num_classes=3), "num_classes is 3 but class_names has 10"),
        (lambda m: m["domain_info"].pop("sample_rate"), "missing 'sample_rate'"),
        (lambda m: m.update(domain="molecule"), "metadata says domain 'molecule'"),
        (lambda m: m["config"].pop("net"), "no 'net' section"),
    ],
)
def test_malformed_metadata_is_a_clear_error(good_ckpt, tmp_path, edit, match):
    ckpt = torch.load(good_ckpt, weights_only=True)
    edit(ckpt["multidiff"])
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointFormatError, match=match) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_files_that_are_not_checkpoints_are_refused_safely(good_ckpt, tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("just some text\n")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good_ckpt.read_bytes()[:5000])
    pickled = tmp_path / "object.ckpt"
    torch.save({"obj": Path("x")}, pickled)  # a pickled object that weights_only refuses
    for path in (text, truncated, pickled):
        with pytest.raises(CheckpointFormatError) as e:
            load_checkpoint(path)
        assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)


def test_every_configured_target_is_trusted_in_its_section():
    import yaml

    from multidiff.checkpoint import TRUSTED, _walk

    found = []
    for f in (ROOT / "conf").rglob("*.yaml"):
        text = f.read_text()
        tree = yaml.safe_load(text) or {}
        # a group file fills the section named after its folder; a global one names its sections
        rooted = tree if "@package _global_" in text else {f.parent.name: tree}
        for key, node in _walk(rooted, ""):
            # the hydra section (launchers, sweepers, callbacks) is never stored in a checkpoint
            if isinstance(node, dict) and isinstance(node.get("_target_"), str) and not key.startswith("hydra"):
                found.append((f.relative_to(ROOT), key.split(".")[0], node["_target_"]))
    assert found, "no _target_ found under conf/"
    missing = [(str(f), slot, t) for f, slot, t in found if t not in TRUSTED.get(slot, ())]
    assert not missing, f"add to multidiff.checkpoint.TRUSTED (file, section, target): {missing}"
    assert {t for _, _, t in found} <= TRUSTED_TARGETS


def test_a_trusted_component_in_the_wrong_section_is_refused(good_ckpt, tmp_path):
    # a Trainer is trusted as the trainer, never as the domain a checkpoint builds
    ckpt = hostile(good_ckpt, tmp_path / "h.ckpt", lambda c: c.update(domain={"_target_": "pytorch_lightning.Trainer"}))
    with pytest.raises(UntrustedCheckpointError, match="does not trust in 'domain'"):
        load_checkpoint(ckpt)


def test_a_package_pattern_does_not_reach_what_the_package_imports(good_ckpt, tmp_path):
    # user_components imports UNet1d from multidiff: the name user_components.UNet1d exists, but trusting
    # user_components.* must only cover what that module defines
    ckpt = hostile(good_ckpt, tmp_path / "h.ckpt", lambda c: c["net"].update(_target_="user_components.UNet1d"))
    with pytest.raises(UntrustedCheckpointError, match="user_components.UNet1d"):
        load_checkpoint(ckpt, trust_targets=["user_components.*"])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ckpt = hostile(
        good_ckpt,
        tmp_path / "t.ckpt",
        lambda c: c.update(net={"_target_": "user_components.torch.save", "obj": 1, "f": str(victim)}),
    )
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(ckpt, trust_targets=["user_components.*"])
    assert victim.read_text() == "precious"
    with pytest.raises(ValueError, match="package pattern"):
        load_checkpoint(ckpt, trust_targets=["*"])
