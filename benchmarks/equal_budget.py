"""Equal wall-clock budget against an anchor's own code: train the anchor's model with its own loss and
optimizer on multidiff's batches of the same data, sample it with its own sampler, write the samples in the
domain's file format (so evaluate.py scores both sides alike), and plot both sides' loss curves.

    python benchmarks/equal_budget.py train  --domain pointcloud --minutes 30 --out runs/eb_pc_anchor
    python benchmarks/equal_budget.py sample --domain pointcloud --run runs/eb_pc_anchor --n 128
    python benchmarks/equal_budget.py plot   --domain pointcloud --anchor runs/eb_pc_anchor \
        --project runs/eb_pc_project --out docs/equal_budget_pointcloud.png

The multidiff side is train.py with the same budget (docs/benchmarks.md, "Against the anchors"). Anchors (never a
dependency of multidiff): ANCHORS_DIR (default ~/.cache/anchors) holds
  diffusion-point-cloud/  github luost26/diffusion-point-cloud: DPM's FlowVAE with train_gen.py's settings
  pylib/                  pip install --no-deps --target ANCHORS_DIR/pylib audio-diffusion-pytorch==0.1.3
                          a-unet==0.0.16 einops: DiffusionModel(UNetV0, VDiffusion, VSampler), 11.0M
  e3_diffusion_for_molecules/  github ehoogeboom/e3_diffusion_for_molecules: EDM's EGNN_dynamics_QM9 and
                          EnVariationalDiffusion at 128 x 6 (its QM9 settings otherwise, without the charge
                          feature), its loss, AdamW (amsgrad) and adaptive gradient clipping; no EMA
(see ../shared/anchors-bench/README.md). Without them the script exits with that message.

Data: both sides see the same loader (multidiff's datamodule of the domain's CPU experiment: ShapeNet airplanes
at 2,048 points with PointFlow's global normalisation, batch 32; FSDD 8,192-sample peak-normalised clips, batch
16; QM9 molecules, batch 64); the anchors' samples are mapped back to data units by the same normaliser before
they are written. EDM is sampled by its own ancestral sampler at 1,000 steps run by multidiff: its trained
weights copied into multidiff's EGNN (multidiff/domains/molecule/edm_weights.py; the network, the schedule and
the ancestral step equal EDM's to float64 precision, tests/test_edm_parity.py), written as a multidiff
checkpoint (``sample --write-ckpt``) for sample.py, because EDM's own loop is 4x slower on this CPU.
Training saves a checkpoint every --save-minutes and resumes from it (the budget counts the time already spent).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ANCHORS = Path(os.environ.get("ANCHORS_DIR", Path.home() / ".cache" / "anchors"))

# the multidiff recipe each anchor is held against (train.py overrides), and the data it shares
RECIPES = {
    "pointcloud": ["experiment=shapenet_airplane_cpu"],
    "audio": ["experiment=fsdd_unet_cpu", "data.num_classes=0"],  # ADP's model is unconditional
    # EDM's network function and schedule, at a size that trains and samples at 1,000 steps within a CPU budget
    "molecule": ["experiment=qm9_edm", "domain.include_charges=false", "net.hidden=128", "net.layers=6"],
}
EDM_HIDDEN, EDM_LAYERS = 128, 6


def _need(path: Path, how: str) -> Path:
    if not path.exists():
        raise SystemExit(f"anchor code not found at {path}: {how} (see ../shared/anchors-bench/README.md)")
    return path


def _compose(domain: str, data_root: str | None):
    from multidiff.config import compose_run

    run_dir = Path(tempfile.mkdtemp(prefix="equal_budget_"))
    try:
        extra = [f"paths.data_dir={data_root}"] if data_root else []
        return compose_run("train", [*RECIPES[domain], *extra], run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _datamodule(cfg):
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class Anchor:
    """The anchor's model, its training step (its loss, its optimizer) and its sampler, on multidiff batches."""

    def __init__(self, domain: str):
        self.domain = domain
        if domain == "pointcloud":
            sys.path.insert(0, str(_need(ANCHORS / "diffusion-point-cloud", "git clone luost26/diffusion-point-cloud")))
            from models.vae_flow import FlowVAE

            # train_gen.py's defaults
            self.args = argparse.Namespace(
                model="flow", latent_dim=256, num_steps=100, beta_1=1e-4, beta_T=0.02, sched_mode="linear",
                flexibility=0.0, truncate_std=2.0, latent_flow_depth=14, latent_flow_hidden_dim=256,
                kl_weight=0.001, residual=True, spectral_norm=False, lr=2e-3, weight_decay=0, max_grad_norm=10.0,
            )  # fmt: skip
            self.model = FlowVAE(self.args)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.args.lr, weight_decay=0)
            self.name = "DPM FlowVAE (train_gen.py settings), 100 ancestral steps"
        elif domain == "audio":
            sys.path.insert(0, str(_need(ANCHORS / "pylib", "pip install --no-deps --target ANCHORS_DIR/pylib ...")))
            from audio_diffusion_pytorch import DiffusionModel, UNetV0, VDiffusion, VSampler

            # the README's unconditional UNetV0 with its channels capped at 64 (11.0M parameters)
            self.model = DiffusionModel(
                net_t=UNetV0, in_channels=1, diffusion_t=VDiffusion, sampler_t=VSampler,
                channels=[8, 32, 64, 64, 64, 64, 64, 64, 64], factors=[1, 4, 4, 4, 2, 2, 2, 2, 2],
                items=[1, 2, 2, 2, 2, 2, 2, 4, 4], attentions=[0, 0, 0, 0, 0, 1, 1, 1, 1],
                attention_heads=8, attention_features=64,
            )  # fmt: skip
            # audio-diffusion-pytorch-trainer's optimizer
            self.opt = torch.optim.AdamW(
                self.model.parameters(), lr=1e-4, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3
            )
            self.name = "audio-diffusion-pytorch UNetV0 11.0M, VDiffusion, VSampler 50 steps"
        elif domain == "molecule":
            sys.path.insert(
                0, str(_need(ANCHORS / "e3_diffusion_for_molecules", "git clone ehoogeboom/e3_diffusion_for_molecules"))
            )
            from configs.datasets_config import qm9_with_h
            from equivariant_diffusion.utils import remove_mean_with_mask
            from qm9 import losses as edm_losses
            from qm9.models import get_model, get_optim
            from utils import Queue, gradient_clipping  # EDM's top-level utils.py

            # main_qm9.py's arguments for the README's QM9 model, at EDM_HIDDEN x EDM_LAYERS, without charges
            self.args = argparse.Namespace(
                model="egnn_dynamics", probabilistic_model="diffusion", diffusion_steps=1000,
                diffusion_noise_schedule="polynomial_2", diffusion_noise_precision=1e-5, diffusion_loss_type="l2",
                nf=EDM_HIDDEN, n_layers=EDM_LAYERS, inv_sublayers=1, attention=True, tanh=True, norm_constant=1,
                sin_embedding=False, normalization_factor=1, aggregation_method="sum", include_charges=False,
                condition_time=True, context_node_nf=0, conditioning=[], normalize_factors=[1, 4, 10], lr=1e-4,
                ode_regularization=1e-3, augment_noise=0, data_augmentation=False,
            )  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()):  # EDM prints its whole schedule
                self.model, self.nodes_dist, _ = get_model(self.args, torch.device("cpu"), qm9_with_h, None)
            self.opt = get_optim(self.args, self.model)
            self.edm_losses, self.remove_mean, self.clip = edm_losses, remove_mean_with_mask, gradient_clipping
            self.gradnorm_queue = Queue()
            self.gradnorm_queue.add(3000)  # main_qm9.py's initial value
            self.name = f"EDM EGNN {EDM_HIDDEN} x {EDM_LAYERS} (its QM9 settings, no charges), 1,000 ancestral steps"
        else:
            raise SystemExit(f"--domain {domain!r}: anchors here are {sorted(RECIPES)}")
        self.step = 0

    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6

    def _edm_loss(self, batch) -> torch.Tensor:
        """EDM's train_epoch body on a multidiff QM9 batch, collated into EDM's dense layout."""
        import torch.nn.functional as F
        from torch_geometric.utils import to_dense_batch

        x, atom_mask = to_dense_batch(batch.pos.float(), batch.batch)
        one_hot, _ = to_dense_batch(F.one_hot(batch.atom_type.long(), 5).float(), batch.batch)
        bs, n = atom_mask.shape
        node_mask = atom_mask.float().unsqueeze(2)
        edge_mask = (atom_mask.unsqueeze(1) & atom_mask.unsqueeze(2) & ~torch.eye(n, dtype=torch.bool)).float()
        x = self.remove_mean(x, node_mask)
        h = {"categorical": one_hot, "integer": torch.zeros(0)}
        nll, reg_term, _ = self.edm_losses.compute_loss_and_nll(
            self.args, self.model, self.nodes_dist, x, h, node_mask, edge_mask.view(bs * n * n, 1), None
        )
        return nll + self.args.ode_regularization * reg_term

    def train_step(self, batch) -> float:
        self.model.train()
        if self.domain == "pointcloud":
            loss = self.model.get_loss(batch["points"], kl_weight=self.args.kl_weight, writer=None, it=self.step)
        elif self.domain == "molecule":
            loss = self._edm_loss(batch)
        else:
            loss = self.model(batch[0])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.domain == "pointcloud":
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        elif self.domain == "molecule":
            with contextlib.redirect_stdout(io.StringIO()):  # it prints every clipped step
                self.clip(self.model, self.gradnorm_queue)
        self.opt.step()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        self.model.eval()
        if self.domain == "pointcloud":
            z = torch.randn(n, self.args.latent_dim)
            return self.model.sample(z, shape[0], flexibility=self.args.flexibility)
        return self.model.sample(torch.randn(n, *shape), num_steps=50)

    def state(self, elapsed: float) -> dict:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step, "elapsed": elapsed}
        if self.domain == "molecule":
            state["gradnorm_queue"] = list(self.gradnorm_queue.items)
        return state

    def load(self, state: dict) -> float:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        if self.domain == "molecule":
            self.gradnorm_queue.items = list(state["gradnorm_queue"])
        return float(state["elapsed"])


