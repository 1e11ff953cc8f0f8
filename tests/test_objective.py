"""What train.py returns to a sweeper: the metric named by optimized_metric, checked before training."""

import json

import pytest
from helpers import TINY_PC, compose

import train


def test_misspelt_objective_fails_before_training(audio_cfg, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"optimized_metric='val_loss': valid are sample_quality or .*val/loss"):
        train.train(audio_cfg("optimized_metric=val_loss", out=run))
    assert not (run / "checkpoints").exists()  # stopped before any training


def test_unknown_evaluation_option_fails_before_training(audio_cfg, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"unknown audio evaluation option .*'fid_sampels'"):
        train.train(audio_cfg("optimized_metric=sample_quality", "+sample_quality.evaluate.fid_sampels=8", out=run))
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_sample_quality_is_the_domains_score_of_fresh_samples(shared_datasets, tmp_path):
    run = tmp_path / "run"
    cfg = compose(
        "train",
        [
            *TINY_PC,
            f"paths.data_dir={shared_datasets}",
            "trainer.max_steps=2",
            "optimized_metric=sample_quality",
            "sample_quality.n=16",
            "sampler.steps=4",
            "+sample_quality.evaluate.emd=none",
        ],
        run,
    )
    trainer = train.train(cfg)
    value = train.objective(cfg, trainer)
    record = json.loads((run / "objective.json").read_text())
    # -|1-NNA-CD - 0.5|, computed from the metrics the evaluator reported for these samples
    assert value == pytest.approx(-abs(record["metrics"]["1-NNA-CD"] - 0.5)) == record["value"]
    assert -0.5 <= value <= 0 and record["optimized_metric"] == "sample_quality" and record["step"] == 2
