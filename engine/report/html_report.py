"""``report.html``: one page per asset that works offline from its folder.

Sections: the three.js viewer of the GLB (``engine.report.viewer``: vendored three.js inlined as ``data:``
URLs, the GLB inlined as base64, since a ``file://`` page may not fetch), the turntable contact sheet and
its frames, the latency breakdown (``latency_chart``) with the stage table, the asset contract as
``read_glb_summary`` reads it back from the written GLB, the UV layout, the wireframe, the run's sources,
notes and warnings, and what making the previews cost (off the critical path: after the asset was written).
Pictures are referenced by relative paths (``<img>`` loads from ``file://``). Page errors and warnings are
recorded into ``#console-errors`` / ``#console-warnings`` by ``error_hook.js``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

from engine.report.latency_chart import latency_svg
from engine.report.viewer import THREE_VERSION, import_map_json, licence_text, static_text
from profiling.stage_timer import StageTimer


@dataclass(frozen=True)
class ReportPage:
    """What the page shows. Picture paths are relative to the report's folder.

    glb_bytes:      the GLB inlined for the viewer, or None to leave the viewer out.
    summary:        ``engine.io.glb_export.read_glb_summary`` of the written GLB.
    preview_parts:  (part, seconds) of making the previews, in order.
    """

    title: str
    glb_name: str
    glb_bytes: bytes | None
    summary: dict
    timer: StageTimer
    sources: dict[str, str]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    turntable: str
    frames: tuple[str, ...]
    uv_layout: str
    wireframe: str
    preview_parts: tuple[tuple[str, float], ...]
    created: str
    background: str = "#2a2e36"


def _yes(flag: bool) -> str:
    return '<span class="ok">yes</span>' if flag else '<span class="missing">no</span>'


def _size(value) -> str:
    return f"{value[0]} x {value[1]}" if value else '<span class="missing">none</span>'


def _vec(v) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"


def contract_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, HTML value) rows of the asset contract table."""
    sizes = summary.get("texture_sizes", {})
    rows = [("faces", f"{summary['faces']:,}"), ("vertices", f"{summary['vertices']:,}"),
            ("primitives", str(summary["primitives"])),
            ("UVs (TEXCOORD_0)", _yes(summary["has_uv"])), ("normals", _yes(summary["has_normals"])),
            ("tangents", _yes(summary["has_tangents"])),
            ("base colour texture", _yes(summary["has_base_color"]) + " " + _size(sizes.get("base_color"))),
            ("normal map", _yes(summary["has_normal_map"]) + " " + _size(sizes.get("normal_map")))]
    bounds = summary.get("bounds")
    if bounds:
        lo, hi = bounds
        rows.append(("bounds (m, +Y up)", f"{_vec(lo)} to {_vec(hi)}; size "
                     f"{_vec([b - a for a, b in zip(lo, hi)])}"))
    rows.append(("generator", escape(str(summary.get("generator")))))
    rows.append(("file size", f"{summary['file_bytes'] / 1e6:.2f} MB"))
    return rows


