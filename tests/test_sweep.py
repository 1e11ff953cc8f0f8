"""Hydra multirun from the command line: each job trains in its own folder under hydra.sweep.dir; Optuna
optimises train.py's objective; the joblib and submitit launchers run jobs in parallel processes."""

import csv
import json
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT, TINY_AUDIO

# the EMA starts at once so that validation (with the EMA weights) sees what the few steps learned
TINY_SWEEP = [*TINY_AUDIO, "trainer.max_steps=3", "callbacks.ema.update_starting_at_step=0"]


def multirun(data, sweep_dir, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", f"paths.data_dir={data}", f"hydra.sweep.dir={sweep_dir}", *overrides]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def trials(sweep_dir) -> list[dict]:
    return list(csv.DictReader((sweep_dir / "trials.csv").open()))


@pytest.mark.slow  # end to end: trains in subprocesses
def test_multirun_sweep_over_processes(shared_datasets, tmp_path):
    multirun(shared_datasets, tmp_path, "domain=audio", "process=edm,vp_v", "trainer.max_steps=2", *TINY_AUDIO)
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
    assert "vp_v" in (tmp_path / "1" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # end to end: trains in subprocesses
def test_optuna_search_writes_best_parameters_and_every_trial(shared_datasets, tmp_path):
    multirun(shared_datasets, tmp_path, "hparams_search=audio_optuna", "hydra.sweeper.n_trials=3", *TINY_SWEEP)
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    space = yaml.safe_load((ROOT / "conf" / "hparams_search" / "audio_optuna.yaml").read_text())
    fixed = {o.split("=")[0] for o in TINY_SWEEP}  # given on the command line: not searched
    assert set(result["best_params"]) == set(space["hydra"]["sweeper"]["params"]) - fixed
    rows = trials(tmp_path)
    assert len(rows) == 3 and (tmp_path / "trials.png").stat().st_size > 5000
    values = [float(r["val/loss"]) for r in rows]
    assert result["best_value"] == pytest.approx(min(values))
    # each trial trained with what Optuna proposed, and returned its own validation loss
    for r in rows:
        record = json.loads((tmp_path / r["job"] / "objective.json").read_text())
        params = dict(o.split("=", 1) for o in record["overrides"])
        assert 5e-5 <= float(params["model.optimizer.lr"]) <= 1e-3 and 0 <= float(params["model.cond_drop_prob"]) <= 0.2
        assert record["optimized_metric"] == "val/loss" and record["value"] == pytest.approx(float(r["val/loss"]))
    assert len(set(values)) > 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]]
)
def test_parallel_launchers_run_two_jobs(shared_datasets, tmp_path, launcher):
    multirun(shared_datasets, tmp_path, *launcher, "model.optimizer.lr=1e-4,1e-3", *TINY_SWEEP)
    rows = trials(tmp_path)
    assert [float(r["model.optimizer.lr"]) for r in rows] == [1e-4, 1e-3]
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
    if "submitit" in launcher[0]:
        assert len([p for p in (tmp_path / ".submitit").iterdir() if p.name.isdigit()]) == 2  # two submitted jobs


def test_optuna_search_space_from_hydra_override_grammar():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hydra_plugins.multidiff_optuna.optuna_sweeper import search_space

    params = {"lr": "tag(log, interval(1e-4, 1e-2))", "width": "choice(16, 32)", "depth": "interval(1, 4)"}
    space, fixed = search_space(params, ["depth=range(2, 5)", "seed=3", "process=choice(edm, vp_v)"])
    assert space["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["width"] == CategoricalDistribution([16, 32]) and space["depth"] == CategoricalDistribution([2, 3, 4])
    assert space["process"] == CategoricalDistribution(["edm", "vp_v"])
    assert fixed == ["seed=3"]  # a plain value on the command line is fixed, not searched
    space, _ = search_space({"drop": "interval(0, 1)"}, [])
    assert space["drop"] == FloatDistribution(0.0, 1.0)  # an interval is real-valued, as Hydra reads it
    _, fixed = search_space(params, ["lr=1e-3"])  # the command line wins over the config's space
    assert fixed == ["lr=1e-3"]


@pytest.mark.slow
def test_installed_packages_agree():
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
