"""The latency breakdown of one run as an inline SVG Gantt chart (no script, no library).

One row per stage (``profiling.stage_timer.StageTiming``), in order of start: a bar from the stage's start
to its end on the wall clock (``perf_counter``, relative to the first stage's start), coloured by the
scheduler lane that ran it, so stages that overlapped on two lanes show side by side; the stage's own
seconds (device time on CUDA, wall time on CPU) are written at the end of its row. The axis spans the
critical path (first start to last end). Every bar carries a ``<title>`` (name, seconds, lane, note) that a
browser shows on hover.
"""

from __future__ import annotations

import math
from html import escape

from profiling.stage_timer import StageTiming

LANE_COLOURS = {"gpu": "#4c78a8", "cpu": "#f58518", "": "#72b7b2"}
EXTRA_COLOURS = ("#54a24b", "#e45756", "#b279a2", "#9d755d", "#eeca3b")
ROW = 22          # pixels per stage row
BAR = 14          # bar height
LABEL_W = 220     # stage names column
VALUE_W = 80      # seconds column
AXIS_H = 26       # axis band above the rows
LEGEND_H = 24     # lane legend below the rows


def lane_colours(timings: list[StageTiming]) -> dict[str, str]:
    """Colour of each lane that appears in ``timings`` (known lanes fixed, others from a palette)."""
    out: dict[str, str] = {}
    extra = iter(EXTRA_COLOURS * 4)
    for t in timings:
        if t.lane not in out:
            out[t.lane] = LANE_COLOURS.get(t.lane) or next(extra)
    return out


def tick_step(span: float, most: int = 8) -> float:
    """The smallest of 1, 2, 5 x 10^k seconds giving at most ``most`` intervals over ``span``."""
    if span <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(span / most))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if span / (mult * base) <= most:
            return mult * base
    return 10.0 * base


def latency_svg(timings: list[StageTiming], width: int = 900) -> str:
    """The Gantt chart of ``timings`` as an ``<svg>`` element string (module docstring)."""
    rows = sorted(timings, key=lambda t: t.start)
    if not rows:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="24"><text x="4" y="16">' \
               'no stage timings</text></svg>'
    t0 = min(t.start for t in rows)
    span = max(max(t.end for t in rows) - t0, 1e-9)
    plot_w = width - LABEL_W - VALUE_W
    height = AXIS_H + ROW * len(rows) + LEGEND_H

    def x_of(seconds: float) -> float:                    # seconds since t0 -> pixels
        return LABEL_W + plot_w * seconds / span

    colours = lane_colours(rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="latency" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">']
    step = tick_step(span)
    for k in range(int(span / step + 1e-9) + 1):
        x = x_of(k * step)
        parts.append(f'<line x1="{x:.1f}" y1="{AXIS_H - 4}" x2="{x:.1f}" y2="{AXIS_H + ROW * len(rows)}" '
                     'stroke="#d0d4dc"/>')
        parts.append(f'<text x="{x:.1f}" y="{AXIS_H - 8}" text-anchor="middle" fill="#555">'
                     f'{k * step:g} s</text>')
    for i, t in enumerate(rows):
        y = AXIS_H + i * ROW
        x0, x1 = x_of(t.start - t0), x_of(t.end - t0)
        tip = escape(f"{t.name}: {t.seconds:.3f} s, lane {t.lane or '-'}" + (f", {t.note}" if t.note else ""))
        parts.append(f'<text x="{LABEL_W - 8}" y="{y + 15}" text-anchor="end">{escape(t.name)}</text>')
        parts.append(f'<rect class="stage" data-stage="{escape(t.name)}" data-lane="{escape(t.lane)}" '
                     f'x="{x0:.2f}" y="{y + (ROW - BAR) / 2:.1f}" width="{max(x1 - x0, 1.0):.2f}" '
                     f'height="{BAR}" rx="2" fill="{colours[t.lane]}"><title>{tip}</title></rect>')
        parts.append(f'<text x="{width - 6}" y="{y + 15}" text-anchor="end">{t.seconds:.3f} s</text>')
    y = AXIS_H + ROW * len(rows) + 17
    x = LABEL_W
    for lane, colour in colours.items():
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{y}">lane {escape(lane or "-")}</text>')
        x += 110
    parts.append("</svg>")
    return "".join(parts)
