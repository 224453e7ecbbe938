"""The report's parts that need no browser: the vendored three.js against npm's package, the import map of
``data:`` modules, the latency Gantt chart, and the --preview folder rules. Fast (< 1 s)."""

from __future__ import annotations

import base64
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.report import check_preview_root, preview_folder
from engine.report.config import PreviewConfig
from engine.report.latency_chart import LABEL_W, VALUE_W, latency_svg, tick_step
from engine.report.viewer import MODULES, THREE_VERSION, VENDOR, import_map_json
from profiling.stage_timer import StageTimer, StageTiming

NPM_THREE = Path(__file__).resolve().parent / ".node" / "node_modules" / "three"


def test_vendored_three_is_npm_three_byte_for_byte():
    """engine/report/vendor/three holds files of three@THREE_VERSION unchanged (.ci/setup installs it)."""
    package = NPM_THREE / "package.json"
    if not package.is_file():
        reason = f"three.js npm package missing at {NPM_THREE} (run: .ci/setup)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert json.loads(package.read_text())["version"] == THREE_VERSION
    vendored = [p.relative_to(VENDOR) for p in VENDOR.rglob("*") if p.is_file() and p.name != "README.md"]
    assert sorted(map(str, vendored)) == sorted([*MODULES.values(), "LICENSE"])
    for rel in vendored:
        assert (VENDOR / rel).read_bytes() == (NPM_THREE / rel).read_bytes(), rel
    assert sum((VENDOR / rel).stat().st_size for rel in vendored) < 1.5e6


def test_import_map_holds_every_module_without_relative_imports():
    imports = json.loads(import_map_json())["imports"]
    assert set(imports) == set(MODULES)
    for name, url in imports.items():
        assert url.startswith("data:text/javascript;base64,"), name
        source = base64.b64decode(url.split(",", 1)[1]).decode()
        assert not re.search(r"""(from|import)\s*\(?\s*['"]\.{1,2}/""", source), name
        for spec in re.findall(r"""(?:\}|\*\s*as\s+\w+)\s*from\s*['"]([^'"]+)['"]""", source):
            assert spec in MODULES, (name, spec)                    # every import resolves in the map
    three = base64.b64decode(imports["three"].split(",", 1)[1]).decode()
    assert 'from"three/core"' in three and f'"{THREE_VERSION.split(".")[1]}"' in \
        base64.b64decode(imports["three/core"].split(",", 1)[1]).decode()[:400]


def _timer() -> StageTimer:
    """Three stages: two overlapping on the gpu and cpu lanes, one after them."""
    timer = StageTimer(device="cpu")
    stages = (("shape <prior>", 10.0, 12.0, "gpu"), ("texture & bake", 11.0, 15.0, "cpu"),
              ("export glb", 15.0, 16.0, "cpu"))
    for name, start, end, lane in stages:
        timer.add(StageTiming(name, end - start, "a note", start, end, lane))
    return timer


def test_latency_chart_places_each_stage_on_the_wall_clock():
    width = 900
    svg = latency_svg(_timer().timings, width=width)
    root = ET.fromstring(svg)                                          # well-formed, names escaped
    ns = {"s": "http://www.w3.org/2000/svg"}
    bars = [r for r in root.findall("s:rect", ns) if r.get("class") == "stage"]
    assert [b.get("data-stage") for b in bars] == ["shape <prior>", "texture & bake", "export glb"]
    plot = width - LABEL_W - VALUE_W
    span = 6.0                                                         # 10 s .. 16 s
    for bar, (start, end) in zip(bars, ((0, 2), (1, 5), (5, 6))):
        assert float(bar.get("x")) == pytest.approx(LABEL_W + plot * start / span, abs=0.01)
        assert float(bar.get("width")) == pytest.approx(plot * (end - start) / span, abs=0.01)
    assert bars[0].get("fill") != bars[1].get("fill") == bars[2].get("fill")   # coloured by lane
    assert "texture &amp; bake: 4.000 s, lane cpu, a note" in svg
    assert tick_step(6.0) == 1.0 and tick_step(31.2) == 5.0 and tick_step(0.04) == 0.005


def test_preview_folder_rules(tmp_path):
    glb = tmp_path / "out" / "crate.glb"
    assert preview_folder(tmp_path / "p", glb, several=False) == tmp_path / "p"
    assert preview_folder(tmp_path / "p", glb, several=True) == tmp_path / "p" / "crate"
    assert check_preview_root(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_preview_root(tmp_path / "file")
    with pytest.raises(ConfigError, match="does not exist"):
        check_preview_root(tmp_path / "missing" / "p")
    with pytest.raises(ConfigError, match="out of range"):
        PreviewConfig(frames=0)


def test_bad_preview_folder_is_refused_before_any_work(tmp_path, capsys):
    """--preview under a missing folder, or naming a file: one line, exit 2, no stage started, no GLB."""
    from engine.cli import main

    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "missing" / "p", tmp_path / "file"):
        out = tmp_path / "out.glb"
        assert main(["process", str(tmp_path / "mesh.obj"), "-o", str(out), "--preview", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --preview") and "(fix: " in err[0], err
        assert not out.exists()