def _table(rows: list[tuple[str, str]], cls: str = "") -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def stage_table(timer: StageTimer) -> str:
    """The stage timings as an HTML table: stage, lane, seconds, share, note; then sum and critical path."""
    total = timer.total()
    head = ('<tr><th>stage</th><th>lane</th><th class="num">seconds</th><th class="num">share</th>'
            '<th>note</th></tr>')
    rows = []
    for t in sorted(timer.timings, key=lambda t: t.start):
        share = 100.0 * t.seconds / total if total > 0 else 0.0
        rows.append(f"<tr><td>{escape(t.name)}</td><td>{escape(t.lane)}</td>"
                    f"<td class=num>{t.seconds:.3f}</td><td class=num>{share:.1f}%</td>"
                    f"<td>{escape(t.note)}</td></tr>")
        rows += [f"<tr class=small><td>&nbsp;&nbsp;. {escape(n)}</td><td></td><td class=num>{s:.3f}</td>"
                 "<td></td><td></td></tr>" for n, s in t.substeps]
    rows.append(f"<tr><th>sum of stages</th><td></td><th class=num>{total:.3f}</th><td></td><td></td></tr>")
    rows.append(f"<tr><th>critical path (wall)</th><td></td><th class=num>{timer.wall():.3f}</th><td></td>"
                "<td>first stage start to last stage end; stages overlap where the graph allows</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _list(items: tuple[str, ...] | list[str], empty: str) -> str:
    if not items:
        return f'<p class="small">{escape(empty)}</p>'
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _viewer(page: ReportPage) -> tuple[str, str]:
    """(section HTML, scripts at the end of <body>) of the 3D viewer."""
    if page.glb_bytes is None:
        return ("<section><h2>3D viewer</h2><p class=small>left out (PreviewConfig.viewer is off)</p>"
                "</section>", "")
    section = (f'<section id="viewer-section"><h2>3D viewer</h2><canvas id="viewer" '
               f'data-background="{escape(page.background)}"></canvas>'
               '<p id="viewer-status">loading the viewer...</p></section>')
    data = base64.b64encode(page.glb_bytes).decode()
    scripts = (f'<script id="glb-data" type="application/octet-stream">{data}</script>\n'
               f'<script type="module">\n{static_text("viewer.js")}\n</script>\n')
    return section, scripts


def render_report(page: ReportPage) -> str:
    """The full HTML document of ``page``."""
    viewer_section, viewer_scripts = _viewer(page)
    made = sum(s for _, s in page.preview_parts)
    parts_text = ", ".join(f"{name} {s:.2f} s" for name, s in page.preview_parts)
    sources = [f"{k}: {v}" for k, v in page.sources.items()]
    frames = "".join(f'<a href="{escape(f)}"><img src="{escape(f)}" alt="{escape(f)}" loading="lazy"></a>'
                     for f in page.frames)
    importmap = f'<script type="importmap">{import_map_json()}</script>' if page.glb_bytes is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>AssetGen report: {escape(page.title)}</title>
<script>{static_text("error_hook.js")}</script>
<style>{static_text("report.css")}</style>
{importmap}
</head>
<body data-viewer="{'loading' if page.glb_bytes is not None else 'off'}">
<header><h1>{escape(page.title)}</h1>
<p><a href="{escape(page.glb_name)}">{escape(page.glb_name)}</a> ({page.summary['file_bytes'] / 1e6:.2f} MB),
{page.summary['faces']:,} faces; run on {escape(page.timer.device)}: critical path {page.timer.wall():.2f} s.
Previews and this report made in {made:.2f} s after the asset was written (not part of its latency),
{escape(page.created)}.</p></header>
<main>
<pre id="console-errors" class="errors" hidden></pre>
<pre id="console-warnings" class="warnings" hidden></pre>
<div class="row">{viewer_section}
<section><h2>Turntable (our rasteriser: base colour, normal map, Lambert light)</h2>
<a href="{escape(page.turntable)}"><img class="preview" src="{escape(page.turntable)}" alt="turntable"></a>
<details class="frames"><summary>frames</summary>{frames}</details></section></div>
<section><h2>Latency breakdown</h2>{latency_svg(page.timer.timings)}
<details><summary>stage table</summary>{stage_table(page.timer)}</details></section>
<div class="row"><section><h2>Asset contract (read back from the GLB)</h2>
{_table(contract_rows(page.summary))}</section>
<section><h2>Notes and warnings</h2><h3>sources</h3>{_list(sources, "none")}
<h3>warnings (this request)</h3>{_list(page.warnings, "none")}
<h3>notes (configuration)</h3>{_list(page.notes, "none")}</section></div>
<div class="row"><section><h2>UV layout</h2>
<a href="{escape(page.uv_layout)}"><img class="preview" src="{escape(page.uv_layout)}" alt="UV layout"></a>
<p class=small>atlas inside the charts, triangle edges lightened, chart outlines coloured; grid = unused</p>
</section><section><h2>Wireframe</h2>
<a href="{escape(page.wireframe)}"><img class="preview" src="{escape(page.wireframe)}" alt="wireframe"></a>
<p class=small>visible triangle edges, front-right and rear-left</p></section></div>
<section><h2>This report</h2><p class=small>Made in {made:.2f} s: {escape(parts_text)}.
Pictures by AssetGen's CPU rasteriser (orthographic); the viewer is three.js r{escape(THREE_VERSION)}
(MIT), inlined so the page works offline from its folder.</p>
<details><summary>three.js licence</summary><pre class=small>{escape(licence_text())}</pre></details>
</section>
</main>
{viewer_scripts}</body></html>
"""
