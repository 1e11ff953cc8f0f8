"""Your own molecules: SDF (also gzipped) and XYZ files, with properties from SDF data fields or a CSV.

``data=sdf files=...`` reads every record once into the packed cache of :mod:`.data` (keyed by the files' paths,
sizes and modification times and by the options below, so editing a file rebuilds it). Elements, charges, the
size histogram and the bond graphs come from the data; the vocabulary reaches the checkpoint through
``info()``. A record that cannot be used (unreadable block, no atoms, non-finite coordinates, an element outside
``elements``, a missing property) is named (file, record number, title, reason) and either skipped
(``on_bad_record=skip``, with a count at the end and the full list in ``<cache>.bad_records.txt``) or stops the
run (``on_bad_record=error``). A record whose bonds RDKit cannot kekulise is kept without a graph (a graph model
leaves it out, as QM9's).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdkit import Chem
from tqdm import tqdm

from multidiff.paths import writable_dir

from .data import MoleculeDataModule
from .io import read_xyz
from .packing import Packer, mol_atoms, mol_bonds, random_splits

log = logging.getLogger(__name__)

SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".xyz")
BAD_RECORD_CHOICES = ("skip", "error")
CSV_KEYS = ("name", "index")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), path.suffix.lower())


def resolve_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """A file, a folder (its SDF/XYZ files, sorted), a glob pattern, or a list of these -> the files, in order."""
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    if not items:
        raise ValueError("data.files is empty: give an SDF/XYZ file, a folder of them or a glob pattern")
    out: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _suffix(p) in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"data.files: {path} holds no {', '.join(SUFFIXES)} file")
            out += found
        elif path.exists():
            if _suffix(path) not in SUFFIXES:
                raise ValueError(f"data.files: {path} is not a molecule file; valid: {', '.join(SUFFIXES)}")
            out.append(path)
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path)) if _suffix(Path(p)) in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"data.files: the pattern {item} matches no {', '.join(SUFFIXES)} file")
            out += found
        else:
            raise FileNotFoundError(f"data.files: {path}: no such file or folder")
    return out


@dataclass
class Record:
    """One record of a molecule file as read, before any choice about it."""

    file: Path
    number: int  # 1-based within its file
    index: int  # 0-based over all files, in order
    name: str
    mol: Chem.Mol | None = None  # SDF
    symbols: list[str] | None = None  # XYZ
    pos: np.ndarray | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def where(self) -> str:
        title = f" ({self.name})" if self.name else ""
        return f"{self.file} record {self.number}{title}"


def _sdf_records(path: Path, start: int) -> Iterator[Record]:
    handle = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    with handle:
        # unsanitised and with hydrogens: the coordinates and charges as written; sanitising is the metrics' job
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=False, removeHs=False)
        for k, mol in enumerate(supplier):
            if mol is None:
                yield Record(path, k + 1, start + k, "", error="not a readable MDL mol block")
                continue
            name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
            yield Record(path, k + 1, start + k, name, mol=mol, fields=mol.GetPropsAsDict())


def _xyz_records(path: Path, start: int) -> Iterator[Record]:
    result = read_xyz(path)
    records = [
        Record(path, n, start + n - 1, m.name, symbols=list(m.elements), pos=m.positions, fields=m.properties)
        for n, m in zip(result.records, result.molecules)
    ]
    for err in result.errors:  # "record k: why" or "record k (line l): why"
        head, why = err.split(": ", 1)
        n = int(head.split()[1])
        records.append(Record(path, n, start + n - 1, "", error=why))
    yield from sorted(records, key=lambda r: r.number)


def read_records(files: Sequence[Path]) -> Iterator[Record]:
    """Every record of every file, in file order (``index`` counts on across files)."""
    start = 0
    for path in files:
        reader = _xyz_records if _suffix(path) == ".xyz" else _sdf_records
        last = start - 1
        for record in reader(path, start):
            last = record.index
            yield record
        start = last + 1


def read_property_csv(path: Path) -> tuple[str, pd.DataFrame]:
    """A CSV with a ``name`` (record titles) or ``index`` (0-based record position over all files) column and one
    numeric column per property -> (key column, frame indexed by it)."""
    frame = pd.read_csv(path)
    key = next((k for k in CSV_KEYS if k in frame.columns), None)
    if key is None:
        raise ValueError(
            f"data.properties_csv={path}: no column named {' or '.join(CSV_KEYS)} to match records by; "
            f"its columns are {list(frame.columns)}"
        )
    keys = frame[key].astype(str) if key == "name" else frame[key]
    dup = keys[keys.duplicated()]
    if len(dup):
        raise ValueError(f"data.properties_csv={path}: {key} {dup.iloc[0]!r} appears more than once")
    frame = frame.set_index(keys).drop(columns=[key])
    return key, frame


class BadRecords:
    """What ``on_bad_record`` does with an unusable record: remember and skip it, or stop naming it."""

    def __init__(self, mode: str):
        if mode not in BAD_RECORD_CHOICES:
            raise ValueError(f"data.on_bad_record={mode!r}; valid: {', '.join(BAD_RECORD_CHOICES)}")
        self.mode = mode
        self.lines: list[str] = []

    def __call__(self, record: Record, why: str) -> None:
        line = f"{record.where()}: {why}"
        if self.mode == "error":
            raise ValueError(f"{line} (data.on_bad_record=skip skips such records)")
        self.lines.append(line)


def files_signature(files: Sequence[Path], options: dict[str, Any]) -> str:
    """A short hash of the files (resolved path, size, modification time) and the reading options."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([stats, options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_file_arrays(
    files: Sequence[Path],
    *,
    properties: Sequence[str] | None,
    properties_csv: Path | None,
    elements: Sequence[str] | None,
    add_hydrogens: bool,
    bad: BadRecords,
    split: Sequence[float],
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Read, check and pack every record (see the module's docstring)."""
    key, table = read_property_csv(properties_csv) if properties_csv else (None, None)
    csv_names = [str(c) for c in table.columns] if table is not None else []
    records = list(tqdm(read_records(files), desc="molecule files: reading", unit=" records", disable=not progress))
    atoms = [(r, _atoms(r, elements, add_hydrogens)) for r in records]
    kept = []
    for record, found in atoms:
        if isinstance(found, str):
            bad(record, found)
        else:
            kept.append((record, found))
    if properties is None:
        # every CSV column, and the SDF data fields that are numbers in every usable record
        fields = [r.fields for r, _ in kept]
        numeric = [k for k in (fields[0] if fields else {}) if all(isinstance(f.get(k), int | float) for f in fields)]
        wanted = csv_names + [k for k in numeric if k not in csv_names]
    else:
        wanted = list(properties)
    packer = Packer(wanted, elements)
    for record, (symbols, pos, charges, bonds) in kept:
        values = [_property(record, name, key, table) for name in wanted]
        missing = [name for name, v in zip(wanted, values) if v is None]
        if missing:
            where = f"an SDF field or in {properties_csv}" if properties_csv else "an SDF field"
            bad(record, f"no numeric value for property {missing} (neither {where})")
            continue
        packer.add(symbols, pos, charges, bonds, values, record.name or f"record_{record.index}")
    if not len(packer):
        raise ValueError(
            f"data.files: none of the {len(records)} records of {[str(f) for f in files]} is usable"
            + (f" (first: {bad.lines[0]})" if bad.lines else "")
        )
    arrays = packer.pack(random_splits(len(packer), split, seed))
    arrays["bad_records"] = bad.lines
    return arrays


def _atoms(
    record: Record, elements: Sequence[str] | None, add_hydrogens: bool
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None] | str:
    """(symbols, coordinates, charges, bond rows or None) of a record, or why it is unusable."""
    if record.error is not None:
        return record.error
    if record.mol is not None:
        mol = record.mol
        if add_hydrogens:
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.AddHs(mol, addCoords=True)
            except Exception as e:  # sanitisation errors: the record is unusable as a molecule
                return f"RDKit cannot sanitise it to add hydrogens ({e})"
        if mol.GetNumAtoms() == 0:
            return "no atoms"
        if mol.GetNumConformers() == 0:
            return "no coordinates"
        symbols, pos, charges = mol_atoms(mol)
        bonds = mol_bonds(mol)
    else:
        symbols, pos, charges, bonds = record.symbols, record.pos, np.zeros(len(record.symbols), np.int64), None
    if not np.isfinite(pos).all():
        return "non-finite coordinates"
    if elements is not None and not set(elements).issuperset(symbols):
        return f"element(s) {sorted(set(symbols) - set(elements))} not in data.elements {list(elements)}"
    return symbols, pos, charges, bonds


def _property(record: Record, name: str, key: str | None, table: pd.DataFrame | None) -> float | None:
    if table is not None and name in table.columns:
        k = record.name if key == "name" else record.index
        if k in table.index:
            value = pd.to_numeric(table.at[k, name], errors="coerce")
            return None if pd.isna(value) else float(value)
    value = record.fields.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class MoleculeFilesDataModule(MoleculeDataModule):
    """Molecules from SDF/XYZ files (see the module's docstring).

    ``files``: a file, folder, glob pattern or list of them. ``properties``: the property names to keep (each
    record must have every one, from the CSV or its SDF data fields); None: every CSV column and every SDF field
    numeric in all records. ``properties_csv``: a CSV with a ``name`` or ``index`` column. ``elements``: the
    vocabulary (records with others are bad records); None: the data's own. ``split``: train/val/test
    fractions of a seeded permutation. ``add_hydrogens``: for files without explicit hydrogens (RDKit places
    them). ``loader``: the options of :class:`~.data.MoleculeDataModule` (batch size, condition, ...).
    """

    name = "sdf"

    def __init__(
        self,
        root: str | Path,
        files: str | list[str],
        properties: list[str] | None = None,
        properties_csv: str | None = None,
        on_bad_record: str = "skip",
        split: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        add_hydrogens: bool = False,
        **loader: Any,
    ):
        super().__init__(root, **loader)
        if files is None or files == "???":
            raise ValueError("data=sdf needs data.files: an SDF/XYZ file, a folder of them or a glob pattern")
        self.files = resolve_files(files)
        self.properties = list(properties) if properties is not None else None
        self.properties_csv = Path(properties_csv) if properties_csv else None
        if self.properties_csv is not None and not self.properties_csv.exists():
            raise FileNotFoundError(f"data.properties_csv={self.properties_csv}: no such file")
        self.bad = BadRecords(on_bad_record)
        self.split, self.seed, self.add_hydrogens = list(split), seed, add_hydrogens
        random_splits(10, self.split, seed)  # checks the fractions now, not after reading every file

    @cached_property
    def cache_path(self) -> Path:
        inputs = [*self.files, *([self.properties_csv] if self.properties_csv else [])]
        options = {
            "properties": self.properties,
            "elements": self.elements,
            "on_bad_record": self.bad.mode,
            "split": self.split,
            "seed": self.seed,
            "add_hydrogens": self.add_hydrogens,
        }
        tag = files_signature(inputs, options)
        return writable_dir(self.root, self.name) / "processed" / f"{self.name}_{tag}_v{self.cache_version}.pt"

    def _build_arrays(self) -> dict[str, Any]:
        arrays = build_file_arrays(
            self.files,
            properties=self.properties,
            properties_csv=self.properties_csv,
            elements=self.elements,
            add_hydrogens=self.add_hydrogens,
            bad=self.bad,
            split=self.split,
            seed=self.seed,
            progress=self.progress,
        )
        lines = arrays.pop("bad_records")
        total = len(arrays["ptr"]) - 1 + len(lines)
        report = self.cache_path.with_suffix(".bad_records.txt")
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(f"{line}\n" for line in lines))
        log.info("%s: %d of %d records read from %d file(s)", self.name, total - len(lines), total, len(self.files))
        if lines:
            shown = "\n  ".join(lines[:10])
            log.warning(
                "%s: %d record(s) skipped (data.on_bad_record=skip), all listed in %s:\n  %s%s",
                self.name,
                len(lines),
                report,
                shown,
                "\n  ..." if len(lines) > 10 else "",
            )
        return arrays