def train(a) -> None:
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    anchor = Anchor(a.domain)
    dm = _datamodule(_compose(a.domain, a.data_root))
    ckpt, log = out / "anchor.pt", out / "loss.csv"
    elapsed = anchor.load(torch.load(ckpt, weights_only=False)) if ckpt.exists() else 0.0
    if not ckpt.exists():
        log.write_text("wall_s,step,loss\n")
    print(
        f"{anchor.name}: {anchor.params_m():.2f}M parameters, {a.minutes} min budget, from {elapsed:.0f} s, "
        f"{torch.get_num_threads()} thread(s)",
        flush=True,
    )
    budget, t0, last_save = a.minutes * 60.0, time.perf_counter() - elapsed, time.perf_counter()
    with log.open("a", newline="") as f:
        w = csv.writer(f)
        while time.perf_counter() - t0 < budget:
            for batch in dm.train_dataloader():
                loss = anchor.train_step(batch)
                now = time.perf_counter()
                w.writerow([f"{now - t0:.2f}", anchor.step, f"{loss:.6g}"])
                if not torch.isfinite(torch.tensor(loss)):
                    raise SystemExit(f"step {anchor.step}: loss {loss}; last good checkpoint {ckpt}")
                if anchor.step % 50 == 0:
                    f.flush()
                    print(f"step {anchor.step}  {(now - t0) / 60:.1f} min  loss {loss:.4f}", flush=True)
                if now - last_save > a.save_minutes * 60 or now - t0 >= budget:
                    f.flush()
                    torch.save(anchor.state(now - t0), ckpt.with_suffix(".tmp"))
                    ckpt.with_suffix(".tmp").replace(ckpt)  # never a half-written checkpoint
                    last_save = now
                if now - t0 >= budget:
                    break
    print(f"done: {anchor.step} steps in {(time.perf_counter() - t0) / 60:.1f} min -> {ckpt}", flush=True)


