"""Latent diffusion figures: reconstruction quality of a trained autoencoder, and the cost of latent against
data-space diffusion.

python benchmarks/bench_latent.py recon --ckpt runs/ae_audio/checkpoints/last.ckpt [--n 300]
    audio: the digit classifier's accuracy and FID of reconstructed FSDD test clips next to the real ones, SI-SDR;
    point clouds: Chamfer and EMD of reconstructed test shapes; molecules: element and charge accuracy, coordinate
    RMSD on the test split, and the trained encoder's and decoder's E(3) equivariance error.
python benchmarks/bench_latent.py speed --ckpt AE.ckpt [--data-args ...] [--latent-args ...] [--batch 16]
    seconds per item at one batch size: a training step (encoding included, and on its own), sampling 50 steps
    (decoding included, and on its own), and each process's peak resident memory; data and latent models built as
    train.py builds them (latent scale measured on training batches), each in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.build import load_autoencoder  # noqa: E402
from multidiff.checkpoint import evaluation_data_config  # noqa: E402
from multidiff.core.state import State  # noqa: E402
from multidiff.sampling import named_request  # noqa: E402


def _batches(module, data_root: str | None, n: int, split: str = "test"):
    from hydra.utils import instantiate

    cfg = evaluation_data_config(module.run_config)
    if data_root:
        cfg["root"] = data_root
    dm = instantiate(cfg)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.test_dataloader() if split == "test" and hasattr(dm, "test_dataloader") else dm.val_dataloader()
    seen = 0
    for batch in loader:
        state = module.domain.unpack(batch)
        yield state
        seen += module.domain.space.num_items(state.x, state.ctx)
        if seen >= n:
            return


def si_sdr(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per clip (Le Roux et al. 2019), both zero-mean."""
    ref, est = ref - ref.mean(-1, keepdim=True), est - est.mean(-1, keepdim=True)
    target = (est * ref).sum(-1, keepdim=True) / (ref**2).sum(-1, keepdim=True).clamp(min=1e-12) * ref
    return 10 * torch.log10((target**2).sum(-1).clamp(min=1e-12) / ((est - target) ** 2).sum(-1).clamp(min=1e-12))


