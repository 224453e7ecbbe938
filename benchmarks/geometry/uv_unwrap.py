"""Paper Table 3 on our data: serial xatlas (``unwrap_uv``) vs partitioned parallel xatlas
(``unwrap_uv_parallel``) and/or projection charts (``unwrap_uv_fast``, ``--methods fast``) on the pipeline's
20K-face meshes, measured in the same run on this machine's CPU.

Input per asset: the dense watertight MC mesh (``dense_inputs.dense_mesh`` at ``--resolution``) simplified
by ``simplify_qem`` to ``--faces``; cached as ``<cache>/<asset>_<resolution>_f<faces>.npz`` so a machine
without the dense cache can be given the very same meshes (``--cache``). Per method: one untimed warm-up,
median (p20, p80) of ``--repeats`` wall-clock runs, charts, utilisation of the ``--atlas``^2 atlas (texel
centres covered), UV seam edges (``uv_seam_edges``), Sander L2 / Linf stretch (1 = isometric), collapsed
faces (zero UV area), overlapping texels between charts. The worker pool's start is reported once,
separately (paid once per process).

Run:  python -m benchmarks.geometry.uv_unwrap [--assets ...] [--resolution 256] [--faces 20000]
          [--workers N] [--halo 0] [--methods serial parallel fast] [--out results.md]
          [--csv benchmarks/results/cpu.csv]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

from benchmarks.common import append_result, percentiles, time_repeats
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, all_assets, dense_mesh, shared_dir
from engine.geometry.mesh import TriMesh
from engine.geometry.simplify import simplify_qem
from engine.geometry.uv_fast import unwrap_uv_fast
from engine.geometry.uv_parallel import unwrap_uv_parallel, uv_pool
from engine.geometry.uv_quality import overlap_texels, uv_seam_edges, uv_stretch
from engine.geometry.uv_unwrap import unwrap_uv


def input_mesh(name: str, resolution: int, faces: int, cache: Path, shared: str | None) -> TriMesh:
    """The asset's ``faces``-face simplified dense mesh (cached)."""
    path = cache / f"{name}_{resolution}_f{faces}.npz"
    if path.is_file():
        data = np.load(path)
        return TriMesh(data["vertices"], data["faces"])
    dense, _ = dense_mesh(name, resolution, shared_dir(shared))
    mesh, _ = simplify_qem(dense, faces)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, vertices=mesh.vertices, faces=mesh.faces)
    return mesh


def measure(fn, repeats: int, atlas: int) -> dict:
    times, (out, report) = time_repeats(fn, repeats=repeats, warmup=1)
    stretch = uv_stretch(out.vertices, out.faces, out.uvs)
    p50, p20, p80 = percentiles(times)
    return dict(p50=p50, p20=p20, p80=p80, charts=report.charts, util=report.utilisation, l2=stretch.l2,
                linf=stretch.linf, collapsed=stretch.collapsed,
                seams=uv_seam_edges(out.faces, out.meta["vmapping"], out.uvs),
                overlap=overlap_texels(out.uvs, out.faces, atlas))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="*", default=None, help="asset ids (default: all)")
    parser.add_argument("--resolution", type=int, default=512, help="dense MC grid (256 for quick runs)")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--atlas", type=int, default=1024, help="UV atlas resolution")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: usable CPUs)")
    parser.add_argument("--halo", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=["serial", "parallel", "fast"],
                        default=["serial", "parallel"], help="serial (xatlas) always runs: the baseline")
    parser.add_argument("--shared", default=None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=None, help="markdown table")
    parser.add_argument("--csv", type=Path, default=None, help="results CSV to append rows to")
    args = parser.parse_args()

    workers = args.workers or len(os.sched_getaffinity(0))
    device = f"cpu-{len(os.sched_getaffinity(0))}c-{platform.machine()} ({platform.processor() or 'cpu'})"
    methods = ["serial"] + [m for m in args.methods if m != "serial"]
    pool_start = uv_pool(workers)[1] if "parallel" in methods else 0.0
    config = f"dense{args.resolution} faces{args.faces} atlas{args.atlas} workers{workers} halo{args.halo}"
    lines = [f"# UV unwrap: {', '.join(methods)} ({device}, {config})", "",
             f"Worker pool start (once per process, not in the latencies): {pool_start:.3f} s", "",
             "| asset | method | s p50 (p20-p80) | speed-up | charts | utilisation | seam edges | "
             "L2 stretch | Linf | collapsed | overlap texels |", "|" + "---|" * 11]
    runners = {"serial": lambda m: unwrap_uv(m, args.atlas),
               "parallel": lambda m: unwrap_uv_parallel(m, args.atlas, workers=workers, halo=args.halo),
               "fast": lambda m: unwrap_uv_fast(m, args.atlas)}
    speedups: dict[str, list[float]] = {m: [] for m in methods[1:]}
    for name in args.assets or all_assets(shared_dir(args.shared)):
        mesh = input_mesh(name, args.resolution, args.faces, args.cache, args.shared)
        results = {m: measure(lambda: runners[m](mesh), args.repeats, args.atlas) for m in methods}
        serial = results["serial"]
        for method, r in results.items():
            gain = serial["p50"] / r["p50"]
            if method != "serial":
                speedups[method].append(gain)
            label = f"parallel-w{workers}" if method == "parallel" else method
            lines.append(f"| {name} ({mesh.num_faces} f) | {label} | {r['p50']:.3f} ({r['p20']:.3f}-"
                         f"{r['p80']:.3f}) | {gain:.2f}x | {r['charts']} | {r['util']:.4f} | {r['seams']} | "
                         f"{r['l2']:.4f} | {r['linf']:.1f} | {r['collapsed']} | {r['overlap']} |")
            if args.csv:
                rows = (("latency", "s", r["p50"]), ("utilisation", "share", r["util"]),
                        ("charts", "count", r["charts"]), ("seams", "edges", r["seams"]),
                        ("stretch_l2", "ratio", r["l2"]), ("overlap", "texels", r["overlap"]))
                for metric, unit, value in rows:
                    lo, hi = (r["p20"], r["p80"]) if metric == "latency" else (None, None)
                    append_result(args.csv, f"uv_unwrap_{name}", label, metric, unit, mesh.num_faces,
                                  value, lo, hi, config, device)
        print("\n".join(lines[-len(results):]), flush=True)
    lines.append("")
    for method, gains in speedups.items():
        lines.append(f"Geometric-mean speed-up of {method} over serial: "
                     f"{float(np.exp(np.mean(np.log(gains)))):.2f}x")
        print(lines[-1])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