def _edm_checkpoint_error(anchor: Anchor, path: Path) -> float:
    """Max |eps prediction| difference between EDM's network and the checkpoint at ``path`` on 4 noisy molecules
    at t = 0.5 (EDM's dense layout against multidiff's atom rows)."""
    from multidiff.build import load_checkpoint
    from multidiff.core.state import State

    module = load_checkpoint(path, domain="molecule")
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([9, 14, 5, 18])
    b, n = len(counts), int(counts.max())
    node_mask = (torch.arange(n)[None] < counts[:, None]).float().unsqueeze(2)
    edge_mask = (node_mask @ node_mask.transpose(1, 2)) * (1 - torch.eye(n))
    z = torch.randn(b, n, 8, generator=g) * node_mask
    z[..., :3] = anchor.remove_mean(z[..., :3], node_mask)
    t = torch.full((b, 1), 0.5)
    with torch.no_grad():
        edm = anchor.model.dynamics._forward(t, z, node_mask, edge_mask.reshape(-1, 1), None)
        real = node_mask[..., 0].bool()
        ctx = {"batch": torch.repeat_interleave(torch.arange(b), counts), "num_items": b}
        sched = module.process.schedule
        sigma = sched.sigma_ve(t[:, 0])
        alpha = 1 / (1 + sigma**2).sqrt()  # VP: z = alpha x, sigma_vp = alpha sigma_ve
        x = z[real] / alpha[ctx["batch"], None]
        ours = module.model.raw(x, sigma, State(x, None, ctx))
    return float((ours - edm[real]).abs().max())


