"""``write_preview``: the previews and ``report.html`` of one finished asset, into one folder.

Runs after the GLB is written (off the critical path; the page says how long it took). What it writes,
each file atomically (``engine.io.atomic``), so a reader sees a complete file or none:

  FOLDER/report.html                 the report (``html_report``), self-contained but for the pictures
  FOLDER/<asset>.glb                 a copy of the GLB (unless FOLDER already holds it)
  FOLDER/turntable.png               contact sheet of the turntable frames (``render.render_lit``)
  FOLDER/frames/turntable_KK_azAAA.png   each frame
  FOLDER/uv_layout.png               the UV layout (``uv_layout``)
  FOLDER/wireframe.png               the wireframe, front-right and rear-left (``render.render_wireframe``)

The renders read ``result.mesh``, the asset the GLB was written from; the contract table reads the GLB.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError
from engine.io.atomic import atomic_write_bytes
from engine.io.glb_export import read_glb_summary
from engine.report.config import PreviewConfig
from engine.report.html_report import ReportPage, render_report
from engine.report.images import contact_sheet, label, resized, write_png
from engine.report.render import Surface, orbit_camera, prepare_surface, render_lit, render_wireframe
from engine.report.uv_layout import layout_size, uv_layout
from engine.texture.views import SIDE_NAMES

if TYPE_CHECKING:
    from engine.pipeline import RunResult

WIREFRAME_AZIMUTHS = (45.0, 225.0)


@dataclass
class PreviewFiles:
    """What ``write_preview`` wrote: the report, every file (relative to ``folder``), and the seconds each
    part took (``parts``) and in all."""

    folder: Path
    report: Path
    files: list[str] = field(default_factory=list)
    parts: list[tuple[str, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.parts)


def check_preview_root(path: str | Path) -> Path:
    """Check ``--preview DIR`` before any work: DIR may exist as a folder, or be new in an existing
    folder. ConfigError otherwise."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--preview '{root}' is a file, not a folder", "give --preview a folder")
    if not root.exists() and not root.parent.is_dir():
        raise ConfigError(f"--preview folder's parent '{root.parent}' does not exist",
                          "create it first or choose another --preview folder")
    return root


def preview_folder(root: str | Path, glb_path: str | Path, several: bool) -> Path:
    """Where one asset's previews go: ``root`` itself for a single asset, ``root/<glb stem>`` for several."""
    return Path(root) / Path(glb_path).stem if several else Path(root)


def _frame_name(azimuth: float) -> str:
    """"front right (45 deg)" for the rig's named azimuths, else "az 22.5 deg"."""
    if azimuth == round(azimuth) and int(azimuth) % 360 in SIDE_NAMES:
        return f"{SIDE_NAMES[int(azimuth) % 360].replace('_', ' ')} ({azimuth:.0f} deg)"
    return f"az {azimuth:g} deg"


class _Parts:
    """Times the parts of the preview and collects the files written."""

    def __init__(self, out: PreviewFiles) -> None:
        self.out = out

    def png(self, rel: str, image) -> None:
        write_png(self.out.folder / rel, image)
        self.out.files.append(rel)

    def timed(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.out.parts.append((name, now - t0))
        return now


def _turntable(parts: _Parts, surface: Surface, config: PreviewConfig) -> None:
    """Each frame full size under frames/, and the labelled contact sheet."""
    tiles = []
    for k in range(config.frames):
        az = 360.0 * k / config.frames
        frame = render_lit(surface, orbit_camera(az, config.elevation_deg), config.frame_size, config)
        parts.png(f"frames/turntable_{k:02d}_az{az:03.0f}.png", frame)
        tiles.append(label(resized(frame, config.sheet_tile), _frame_name(az)))
    parts.png("turntable.png", contact_sheet(tiles, background=config.background))


def _wireframe(parts: _Parts, surface: Surface, config: PreviewConfig) -> None:
    views = [label(render_wireframe(surface, orbit_camera(az, config.elevation_deg), config.wireframe_size,
                                    config), _frame_name(az)) for az in WIREFRAME_AZIMUTHS]
    parts.png("wireframe.png", contact_sheet(views, columns=2, background=config.background))


def write_preview(result: RunResult, glb_path: str | Path, folder: str | Path,
                  config: PreviewConfig | None = None) -> PreviewFiles:
    """Write the previews and report of ``result`` (an ``engine.pipeline.RunResult``: ``mesh``, ``timer``,
    ``sources``, ``notes``, ``warnings``) whose asset is the GLB ``glb_path``, into ``folder`` (created,
    with its parents). Returns what was written (module docstring for the layout)."""
    config = config or PreviewConfig()
    t = time.perf_counter()
    glb_path, folder = Path(glb_path), Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"preview folder '{folder}' is a file", "give --preview a folder")
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    out = PreviewFiles(folder, folder / "report.html")
    parts = _Parts(out)
    surface = prepare_surface(result.mesh)
    _turntable(parts, surface, config)
    t = parts.timed(f"turntable ({config.frames} frames at {config.frame_size} px)", t)
    _wireframe(parts, surface, config)
    t = parts.timed("wireframe", t)
    layout_edge = layout_size(result.mesh, config.uv_layout_size)
    parts.png("uv_layout.png", uv_layout(result.mesh, layout_edge)[0])
    t = parts.timed(f"uv layout ({layout_edge} px)", t)
    glb_bytes = glb_path.read_bytes()
    copy = folder / glb_path.name
    if not (copy.exists() and copy.samefile(glb_path)):
        atomic_write_bytes(copy, glb_bytes)
    out.files.append(glb_path.name)
    summary = read_glb_summary(copy)
    t = parts.timed("GLB copy + contract", t)
    page = ReportPage(
        title=glb_path.stem, glb_name=glb_path.name, glb_bytes=glb_bytes if config.viewer else None,
        summary=summary, timer=result.timer, sources=dict(result.sources), notes=tuple(result.notes),
        warnings=tuple(result.warnings), turntable="turntable.png",
        frames=tuple(f for f in out.files if f.startswith("frames/")), uv_layout="uv_layout.png",
        wireframe="wireframe.png", preview_parts=tuple(out.parts),
        created=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))
    atomic_write_bytes(out.report, render_report(page).encode("utf-8"))
    out.files.append("report.html")
    parts.timed("report.html", t)
    return out
