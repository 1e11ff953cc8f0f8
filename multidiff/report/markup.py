"""Small HTML helpers shared by the sections: escaping, tables, data URIs, JSON data blocks."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any


def esc(text: Any) -> str:
    """``text`` as HTML text or attribute value."""
    return html.escape(str(text), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: the page carries its media, so it opens offline and from any folder."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def json_script(element_id: str, value: Any) -> str:
    """``value`` in a non-executing ``<script type="application/json">`` that JS reads with ``JSON.parse``. Every ``<``
    is written ``\\u003c`` (the same string to JSON), so no text in it can close the element."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; the columns at ``numeric`` right-aligned."""
    num = set(numeric)

    def cells(row: Sequence[Any], tag: str) -> str:
        return "".join(f"<{tag}{' class=num' if k in num else ''}>{esc(c)}</{tag}>" for k, c in enumerate(row))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def scalar(value: Any) -> str:
    """A metric value for a table: floats to 6 significant digits, the rest as JSON writes them."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)
