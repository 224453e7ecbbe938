"""GPU QEM simplification (+ floater removal) on dense meshes, beside the serial CPU reference (same run).

What runs:
  * inputs: ``benchmarks.geometry.dense_inputs.dense_mesh(asset, --resolution)`` (watertight MC remesh of
    the real asset in [-1, 1]^3; read from ``--dense-cache`` when present), uploaded once as a DeviceMesh;
  * GPU: ``remove_floaters_gpu`` and ``simplify_qem_gpu`` to each target (5K, 10K, 20K) for each placement;
    latency = CUDA events around the call, median (p20/p80) of ``--repeats`` after one warm-up call; the
    first call on a tiny mesh (numba-cuda JIT of every kernel) is reported separately as compile time;
    peak GPU memory = ``torch.cuda.max_memory_allocated`` over one floaters + simplify call beyond the
    resident dense mesh;
  * CPU: the serial reference ``simplify_qem`` on the same mesh and targets (wall clock, one run after
    its JIT warm-up), unless ``--no-serial``;
  * phases (``--phases``, default on): CUDA-event medians of the parts of one floaters + simplify call --
    floaters, ``clean_device``, ``fixed_vertices_device``, the passes -- so a miss of the 0.10 s target
    points at its part;
  * quality: ``benchmarks.geometry.simplify_reference.quality`` (the same metric code and settings as the
    CPU table: Chamfer x1e-5, Hausdorff x1e-3, flipped px over 24 views, geo mean deg) of every result vs
    the dense mesh. MeshLab / meshoptimizer rows are not on the GPU machine: they come from
    ``python -m benchmarks.geometry.simplify_reference --resolution 512 --assets <same>`` run locally.
Writes ``--out`` (markdown) and appends rows to ``--csv``.

Run:  python -m benchmarks.geometry.simplify_gpu [--assets bunny] [--resolution 512] [--placement both]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, append_result, git_sha, percentiles
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, dense_mesh
from benchmarks.geometry.simplify_reference import quality
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import TriMesh
from engine.geometry.simplify import Placement

NAME = "geometry_simplify_gpu"
TARGETS = (5000, 10000, 20000)


def cuda_times(fn, repeats: int) -> tuple[list[float], object]:
    """Seconds per call (CUDA events) of ``repeats`` calls after one warm-up call; (times, last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times, result


def tiny_closed_mesh() -> TriMesh:
    """A tetrahedron subdivided twice (64 faces, closed, CCW outward)."""
    from benchmarks.geometry.simplify_reference import subdivide

    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)
    f = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], np.int32)
    return subdivide(subdivide(TriMesh(v, f)))


def compile_seconds() -> float:
    """First floaters + simplify calls on a tiny mesh (both placements): numba-cuda JIT of every kernel."""
    from engine.geometry.floaters_gpu import remove_floaters_gpu
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    tiny = DeviceMesh.from_trimesh(tiny_closed_mesh(), "cuda")
    t0 = time.perf_counter()
    for placement in Placement:
        simplify_qem_gpu(remove_floaters_gpu(tiny)[0], 40, placement)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def phase_times(dm: DeviceMesh, target: int, placement: Placement, repeats: int) -> dict[str, float]:
    """Median seconds of each part of floaters + simplify (CUDA events around each part)."""
    from engine.geometry.floaters_gpu import remove_floaters_gpu
    from engine.geometry.simplify import _MODE
    from engine.geometry.simplify_gpu import _passes, clean_device
    from triton_kernels.qem_collapse import ROUNDS, fixed_vertices_device

    parts: dict[str, list[float]] = {"floaters": [], "clean": [], "fixed": [], "passes": []}
    for _ in range(repeats + 1):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(5)]
        events[0].record()
        kept, _ = remove_floaters_gpu(dm)
        events[1].record()
        verts, faces = clean_device(kept.vertices, kept.faces)
        events[2].record()
        pos = verts.to(torch.float64).contiguous()
        fixed = fixed_vertices_device(faces, pos.shape[0])
        events[3].record()
        _passes(pos, faces, fixed, target, _MODE[placement], ROUNDS)
        events[4].record()
        torch.cuda.synchronize()
        for i, key in enumerate(parts):
            parts[key].append(events[i].elapsed_time(events[i + 1]) / 1e3)
    return {key: float(np.median(times[1:])) for key, times in parts.items()}     # first call: warm-up


