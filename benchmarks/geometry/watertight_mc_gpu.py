"""Watertight conversion and narrow-band marching cubes on the GPU against the CPU reference, same run.

Per asset (the shared asset's own geometry, normalised to [-1, 1]^3):
* GPU watertight (``watertight_mesh_gpu``: band UDF, EDT, flood fill, relabelling, sparse MC, host weld)
  and its SDF part alone (``mesh_to_sdf_gpu``) at each ``--resolutions``: CUDA events, median of
  ``--repeats`` after one warm-up call (the first call, with numba/Triton compilation, reported apart),
  peak GPU memory of the call, faces out;
* the CPU reference ``watertight_mesh`` at each ``--cpu-resolutions`` (wall clock, ``--cpu-repeats``),
  and whether the GPU mesh is identical to it;
* at the largest resolution: sparse MC (bricks of 8^3 cells with a crossing of the asset's SDF) against
  dense Triton MC (``benchmarks/geometry/marching_cubes_gpu.py`` measures that one alone) on the same
  field: latency, active-brick share, identical output.
Rows go to ``--csv`` (benchmarks/common.append_result), a markdown table to ``--out``.
Run: python -m benchmarks.geometry.watertight_mc_gpu --assets bunny camelhead --resolutions 512 256
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import append_result, percentiles
from benchmarks.geometry.dense_inputs import shared_dir, source_mesh


def cuda_times(fn, repeats: int) -> tuple[list[float], int, object]:
    """(seconds per call by CUDA events, peak bytes allocated during the calls, last result)."""
    times, out = [], None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1000.0)
    return times, torch.cuda.max_memory_allocated() - base, out


def first_call(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def bench_asset(name: str, args, gpu: str, lines: list[str]) -> None:
    from engine.geometry.watertight import watertight_mesh
    from engine.geometry.watertight_gpu import mesh_to_sdf_gpu, watertight_mesh_gpu

    mesh = source_mesh(name, shared_dir(args.shared))
    for res in args.resolutions:
        compile_s, _ = first_call(lambda: watertight_mesh_gpu(mesh, res, mc="sparse"))
        full, peak, out = cuda_times(lambda: watertight_mesh_gpu(mesh, res, mc="sparse"), args.repeats)
        sdf_t, sdf_peak, _ = cuda_times(lambda: mesh_to_sdf_gpu(mesh, res), args.repeats)
        same, cpu_p50 = "-", None
        if res in args.cpu_resolutions:
            cpu_t = []
            for _ in range(args.cpu_repeats):
                t0 = time.perf_counter()
                ref = watertight_mesh(mesh, res)
                cpu_t.append(time.perf_counter() - t0)
            cpu_p50 = percentiles(cpu_t)[0]
            same = str(np.array_equal(ref.faces, out.faces)
                       and np.allclose(ref.vertices, out.vertices, atol=1e-5))
            append_result(args.csv, "watertight", "cpu reference", "latency", "s", f"{name}@{res}^3",
                          *percentiles(cpu_t), f"faces={ref.num_faces}", "cpu")
        p50, p20, p80 = percentiles(full)
        append_result(args.csv, "watertight", "gpu (ours, sparse MC)", "latency", "s", f"{name}@{res}^3",
                      p50, p20, p80,
                      f"faces={out.num_faces} peak_gb={peak / 1e9:.2f} first_call_s={compile_s:.2f}", gpu)
        s50 = percentiles(sdf_t)[0]
        speed = f"{cpu_p50 / p50:.1f}x" if cpu_p50 else "-"
        lines.append(f"| {name} | {res}^3 | {out.num_faces} | {p50 * 1e3:.1f} | {s50 * 1e3:.1f} | "
                     f"{peak / 1e9:.2f} | {compile_s:.1f} | {cpu_p50 or '-'} | {speed} | {same} |")
        print(lines[-1], flush=True)
    sparse_vs_dense(name, mesh, max(args.resolutions), args, gpu, lines)


def sparse_vs_dense(name: str, mesh, res: int, args, gpu: str, lines: list[str]) -> None:
    from engine.geometry.watertight_gpu import mesh_to_sdf_gpu
    from triton_kernels.marching_cubes import marching_cubes_triton
    from triton_kernels.marching_cubes_sparse import crossing_bricks, marching_cubes_dense_bricks

    values = mesh_to_sdf_gpu(mesh, res).grid.values
    marching_cubes_triton(values)
    marching_cubes_dense_bricks(values)
    dense_t, dense_peak, (dv, df) = cuda_times(lambda: marching_cubes_triton(values), args.repeats)
    sparse_t, sparse_peak, (sv, sf) = cuda_times(lambda: marching_cubes_dense_bricks(values), args.repeats)
    share = float(crossing_bricks(values).float().mean())
    same = bool(torch.equal(sf, df)) and bool(torch.allclose(sv, dv, rtol=0, atol=1e-4))
    rows = (("dense triton", dense_t, dense_peak), ("sparse bricks 8^3", sparse_t, sparse_peak))
    for variant, t, peak in rows:
        config = f"faces={sf.shape[0]} brick_share={share:.3f} peak_gb={peak / 1e9:.2f} identical={same}"
        append_result(args.csv, "marching_cubes_band", variant, "latency", "s", f"{name}@{res}^3",
                      *percentiles(t), config, gpu)
    lines.append(f"\nMC on {name}'s {res}^3 SDF: dense {percentiles(dense_t)[0] * 1e3:.2f} ms "
                 f"(peak {dense_peak / 1e9:.2f} GB), sparse {percentiles(sparse_t)[0] * 1e3:.2f} ms "
                 f"(peak {sparse_peak / 1e9:.2f} GB), active bricks {100 * share:.1f}%, "
                 f"{sf.shape[0]} faces, identical: {same}\n")
    print(lines[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="+", default=["bunny", "camelhead"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512, 256])
    parser.add_argument("--cpu-resolutions", nargs="*", type=int, default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-repeats", type=int, default=1)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--out", default="benchmarks/results/watertight_mc_gpu.md")
    parser.add_argument("--csv", default="benchmarks/results/h100.csv")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name()
    lines = [f"# Watertight conversion + narrow-band MC on {gpu}", "",
             "| asset | grid | faces | GPU p50 ms (full) | GPU SDF ms | peak GB | first call s | CPU s | "
             "speed-up | identical |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.assets:
        bench_asset(name, args, gpu, lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
