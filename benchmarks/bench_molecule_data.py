"""Speed of molecule data and metrics: reading + caching N molecules from SDF (data=sdf), and the metrics of
M molecules (EDM's and the corrected protocol's, without xTB and PoseBusters). The SDF is written once from
QM9 (its molecules with bond graphs and formal charges, properties in a CSV keyed by record name) and kept in
--workdir.

    python benchmarks/bench_molecule_data.py --n 100000 --metrics 10000 --out docs/bench_molecule_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from rdkit import Chem

from multidiff.domains.molecule import MoleculeFilesDataModule, QM9DataModule
from multidiff.domains.molecule.graphs import order_matrix
from multidiff.domains.molecule.metrics import MoleculeAnalysis, analysis_metrics
from multidiff.domains.molecule.protocol import corrected_metrics
from multidiff.domains.molecule.structures import Molecule, to_rdkit


def qm9_molecules(root: Path, n: int) -> list[Molecule]:
    dm = QM9DataModule(root=root, progress=True)
    arrays = dm.load()
    ptr, bptr, elements = arrays["ptr"], arrays["bond_ptr"], list(arrays["elements"])
    chosen = np.flatnonzero(arrays["has_graph"])[:n]
    names = list(arrays["prop_names"])
    out = []
    for m in chosen:
        a, b = int(ptr[m]), int(ptr[m + 1])
        rows = arrays["bonds"][int(bptr[m]) : int(bptr[m + 1])]
        props = {p: float(arrays["props"][m, names.index(p)]) for p in ("gap", "alpha")}
        out.append(
            Molecule(
                arrays["pos"][a:b],
                [elements[t] for t in arrays["types"][a:b]],
                arrays["charges"][a:b],
                props,
                name=f"qm9_{m}",
                bonds=order_matrix(rows, b - a),
            )
        )
    return out


def write_inputs(molecules: list[Molecule], folder: Path) -> tuple[Path, Path]:
    sdf, csv = folder / f"qm9_{len(molecules)}.sdf", folder / f"qm9_{len(molecules)}.csv"
    if not sdf.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with Chem.SDWriter(str(sdf.with_suffix(".tmp"))) as writer:
            for m in molecules:
                rd = to_rdkit(m, m.bonds, with_charges=True)
                rd.UpdatePropertyCache(strict=False)
                rd.SetProp("_Name", m.name)
                writer.write(rd)
        lines = ["name,gap,alpha"] + [f"{m.name},{m.properties['gap']},{m.properties['alpha']}" for m in molecules]
        csv.write_text("\n".join(lines) + "\n")
        sdf.with_suffix(".tmp").rename(sdf)
    return sdf, csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="molecules read from SDF")
    parser.add_argument("--metrics", type=int, default=10_000, help="molecules scored")
    parser.add_argument("--qm9-root", default="data/qm9")
    parser.add_argument("--workdir", default="runs/bench_molecule_data")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.workdir)
    molecules = qm9_molecules(Path(args.qm9_root), max(args.n, args.metrics))
    sdf, csv = write_inputs(molecules[: args.n], work)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # time the first read, not a cache hit
    dm = MoleculeFilesDataModule(root=cache, files=str(sdf), properties_csv=str(csv), progress=False)
    start = time.perf_counter()
    dm.prepare_data()
    read_s = time.perf_counter() - start
    assert len(dm.load()["ptr"]) - 1 == args.n

    scored = molecules[: args.metrics]
    timings = {}
    for bonds in ("perceived", "file"):
        start = time.perf_counter()
        analysis = MoleculeAnalysis(scored, ["H", "C", "N", "O", "F"], bonds)
        metrics = analysis_metrics(analysis, {}, strain=False)
        # the corrected protocol without its xTB and PoseBusters parts
        metrics.update(corrected_metrics(analysis, xtb_max_molecules=0, posebusters_max_molecules=0, progress=False))
        timings[bonds] = {
            "seconds": time.perf_counter() - start,
            "mol_stable": metrics["mol_stable"],
            "corrected_mol_stable": metrics["corrected_mol_stable"],
        }
    result = {
        "read_and_cache": {"molecules": args.n, "seconds": read_s, "molecules_per_s": args.n / read_s},
        "metrics": {"molecules": args.metrics, **timings},
        "threads": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
