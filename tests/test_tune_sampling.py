"""tune_sampling.py: an Optuna search over samplers and steps, scored by the domain's metric, on a tiny model."""

import json

import pytest
from helpers import TINY_PC, compose

import train
import tune_sampling

pytestmark = pytest.mark.slow  # trains a model and samples it a few times


def test_tune_writes_a_pareto_front(shared_datasets, tmp_path):
    run = tmp_path / "run"
    train.train(compose("train", [f"paths.data_dir={shared_datasets}", *TINY_PC, "trainer.max_steps=2"], run))
    out = tmp_path / "tune"
    ref = shared_datasets / "shapenet_airplane" / "02691156" / "test"
    cfg = compose(
        "tune_sampling",
        [
            f"ckpt={run}/checkpoints/last.ckpt",
            "trials=5",
            "n=6",
            f"reference={ref}",
            "+evaluate.emd=none",
            "+evaluate.max_shapes=6",
            "+evaluate.progress=false",
            "space.samplers=[dpmpp_2m,unipc,heun]",
            "space.steps=[2,4]",
            f"out={out}",
        ],
        tmp_path / "h",
    )
    front = tune_sampling.tune(cfg)
    rows = json.loads((out / "trials.json").read_text())
    assert len(rows) == 5 and (out / "pareto.png").stat().st_size > 5000
    assert "Pareto front of 5 trials" in (out / "pareto.md").read_text()
    for r in rows:  # evaluations counted, not assumed: one per step, Heun two but the last
        assert r["nfe"] == (2 * r["steps"] - 1 if r["sampler"] == "heun" else r["steps"])
        assert -0.5 <= r["quality"] <= 0 and r["quality"] == -abs(r["metrics"]["1-NNA-CD"] - 0.5)

    def beats(a, b):
        return (
            a["quality"] >= b["quality"]
            and a["nfe"] <= b["nfe"]
            and (a["quality"] > b["quality"] or a["nfe"] < b["nfe"])
        )

    keys = {r["trial"] for r in front}
    assert front and all(not any(beats(o, r) for o in rows) for r in front)
    assert all(any(beats(f, r) for f in front) for r in rows if r["trial"] not in keys)
