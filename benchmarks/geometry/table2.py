"""Mesh simplification, all columns of paper Table 2: latency, Chamfer, Hausdorff, flipped-normal pixels,
baked mean and geometric mean normal error, per asset and face budget, for every simplifier we have.

Methods (``benchmarks.geometry.simplify_reference`` settings, imported, not copied): ``meshlab``,
``meshoptimizer``, ``qem_ref`` (paper 6.1 on-edge placement), ``qem_ref_bounded`` (BOUNDED_OPTIMAL), and,
when ``engine.geometry.simplify_gpu.simplify_qem_gpu`` exists and CUDA is available, ``qem_gpu`` /
``qem_gpu_bounded`` (called as ``simplify_qem_gpu(mesh, target, placement)``, returning a TriMesh or a
(TriMesh, report) pair like ``simplify_qem``; CUDA-event timing after one warm-up call).

Inputs: ``dense_inputs.dense_mesh(asset, --resolution)`` (512: ~1M faces; sha256 recorded with every
result, and checked when quality is computed elsewhere); budgets 5K and 10K faces.
Quality (``simplify_reference.quality``: distances in units of the dense mesh's longest box side) plus
"Baked mean": ``unwrap_uv(result, 1024)`` + ``compute_tangents`` + ``bake_normal_map`` (CPU reference,
1024^2) + ``baked_normal_error`` against the dense mesh, the same samples as the geometric mean.

Phases, so each machine runs what it can (the GPU machine has no pymeshlab / meshoptimizer):
  --method M --results F.json --meshes DIR   simplify (timed), save each result as DIR/M_asset_target.npz;
                                             quality too unless --no-quality
  --quality F.json --meshes DIR              fill in the quality of rows measured with --no-quality
  --table F1 F2 ...                          merge into benchmarks/results/geometry_table2.md + CSV rows
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result, git_sha, percentiles, time_repeats
from benchmarks.geometry.bake_table import (
    checked_dense,
    csv_for,
    device_name,
    gpu_timer,
    machine,
    mesh_sha256,
    write_json,
)
from benchmarks.geometry.dense_inputs import all_assets, dense_mesh, shared_dir
from benchmarks.geometry.simplify_reference import METHODS as CPU_METHODS
from benchmarks.geometry.simplify_reference import quality, warm_up
from engine.errors import AssetGenError
from engine.geometry.mesh import TriMesh

GPU_METHODS = ("qem_gpu", "qem_gpu_bounded")
METHODS = tuple(CPU_METHODS) + GPU_METHODS
TARGETS = (5000, 10000)
COLUMNS = (("latency", "s", "Latency (s)", "{:.3f}"),          # (key, unit, header, format)
           ("chamfer", "x1e-5", "Chamfer (x1e-5)", "{:.1f}"),
           ("hausdorff", "x1e-3", "Hausdorff (x1e-3)", "{:.2f}"),
           ("flipped_px", "px", "Flipped px", "{:.0f}"),
           ("baked_mean", "deg", "Baked mean (deg)", "{:.2f}"),
           ("geo_mean", "deg", "Geo mean (deg)", "{:.2f}"))


def gpu_method(placement_name: str):
    """A (mesh, target) -> TriMesh runner around simplify_qem_gpu, imported lazily."""
    from engine.geometry.simplify import Placement
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    placement = Placement[placement_name]

    def run(mesh: TriMesh, target: int) -> TriMesh:
        out = simplify_qem_gpu(mesh, target, placement)
        return out[0] if isinstance(out, tuple) else out
    return run


def unavailable(method: str) -> str | None:
    """None when ``method`` can run here, else why not."""
    import importlib.util

    if method in GPU_METHODS:
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available"
        if importlib.util.find_spec("engine.geometry.simplify_gpu") is None:
            return "engine.geometry.simplify_gpu does not exist yet"
    for module, methods in (("pymeshlab", ("meshlab",)), ("meshoptimizer", ("meshoptimizer",))):
        if method in methods and importlib.util.find_spec(module) is None:
            return f"{module} is not installed here"
    return None


def timed(method: str, dense: TriMesh, target: int, repeats: int) -> tuple[list[float], TriMesh]:
    """Seconds of ``repeats`` calls (CPU: wall time; GPU: CUDA events after one warm-up) and the result."""
    if method not in GPU_METHODS:
        return time_repeats(lambda: CPU_METHODS[method](dense, target), repeats=repeats, warmup=0)
    fn = gpu_method("ON_EDGE" if method == "qem_gpu" else "BOUNDED_OPTIMAL")
    out = fn(dense, target)
    start, stop = gpu_timer()
    times = []
    for _ in range(repeats):
        start()
        out = fn(dense, target)
        times.append(stop())
    return times, out


def baked_mean(dense: TriMesh, out: TriMesh, points: int, size: int) -> float:
    """Unwrap + tangents + CPU bake of ``out``, then baked_normal_error vs ``dense`` (degrees)."""
    from engine.geometry.normal_bake import bake_normal_map, baked_normal_error
    from engine.geometry.tangents import compute_tangents
    from engine.geometry.uv_unwrap import unwrap_uv

    low, _ = unwrap_uv(TriMesh(out.vertices, out.faces), size)
    low.tangents = compute_tangents(low)
    nm, _ = bake_normal_map(low, dense, size)
    return baked_normal_error(low.copy(normal_map=nm), dense, n=points, seed=0)


def score(row: dict, dense: TriMesh, out: TriMesh, args) -> None:
    row.update(quality(dense, out, args.points, args.view_px))
    row["baked_mean"] = baked_mean(dense, out, args.points, args.bake_size)


def run_method(args) -> None:
    reason = unavailable(args.method)
    payload = {"method": args.method, "device": device_name() if args.method in GPU_METHODS else "cpu",
               "machine": machine(), "git_sha": git_sha(), "resolution": args.resolution,
               "repeats": args.repeats, "points": args.points, "view_px": args.view_px,
               "bake_size": args.bake_size, "skipped": reason, "rows": []}
    if reason:
        print(f"{args.method}: skipped: {reason}")
        return write_json(args.results, payload)
    if args.method.startswith("qem_ref"):
        payload["warmup_s"] = warm_up()
    meshes = Path(args.meshes)
    meshes.mkdir(parents=True, exist_ok=True)
    shared = shared_dir(args.shared)
    for asset in args.assets or all_assets(shared):
        try:
            dense, _ = dense_mesh(asset, args.resolution, shared)
        except AssetGenError as err:
            print(f"{asset}: skipped ({err})", flush=True)
            continue
        for target in args.targets:
            times, out = timed(args.method, dense, target, args.repeats)
            path = meshes / f"{args.method}_{asset}_{target}.npz"
            np.savez(path, vertices=out.vertices, faces=out.faces)
            row = {"asset": asset, "target": target, "dense_faces": dense.num_faces,
                   "dense_sha256": mesh_sha256(dense), "latency_s": times, "faces": out.num_faces,
                   "mesh": path.name}
            if not args.no_quality:
                score(row, dense, out, args)
            payload["rows"].append(row)
            write_json(args.results, payload)
            print(f"{args.method} {asset} {target}: {np.median(times):.3f} s, {out.num_faces} faces"
                  + ("" if args.no_quality else f", CD {row['chamfer']:.1f} HD {row['hausdorff']:.2f} "
                     f"flip {row['flipped_px']:.0f} baked {row['baked_mean']:.2f} geo {row['geo_mean']:.2f}"),
                  flush=True)
    write_json(args.results, payload)


def fill_quality(args) -> None:
    """Quality of rows written with --no-quality (e.g. on the GPU machine), from their saved meshes."""
    payload = json.loads(Path(args.quality).read_text())
    for row in payload["rows"]:
        if "chamfer" in row:
            continue
        dense = checked_dense(row["asset"], payload["resolution"], row["dense_sha256"], args.shared)
        d = np.load(Path(args.meshes) / row["mesh"])
        score(row, dense, TriMesh(d["vertices"], d["faces"]), args)
        payload |= {"points": args.points, "view_px": args.view_px, "bake_size": args.bake_size,
                    "quality_machine": machine()}
        write_json(args.quality, payload)
        print(f"{payload['method']} {row['asset']} {row['target']}: quality done", flush=True)


def _mean_row(rows: list[dict]) -> dict:
    lat = [float(np.median(r["latency_s"])) for r in rows]
    return {"latency": float(np.mean(lat))} | {
        k: float(np.mean([r[k] for r in rows])) for k, *_ in COLUMNS[1:]} | {
        "faces": float(np.mean([r["faces"] for r in rows]))}


def table(args) -> None:
    runs = [json.loads(Path(f).read_text()) for f in args.table]
    done = [r for r in runs if not r["skipped"] and r["rows"] and all("chamfer" in x for x in r["rows"])]
    assets = sorted({x["asset"] for r in done for x in r["rows"]})
    lines = ["# Mesh simplification, paper Table 2 (all columns)", "",
             f"Merged by `python -m benchmarks.geometry.table2 --table` at git `{git_sha()}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    if done:
        r0 = done[0]
        lines += [f"Inputs: dense watertight MC {r0['resolution']}^3 of {len(assets)} assets "
                  f"({', '.join(assets)}). Metrics vs the dense mesh (distances in units of its longest box "
                  f"side): Chamfer / Hausdorff from {r0['points']:,} samples per direction; flipped-normal "
                  f"px over 24 views at {r0['view_px']} px (paper: 1024 px); Baked mean = unwrap_uv + CPU "
                  f"bake_normal_map at {r0['bake_size']}^2 + baked_normal_error; Geo mean = face-normal "
                  "angle (normal_angular_error). Values are means over assets; latency = per-asset median "
                  "of the timed calls, then the mean.", ""]
    lines += ["Rows average over different asset sets when a run is partial (Assets column): compare methods "
              "like for like in the per-asset table below.", "",
              "| Target | Method | Device | Assets | " + " | ".join(c[2] for c in COLUMNS) + " | Faces |",
              "|---|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for target in TARGETS:
        for r in done:
            rows = [x for x in r["rows"] if x["target"] == target]
            if rows:
                m = _mean_row(rows)
                head = f"| {target // 1000}K | {r['method']} | {r['device']} | {len(rows)} | "
                lines.append(head + " | ".join(fmt.format(m[k]) for k, _, _, fmt in COLUMNS)
                             + f" | {m['faces']:.0f} |")
    missing = [f"- {r['method']}: {r['skipped'] or 'no rows / quality missing'}"
               for r in runs if r not in done]
    lines += ["", "Not measured:", ""] + missing if missing else []
    lines += ["", "Where each latency was measured (CPU latencies are single-thread-comparable across "
              "machines: MeshLab, meshoptimizer and qem_ref run on one core; only the machines' per-core "
              "speed differs):", ""] + [f"- {r['method']}: {r['device']} on {r['machine']}, {r['repeats']} "
                                        "timed calls" for r in done]
    lines += ["", "Per asset (Chamfer / Hausdorff / flipped px / baked deg / geo deg / latency s):", "",
              "| Asset | Target | " + " | ".join(r["method"] for r in done) + " |",
              "|---|---|" + "---|" * len(done)]
    for asset in assets:
        for target in TARGETS:
            cells = [next((x for x in r["rows"] if x["asset"] == asset and x["target"] == target), None)
                     for r in done]
            if not any(cells):
                continue
            lines.append(f"| {asset} | {target} | " + " | ".join("-" if c is None else (
                f"{c['chamfer']:.1f} / {c['hausdorff']:.2f} / {c['flipped_px']:.0f} / {c['baked_mean']:.2f}"
                f" / {c['geo_mean']:.2f} / {np.median(c['latency_s']):.2f}") for c in cells) + " |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    if not args.no_csv:
        add_csv_rows(done)
    print(f"wrote {args.md}")


def add_csv_rows(done: list[dict]) -> None:
    for r in done:
        config = (f"dense MC {r['resolution']}^3; points={r['points']}; flipped=24 views x {r['view_px']}px; "
                  f"bake {r['bake_size']}^2; stats across assets")
        for target in TARGETS:
            rows = [x for x in r["rows"] if x["target"] == target]
            if not rows:
                continue
            size = f"{len(rows)} assets -> {target} faces"
            for key, unit, *_ in COLUMNS:
                vals = [float(np.median(x["latency_s"])) if key == "latency" else x[key] for x in rows]
                append_result(csv_for(r["device"]), "geometry_table2", r["method"], key, unit, size,
                              *percentiles(vals), config, r["device"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phase = ap.add_mutually_exclusive_group(required=True)
    phase.add_argument("--method", choices=METHODS)
    phase.add_argument("--quality", metavar="RESULTS_JSON")
    phase.add_argument("--table", nargs="+", metavar="RESULTS_JSON")
    ap.add_argument("--results", metavar="FILE.json")
    ap.add_argument("--meshes", metavar="DIR", help="where result meshes are saved / read")
    ap.add_argument("--assets", nargs="*", default=None)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--targets", type=int, nargs="+", default=list(TARGETS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--view-px", type=int, default=256)
    ap.add_argument("--bake-size", type=int, default=1024)
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--md", default=str(RESULTS / "geometry_table2.md"))
    ap.add_argument("--no-csv", action="store_true", help="--table: write no CSV rows (trial runs)")
    args = ap.parse_args()
    if args.method:
        if not (args.results and args.meshes):
            ap.error("--method needs --results FILE.json and --meshes DIR")
        run_method(args)
    elif args.quality:
        if not args.meshes:
            ap.error("--quality needs --meshes DIR")
        fill_quality(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
