"""Molecules of an SDF file (``samples.sdf``) as a 3Dmol.js grid: the first :data:`MAX_MOLECULES`, ball-and-stick
with the file's own bonds, in one WebGL context (``createViewerGrid``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .markup import esc, json_script

MAX_MOLECULES = 12
COLS = 4
CELL = 220  # px, a cell's side


def sdf_records(text: str) -> list[str]:
    """The records of an SDF file (each ends with ``$$$$``; a last record without it counts too)."""
    records = [r.strip("\n") + "\n" for r in re.split(r"^\$\$\$\$[^\n]*$", text, flags=re.MULTILINE)]
    return [r + "$$$$\n" for r in records if r.strip()]


def record_info(record: str) -> dict[str, Any]:
    """A record's name (first line), atom count (V2000 counts line or V3000 ``COUNTS``) and data fields."""
    lines = record.splitlines()
    atoms = None
    if len(lines) > 3 and "V3000" not in lines[3]:
        try:
            atoms = int(lines[3][:3])
        except ValueError:
            pass
    elif m := re.search(r"^M  V30 COUNTS (\d+)", record, flags=re.MULTILINE):
        atoms = int(m.group(1))
    fields = dict(re.findall(r"^>\s*<([^>]+)>[^\n]*\n([^\n]*)", record, flags=re.MULTILINE))
    return {"name": lines[0].strip() if lines else "", "atoms": atoms, "fields": fields}


def _caption(k: int, info: dict[str, Any]) -> str:
    fields = info["fields"]
    bits = [f"{info['atoms']} atoms"] if info["atoms"] is not None else []
    if "valid" in fields:
        bits.append("valid" if fields["valid"].strip() == "1" else "not valid")
    if fields.get("smiles"):
        bits.append(fields["smiles"])
    return f"<b>{esc(info['name'] or f'molecule {k}')}</b> " + esc(", ".join(bits))


def molecules_html(path: Path, set_id: str) -> str:
    """The grid of one SDF file, with a note of how many molecules it holds when more than are drawn."""
    records = sdf_records(path.read_text(errors="replace"))
    if not records:
        return f'<p class="note">{esc(path.name)}: no molecules in this file.</p>'
    shown = records[:MAX_MOLECULES]
    cells = [{"id": f"{set_id}-mol{k}", "sdf": r} for k, r in enumerate(shown)]
    cols = min(COLS, len(cells))
    rows = -(-len(cells) // cols)
    spec_id = f"{set_id}-{path.stem}-spec"
    note = (
        f"{len(records)} molecules in {path.name}; the first {len(shown)} are drawn"
        if len(records) > len(shown)
        else f"{len(records)} molecule{'s' if len(records) != 1 else ''} in {path.name}"
    )
    overlay = "".join(
        f'<div class="cell" style="width:{CELL}px;height:{CELL}px"><div class="view" data-viewer-id="{esc(c["id"])}">'
        f'</div><div class="caption">{_caption(k, record_info(c["sdf"]))}</div></div>'
        for k, c in enumerate(cells)
    )
    return (
        f'<p class="note">{esc(note)}. Drag to turn a molecule, scroll to zoom.</p>'
        f'<div class="molgrid" data-viewer="molecules" data-spec="{esc(spec_id)}" data-rows="{rows}" '
        f'data-cols="{cols}" style="width:{cols * CELL}px;height:{rows * CELL}px">'
        f'<div class="mol3d"></div><div class="overlay" style="grid-template-columns:repeat({cols},{CELL}px)">'
        f"{overlay}</div></div>" + json_script(spec_id, {"cells": cells})
    )