def write_edm_checkpoint(anchor: Anchor, template: Path, out: Path) -> None:
    """EDM's trained weights in a multidiff checkpoint of the same recipe (``template``: the multidiff run's own,
    for its config and layout), so that sample.py runs EDM's network with EDM's ancestral sampler."""
    from multidiff.checkpoint import read_checkpoint
    from multidiff.domains.molecule.edm_weights import egnn_state_from_edm

    ckpt = read_checkpoint(template)
    net = egnn_state_from_edm({k: v for k, v in anchor.model.dynamics.state_dict().items()}, EDM_LAYERS)
    state = ckpt["state_dict"]
    keys = {k for k in state if k.startswith("model.net.")}
    if keys != {f"model.net.{k}" for k in net}:
        raise SystemExit(f"{template}: its network is not EDM's at {EDM_HIDDEN} x {EDM_LAYERS} ({RECIPES['molecule']})")
    state.update({f"model.net.{k}": v.to(state[f"model.net.{k}"].dtype) for k, v in net.items()})
    for k in ("current_model_state", "optimizer_states", "lr_schedulers", "callbacks", "loops"):
        ckpt.pop(k, None)  # the multidiff run's training state, not EDM's
    ckpt["global_step"] = anchor.step
    tmp = out.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    err = _edm_checkpoint_error(anchor, tmp)
    if err > 1e-3:
        raise SystemExit(f"multidiff's EGNN with EDM's weights differs from EDM's network by {err:.2e}; not written")
    tmp.replace(out)
    print(f"eps prediction of the checkpoint vs EDM's own network: max abs. difference {err:.1e} (float32)")
    print(f"EDM's weights after {anchor.step} steps -> {out}: python sample.py ckpt={out} sampler=ddpm steps=1000")