def run_asset(name: str, args, rows: list[dict], emit) -> None:
    from engine.geometry.floaters_gpu import remove_floaters_gpu
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    dense, _ = dense_mesh(name, args.resolution, cache_dir=Path(args.dense_cache))
    dm = DeviceMesh.from_trimesh(dense, "cuda")
    print(f"{name}: dense {dense.num_faces} faces", flush=True)
    placements = list(Placement) if args.placement == "both" else [Placement(args.placement)]
    t_fl, _ = cuda_times(lambda: remove_floaters_gpu(dm), args.repeats)
    rows.append(dict(asset=name, method="floaters_gpu", target=0, latency=t_fl, faces=dense.num_faces))
    emit(rows)
    results = []
    for placement in placements:                             # 1. GPU latency and memory (fast)
        for target in args.targets:
            t_s, (out, rep) = cuda_times(lambda: simplify_qem_gpu(dm, target, placement), args.repeats)
            t_both, _ = cuda_times(lambda: simplify_qem_gpu(remove_floaters_gpu(dm)[0], target, placement),
                                   args.repeats)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            simplify_qem_gpu(remove_floaters_gpu(dm)[0], target, placement)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            row = dict(asset=name, method=f"gpu_{placement.value}", target=target, latency=t_s,
                       latency_with_floaters=t_both, peak_mib=peak, passes=out.meta["simplify_passes"],
                       faces=out.num_faces)
            if args.phases:
                row["phases"] = phase_times(dm, target, placement, args.repeats)
                print("    phases ms: " + "  ".join(f"{k} {v * 1e3:.2f}" for k, v in row["phases"].items()),
                      flush=True)
            rows.append(row)
            results.append((row, out.to_trimesh()))
            print(f"  {target:>6} gpu {placement.value:<16} {np.median(t_s) * 1e3:7.2f} ms (+floaters "
                  f"{np.median(t_both) * 1e3:7.2f} ms)  passes {row['passes']}  peak {peak:6.0f} MiB  "
                  f"faces {out.num_faces} reached {rep.reached}", flush=True)
            emit(rows)
    for row, mesh in results:                                # 2. GPU quality
        row.update(quality(dense, mesh, args.points, args.view_px))
        print(f"  {row['target']:>6} {row['method']:<20} {quality_line(row)}", flush=True)
        emit(rows)
    if args.no_serial:
        return
    for placement in placements:                             # 3. serial CPU reference, same mesh
        for target in args.targets:
            t0 = time.perf_counter()
            ref, _ = simplify_qem(dense, target, placement)
            t_ref = time.perf_counter() - t0
            row = dict(asset=name, method=f"serial_{placement.value}", target=target, latency=[t_ref],
                       **quality(dense, ref, args.points, args.view_px))
            rows.append(row)
            print(f"  {target:>6} {row['method']:<20} {t_ref * 1e3:7.0f} ms  {quality_line(row)}", flush=True)
            emit(rows)


def quality_line(m: dict) -> str:
    return (f"faces {int(m['faces'])}  CD {m['chamfer']:7.2f}  HD {m['hausdorff']:6.2f}  "
            f"flip {int(m['flipped_px'])}  geo {m['geo_mean']:5.2f}")


