"""Read molecules back from SDF or XYZ files; malformed records are reported and skipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem

from .elements import check_elements
from .graphs import order_matrix, rdkit_bonds
from .structures import Molecule


@dataclass
class ReadResult:
    molecules: list[Molecule]
    num_records: int
    errors: list[str] = field(default_factory=list)  # "record k: why" (1-based), malformed records
    records: list[int] = field(default_factory=list)  # 1-based record number of each molecule
    path: Path | None = None  # the file read (a folder resolves to one of its files)
    bond_errors: dict[int, str] = field(default_factory=dict)  # record number -> why its bonds were not read

    def require_molecules(self, max_errors: int = 3) -> None:
        """Raise ValueError naming the file, its record count and the first rejections when nothing was read."""
        if self.molecules:
            return
        if self.num_records == 0:
            raise ValueError(f"{self.path}: no molecule records (the file is empty or blank)")
        shown = "; ".join(self.errors[:max_errors])
        more = f"; ... {len(self.errors) - max_errors} more" if len(self.errors) > max_errors else ""
        raise ValueError(
            f"{self.path}: none of its {self.num_records} record(s) is a readable molecule ({shown}{more})"
        )


def _check_atoms(positions: np.ndarray) -> None:
    """A record without atoms or with non-finite coordinates would pass as a (stable, valid) empty molecule
    or turn the metrics into NaN: it is malformed."""
    if len(positions) == 0:
        raise ValueError("no atoms")
    if not np.isfinite(positions).all():
        raise ValueError("non-finite coordinates")


def _sdf_records(text: str) -> list[str]:
    records, current = [], []
    for line in text.splitlines():
        if line.strip() == "$$$$":
            records.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if any(line.strip() for line in current):
        records.append("\n".join(current))  # a last record without its terminator
    return records


def _properties(rd: Chem.Mol) -> dict[str, object]:
    props: dict[str, object] = {}
    for key in rd.GetPropNames():
        value = rd.GetProp(key)
        try:
            props[key] = float(value)
        except ValueError:
            props[key] = value
    return props


def _record(block: str) -> Chem.Mol | None:
    """One SDF record with its data fields (``MolFromMolBlock`` alone drops them), unsanitised, hydrogens kept."""
    supplier = Chem.SDMolSupplier()
    supplier.SetData(block + "\n$$$$\n", sanitize=False, removeHs=False, strictParsing=True)
    return next(iter(supplier), None)


def read_sdf(path: Path) -> ReadResult:
    records = _sdf_records(Path(path).read_text())
    molecules, errors, numbers, bond_errors = [], [], [], {}
    for k, block in enumerate(records, start=1):
        rd = _record(block)
        if rd is None or rd.GetNumConformers() == 0:
            errors.append(f"record {k}: not a readable MDL mol block")
            continue
        positions = rd.GetConformer().GetPositions()
        try:
            _check_atoms(positions)
        except ValueError as e:
            errors.append(f"record {k}: {e}")
            continue
        try:
            bonds = order_matrix(rdkit_bonds(rd), rd.GetNumAtoms())
        except ValueError as e:  # the atoms are still usable; a caller that needs the bonds says so
            bonds, bond_errors[k] = None, f"record {k}: {e}"
        molecules.append(
            Molecule(
                positions,
                [a.GetSymbol() for a in rd.GetAtoms()],
                np.array([a.GetFormalCharge() for a in rd.GetAtoms()]),
                _properties(rd),
                name=rd.GetProp("_Name") if rd.HasProp("_Name") else f"record_{k}",
                bonds=bonds,
            )
        )
        numbers.append(k)
    return ReadResult(molecules, len(records), errors, numbers, bond_errors=bond_errors)


def _int_line(line: str) -> int | None:
    parts = line.split()
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0])
    return None


def read_xyz(path: Path) -> ReadResult:
    lines = Path(path).read_text().splitlines()
    molecules, errors, numbers = [], [], []
    i, record = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        record += 1
        n = _int_line(lines[i])
        if n is None:
            errors.append(f"record {record} (line {i + 1}): expected an atom count, got {lines[i][:40]!r}")
            i += 1
            while i < len(lines) and _int_line(lines[i]) is None:  # resynchronise on the next count
                i += 1
            continue
        comment = lines[i + 1] if i + 1 < len(lines) else ""
        body = lines[i + 2 : i + 2 + n]
        i += 2 + n
        try:
            if len(body) < n:
                raise ValueError(f"{n} atoms announced, {len(body)} lines present")
            rows = [line.split() for line in body]
            if any(len(r) < 4 for r in rows):
                raise ValueError("an atom line lacks 'element x y z'")
            elements = [r[0][:1].upper() + r[0][1:].lower() for r in rows]
            positions = np.array([[float(v) for v in r[1:4]] for r in rows]).reshape(-1, 3)
            _check_atoms(positions)
        except ValueError as e:
            errors.append(f"record {record}: {e}")
            continue
        name, *pairs = comment.split() or [f"record_{record}"]
        props: dict[str, object] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            try:
                props[key] = float(value)
            except ValueError:
                props[key] = value
        molecules.append(Molecule(positions, elements, None, props, name=name))
        numbers.append(record)
    return ReadResult(molecules, record, errors, numbers)


def read_molecules(path: Path, vocabulary: Sequence[str] | None = None) -> ReadResult:
    """Molecules from an ``.sdf`` or ``.xyz`` file (or the first such file in a folder).

    Raises FileNotFoundError for a missing file or a folder without one, ValueError for a file that is not
    text or when an element lies outside ``vocabulary``.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.sdf")) or sorted(path.glob("*.xyz"))
        if not found:
            held = sorted(p.name for p in path.iterdir())
            listing = f"it holds {held[:5]}{' ...' if len(held) > 5 else ''}" if held else "it is empty"
            raise FileNotFoundError(f"{path}: no .sdf or .xyz file in this folder ({listing})")
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".sdf", ".mol", ".sd"):
        reader = read_sdf
    elif suffix == ".xyz":
        reader = read_xyz
    else:
        raise ValueError(f"{path}: unsupported molecule file type {suffix!r}; use .sdf or .xyz")
    try:
        result = reader(path)
    except UnicodeDecodeError as e:  # e.g. a compressed file under a .sdf name
        raise ValueError(f"{path}: not a text file (undecodable byte at offset {e.start})") from e
    result.path = path
    if vocabulary is not None:
        for k, mol in zip(result.records, result.molecules):
            check_elements(mol.elements, vocabulary, f"{path} record {k} ({mol.name})")
    return result
