"""Evaluation and metric JSON files (``metrics.json``, ``objective.json``, ``evaluate.py out=`` files) as tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .discover import read_json
from .markup import esc, scalar, table

#: rows of one file's table; a longer file is cut, saying so
MAX_ROWS = 300
#: files shown unfolded, when short
OPEN_FILES, OPEN_VALUES = 3, 40


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, scalar)`` for every leaf. A list of records named by a ``row`` or ``name`` field is keyed by
    that name; other lists by position; a list of scalars is one value."""
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for k, v in enumerate(value):
            named = _name_field(v)
            if named:
                yield from flatten({f: x for f, x in v.items() if f != named}, f"{prefix}[{v[named]}]")
            else:
                yield from flatten(v, f"{prefix}[{k}]")
    else:
        yield prefix, value


def _name_field(record: Any) -> str | None:
    return next((f for f in ("row", "name") if isinstance(record, dict) and isinstance(record.get(f), str)), None)


def _records_table(records: list[dict[str, Any]]) -> str:
    """A list of records (an evaluation table: one record per sampler or setting) as a table with one row per
    record and a column per leaf, as the project's own ``table.md`` files lay it out."""
    rows = [dict(flatten(r)) for r in records]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    first = [c for c in ("row", "name") if c in columns][:1]
    columns = first + [c for c in columns if c not in first]
    cells = [[scalar(r[c]) if c in r else "" for c in columns] for r in rows[:MAX_ROWS]]
    numeric = [k for k, c in enumerate(columns) if all(isinstance(r.get(c), (int, float)) for r in rows if c in r)]
    return f'<div class="wide">{table(columns, cells, numeric=numeric)}</div>'


def json_table(path: Path, value: Any | None = None) -> str:
    """One JSON file as a table (``value``: its content, when already read): a list of several records one row per
    record, anything else one row per leaf."""
    value = read_json(path) if value is None else value
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, dict) for v in value):
        return _records_table(value)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]  # one record: its fields, unprefixed
    rows = list(flatten(value))
    cut = len(rows) - MAX_ROWS
    html = table(["key", "value"], [[k, scalar(v)] for k, v in rows[:MAX_ROWS]], numeric=[1])
    if cut > 0:
        html += f'<p class="note">{cut} more values not shown; see the file.</p>'
    return html


def json_files_html(paths: list[Path], root: Path) -> str:
    """Each file in a ``<details>`` element, unfolded when short and among few."""
    parts = []
    for path in paths:
        value = read_json(path)
        count = sum(1 for _ in flatten(value))
        unfold = count <= OPEN_VALUES and len(paths) <= OPEN_FILES
        parts.append(
            f"<details{' open' if unfold else ''}><summary><code>{esc(path.relative_to(root))}</code> "
            f"({count} values)</summary>{json_table(path, value)}</details>"
        )
    return "".join(parts)
