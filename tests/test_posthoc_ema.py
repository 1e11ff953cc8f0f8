"""Post-hoc EMA: a length reconstructed from snapshots matches an EMA run at that length directly."""

import json

import pytest
import torch
from ema_pytorch.post_hoc_ema import KarrasEMA, PostHocEMA
from helpers import compose

import sample
import train
from multidiff.posthoc_ema import snapshot_weights


class Wrapped(torch.nn.Module):
    """Stands for the module's ``Preconditioned`` denoiser: the snapshots hold its state dict."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 8)


def test_reconstructed_length_matches_a_direct_ema(tmp_path):
    torch.manual_seed(0)
    model = Wrapped()
    snaps = PostHocEMA(
        model,
        sigma_rels=(0.05, 0.10),
        update_every=1,
        checkpoint_every_num_steps="manual",
        checkpoint_folder=str(tmp_path),
        checkpoint_dtype=torch.float32,
    )
    (tmp_path / "profiles.json").write_text(json.dumps({"gammas": list(snaps.gammas)}))
    direct = {s: KarrasEMA(model, sigma_rel=s, update_every=1) for s in (0.07, 0.15)}
    start = model.net.weight.detach().clone()
    midway = None
    for step in range(1, 801):  # a drifting, noisy trajectory, like weights under SGD
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p) + 0.002)
        snaps.update()
        for ema in direct.values():
            ema.update()
        if step % 25 == 0:
            snaps.checkpoint()
        if step == 400:
            midway = direct[0.07].ema_model.net.weight.detach().clone()
    for sigma_rel, ema in direct.items():
        rebuilt = snapshot_weights(tmp_path, sigma_rel)["net.weight"]
        target = ema.ema_model.net.weight
        # the reconstruction error is small against how far the average moved
        rel = ((rebuilt - target).norm() / (target - start).norm()).item()
        assert rel < 0.02, (sigma_rel, rel)
        other = direct[0.15 if sigma_rel == 0.07 else 0.07].ema_model.net.weight
        assert (rebuilt - target).norm() < 0.2 * (other - target).norm()  # and it is not just any average
    # an earlier checkpoint's EMA uses only the snapshots taken by then
    rebuilt = snapshot_weights(tmp_path, 0.07, step=400)["net.weight"]
    assert ((rebuilt - midway).norm() / (midway - start).norm()).item() < 0.02
    with pytest.raises(ValueError, match="at or before step 10"):
        snapshot_weights(tmp_path, 0.07, step=10)


def test_bad_snapshot_requests_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="posthoc_ema"):
        snapshot_weights(tmp_path, 0.05)
    (tmp_path / "profiles.json").write_text(json.dumps({"gammas": [16.9, 6.9]}))
    with pytest.raises(FileNotFoundError, match="no snapshot files"):
        snapshot_weights(tmp_path, 0.05)
    with pytest.raises(ValueError, match="ema_length"):
        snapshot_weights(tmp_path, 0.5)


@pytest.mark.slow
def test_training_keeps_snapshots_and_sample_rebuilds_a_length(audio_cfg, tmp_path):
    run = tmp_path / "run"
    train.train(audio_cfg("trainer.max_steps=6", "callbacks.posthoc_ema.every_n_steps=2", out=run))
    assert sorted(p.name for p in (run / "posthoc_ema").glob("*.pt")) == [
        f"{k}.{t}.pt" for k in (0, 1) for t in (2, 4, 6)
    ]
    train.train(
        audio_cfg(
            "trainer.max_steps=8",
            "callbacks.posthoc_ema.every_n_steps=2",
            f"ckpt_path={run}/checkpoints/last.ckpt",
            out=run,
        )
    )
    assert (run / "posthoc_ema" / "0.8.pt").is_file()  # resumed averages continue the step count
    out = tmp_path / "out"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={run}/checkpoints/last.ckpt", "n=2", "steps=3", f"out={out}", "ema_length=0.08"],
            tmp_path / "s",
        )
    )
    meta = json.loads((out / "sampling.json").read_text())
    assert meta["weights"] == "post-hoc EMA, length 0.08" and len(list(out.glob("*.wav"))) == 2
