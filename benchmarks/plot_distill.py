"""A metric against network evaluations: a distilled student beside its teacher's solvers (docs/distill_fsdd.png,
docs/distill_airplane.png), from the JSON that docs/distillation.md's quality runs were gathered into.

    python benchmarks/plot_distill.py --results docs/distill_fsdd.json --out docs/distill_fsdd.png
    python benchmarks/plot_distill.py --results docs/distill_airplane.json --metric 1-NNA-CD \
        --title "ShapeNet airplanes: distilled student vs the teacher's solvers" --out docs/distill_airplane.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="docs/distill_fsdd.json")
    p.add_argument("--out", default="docs/distill_fsdd.png")
    p.add_argument("--metric", default="FID", help="a key of each cell")
    p.add_argument("--higher-better", action="store_true", help="the metric is better higher (e.g. atom_stable)")
    p.add_argument("--title", default="Spoken digits: distilled student vs the teacher's solvers")
    args = p.parse_args()
    key = args.metric
    d = json.loads(Path(args.results).read_text())
    cells = d["cells"]
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    for name in sorted({c["sampler"] for c in cells if c["sampler"] != "consistency" and c["nfe"] <= 4}):
        pts = sorted((c["nfe"], c[key]) for c in cells if c["sampler"] == name and c["nfe"] <= 4)
        ax.plot(*zip(*pts), marker="o", lw=1, alpha=0.55, label=f"teacher, {name}")
    # each student's cells: a cell's "student" names it (e.g. "multistep, 4 segments"); one point is a star
    students = sorted({c.get("student", "consistency") for c in cells if c["sampler"] == "consistency"})
    for name, color in zip(students, ["black", "black", "dimgray"]):
        pts = sorted(
            (c["nfe"], c[key])
            for c in cells
            if c["sampler"] == "consistency" and c.get("student", "consistency") == name
        )
        one = len(pts) == 1
        ax.plot(
            *zip(*pts), marker="*" if one else "s", ms=14 if one else 6, lw=2.5, color=color, label=f"student, {name}"
        )
    t50 = [c[key] for c in cells if c["nfe"] == 50][0]
    ax.axhline(t50, ls="--", color="tab:red", label=f"teacher, dpmpp_2m 50 steps ({key} {t50:.3g})")
    if "real_test_FID" in d and key == "FID":
        ax.axhline(d["real_test_FID"], ls=":", color="gray", label=f"real test clips (FID {d['real_test_FID']})")
    ax.set_xlabel("network evaluations per item")
    ax.set_ylabel(f"{key} ({'higher' if args.higher_better else 'lower'} is better)")
    if key == "FID":
        ax.set_yscale("log")
    ax.set_xticks([1, 2, 3, 4])
    ax.set_title(args.title)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: it hides no line
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)


if __name__ == "__main__":
    main()
