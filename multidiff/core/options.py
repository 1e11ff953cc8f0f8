"""Strict options: a key a function does not take is an error that names the keys it does take."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def check_keys(given: Iterable[str], valid: Iterable[str], what: str) -> None:
    """Raise ValueError if ``given`` holds a key outside ``valid``, naming both."""
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {what} {', '.join(map(repr, unknown))}; valid: {', '.join(valid) if valid else '(none)'}"
        )


def positive_int(value: Any, name: str) -> int:
    """``value`` (as a user gave it: a config value, a command-line string) if it is a positive integer, else an
    error naming the option and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")
    return value


def accepted_keywords(fn: Callable[..., Any], skip: Iterable[str] = ()) -> list[str] | None:
    """The keyword arguments ``fn`` takes (minus ``skip``), or None when it takes any (``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    skip = set(skip)
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]


def call_strict(
    fn: Callable[..., Any], what: str, options: Mapping[str, Any], *args: Any, skip: Iterable[str] = ()
) -> Any:
    """``fn(*args, **options)`` after checking that ``fn`` takes every key of ``options``."""
    positional = [p.name for p in inspect.signature(fn).parameters.values()][: len(args)]
    valid = accepted_keywords(fn, [*skip, *positional])
    if valid is not None:
        check_keys(options, valid, what)
    return fn(*args, **options)