def sample(a) -> None:
    from multidiff.build import build_module
    from multidiff.core.state import State

    torch.manual_seed(a.seed)
    run = Path(a.run)
    anchor = Anchor(a.domain)
    anchor.load(torch.load(_need(run / "anchor.pt", "train it first"), weights_only=False))
    if a.domain == "molecule":
        if not a.template:
            raise SystemExit("--domain molecule: --template CKPT (the multidiff run's last.ckpt) is needed")
        write_edm_checkpoint(anchor, Path(a.template), run / "edm_as_multidiff.ckpt")
        return
    cfg = _compose(a.domain, a.data_root)
    dm = _datamodule(cfg)
    domain = build_module(cfg, dm.info()).domain  # the normaliser and the file writer of multidiff's domain
    shape = (int(cfg.data.n_points), 3) if a.domain == "pointcloud" else (1, int(cfg.data.length))
    out, chunks, t0 = Path(a.out or run / "samples"), [], time.perf_counter()
    for i in range(0, a.n, a.batch):
        chunks.append(anchor.sample(min(a.batch, a.n - i), shape))
        print(f"{i + len(chunks[-1])}/{a.n} samples, {time.perf_counter() - t0:.0f} s", flush=True)
    x = torch.cat(chunks)
    if a.domain == "audio":
        x = x.clamp(-1, 1)  # ADP's sampler clamps its last step likewise
    domain.export(domain.decode(State(x, None)), out, {"anchor": anchor.name, "step": anchor.step})
    print(f"{a.n} samples in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)


def _project_curve(run: Path) -> tuple[list[float], list[float]]:
    """(minutes, train/loss) of a train.py run; steps mapped to wall time linearly between its start (the first
    line of its train.log) and its last metrics written (the step rate of a run on its own core is constant)."""
    import datetime as dt

    def stamp(line: str) -> dt.datetime:
        return dt.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")

    lines = [s for s in (run / "train.log").read_text().splitlines() if s.startswith("[")]
    metrics = run / "csv" / "metrics.csv"
    end = max(stamp(lines[-1]), dt.datetime.fromtimestamp(metrics.stat().st_mtime))
    minutes_total = (end - stamp(lines[0])).total_seconds() / 60
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    last = max(int(r["step"]) for r in rows)
    return [int(r["step"]) / last * minutes_total for r in rows], [float(r["train/loss"]) for r in rows]


def plot(a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(csv.DictReader((Path(a.anchor) / "loss.csv").open()))
    am, al = np.array([float(r["wall_s"]) / 60 for r in rows]), np.array([float(r["loss"]) for r in rows])
    pm, pl = map(np.array, _project_curve(Path(a.project)))

    def smooth(y: np.ndarray, k: int) -> np.ndarray:
        k = max(1, min(k, len(y)))
        return np.convolve(y, np.ones(k) / k, mode="valid")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (m, y, who) in zip(axes, [(am, al, "anchor (its own loss)"), (pm, pl, "multidiff (train/loss)")]):
        k = max(1, len(y) // 100)
        ax.plot(m[k - 1 :], smooth(y, k), lw=1)
        ax.set(xlabel="wall-clock minutes", ylabel="training loss", title=who, yscale="log")
        ax.grid(alpha=0.3)
    if a.domain == "molecule":  # EDM logs its negative log-likelihood bound, not only its l2 term
        axes[0].set_title("anchor (its objective: l2 term + prior KL - log p(N))", fontsize=10)
    fig.suptitle(f"{a.domain}: equal wall-clock budget, one thread each, run side by side (CPU budget)")
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"anchor {len(al)} steps, multidiff {len(pl)} logged steps -> {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "sample", "plot"):
        s = sub.add_parser(name)
        s.add_argument("--domain", choices=sorted(RECIPES), required=True)
        s.add_argument("--data-root", default=None, help="paths.data_dir (default: MULTIDIFF_DATA / the project's)")
        s.add_argument("--seed", type=int, default=0)
    sub.choices["train"].add_argument("--minutes", type=float, default=30.0)
    sub.choices["train"].add_argument("--save-minutes", type=float, default=5.0)
    sub.choices["train"].add_argument("--out", required=True)
    sub.choices["sample"].add_argument("--run", required=True)
    sub.choices["sample"].add_argument("--n", type=int, default=128)
    sub.choices["sample"].add_argument("--batch", type=int, default=16)
    sub.choices["sample"].add_argument("--out", default=None, help="default: RUN/samples")
    sub.choices["sample"].add_argument(
        "--template", default=None, help="molecule: the multidiff run's checkpoint whose config and layout it takes"
    )
    sub.choices["plot"].add_argument("--anchor", required=True)
    sub.choices["plot"].add_argument("--project", required=True)
    sub.choices["plot"].add_argument("--out", required=True)
    sub.choices["train"].add_argument(
        "--threads", type=int, default=1, help="torch threads (the multidiff side's threads=K beside it)"
    )
    sub.choices["sample"].add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args()
    if getattr(a, "threads", None) is not None:
        if a.threads < 1:
            p.error(f"--threads {a.threads}: give a positive count")
        torch.set_num_threads(a.threads)  # fixed, so neither side takes the cores the other runs on
    {"train": train, "sample": sample, "plot": plot}[a.cmd](a)


if __name__ == "__main__":
    main()
