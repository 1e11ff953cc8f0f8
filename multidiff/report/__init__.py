"""One self-contained HTML page for a training run or a sample folder: ``python -m multidiff.report DIR [out=FILE]``.

The page shows the loss curves (from ``csv/metrics.csv``), the last logged values and metric JSON files, the command
that made each thing, and the samples: audio players with spectrograms, point clouds and meshes in three.js,
molecules in 3Dmol.js. Everything is inlined (media as data URIs, the viewer libraries from ``vendor/``), so the file
opens offline from anywhere and makes no network request. Nothing in :mod:`multidiff.core` imports this package.
"""

from __future__ import annotations

from pathlib import Path

from multidiff.paths import replaced

from .discover import VALID, Contents, ReportError, discover
from .page import render_page

__all__ = ["VALID", "Contents", "ReportError", "build_report", "discover", "write_report"]


def build_report(folder: str | Path) -> str:
    """The report page of ``folder`` as HTML; :class:`ReportError` when there is nothing to report."""
    return render_page(discover(folder))


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``folder`` to ``out`` (default ``<folder>/report.html``), whole or not at all: the page
    is built first and the file replaced in one rename."""
    page = build_report(folder)
    out = Path(out) if out is not None else Path(folder) / "report.html"
    with replaced(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
