"""Train -> checkpoint -> resume -> sample on real FSDD clips with a tiny U-Net."""

import csv

import pytest
import soundfile as sf
import torch
from helpers import compose

import sample
import train
from multidiff.build import load_checkpoint
from multidiff.module import DiffusionModule

pytestmark = pytest.mark.slow  # end to end: trains, samples or runs the CLI


def test_train_checkpoint_resume_sample(audio_cfg, tmp_path):
    run = tmp_path / "run"
    trainer = train.train(audio_cfg("trainer.max_steps=4", "trainer.precision=32-true", out=run))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["fused"] is True  # float32: AdamW's one-kernel step
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert any(r["train/loss"] for r in rows) and any(r["val/loss"] for r in rows)
    assert any(k.startswith("train/loss_sigma_") for k in rows[0])  # per noise-level buckets
    assert (run / "loss.png").stat().st_size > 5000  # loss curves, redrawn after each validation

    # resumed under mixed precision (another machine's precision=auto): Lightning clips the gradients (on by
    # default) and would refuse an optimizer built fused there
    resumed = train.train(
        audio_cfg("trainer.max_steps=6", f"ckpt_path={ckpt}", "trainer.precision=bf16-mixed", out=run)
    )
    assert resumed.global_step == 6 and not resumed.optimizers[0].param_groups[0]["fused"]  # this run's step kind
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6

    out = tmp_path / "samples"
    cfg = compose(
        "sample", [f"ckpt={ckpt}", "n=3", "sampler=dpmpp_2m", "steps=4", f"out={out}", "seed=5"], tmp_path / "s"
    )
    paths = sample.sample(cfg)
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 3 and (out / "preview.png").stat().st_size > 1000 and set(wavs) <= set(paths)
    for w in wavs:
        info = sf.info(w)
        assert info.samplerate == 8000 and info.subtype == "PCM_16" and info.frames == 1024
        assert abs(sf.read(w)[0]).max() > 0

    # the same seed gives the same audio; a class request is honoured in the file names
    again = tmp_path / "again"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={ckpt}", "n=3", "steps=4", f"out={again}", "seed=5", "+condition.digit=7", "guidance=2.0"],
            tmp_path / "s2",
        )
    )
    assert sorted(p.name for p in again.glob("*.wav")) == [f"7_sample_{i:04d}.wav" for i in range(3)]


def test_checkpoint_samples_with_ema_weights(audio_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = audio_cfg(
        "trainer.max_steps=3",
        "callbacks.ema.update_starting_at_step=0",
        "callbacks.ema.decay=0.5",
        "callbacks.checkpoint.every_n_train_steps=2",
        "model.lr_scheduler=null",
        out=run,
    )
    train.train(cfg)
    # training ended between two scheduled saves: last.ckpt still holds the final step
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    mid = run / "checkpoints" / "step_0000002.ckpt"  # mid-run: the live weights have moved past the average
    ckpt = torch.load(mid, weights_only=True)
    live, ema = ckpt["current_model_state"], ckpt["state_dict"]
    assert [k for k in live if k.endswith("weight") and not torch.equal(live[k], ema[k])], "EMA equals live weights"
    loaded = load_checkpoint(mid).state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)
    raw = load_checkpoint(mid, weights="current").state_dict()  # sample.py weights=current
    assert all(torch.equal(raw[k], live[k]) for k in live)
    with pytest.raises(ValueError, match="'ema' or 'current'"):
        load_checkpoint(mid, weights="raw")


def test_ema_of_a_model_in_true_double_precision_averages_tensor_by_tensor(audio_cfg, tmp_path):
    # Lightning converts the module to float64 after the average was copied from it (float32): the foreach
    # update cannot pair the two dtypes, so the EMA falls back to one tensor at a time
    run = tmp_path / "run"
    overrides = ("trainer.max_steps=3", "trainer.precision=64-true", "callbacks.ema.update_starting_at_step=0")
    every = "callbacks.checkpoint.every_n_train_steps=2"
    train.train(audio_cfg(*overrides, every, "callbacks.ema.decay=0.5", "model.lr_scheduler=null", out=run))
    ckpt = torch.load(run / "checkpoints" / "step_0000002.ckpt", weights_only=True)  # mid-run: live moved past
    live, ema = ckpt["current_model_state"], ckpt["state_dict"]
    assert [k for k in live if k.endswith("weight") and not torch.equal(live[k], ema[k])], "EMA equals live weights"


def test_ema_warmup_forgets_the_starting_weights():
    from multidiff.training import ramped_ema

    update = ramped_ema(0.999, warmup=10)
    avg = [torch.zeros(3), torch.zeros(2, 2)]
    for n in range(1, 301):  # the live weights sit at 1; the average started at 0
        update(avg, [torch.ones(3), torch.ones(2, 2)], torch.tensor(n))
    assert min(a.min() for a in avg) > 0.97  # a plain 0.999 EMA would still be at 1 - 0.999**300 = 0.26
    # later the decay is the configured one
    late = [torch.zeros(1)]
    update(late, [torch.ones(1)], torch.tensor(1_000_000))
    assert late[0].item() == pytest.approx(1 - 0.999, rel=1e-4)
    counts = [torch.tensor(3)]  # an integer buffer takes the live value
    update(counts, [torch.tensor(7)], torch.tensor(5))
    assert counts[0].item() == 7


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_stops_and_keeps_good_checkpoint(audio_cfg, tmp_path, monkeypatch, where):
    real = DiffusionModule.diffusion_loss

    def poisoned(self, state, generator=None):
        losses, sigma = real(self, state, generator)
        if self.training and self.global_step >= 3:
            # a NaN loss, or a finite loss whose gradient is NaN (sqrt'(0) * 0)
            losses = losses * torch.nan if where == "loss" else losses + (losses * 0).sqrt()
        return losses, sigma

    monkeypatch.setattr(DiffusionModule, "diffusion_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.train(audio_cfg("trainer.max_steps=8", "callbacks.checkpoint.every_n_train_steps=1", out=run))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_run_shorter_than_the_ema_start_keeps_its_training(audio_cfg, tmp_path):
    """EMA averaging starts at update_starting_at_step (100 by default); a run that ends before it must save and
    sample its trained weights, not the copy of the initial weights the averaging callback made at the start."""
    import pytorch_lightning as pl

    initial: dict[str, torch.Tensor] = {}
    fit = pl.Trainer.fit

    def remember(trainer, module, *args, **kwargs):
        initial.update({k: v.detach().clone() for k, v in module.state_dict().items()})
        return fit(trainer, module, *args, **kwargs)

    run = tmp_path / "run"
    pl.Trainer.fit = remember
    try:
        train.train(audio_cfg("trainer.max_steps=3", "model.lr_scheduler=null", "~callbacks.posthoc_ema", out=run))
    finally:
        pl.Trainer.fit = fit
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    moved = [k for k in saved if k.endswith("weight") and not torch.equal(saved[k], initial[k])]
    assert len(moved) > len([k for k in saved if k.endswith("weight")]) // 2
