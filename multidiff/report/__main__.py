"""``python -m multidiff.report RUN_OR_SAMPLE_DIR [out=FILE.html]``: write the folder's report page."""

from __future__ import annotations

import sys

import multidiff.report as package

from . import ReportError, write_report

USAGE = "usage: python -m multidiff.report RUN_OR_SAMPLE_DIR [out=FILE.html]"
OPTIONS = {"out": "FILE.html, where to write the page (default: DIR/report.html)"}


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    """The folder and the ``key=value`` options; an unknown option, a missing or second folder is a
    :class:`ReportError` naming it and what is valid."""
    folders, options = [], {}
    valid = "; ".join(f"{k}={v}" for k, v in OPTIONS.items())
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            folders.append(arg)
        elif key not in OPTIONS:
            raise ReportError(f"{arg}: unknown option {key!r}; valid: {valid}")
        elif not value:
            raise ReportError(f"{arg}: give a value, {key}={OPTIONS[key]}")
        else:
            options[key] = value
    if len(folders) != 1:
        got = "no folder" if not folders else f"{len(folders)} folders ({', '.join(folders)})"
        raise ReportError(f"give one run or sample folder, got {got}")
    return folders[0], options


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 when the page was written, 2 (and a message on stderr, nothing written) when not."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{package.__doc__}")
        return 0
    try:
        folder, options = parse(argv)
        out = write_report(folder, options.get("out"))
    except ReportError as e:
        print(f"error: {e}\n{USAGE}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
