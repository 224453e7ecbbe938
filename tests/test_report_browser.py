"""``assetgen process ... --preview DIR`` end to end, and its report.html in headless Chromium.

One real run (a two-material sphere, orange and teal, through the whole ``process`` pipeline at a small
budget, ~15 s on the 2-core CI machine) feeds both tests: the folder and the page's content, then the page
in Chromium (tests/chromium_cdp.py: WebGL on SwiftShader, DevTools protocol over a pipe) with no console
error, the viewer ready, and the viewer's canvas showing the model in the atlas's own colours. The browser
test skips only when Chromium is missing (and fails then under CI, where .ci/setup installs it).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from chromium_cdp import Chromium, require_chromium

from engine.cli import main

ORANGE, TEAL = (0.9, 0.35, 0.05), (0.05, 0.5, 0.55)


@pytest.fixture(scope="module")
def preview(tmp_path_factory) -> tuple[Path, Path, str]:
    """(GLB, preview folder, stdout) of one ``process --preview`` run on a sphere painted by two materials."""
    from test_simplify import uv_sphere

    root = tmp_path_factory.mktemp("report")
    sphere = uv_sphere(16)
    lines, current = ["mtllib ball.mtl"], None
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in sphere.vertices]
    for face in sphere.faces:
        material = "orange" if sphere.vertices[face, 0].mean() > 0 else "teal"
        if material != current:
            lines.append(f"usemtl {material}")
            current = material
        lines.append("f " + " ".join(str(i + 1) for i in face))
    (root / "ball.obj").write_text("\n".join(lines) + "\n")
    (root / "ball.mtl").write_text("".join(f"newmtl {n}\nKd {r} {g} {b}\n"
                                           for n, (r, g, b) in (("orange", ORANGE), ("teal", TEAL))))
    glb, folder = root / "out" / "ball.glb", root / "preview"
    glb.parent.mkdir()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["process", str(root / "ball.obj"), "-o", str(glb), "--faces", "500", "--texture-size",
                     "256", "--normal-map-size", "256", "--preview", str(folder)])
    assert code == 0, out.getvalue()
    return glb, folder, out.getvalue()


def atlas_colours(glb: Path, count: int = 2) -> np.ndarray:
    """The ``count`` most common colours float [count, 3] (0..255) of the GLB's atlas inside its charts
    (texels binned by 16 levels per channel; each bin's mean)."""
    from engine.geometry.rasterize import rasterize_uv
    from engine.io.asset_load import load_mesh

    mesh = load_mesh(glb)
    face, _ = rasterize_uv(mesh.uvs, mesh.faces, mesh.base_color.shape[0])
    texels = mesh.base_color[face >= 0].astype(int)
    keys = (texels // 16) @ np.array([256, 16, 1])
    top = np.argsort(-np.bincount(keys))[:count]
    return np.array([texels[keys == k].mean(axis=0) for k in top])


def chroma_shares(pixels: np.ndarray, colours: np.ndarray, tolerance: float = 0.06) -> np.ndarray:
    """Share of ``pixels`` [N, 3] whose chromaticity rgb / (r + g + b) lies within ``tolerance`` of each
    colour's: light scales brightness, not chromaticity (no tone mapping, white lights)."""
    def chroma(c):
        c = np.asarray(c, float)
        return c / np.maximum(c.sum(axis=-1, keepdims=True), 1.0)
    dist = np.linalg.norm(chroma(pixels)[:, None, :] - chroma(colours)[None, :, :], axis=2)   # [N, K]
    return (dist < tolerance).mean(axis=0)


def test_preview_folder_and_report_content(preview):
    from PIL import Image

    from engine.io.glb_export import read_glb_summary

    glb, folder, printed = preview
    assert f"wrote {folder / 'report.html'}" in printed
    frames = sorted(p.name for p in (folder / "frames").iterdir())
    assert frames == [f"turntable_{k:02d}_az{45 * k:03d}.png" for k in range(8)]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["ball.glb", "frames", "report.html", "turntable.png", "uv_layout.png", "wireframe.png"]
    assert (folder / "ball.glb").read_bytes() == glb.read_bytes()                 # no temporary files left
    frame = np.asarray(Image.open(folder / "frames" / frames[1]).convert("RGB")).reshape(-1, 3)
    model = frame[np.abs(frame.astype(int) - (236, 238, 242)).sum(axis=1) > 30]
    shares = chroma_shares(model, atlas_colours(glb))
    assert shares.min() > 0.1 and shares.sum() > 0.6, shares                    # our renderer's colours
    html = (folder / "report.html").read_text()
    summary = read_glb_summary(glb)
    assert f"<th>faces</th><td>{summary['faces']:,}</td>" in html
    assert "normal map</th><td><span class=\"ok\">yes</span> 256 x 256" in html
    for stage in ("load mesh", "hidden-face removal", "normal bake", "export glb"):
        assert f'data-stage="{stage}"' in html                                  # one Gantt bar per stage
    assert "Previews and this report made in" in html and "input mesh" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)        # nothing from the network
    for img in re.findall(r'<img[^>]+src="([^"]+)"', html):
        assert (folder / img).is_file(), img


def test_report_in_headless_chromium(preview, tmp_path):
    """No console error, the viewer renders, and its canvas shows the model in the atlas's colours."""
    from PIL import Image

    require_chromium()
    glb, folder, _ = preview
    with Chromium(1280, 1000) as browser:
        browser.open((folder / "report.html").as_uri())
        state = browser.wait_for("document.body && document.body.dataset.viewer !== 'loading' && "
                                 "document.body.dataset.viewer")
        dom_errors = browser.evaluate("document.getElementById('console-errors').textContent")
        rect = browser.evaluate("JSON.stringify(document.getElementById('viewer').getBoundingClientRect())")
        status = browser.evaluate("document.getElementById('viewer-status').textContent")
        shot = browser.screenshot()
        log = browser.log
    (tmp_path / "report.png").write_bytes(shot)
    assert state == "ready", (status, log.errors)
    assert log.errors == [] and dom_errors == "", (log.errors, dom_errors)
    assert "three.js r" in status
    box = json.loads(rect)
    x, y, w, h = (int(round(box[k])) for k in ("x", "y", "width", "height"))
    assert w >= 300 and h >= 200 and y + h <= 1000                              # in the first screen
    canvas = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))[y + 2:y + h - 2, x + 2:x + w - 2]
    pixels = canvas.reshape(-1, 3).astype(int)
    model = pixels[np.abs(pixels - (0x2a, 0x2e, 0x36)).sum(axis=1) > 30]         # not the viewer background
    assert 0.05 < len(model) / len(pixels) < 0.9, len(model) / len(pixels)
    shares = chroma_shares(model, atlas_colours(glb))
    assert shares.min() > 0.1 and shares.sum() > 0.6, shares