def write(args, rows: list[dict], compile_s: float) -> None:
    gpu = torch.cuda.get_device_name()
    config = (f"dense MC {args.resolution}^3; points={args.points}; flipped=24 views x {args.view_px}px; "
              f"CUDA events, median of {args.repeats} after warm-up")
    lines = [f"# GPU QEM simplification on {gpu}", "",
             f"Generated by `python -m benchmarks.geometry.simplify_gpu` at git `{git_sha()}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {config}. numba-cuda compile (first "
             f"calls on a tiny mesh): {compile_s:.1f} s. Quality: `simplify_reference.quality` vs the dense "
             "mesh (same metric code and settings as geometry_simplify_cpu.md).", "",
             "| Asset | Method | Target | Latency ms p50 (p20-p80) | +floaters ms | Passes | Peak MiB | "
             "Faces | Chamfer (x1e-5) | Hausdorff (x1e-3) | Flipped px | Geo mean (deg) | "
             "Parts ms (floaters / clean / fixed / passes) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p50, p20, p80 = percentiles(r["latency"])
        cells = [r["asset"], r["method"], str(r["target"]),
                 f"{p50 * 1e3:.2f} ({p20 * 1e3:.2f}-{p80 * 1e3:.2f})",
                 f"{np.median(r['latency_with_floaters']) * 1e3:.2f}" if "latency_with_floaters" in r else "",
                 str(r.get("passes", "")), f"{r['peak_mib']:.0f}" if "peak_mib" in r else "",
                 str(int(r.get("faces", 0)))]
        cells += [f"{r[k]:.2f}" if k in r else "" for k in ("chamfer", "hausdorff", "flipped_px", "geo_mean")]
        cells.append(" / ".join(f"{v * 1e3:.2f}" for v in r["phases"].values()) if "phases" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
        device = "cpu" if r["method"].startswith("serial") else gpu
        done = r.setdefault("_csv", set())
        size = f"{r['asset']} -> {r['target']}" if r["target"] else f"{r['asset']} {int(r['faces'])} faces"
        if "latency" not in done:
            append_result(args.csv, NAME, r["method"], "latency", "s", size, p50, p20, p80, config, device)
        if "latency_with_floaters" in r and "latency_with_floaters" not in done:
            append_result(args.csv, NAME, r["method"], "latency_with_floaters", "s", size,
                          *percentiles(r["latency_with_floaters"]), config, device)
            append_result(args.csv, NAME, r["method"], "peak_memory", "MiB", size, r["peak_mib"], None, None,
                          config, device)
        if "phases" in r and "phases" not in done:
            for part, sec in r["phases"].items():
                append_result(args.csv, NAME, r["method"], f"part_{part}", "s", size, sec, None, None, config,
                              device)
        for key, unit in (("chamfer", "x1e-5"), ("hausdorff", "x1e-3"), ("flipped_px", "px"),
                          ("geo_mean", "deg")):
            if key in r and key not in done:
                append_result(args.csv, NAME, r["method"], key, unit, size, r[key], None, None, config,
                              device)
        done.update(k for k in ("latency", "latency_with_floaters", "chamfer", "hausdorff", "flipped_px",
                                "geo_mean", "phases") if k in r)
    if not rows[0].get("_compile_done"):
        rows[0]["_compile_done"] = True
        append_result(args.csv, NAME, "gpu", "compile", "s", "tiny subdivided tetrahedron", compile_s, None,
                      None, "first calls: numba-cuda JIT", gpu)
    Path(args.out).write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", nargs="+", default=["bunny"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--targets", nargs="+", type=int, default=list(TARGETS))
    ap.add_argument("--placement", choices=["both"] + [p.value for p in Placement], default="both")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--view-px", type=int, default=256)
    ap.add_argument("--dense-cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--no-serial", action="store_true", help="skip the serial CPU reference")
    ap.add_argument("--no-phases", dest="phases", action="store_false", help="skip the per-part timings")
    ap.add_argument("--csv", default=str(RESULTS / "h100.csv"))
    ap.add_argument("--out", default=str(RESULTS / "geometry_simplify_gpu.md"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (run on the device machine)")
    compile_s = compile_seconds()
    print(f"compile (first calls): {compile_s:.1f} s", flush=True)
    rows: list[dict] = []
    for name in args.assets:
        run_asset(name, args, rows, lambda rows: write(args, rows, compile_s))
    print(f"wrote {args.out} and rows in {args.csv}")


if __name__ == "__main__":
    main()
