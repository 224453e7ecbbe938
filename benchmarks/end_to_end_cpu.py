"""Every shared picture through ``generate`` and every shared mesh through ``process``,
each output checked by the Khronos glTF-Validator and against the asset contract; per-stage timings.

Writes ``benchmarks/results/end_to_end_<device>.md`` and appends per-stage medians to
``benchmarks/results/<device>.csv``. Run from the repo root after ``bash .ci/setup``:

    .venv/bin/python -m benchmarks.end_to_end_cpu [--device cpu] [--faces 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import append_result, percentiles
from engine.config import PipelineConfig
from engine.io.asset_load import find_mesh_file
from engine.io.glb_export import read_glb_summary
from engine.runtime.engine import Engine

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests"))
from gltf_validator import validate_gltf  # noqa: E402  (test harness: runs node + gltf-validator)


def _mesh_inputs() -> list[Path]:
    """The main mesh file of every shared asset folder (folders without one are skipped)."""
    found = []
    for folder in sorted(p for p in (SHARED / "assets").iterdir() if p.is_dir()):
        try:
            found.append(find_mesh_file(folder))
        except FileNotFoundError:
            continue
    return found


def _check(path: Path, faces: int) -> tuple[str, dict]:
    report = validate_gltf(path)["issues"]
    summary = read_glb_summary(path)
    contract = all(summary[k] for k in ("has_uv", "has_tangents", "has_normal_map", "has_base_color"))
    ok = report["numErrors"] == 0 and report["numWarnings"] == 0 and contract and summary["faces"] <= faces
    verdict = "pass" if ok else f"FAIL ({report['numErrors']} errors, {report['numWarnings']} warnings)"
    return verdict, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, default=20000)
    args = parser.parse_args()
    config = (
        PipelineConfig.from_name("default").with_overrides(faces=args.faces, device=args.device).for_device()
    )
    rows, stage_times = [], {}
    with tempfile.TemporaryDirectory() as tmp, Engine(config) as engine:
        jobs = [("generate", p) for p in sorted((SHARED / "images").glob("*.png"))]
        jobs += [("process", p) for p in _mesh_inputs()]
        for kind, src in jobs:
            out = Path(tmp) / f"{src.stem}.glb"
            t0 = time.perf_counter()
            result = engine.generate(src, out) if kind == "generate" else engine.process(src, out)
            total = time.perf_counter() - t0
            verdict, summary = _check(out, args.faces)
            for t in result.timer.timings:
                stage_times.setdefault((kind, t.name), []).append(t.seconds)
            rows.append((kind, src.relative_to(SHARED), summary["faces"], total, verdict))
            print(
                f"{kind:8s} {src.name:40s} {summary['faces']:6d} faces {total:7.2f} s  {verdict}", flush=True
            )
    _write(rows, stage_times, config, args)


def _write(rows, stage_times, config, args) -> None:
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)"
    lines = [
        f"# End to end on {args.device}: every shared picture and mesh",
        "",
        f"Machine: {machine}. Preset default, {args.faces}-face budget, texture "
        f"{config.texture.atlas_size}^2, normal map {config.geometry.normal_map_size}^2.",
        *[f"- {n}" for n in config.notes],
        "",
        "Each output was checked by the Khronos glTF-Validator (0 errors, 0 warnings required) and for the "
        "contract (faces <= budget, UVs, tangents, normal map, base-colour map). Times include numba JIT "
        "on the first use of each kernel in the process (the first row of each command).",
        "",
        "| command | input | faces | seconds | validator + contract |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {s} | {f} | {t:.2f} | {v} |" for k, s, f, t, v in rows]
    lines += [
        "",
        "## Per-stage seconds (median over inputs, p20-p80 in brackets)",
        "",
        "| command | stage | median | p20 | p80 |",
        "|---|---|---|---|---|",
    ]
    csv = REPO / "benchmarks" / "results" / f"{args.device}.csv"
    for (kind, name), values in stage_times.items():
        med, p20, p80 = percentiles(values)
        lines.append(f"| {kind} | {name} | {med:.3f} | {p20:.3f} | {p80:.3f} |")
        append_result(
            csv,
            "end_to_end",
            f"{kind}:{name}",
            "latency",
            "s",
            f"{args.faces} faces",
            med,
            p20,
            p80,
            "preset=default " + "; ".join(config.notes),
            args.device,
        )
    out = REPO / "benchmarks" / "results" / f"end_to_end_{args.device}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
