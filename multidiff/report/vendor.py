"""The vendored viewer libraries (``vendor/``, see its README) and the report's own script and style (``assets/``),
read as text ready to inline into a page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Library:
    """A viewer library: its files in ``vendor/`` (in load order), its version and licence file."""

    name: str
    version: str
    files: tuple[str, ...]
    license: str


#: what a page can need, by the name its sections ask for
VENDORED = {
    "3dmol": Library("3Dmol.js", "2.5.5", ("3Dmol-min.js",), "3Dmol.LICENSE.txt"),
    "three": Library("three.js", "0.185.1", ("three.core.min.js", "three.module.min.js"), "three.LICENSE.txt"),
}


@cache
def _read(folder: str, name: str) -> str:
    return resources.files(__package__).joinpath(folder, name).read_text(encoding="utf-8")


def vendored(name: str) -> str:
    """The text of ``vendor/<name>``."""
    return _read("vendor", name)


def asset(name: str) -> str:
    """The text of ``assets/<name>`` (the report's own JS and CSS)."""
    return _read("assets", name)


def inline_script(text: str) -> str:
    """JS ``text`` safe inside a ``<script>`` element. ``</script`` would end the element early: written ``<\\/script``,
    which means the same in JS strings, template literals, comments and regular expressions. ``<!--`` would switch the
    HTML parser into its escaped mode, and no rewrite of it is neutral in every JS context (``\\!`` is an error in a
    ``u`` regular expression), so it is refused: a library update that brings one needs a look."""
    if "<!--" in text:
        raise ValueError("script text holds '<!--', which changes how HTML parses a <script> element")
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)
