"""A whole new domain, defined in this file and its own conf directory, trains and samples with the package
untouched: a 2-D Gaussian mixture. docs/extending.md walks through the same pieces."""

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import compose
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import sample
import train
from multidiff.core.domain import Domain
from multidiff.core.embeddings import NoiseEmbedding, per_item, reject_condition
from multidiff.core.space import TensorSpace
from multidiff.core.state import State

pytestmark = pytest.mark.slow  # end to end: trains, samples or runs the CLI

MODES = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
STD = 0.3


class MixtureData(pl.LightningDataModule):
    """Points drawn from two Gaussians."""

    def __init__(self, n: int = 2048, batch_size: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, 2, (n,), generator=g)
        self.points = MODES[pick] + STD * torch.randn(n, 2, generator=g)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.points), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.points[:256]), batch_size=256)

    def info(self) -> dict:
        return {"dim": 2}


class MixtureDomain(Domain):
    name = "mixture"
    info_spec = {"dim": ("int", True)}

    def __init__(self) -> None:
        super().__init__()
        self.space = TensorSpace()

    def unpack(self, batch) -> State:
        return State(batch[0])

    def template(self, n: int, cond: Tensor | None, generator: torch.Generator) -> State:
        return State(torch.zeros(n, self.info["dim"]), cond)

    def decode(self, state: State, observation=None) -> list[np.ndarray]:
        return list(state.x.numpy())

    def export(
        self, items: list[np.ndarray], out_dir: Path, meta: dict, start: int = 0, preview: bool = True
    ) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"points_{start:06d}.npy"  # numbered by the batch's first item: batches never clash
        np.save(path, np.stack(items))
        return [path]


class MixtureNet(nn.Module):
    """An MLP denoiser following the DenoiserNet contract."""

    conditional = False
    equivariance = None

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.noise_embed = NoiseEmbedding(hidden)
        self.inp = nn.Linear(2, hidden)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x: Tensor, c_noise: Tensor, *, cond: Tensor | None = None, cond_drop: Tensor | None = None):
        reject_condition(self, cond)
        return self.mlp(self.inp(x) + self.noise_embed(per_item(c_noise, x.shape[0])))


CONF = {
    "domain/mixture.yaml": """# @package _global_
defaults:
  - override /data: mixture
  - override /net: mixture_mlp
domain:
  _target_: test_extending.MixtureDomain
""",
    "data/mixture.yaml": "_target_: test_extending.MixtureData\nbatch_size: 128\n",
    "net/mixture_mlp.yaml": "_target_: test_extending.MixtureNet\nhidden: 64\n",
}


@pytest.fixture
def user_conf(tmp_path) -> Path:
    conf = tmp_path / "user_conf"
    for name, text in CONF.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    return conf


def test_a_domain_defined_outside_the_package_trains_and_samples(user_conf, tmp_path):
    run = tmp_path / "run"
    cfg = compose(
        "train",
        [
            f"hydra.searchpath=[file://{user_conf}]",
            "domain=mixture",
            "trainer.max_steps=400",
            "trainer.log_every_n_steps=50",
            "model.optimizer.lr=3e-3",
            "model.lr_scheduler.lr_lambda.steps=20",
            "callbacks.samples.every_n_steps=200",  # in-training previews through the domain's export
            "callbacks.samples.n=16",
            "callbacks.progress=null",
            "callbacks.ema=null",
        ],
        run,
    )
    trainer = train.train(cfg)
    assert trainer.global_step == 400 and (run / "samples" / "step_0000200" / "points_000000.npy").is_file()

    # the checkpoint names this file's classes: refused unless trusted by name, then sampled
    out = tmp_path / "out"
    args = [f"ckpt={run}/checkpoints/last.ckpt", "n=512", "steps=30", f"out={out}"]
    with pytest.raises(ValueError, match="test_extending"):
        sample.sample(compose("sample", args, tmp_path / "s0"))
    sample.sample(compose("sample", [*args, "trust_targets=[test_extending.*]"], tmp_path / "s1"))
    points = torch.from_numpy(np.concatenate([np.load(f) for f in sorted(out.glob("points_*.npy"))]))
    assert points.shape == (512, 2)
    # a trained model puts its samples near the modes (the prior has sigma 80); both modes are found
    nearest = torch.cdist(points, MODES).min(1)
    assert (nearest.values < 4 * STD).float().mean() > 0.7
    assert min((nearest.indices == k).float().mean() for k in (0, 1)) > 0.2
