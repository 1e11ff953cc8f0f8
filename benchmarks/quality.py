"""Sample quality of a checkpoint over a grid of samplers x step counts, as a table.

Each cell runs ``sample.py`` (same seed, same number of items) and ``evaluate.py`` on the result,
and records the wall time per item; the table (markdown) and every cell's full metrics (JSON) go
to ``--out``. Works for every domain: the checkpoint names it.

    python benchmarks/quality.py --ckpt runs/audio/checkpoints/last.ckpt --samplers dpmpp_2m ddim \\
        --steps 10 20 50 200 --n 100 --out quality/audio --white-noise --real-subset
    python benchmarks/quality.py --ckpt runs/mol/checkpoints/last.ckpt --cells dpmpp_2m:50 ddpm:1000 --n 128
    python benchmarks/quality.py --ckpt runs/pc/checkpoints/last.ckpt --cells dpmpp_2m:50 ddpm:1000 \\
        --n 128 --eval max_shapes=128
    python benchmarks/quality.py --ckpt runs/mol/checkpoints/last.ckpt --samplers all --nfe 10 20 50 --n 128
    python benchmarks/quality.py --pretrained fsdd-digits --cells dpmpp_2m:50 --digit all --guidance 2 --n 100

``--nfe`` gives each sampler a budget of network evaluations per item instead of a step count (the most steps
whose evaluations fit: Heun's second-order steps and Restart's restarts count) and draws ``quality_vs_nfe.png``.

``--eval KEY=VALUE`` passes options to the domain's evaluation (e.g. ``strain=false``).
Audio only: ``--white-noise`` adds a row for N clips of Gaussian noise (sigma 0.1) and
``--real-subset`` one for N real test clips, so that FID of the same sample size sits beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import multidiff.env  # noqa: F401  (before torch)

import torch
import yaml
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evaluate as evaluate_script  # noqa: E402
import sample as sample_script  # noqa: E402
from multidiff.build import model_folder  # noqa: E402
from multidiff.checkpoint import (  # noqa: E402
    CHECKPOINT_KEY,
    check_trusted,
    checkpoint_meta,
    evaluation_data_config,
    read_checkpoint,
)
from multidiff.config import compose_run, sampler_config  # noqa: E402
from multidiff.core.samplers import SAMPLERS  # noqa: E402
from multidiff.sampling import build_sampler  # noqa: E402

# metric (dotted path into evaluate's JSON) -> column title, per domain
COLUMNS = {
    "audio": {
        "fid.samples": "FID",
        "is.samples": "IS",
        "mis.samples": "mIS",
        "am.samples": "AM",
        "accuracy.samples": "acc.",
    },
    "molecule": {
        "atom_stable": "atom stab.",
        "mol_stable": "mol. stab.",
        "validity": "valid",
        "validity_connected": "valid, connected",
        "valid_unique": "valid x uniq.",
        "novelty": "novel",
        "mmff_strain_median": "strain (med.)",
    },
    "pointcloud": {
        "1-NNA-CD": "1-NNA-CD",
        "1-NNA-EMD": "1-NNA-EMD",
        "MMD-CD": "MMD-CD",
        "MMD-EMD": "MMD-EMD",
        "COV-CD": "COV-CD",
        "COV-EMD": "COV-EMD",
        "JSD": "JSD",
    },
}


def lookup(metrics: dict, path: str):
    value = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 10:
            return f"{value:.3f}"
        return f"{value:.3g}" if abs(value) >= 10 else f"{value:.2e}"
    return str(value)


# the metrics drawn against network evaluations, per domain
PLOTTED = {
    "audio": ("fid.samples", "is.samples"),
    "molecule": ("atom_stable", "valid_unique"),  # validity alone rewards collapsed, fragmented samples
    "pointcloud": ("1-NNA-CD", "COV-CD"),
}


def steps_within(name: str, budget: int) -> int | None:
    """The most steps of sampler ``name`` (with its config's options) using at most ``budget`` evaluations."""
    best = None
    for steps in range(1, budget + 1):
        if build_sampler(sampler_config(name), steps=steps).evaluations() > budget:
            break
        best = steps
    return best


def parse_cells(args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.nfe:
        # all: the solvers (a student's one sampler is asked for by name: --samplers consistency --nfe 1 2 4)
        names = [n for n in SAMPLERS if n != "consistency"] if args.samplers == ["all"] else args.samplers
        cells, skipped = [], []
        for name in names:
            for budget in args.nfe:
                steps = steps_within(name, budget)
                # a sampler that cannot run meaningfully within the budget (Restart's restarts alone need 40
                # evaluations: one plain step is all that fits in 10) is left out of that budget
                if steps is None or build_sampler(sampler_config(name), steps=steps).evaluations() < budget / 2:
                    skipped.append(f"{name} at {budget}")
                else:
                    cells.append((name, steps))
        if skipped:
            print(f"left out (the sampler needs more evaluations): {', '.join(skipped)}", flush=True)
        return list(dict.fromkeys(cells))  # once each
    if args.cells:
        cells = []
        for cell in args.cells:
            name, _, steps = cell.partition(":")
            if not steps.isdigit():
                raise SystemExit(f"--cells: expected SAMPLER:STEPS such as dpmpp_2m:50, got {cell!r}")
            cells.append((name, int(steps)))
        return cells
    return [(s, k) for s in args.samplers for k in args.steps]


def evaluate_dir(domain: str, data_cfg: dict, samples: Path, options: dict, run_dir: Path) -> dict:
    cfg = compose_run("evaluate", [f"domain={domain}", f"samples={samples}"], run_dir)
    with open_dict(cfg):
        cfg.data = OmegaConf.create(data_cfg)  # the data the model was trained on
        cfg.options = OmegaConf.create(options)
    return evaluate_script.evaluate(cfg)


def audio_baselines(args: argparse.Namespace, data_cfg: dict, out: Path) -> dict[str, Path]:
    from multidiff.domains.audio.data import fsdd_files
    from multidiff.domains.audio.io import write_wav

    rows = {}
    length, rate = int(data_cfg["length"]), int(data_cfg["sample_rate"])
    if args.white_noise:
        folder = out / "white_noise"
        g = torch.Generator().manual_seed(args.seed)
        for i in range(args.n):
            write_wav(folder / f"noise_{i:04d}.wav", 0.1 * torch.randn(1, length, generator=g), rate)
        rows[f"white noise (sigma 0.1, {args.n} clips)"] = folder
    if args.real_subset:
        folder = out / "real_test_subset"
        folder.mkdir(parents=True, exist_ok=True)
        test = fsdd_files(data_cfg["root"])["test"]
        for path, _ in test[:: max(1, len(test) // args.n)][: args.n]:
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
        rows[f"real test clips ({args.n})"] = folder
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=Path, help="a training checkpoint")
    source.add_argument("--pretrained", help="or a shipped model's name or an exported model folder (sample.py's)")
    p.add_argument("--samplers", nargs="+", default=["dpmpp_2m", "ddim"])
    p.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50, 200])
    p.add_argument("--cells", nargs="+", help="explicit SAMPLER:STEPS cells instead of the grid")
    p.add_argument("--nfe", nargs="+", type=int, help="budgets of network evaluations per item instead of steps")
    p.add_argument("--replot", action="store_true", help="only redraw quality_vs_nfe.png from --out's results.json")
    p.add_argument("--spacing", default=None, help="time | karras | log_snr (default: the sampler config's)")
    p.add_argument("--n", type=int, default=100, help="items per cell")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--weights", default="ema", choices=["ema", "current"], help="see sample.py weights=")
    p.add_argument("--digit", help="audio: this digit, or 'all' for n / 10 of each (default: unconditional)")
    p.add_argument("--eval", nargs="*", default=[], help="evaluation options KEY=VALUE")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--white-noise", action="store_true")
    p.add_argument("--real-subset", action="store_true")
    p.add_argument("--out", type=Path, default=Path("quality"))
    p.add_argument("--trust-targets", nargs="*", default=[], help="see sample.py trust_targets=")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.ckpt is not None:
        meta, model = checkpoint_meta(read_checkpoint(args.ckpt), args.ckpt), f"ckpt={args.ckpt.resolve()}"
    else:
        folder = model_folder(args.pretrained)
        stored = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
        meta = checkpoint_meta({CHECKPOINT_KEY: stored, "state_dict": {}}, folder)  # (the weights: sample.py's)
        model = f"pretrained={args.pretrained}"
    source = model.split("=", 1)[1]
    if args.replot:
        cells = set(parse_cells(args))
        rows = json.loads((args.out / "results.json").read_text())
        rows = [r for r in rows if (r.get("sampler"), r.get("steps")) in cells]
        plot_against_nfe(rows, meta.domain, args.out / "quality_vs_nfe.png", f"{source}, {args.n} items per point")
        return
    # the data config is instantiated for evaluation: the same trust check as sample.py, and never a download
    check_trusted(meta.config, source, args.trust_targets)
    domain, data_cfg = meta.domain, evaluation_data_config(meta.config)
    options = {"progress": False}
    for item in args.eval:
        key, _, value = item.partition("=")
        options[key] = yaml_value(value)
    args.out.mkdir(parents=True, exist_ok=True)
    columns = COLUMNS[domain]
    rows: list[dict] = []

    def record(label: str, samples: Path, seconds_per_item: float | None, extra: dict) -> None:
        metrics = evaluate_dir(domain, data_cfg, samples, options, args.out / "_hydra")
        row = {"row": label, "s_per_item": seconds_per_item, **extra, "metrics": metrics}
        rows.append(row)
        print(
            json.dumps(
                {"row": label, "s_per_item": seconds_per_item, **{c: lookup(metrics, k) for k, c in columns.items()}}
            ),
            flush=True,
        )
        (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))

    if domain == "audio":
        for label, folder in audio_baselines(args, data_cfg, args.out).items():
            record(label, folder, None, {})

    # one sample.py call per requested class (--digit all: every class, n / classes each) or one unconditional
    classes = meta.domain_info.get("class_names") or []
    digits = classes if args.digit == "all" else [args.digit]
    # classifier-free guidance calls the network twice per evaluation, unless the student takes the scale as input
    guided_student = (meta.config.get("distill") or {}).get("guidance") is not None
    calls = 2 if args.guidance != 1.0 and args.digit is not None and not guided_student else 1
    per_call = args.n // len(digits)
    for name, steps in parse_cells(args):
        suffix = "" if args.digit is None else f"_digit-{args.digit}_g{args.guidance:g}"
        cell_dir = args.out / f"{name}_{steps}{suffix}"
        t0 = time.perf_counter()
        for digit in digits:
            # one folder per request (sample.py refuses a second request into a folder), the clips then moved into
            # the cell's folder: their names hold the class, which the metrics read
            part = cell_dir / "requests" / f"digit_{digit}"
            overrides = [
                model,
                f"n={per_call}",
                f"sampler={name}",
                f"steps={steps}",
                f"seed={args.seed}",
                f"batch_size={args.batch_size}",
                f"guidance={args.guidance}",
                *([f"weights={args.weights}"] if args.ckpt is not None else []),
                f"trust_targets=[{','.join(args.trust_targets)}]",
                "device=cpu" if not torch.cuda.is_available() else "device=cuda",
                f"out={part}",
            ]
            if args.spacing:
                overrides.append(f"spacing={args.spacing}")
            if digit is not None:
                overrides.append(f"+condition.digit={digit}")
            sample_script.sample(compose_run("sample", overrides, args.out / "_hydra"))
            for item in part.iterdir():  # clips, or a molecule/shape run's files (one request)
                if item.is_file():
                    item.replace(cell_dir / item.name)
        seconds = (time.perf_counter() - t0) / (per_call * len(digits))
        nfe = build_sampler(sampler_config(name), steps=steps).evaluations() * calls
        label = f"{name}, {steps} steps ({nfe} evaluations)"
        if args.digit is not None:
            label += f", digit {args.digit}, guidance {args.guidance:g}"
        record(label, cell_dir, seconds, {"sampler": name, "steps": steps, "nfe": nfe})

    if domain == "audio" and rows:
        ceiling = rows[0]["metrics"]
        rows.append(
            {
                "row": "real test split (ceiling)",
                "s_per_item": None,
                "metrics": {
                    k.split(".")[0]: {"samples": lookup(ceiling, k.replace("samples", "real_test"))} for k in columns
                },
            }
        )
    header = ["", "s/item", *columns.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["row"], fmt(row["s_per_item"]), *(fmt(lookup(row["metrics"], k)) for k in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print(table)
    if args.nfe:
        plot_against_nfe(rows, domain, args.out / "quality_vs_nfe.png", f"{source}, {args.n} items per point")


def plot_against_nfe(rows: list[dict], domain: str, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    keys = PLOTTED[domain]
    fig = Figure(figsize=(5.5 * len(keys), 4))
    axes = fig.subplots(1, len(keys))
    samplers = list(dict.fromkeys(r["sampler"] for r in rows if "sampler" in r))
    for ax, key in zip(axes, keys):
        for name in samplers:
            pts = sorted((r["nfe"], lookup(r["metrics"], key)) for r in rows if r.get("sampler") == name)
            pts = [(n, v) for n, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=name, lw=1, ms=4)
        ax.set(xscale="log", xlabel="network evaluations per item", ylabel=COLUMNS[domain][key])
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def yaml_value(text: str):
    """``--eval strain=false max_shapes=128``: YAML scalars, as on a Hydra command line."""
    return yaml.safe_load(text) if text else None


if __name__ == "__main__":
    main()
