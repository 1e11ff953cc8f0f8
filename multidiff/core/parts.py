"""A state made of several tensors that the samplers treat as one.

A molecule as a graph is per-atom rows (coordinates, types, charges) and per-pair rows (bond orders): two
tensors of different lengths. :class:`Parts` holds them under names and applies arithmetic, torch functions
(``torch.where``, ``torch.zeros_like``, ``torch.isfinite``, ...) and tensor methods (``.to``, ``.rsqrt``, ...)
part by part, so the samplers, guidance and observation code run on it unchanged. Plain-tensor domains never
meet it.

``tensordict.TensorDict`` does the arithmetic too, but its ``where`` takes one condition tensor for all
entries, where observations need a mask per part; and per-item noise levels must broadcast per part.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

#: torch functions whose per-part answers combine into one (all parts must agree)
_ALL = {torch.equal, torch.allclose}


class Parts:
    """Named tensors acting as one state. ``Parts({"node": a, "pair": b})``; ``p["node"]``; arithmetic with a
    number, a tensor (applied to every part, broadcasting as usual) or another ``Parts`` with the same names.
    ``shape`` is a dict of the parts' shapes; a dict with the same names given to a torch function is taken per
    part, so ``torch.broadcast_to(mask, x.shape)`` works. ``all()``/``any()`` reduce over every part."""

    __slots__ = ("_parts",)

    def __init__(self, parts: Mapping[str, Any]):
        if not parts:
            raise ValueError("Parts needs at least one named tensor")
        object.__setattr__(self, "_parts", dict(parts))

    # -- mapping ---------------------------------------------------------------------------------
    def keys(self):
        return self._parts.keys()

    def values(self):
        return self._parts.values()

    def items(self):
        return self._parts.items()

    def __getitem__(self, key: str) -> Any:
        return self._parts[key]

    def replace(self, **parts: Any) -> Parts:
        """A copy with the named parts swapped (unknown names are an error)."""
        unknown = sorted(set(parts) - set(self._parts))
        if unknown:
            raise KeyError(f"Parts has no part {unknown}; parts: {list(self._parts)}")
        return Parts({**self._parts, **parts})

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(v.shape) if torch.is_tensor(v) else v!r}" for k, v in self._parts.items())
        return f"Parts({inner})"

    # -- tensor-like attributes --------------------------------------------------------------------
    @property
    def shape(self) -> dict[str, Any]:
        return {k: v.shape for k, v in self._parts.items()}

    @property
    def dtype(self) -> torch.dtype:
        """The parts' common dtype: the promotion of theirs (under autocast, some parts come out in bfloat16)."""
        dtypes = [v.dtype for v in self._parts.values()]
        out = dtypes[0]
        for d in dtypes[1:]:
            out = torch.promote_types(out, d)
        return out

    @property
    def device(self) -> torch.device:
        return next(iter(self._parts.values())).device

    def all(self) -> Tensor:
        return torch.stack([v.all() for v in self._parts.values()]).all()

    def any(self) -> Tensor:
        return torch.stack([v.any() for v in self._parts.values()]).any()

    def __bool__(self) -> bool:
        raise TypeError("the truth value of Parts is ambiguous: use .all() or .any()")

    def __getattr__(self, name: str) -> Callable[..., Parts]:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Parts:
            return self._map(lambda t, *a, **kw: getattr(t, name)(*a, **kw), (self, *args), kwargs)

        return method

    # -- part-by-part application ------------------------------------------------------------------
    def _pick(self, value: Any, key: str) -> Any:
        if isinstance(value, Parts):
            return value._parts[key]
        if isinstance(value, dict) and value.keys() == self._parts.keys():
            return value[key]
        if isinstance(value, list | tuple):
            return type(value)(self._pick(v, key) for v in value)
        return value

    def _map(self, fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None = None) -> Parts:
        for a in args:
            if isinstance(a, Parts) and a._parts.keys() != self._parts.keys():
                raise ValueError(f"Parts with parts {list(a.keys())} against {list(self.keys())}")
        kwargs = kwargs or {}
        return Parts(
            {
                k: fn(*(self._pick(a, k) for a in args), **{n: self._pick(v, k) for n, v in kwargs.items()})
                for k in self._parts
            }
        )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        first = next(a for a in (*args, *(kwargs or {}).values()) if isinstance(a, Parts))
        out = first._map(func, tuple(args), kwargs)
        if func in _ALL:
            return all(bool(v) for v in out.values())
        return out

    def _binary(op: Callable[[Any, Any], Any], reflected: bool = False):  # noqa: N805 - builds methods
        if reflected:
            return lambda self, other: self._map(lambda a, b: op(b, a), (self, other))
        return lambda self, other: self._map(op, (self, other))

    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __pow__ = _binary(operator.pow)
    __and__, __or__ = _binary(operator.and_), _binary(operator.or_)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    del _binary

    def __neg__(self) -> Parts:
        return self._map(operator.neg, (self,))

    def __invert__(self) -> Parts:
        return self._map(operator.invert, (self,))


def parts_of(x: Any) -> dict[str, Any]:
    """The named tensors of ``x``: a :class:`Parts`' own, or ``{"x": x}`` for a plain tensor."""
    return dict(x.items()) if isinstance(x, Parts) else {"x": x}


def stack(xs: Sequence[Any]) -> Any:
    """``torch.stack`` of tensors, or of :class:`Parts` part by part."""
    if isinstance(xs[0], Parts):
        return Parts({k: torch.stack([x[k] for x in xs]) for k in xs[0].keys()})
    return torch.stack(list(xs))


def count_nonfinite(x: Any) -> tuple[int, int]:
    """How many values of a tensor or :class:`Parts` are NaN or infinite, and how many there are."""
    parts = parts_of(x).values()
    return sum(int((~torch.isfinite(p)).sum()) for p in parts), sum(p.numel() for p in parts)
