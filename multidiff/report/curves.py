"""Loss curves and the last logged values, drawn as inline SVG from the ``csv/metrics.csv`` of Lightning's CSVLogger.

The logger writes one row per logging call with only that call's columns filled, so each column is read as its own
series of (step, value) points."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from .markup import esc, table

Series = dict[str, list[tuple[float, float]]]

#: matplotlib's tab10, the colours of the project's own loss.png
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
WIDTH, HEIGHT = 380, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 34


def read_metrics(path: str | Path) -> Series:
    """Every logged column of a CSVLogger ``metrics.csv`` as ``name -> [(step, value), ...]`` (empty cells and
    non-numbers skipped; ``epoch`` and ``step`` are the axes, not series)."""
    series: Series = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            if math.isnan(step):
                continue
            for name, cell in row.items():
                if name in ("epoch", "step") or name is None or not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(value):
                    series.setdefault(name, []).append((step, value))
    return series


def chart_groups(series: Series) -> dict[str, list[str]]:
    """Which columns share a chart: the losses; the losses per noise level (train, val); the learning rates; then one
    chart per prefix (``samples/...``). Of a metric logged both per step and per epoch (``X_step``, ``X_epoch``)
    only the per-step curve is drawn: the other is its average and has a handful of points."""
    names = [n for n in series if not (n.endswith("_epoch") and n[: -len("_epoch")] + "_step" in series)]
    groups: dict[str, list[str]] = {}
    for name in names:
        if re.fullmatch(r"(\w+/)?loss(_step|_epoch)?", name):
            key = "loss"
        elif m := re.match(r"(\w+)/loss_sigma_", name):
            key = f"{m.group(1)} loss by noise level"
        elif name.startswith("lr-"):
            key = "learning rate"
        elif "loss" in name:
            key = "other losses"
        else:
            key = name.split("/", 1)[0] if "/" in name else "other"
        groups.setdefault(key, []).append(name)
    return groups


def _nice(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about five ticks over ``span``."""
    raw = span / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _ticks(lo: float, hi: float) -> list[float]:
    step = _nice(hi - lo)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        mantissa, exp = f"{v:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:.6g}"


def _smooth(values: list[float], window: int) -> list[float]:
    """A centred moving average over ``window`` points (shorter at the ends): it follows the trend without the lag
    of an exponential average, so a smooth curve (a learning-rate warm-up) stays where it is."""
    half = window // 2
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    n = len(values)
    return [
        (sums[min(n, k + half + 1)] - sums[max(0, k - half)]) / (min(n, k + half + 1) - max(0, k - half))
        for k in range(n)
    ]


def _thin(points: list[tuple[float, float]], limit: int = 1500) -> list[tuple[float, float]]:
    """At most about ``limit`` points, every k-th, the last kept: an SVG of 100k-step runs stays small."""
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    return points[::k] + ([points[-1]] if (len(points) - 1) % k else [])


def line_chart(title: str, series: Series) -> str:
    """One SVG chart of ``series`` against the step, with a legend; y on a log scale when the values are positive
    and span more than a factor of 30 (losses fall by decades), and noisy long series drawn faint with their
    smoothed curve on top."""
    series = {k: v for k, v in series.items() if v}
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    log = min(ys) > 0 and max(ys) / min(ys) > 30
    f = math.log10 if log else float
    y0, y1 = f(min(ys)), f(max(ys))
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    pad = (y1 - y0) * 0.04
    y0, y1 = y0 - pad, y1 + pad
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return TOP + (1 - (f(y) - y0) / (y1 - y0)) * h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>',
    ]
    if log:
        yt = [10.0**e for e in range(math.ceil(y0), math.floor(y1) + 1)]
        if len(yt) < 3:  # less than two decades: label the 2 and 5 between them too
            yt = sorted(m * 10.0**e for e in range(math.floor(y0), math.ceil(y1) + 1) for m in (1, 2, 5))
            yt = [t for t in yt if y0 <= math.log10(t) <= y1]
    else:
        yt = _ticks(y0, y1)
    for t in yt:
        y = py(t)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    for t in _ticks(x0, x1):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + h}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + h + 16}" text-anchor="middle">{_label(t)}</text>')
    parts.append(f'<text x="{LEFT + w / 2}" y="{HEIGHT - 4}" text-anchor="middle" class="axis">step</text>')
    parts.append(f'<svg x="{LEFT}" y="{TOP}" width="{w}" height="{h}" overflow="hidden">')  # clips the lines
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = _thin(pts)
        line = " ".join(f"{px(x) - LEFT:.1f},{py(y) - TOP:.1f}" for x, y in pts)
        noisy = len(pts) > 60
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5" '
            f'stroke-opacity="{0.3 if noisy else 1}"><title>{esc(name)}</title></polyline>'
        )
        if noisy:
            smooth = _smooth([y for _, y in pts], window=max(5, len(pts) // 25))
            line = " ".join(f"{px(x) - LEFT:.1f},{py(y) - TOP:.1f}" for (x, _), y in zip(pts, smooth))
            parts.append(
                f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2">'
                f"<title>{esc(name)} (smoothed)</title></polyline>"
            )
        if len(pts) <= 30:
            parts += [
                f'<circle cx="{px(x) - LEFT:.1f}" cy="{py(y) - TOP:.1f}" r="2.5" fill="{colour}">'
                f"<title>{esc(name)}: {y:.6g} at step {x:g}</title></circle>"
                for x, y in pts
            ]
    parts.append("</svg></svg>")
    legend = "".join(
        f'<span><i style="background:{COLOURS[k % len(COLOURS)]}"></i>{esc(name)}</span>'
        for k, name in enumerate(series)
    )
    return (
        f'<figure class="curve"><figcaption>{esc(title)}{" <span class=dim>(log scale)</span>" if log else ""}'
        f"</figcaption>{''.join(parts)}"
        f'<div class="legend">{legend}</div></figure>'
    )


def curves_html(series: Series) -> str:
    """The charts of a run, one per :func:`chart_groups` group, the losses first."""
    groups = chart_groups(series)
    order = sorted(groups, key=lambda g: (g != "loss", "loss" not in g, g == "learning rate"))
    return "".join(line_chart(title, {n: series[n] for n in groups[title]}) for title in order)


def last_values_html(series: Series) -> str:
    """A table of each metric's last value, the step it was logged at, and its minimum and count."""
    rows = [
        [name, f"{pts[-1][1]:.6g}", f"{pts[-1][0]:g}", f"{min(v for _, v in pts):.6g}", str(len(pts))]
        for name, pts in sorted(series.items())
    ]
    return table(["metric", "last", "at step", "min", "points"], rows, numeric=[1, 2, 3, 4])
