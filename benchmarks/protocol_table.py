"""Both protocols side by side (EDM's and the corrected one of Nikitin et al. 2025) for reference data and for
sample files: one row per (source, bonds), written as JSON and a Markdown table.

    python benchmarks/protocol_table.py --qm9-root data/qm9 --drugs-root data/drugs --n 1000 \
        --samples "points (30 min CPU)=runs/eb_mol_points/quality/euler_ancestral_50/samples.sdf" \
        --xtb 100 --out docs/protocols
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from multidiff.domains.molecule import DrugsDataModule, MoleculeDomain, QM9DataModule
from multidiff.domains.molecule.export import write_sdf
from multidiff.domains.molecule.graphs import order_matrix
from multidiff.domains.molecule.reference import molecules_from_arrays

COLUMNS = {
    "atom_stable": "atom stab. (EDM)",
    "mol_stable": "mol. stab. (EDM)",
    "validity": "valid (EDM, largest fragment)",
    "corrected_atom_stable": "atom stab. (corrected)",
    "corrected_mol_stable": "mol. stab. (corrected)",
    "corrected_valid_connected": "valid & connected",
    "xtb_relaxation_median": "median xTB relax. (kcal/mol)",
    "pb_valid": "PB-valid",
}


def data_file(dm, split: str, n: int, path: Path) -> Path:
    """The first ``n`` molecules of a split that have a bond graph, as an SDF carrying their bonds."""
    arrays = dm.load()
    index = [k for k in arrays["splits"][split] if arrays["has_graph"][k]][:n]
    molecules = molecules_from_arrays(arrays, np.asarray(index))
    for m, k in zip(molecules, index):
        m.bonds = order_matrix(arrays["bonds"][arrays["bond_ptr"][k] : arrays["bond_ptr"][k + 1]], len(m))
        m.properties["bond_source"] = "model"  # read back as the file's bonds
    return write_sdf(molecules, path)


def score(domain: MoleculeDomain, path: Path, bonds: str, xtb: int) -> dict:
    start = time.perf_counter()
    metrics = domain.evaluate(
        path, protocol="corrected", bonds=bonds, novelty=False, strain=False, xtb_max_molecules=xtb,
        posebusters_max_molecules=xtb,
    )  # fmt: skip
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qm9-root", default="data/qm9")
    parser.add_argument("--drugs-root", default=None, help="also the drug-like stand-in (built on first use)")
    parser.add_argument("--n", type=int, default=1000, help="reference molecules per data set")
    parser.add_argument("--samples", nargs="*", default=[], help="LABEL=PATH of generated SDF files")
    parser.add_argument("--xtb", type=int, default=100, help="molecules relaxed with GFN2-xTB and busted")
    parser.add_argument("--out", default="runs/protocols")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def scorer(dm) -> MoleculeDomain:  # scored against its own data (vocabulary, reference statistics)
        domain = MoleculeDomain()
        domain.bind(dm.info())
        return domain

    qm9 = QM9DataModule(root=args.qm9_root)
    rows = []
    sources = [
        ("QM9 test data", data_file(qm9, "test", args.n, out / "qm9_test.sdf"), scorer(qm9), ("file", "perceived"))
    ]
    if args.drugs_root:
        drugs = DrugsDataModule(root=args.drugs_root)
        drug_file = data_file(drugs, "test", args.n, out / "drugs_test.sdf")
        sources.append(("drug-like stand-in, test", drug_file, scorer(drugs), ("file", "perceived")))
    for item in args.samples:  # models of QM9
        label, _, path = item.partition("=")
        sources.append((label, Path(path), scorer(qm9), ("auto",)))
    for label, path, domain, bond_modes in sources:
        for bonds in bond_modes:
            metrics = score(domain, path, bonds, args.xtb)
            rows.append({"source": label, "file": str(path), **metrics})
            print(f"{label} ({metrics['bonds']} bonds): " + ", ".join(f"{k}={metrics.get(k)}" for k in COLUMNS))
    (out / "protocols.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    lines = ["| source | bonds | n | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for r in rows:
        cells = [
            "-" if r.get(k) is None else (f"{r[k]:.2f}" if k == "xtb_relaxation_median" else f"{100 * r[k]:.1f} %")
            for k in COLUMNS
        ]
        lines.append(f"| {r['source']} | {r['bonds']} | {r['num_molecules']} | " + " | ".join(cells) + " |")
    (out / "protocols.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