@torch.no_grad()
def recon_audio(module, a) -> dict:
    from multidiff.domains.audio.data import _normalize, fsdd_files
    from multidiff.domains.audio.io import fix_length, load_clip, write_wav
    from multidiff.domains.audio.metrics import evaluate_folder

    rate, length = int(module.domain.info["sample_rate"]), int(module.domain.info["length"])
    a.data_root = Path(a.data_root or evaluation_data_config(module.run_config)["root"])
    test = fsdd_files(a.data_root)["test"]
    test = test[:: max(1, len(test) // a.n)][: a.n]
    clips = torch.stack([fix_length(load_clip(p, rate, length)[..., :length], length) for p, _ in test])
    clips = _normalize(clips, module.domain.info.get("normalize", "peak"))
    recon = torch.cat([module.reconstruct(State(c)).x for c in clips.split(32)])
    folders = {"real": a.out / "real", "reconstructed": a.out / "reconstructed"}
    for i, ((_, digit), x, y) in enumerate(zip(test, clips, recon)):
        write_wav(folders["real"] / f"{digit}_clip_{i:04d}.wav", x, rate)
        write_wav(folders["reconstructed"] / f"{digit}_recon_{i:04d}.wav", y.clamp(-1, 1), rate)
    from multidiff.domains.audio.export import plot_clips

    picks = [i for i in range(0, len(test), max(1, len(test) // 4))][:4]
    pairs = [c for i in picks for c in (clips[i], recon[i].clamp(-1, 1))]
    titles = [t for i in picks for t in (f"digit {test[i][1]}: real", "reconstructed")]
    plot_clips(pairs, a.out / "reconstructions.png", rate, titles, max_clips=8)
    out = {"clips": len(test), "si_sdr_db": float(si_sdr(clips[:, 0], recon[:, 0].clamp(-1, 1)).mean())}
    for name, folder in folders.items():
        m = evaluate_folder(folder, data_root=a.data_root, progress=False)
        out[name] = {"fid": m["fid"]["samples"], "accuracy": m["accuracy"]["samples"], "is": m["is"]["samples"]}
    return out


@torch.no_grad()
def recon_pointcloud(module, a) -> dict:
    from multidiff.domains.pointcloud.chamfer import chamfer
    from multidiff.domains.pointcloud.emd import emd_exact

    cds, emds = [], []
    for state in _batches(module, a.data_root, a.n):
        real = [d["points"] for d in module.domain.decode(state)]
        rec = [d["points"] for d in module.domain.decode(module.reconstruct(state))]
        for x, y in zip(real, rec):
            x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
            cds.append(float(chamfer(x[None], y[None])[0]))
            emds.append(emd_exact(x, y) if a.emd else float("nan"))
    return {"shapes": len(cds), "chamfer": statistics.mean(cds), "emd": statistics.mean(emds), "units": "data"}


@torch.no_grad()
def recon_molecule(module, a) -> dict:
    ae, dom = module.autoencoder, module.domain
    k = len(dom.elements)
    hits, total, charge_hits, rmsd, eq = 0, 0, 0, [], []
    for state in _batches(module, a.data_root, a.n):
        y = module.reconstruct(state).x
        x = state.x
        hits += int((y[:, 3 : 3 + k].argmax(1) == x[:, 3 : 3 + k].argmax(1)).sum())
        if dom.include_charges:
            pred = torch.round(y[:, 3 + k] / dom.charge_scale)
            charge_hits += int((pred == torch.round(x[:, 3 + k] / dom.charge_scale)).sum())
        total += len(x)
        sq = ((y[:, :3] - x[:, :3]) ** 2).sum(1)
        n, b = int(state.ctx["num_items"]), state.ctx["batch"]
        per = torch.zeros(n).index_add_(0, b, sq) / torch.bincount(b, minlength=n)
        rmsd += per.sqrt().tolist()
        if not eq:  # once, in float64, on the first batch
            eq.append(_equivariance_error(ae.double(), State(x.double(), None, state.ctx)))
            ae.float()
    return {
        "molecules": len(rmsd),
        "element_accuracy": hits / total,
        "charge_accuracy": charge_hits / total if dom.include_charges else None,
        "rmsd_angstrom": statistics.mean(rmsd),
        "equivariance_error": max(eq),
    }


def _equivariance_error(ae, state: State) -> float:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rot = q * torch.sign(torch.det(q))
    moved = State(torch.cat([state.x[:, :3] @ rot.T, state.x[:, 3:]], 1), None, state.ctx)
    z, zm = ae.encode(state).x, ae.encode(moved).x
    y, ym = ae.decode(State(z, None, state.ctx)).x, ae.decode(State(zm, None, state.ctx)).x
    errors = [zm[:, :3] - z[:, :3] @ rot.T, zm[:, 3:] - z[:, 3:], ym[:, :3] - y[:, :3] @ rot.T, ym[:, 3:] - y[:, 3:]]
    return max(float(e.abs().max()) for e in errors)


def recon(a) -> None:
    module = load_autoencoder(a.ckpt)
    run = {"audio": recon_audio, "pointcloud": recon_pointcloud, "molecule": recon_molecule}[module.domain.name]
    result = {"ckpt": str(a.ckpt), "domain": module.domain.name, **run(module, a)}
    print(json.dumps(result, indent=1, default=str))


# -- speed ------------------------------------------------------------------------------------------------------
def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed_one(a) -> None:
    """One model (data or latent), measured in this process; prints JSON."""
    import tempfile

    from hydra.utils import instantiate

    import train
    from multidiff.config import compose_run

    overrides = [f"domain={a.domain}", *a.overrides, f"data.batch_size={a.batch}"]
    cfg = compose_run("train", overrides, Path(tempfile.mkdtemp(prefix="bench_latent_")))
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    module = train.build_stage(cfg, dm)
    torch.manual_seed(0)  # the same batch on both sides (measuring the latent scale drew from the loader)
    batch = next(iter(dm.train_dataloader()))
    dom = module.domain
    latent = hasattr(dom, "autoencoder")
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    state = dom.unpack(batch)
    n = dom.space.num_items(state.x, state.ctx)

    def step() -> None:
        s = dom.unpack(batch)
        loss = module.diffusion_loss(s)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    out = {"model": "latent" if latent else "data", "items": n, "net": type(module.model.net).__name__}
    out["net_params_m"] = sum(p.numel() for p in module.model.net.parameters()) / 1e6
    out["train_step_s_per_item"] = _median_time(step, a.repeats) / n
    if latent:
        data_state = dom.data.unpack(batch)
        out["encode_s_per_item"] = _median_time(lambda: dom.encode(data_state), a.repeats) / n
    module.eval()
    gen = lambda: module.generate(n, named_request(steps=a.steps), progress=False)  # noqa: E731
    sampled = gen()
    out["sample_s_per_item"] = _median_time(lambda: dom.decode(gen()), max(1, a.repeats // 2)) / n
    if latent:
        out["decode_s_per_item"] = _median_time(lambda: dom.to_data(sampled), a.repeats) / n
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(out))


def speed(a) -> None:
    rows = []
    for model, extra in (("data", a.data_args), ("latent", a.latent_args)):
        args = [sys.executable, __file__, "speed-one", "--domain", a.domain, "--batch", str(a.batch)]
        args += ["--steps", str(a.steps), "--repeats", str(a.repeats), "--threads", str(a.threads)]
        args += ["--overrides", *extra] if model == "data" else ["--overrides", f"latent={a.ckpt}", *extra]
        # glibc's default trim/mmap thresholds make repeated large allocations page-fault at random (sampling time
        # varied by 1.5x for the same work); fixed thresholds on both sides
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{model} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        rows.append(json.loads(line[0][7:]))
        print(json.dumps(rows[-1]))
    d, lat = rows
    print(
        f"\n| {a.domain}, batch {a.batch}, {a.steps} steps | net (M params) | train s/item | encode s/item "
        "| sample s/item | decode s/item | peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        enc, dec = r.get("encode_s_per_item"), r.get("decode_s_per_item")
        print(
            f"| {r['model']} | {r['net']} ({r['net_params_m']:.1f}) | {r['train_step_s_per_item']:.4f} | "
            f"{'-' if enc is None else f'{enc:.4f}'} | {r['sample_s_per_item']:.3f} | "
            f"{'-' if dec is None else f'{dec:.4f}'} | {r['peak_rss_gib']:.2f} |"
        )
    print(
        f"\nlatent is {d['train_step_s_per_item'] / lat['train_step_s_per_item']:.2f}x faster to train and "
        f"{d['sample_s_per_item'] / lat['sample_s_per_item']:.2f}x faster to sample per item"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recon")
    r.add_argument("--ckpt", type=Path, required=True)
    r.add_argument("--n", type=int, default=300)
    r.add_argument("--data-root", default=None, help="the data's root (default: the checkpoint's)")
    r.add_argument("--no-emd", dest="emd", action="store_false", help="point clouds: Chamfer only")
    r.add_argument("--out", type=Path, default=Path("quality/latent_recon"))
    for name in ("speed", "speed-one"):
        s = sub.add_parser(name)
        s.add_argument("--domain", required=True, choices=("audio", "pointcloud", "molecule"))
        s.add_argument("--ckpt", type=Path, help="the stage-one checkpoint")
        s.add_argument("--batch", type=int, default=16)
        s.add_argument("--steps", type=int, default=50)
        s.add_argument("--repeats", type=int, default=5)
        s.add_argument("--threads", type=int, default=torch.get_num_threads())
        s.add_argument("--overrides", nargs="*", default=[])
        s.add_argument("--data-args", nargs="*", default=[], help="train.py overrides of the data-space model")
        s.add_argument("--latent-args", nargs="*", default=[], help="train.py overrides of the latent model")
    a = ap.parse_args()
    if a.cmd == "recon":
        recon(a)
    elif a.cmd == "speed":
        speed(a)
    else:
        torch.set_num_threads(a.threads)
        speed_one(a)


if __name__ == "__main__":
    main()
