"""Inline SVG charts for the HTML report (:mod:`catalog.html_report`): no plotting
library, a few lines of SVG text each, so they show without the ``plots`` extra and
keep the page one file.

- :func:`bar_chart`: one horizontal bar per group (``<rect class="bar">``), its value
  at the end, an optional dashed line at a reference value (the figure over all
  images);
- :func:`line_chart`: one line per series over integer x (epochs, numbered from 1),
  a ``<circle class="point">`` per value.

Every label, title and value that reaches the SVG is escaped here: the callers pass
plain text (attribute groups, run ids, metric names from the catalog).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["COLOURS", "bar_chart", "line_chart", "nice_ticks"]

#: Series colours, in order.
COLOURS = ("#3b6fd4", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00")
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'
_CHAR = 6.6  # an estimate of a 12 px character's width, for the label column


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values (1, 2 or 5 times a power of ten apart) covering
    ``lo``..``hi``, the first at or below ``lo``, the last at or above ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    k = 0
    while True:
        value = first + k * step
        ticks.append(round(value, 12))
        if value >= hi - 1e-9 * step:
            return ticks
        k += 1


def _svg(width: float, height: float, title: str, kind: str, body: Sequence[str]) -> str:
    return (
        f'<svg class="chart {kind}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{_text(title)}" {_FONT}><title>{_text(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str = "",
    counts: Sequence[int | None] | None = None,
    reference: float | None = None,
    reference_label: str = "all",
    bar_width: int = 260,
) -> str:
    """A horizontal bar chart: one ``<rect class="bar">`` per label with a finite
    value (``data-label``, ``data-value``), its value printed after it (and ``n=``
    the count, where given); a group without a value keeps its row, marked "n/a".
    ``reference``: a dashed line at that value, labelled ``reference_label``."""
    if len(labels) != len(values) or (counts is not None and len(counts) != len(labels)):
        raise ValueError("bar_chart: labels, values (and counts) differ in length")
    finite = [float(v) for v in values if _finite(v)]
    if reference is not None and _finite(reference):
        finite.append(float(reference))
    ticks = nice_ticks(min([0.0, *finite]), max([0.0, *finite]) or 1.0, 4)
    lo, hi = ticks[0], ticks[-1]
    label_width = min(max((len(str(x)) for x in labels), default=4) * _CHAR + 12, 300)
    left, row, top = label_width, 22, 8
    value_room = 100
    width = left + bar_width + value_room
    height = top + row * max(len(labels), 1) + 34

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * bar_width

    body: list[str] = []
    for tick in ticks:  # grid and tick labels
        body.append(
            f'<line class="grid" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" '
            f'y2="{height - 26}" stroke="#e3e6eb"/>'
            f'<text x="{x(tick):.1f}" y="{height - 12}" text-anchor="middle" '
            f'fill="#5a6375">{_fmt(tick)}</text>'
        )
    for k, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + k * row
        count = counts[k] if counts is not None else None
        n = f" (n={count:,})" if count is not None else ""
        body.append(
            f'<text class="label" x="{left - 6:.1f}" y="{y + 15}" text-anchor="end">'
            f"{_text(label)}</text>"
        )
        if not _finite(value):
            body.append(
                f'<text x="{left + 4:.1f}" y="{y + 15}" fill="#5a6375">n/a{_text(n)}</text>'
            )
            continue
        v = float(value)  # type: ignore[arg-type]
        x0, x1 = sorted((x(0.0), x(v)))
        body.append(
            f'<rect class="bar" x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{row - 8}" fill="{COLOURS[0]}" data-label="{_text(label)}" '
            f'data-value="{v!r}"><title>{_text(label)}: {_fmt(v)}{_text(n)}</title></rect>'
            f'<text class="value" x="{max(x1, x(0.0)) + 4:.1f}" y="{y + 15}">'
            f"{_fmt(v)}{_text(n)}</text>"
        )
    body.append(
        f'<line x1="{x(0.0):.1f}" x2="{x(0.0):.1f}" y1="{top}" y2="{height - 26}" '
        'stroke="#1d2330"/>'
    )
    if reference is not None and _finite(reference):
        rx = x(float(reference))
        body.append(
            f'<line class="reference" x1="{rx:.1f}" x2="{rx:.1f}" y1="{top - 4}" '
            f'y2="{height - 26}" stroke="#e03131" stroke-dasharray="4 3">'
            f"<title>{_text(reference_label)}: {_fmt(float(reference))}</title></line>"
            f'<text x="{rx:.1f}" y="{height - 1}" text-anchor="middle" fill="#e03131">'
            f"{_text(reference_label)} {_fmt(float(reference))}</text>"
        )
    return _svg(width, height, title, "bar-chart", body)


def line_chart(
    series: Sequence[tuple[str, Sequence[int], Sequence[float | None]]],
    *,
    title: str = "",
    x_label: str = "epoch",
    y_label: str = "",
    width: int = 360,
    height: int = 220,
) -> str:
    """Lines over integer x: ``series`` is (name, xs, ys) each; a ``<circle
    class="point">`` per finite y (``data-x``, ``data-y``), joined by a
    ``<polyline class="line">``; a legend where there are several series."""
    points = [
        (name, [(int(a), float(b)) for a, b in zip(xs, ys, strict=True) if _finite(b)])
        for name, xs, ys in series
    ]
    all_x = [a for _, p in points for a, _ in p] or [1]
    all_y = [b for _, p in points for _, b in p] or [0.0, 1.0]
    first_x, last_x = min(all_x), max(all_x)
    x_lo, x_hi = (first_x, last_x) if last_x > first_x else (first_x - 0.5, last_x + 0.5)
    y_ticks = nice_ticks(min(all_y), max(all_y), 4)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    left, right, top, bottom = 66, 12, 10 + 16 * (len(points) > 1), 38
    inner_w, inner_h = width - left - right, height - top - bottom

    def px(a: float) -> float:
        return left + (a - x_lo) / (x_hi - x_lo) * inner_w

    def py(b: float) -> float:
        return top + (y_hi - b) / (y_hi - y_lo) * inner_h

    x_ticks = range(first_x, last_x + 1, max(1, math.ceil((last_x - first_x) / 8)))
    body: list[str] = []
    for t in y_ticks:
        body.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py(t):.1f}" '
            f'y2="{py(t):.1f}" stroke="#e3e6eb"/><text x="{left - 5}" y="{py(t) + 4:.1f}" '
            f'text-anchor="end" fill="#5a6375">{_fmt(t)}</text>'
        )
    for t in x_ticks:
        body.append(
            f'<text x="{px(t):.1f}" y="{height - bottom + 15}" text-anchor="middle" '
            f'fill="#5a6375">{t}</text>'
        )
    body.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + inner_h}" y2="{top + inner_h}" '
        f'stroke="#1d2330"/><line x1="{left}" x2="{left}" y1="{top}" y2="{top + inner_h}" '
        f'stroke="#1d2330"/><text x="{left + inner_w / 2:.1f}" y="{height - 4}" '
        f'text-anchor="middle">{_text(x_label)}</text>'
    )
    if y_label:
        body.append(
            f'<text x="12" y="{top + inner_h / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + inner_h / 2:.1f})">{_text(y_label)}</text>'
        )
    for k, (name, pts) in enumerate(points):
        colour = COLOURS[k % len(COLOURS)]
        if len(pts) > 1:
            line = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in pts)
            body.append(
                f'<polyline class="line" points="{line}" fill="none" stroke="{colour}" '
                f'stroke-width="2" data-series="{_text(name)}"/>'
            )
        for a, b in pts:
            body.append(
                f'<circle class="point" cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" '
                f'fill="{colour}" data-series="{_text(name)}" data-x="{a}" data-y="{b!r}">'
                f"<title>{_text(name)}, {_text(x_label)} {a}: {_fmt(b)}</title></circle>"
            )
        if len(points) > 1:
            lx = left + k * 130
            body.append(
                f'<rect x="{lx}" y="4" width="10" height="10" fill="{colour}"/>'
                f'<text x="{lx + 14}" y="13">{_text(name)}</text>'
            )
    return _svg(width, height, title, "line-chart", body)
