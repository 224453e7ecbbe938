"""GPU LBVH and GPU normal bake on the dense (~1M-face) meshes, against the host references in the same run.

Per asset (``dense_inputs.dense_mesh``, built on the machine when not cached):
  * LBVH build (CUDA events, p50/p20/p80 of --repeats after warm-up; first call = compile, separate) and
    the host ``build_bvh`` time;
  * ray cast rate (Mrays/s) of --queries rays from a sphere of radius 3 towards the object, and
    closest-point rate of --queries points near the surface (Morton-ordered on the device);
  * normal bake at 1024^2 and 2048^2 of a 5K-face low mesh (``simplify_qem`` ON_EDGE + ``unwrap_uv``)
    from the dense mesh: GPU latency (mean / p50 / max, dense BVH reused, low-mesh upload and raster
    included), host ``bake_normal_map`` latency (same BVH reuse), and the paper's baked-normal error
    (``baked_normal_error``, degrees) of both maps.
Peak GPU memory is ``torch.cuda.max_memory_allocated`` over the whole run. Rows go to --csv via
``benchmarks.common.append_result``, a markdown table to --out.

Run: python -m benchmarks.geometry.bvh_bake_gpu [--assets bunny] [--resolution 512] [--out md] [--csv csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import append_result, cuda_times, percentiles
from benchmarks.geometry.dense_inputs import dense_mesh
from engine.geometry.bvh import build_bvh
from engine.geometry.bvh_gpu import build_bvh_gpu
from engine.geometry.mesh import vertex_normals
from engine.geometry.normal_bake import bake_normal_map, baked_normal_error
from engine.geometry.normal_bake_gpu import bake_normal_map_gpu
from engine.geometry.simplify import Placement, simplify_qem
from engine.geometry.tangents import compute_tangents
from engine.geometry.uv_unwrap import unwrap_uv


def first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def low_mesh(dense, faces: int, atlas: int):
    low, _ = simplify_qem(dense, faces, Placement.ON_EDGE)
    low.normals = vertex_normals(low.vertices, low.faces)
    low, _ = unwrap_uv(low, resolution=atlas, padding=2)
    low.tangents = compute_tangents(low)
    return low


def bench_asset(name: str, args, rows: list, lines: list) -> None:
    dense, built = dense_mesh(name, args.resolution)
    nf = dense.num_faces
    v, f = torch.from_numpy(dense.vertices).cuda(), torch.from_numpy(dense.faces).cuda()
    compile_s = first_call(lambda: build_bvh_gpu(v, f))
    build_bvh_gpu(v, f)
    build_t = cuda_times(lambda: build_bvh_gpu(v, f), args.repeats)
    t0 = time.perf_counter()
    host_bvh = build_bvh(dense.vertices, dense.faces)
    host_build = time.perf_counter() - t0
    bvh = build_bvh_gpu(v, f)
    rng = np.random.default_rng(0)
    q = args.queries
    origins = torch.from_numpy(rng.normal(size=(q, 3))).cuda()
    origins = 3.0 * origins / origins.norm(dim=1, keepdim=True)
    dirs = torch.from_numpy(rng.normal(size=(q, 3)) * 0.3).cuda() - origins
    points = v[torch.randint(0, v.shape[0], (q,), device="cuda")] + 0.01 * torch.randn(q, 3, device="cuda")
    ray_compile = first_call(lambda: bvh.ray_cast(origins, dirs))
    ray_t = cuda_times(lambda: bvh.ray_cast(origins, dirs), args.repeats)
    cp_compile = first_call(lambda: bvh.closest_point(points))
    cp_t = cuda_times(lambda: bvh.closest_point(points), args.repeats)
    hit_rate = float((bvh.ray_cast(origins, dirs)[0] >= 0).float().mean())
    origin = f", built here in {built:.0f} s" if built else ""
    lines += [f"## {name}: {nf} faces (dense {args.resolution}^3{origin})",
              "", f"Compile (first call): build {compile_s:.2f} s, ray cast {ray_compile:.2f} s, closest "
              f"point {cp_compile:.2f} s. Ray hit rate {hit_rate:.2f}.", "",
              "| measurement | p50 | p20 | p80 | rate | host reference |", "|---|---|---|---|---|---|"]
    b50, b20, b80 = percentiles(build_t)
    lines.append(f"| LBVH build | {b50 * 1e3:.2f} ms | {b20 * 1e3:.2f} | {b80 * 1e3:.2f} | "
                 f"{nf / b50 / 1e6:.0f} Mfaces/s | {host_build * 1e3:.0f} ms (host numba) |")
    rows.append(("lbvh_build", "numba-cuda", "latency", "s", nf, b50, b20, b80))
    rows.append(("lbvh_build", "host numba", "latency", "s", nf, host_build, None, None))
    for label, times in (("ray cast", ray_t), ("closest point", cp_t)):
        p50, p20, p80 = percentiles(times)
        lines.append(f"| {label}, {q} queries | {p50 * 1e3:.2f} ms | {p20 * 1e3:.2f} | {p80 * 1e3:.2f} | "
                     f"{q / p50 / 1e6:.1f} Mq/s | - |")
        rows.append((f"lbvh_{label.replace(' ', '_')}", "numba-cuda", "latency", "s", f"{nf}f_{q}q",
                     p50, p20, p80))
    low = low_mesh(dense, args.low_faces, 1024)
    lines += ["", f"Normal bake, low mesh {low.num_faces} faces (QEM ON_EDGE + xatlas):", "",
              "| size | GPU mean | GPU p50 | GPU max | host | GPU baked err (deg) | host baked err (deg) |",
              "|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        bake_compile = first_call(lambda s=size: bake_normal_map_gpu(low, dense, s, dense_bvh=bvh))
        gpu_t = cuda_times(lambda s=size: bake_normal_map_gpu(low, dense, s, dense_bvh=bvh), args.repeats)
        gpu_map, _ = bake_normal_map_gpu(low, dense, size, dense_bvh=bvh)
        host_t = []
        host_map = None
        for _ in range(args.host_repeats):
            t0 = time.perf_counter()
            host_map, _ = bake_normal_map(low, dense, size, dense_bvh=host_bvh)
            host_t.append(time.perf_counter() - t0)
        err_gpu = baked_normal_error(low.copy(normal_map=gpu_map), dense, dense_bvh=host_bvh)
        err_host = baked_normal_error(low.copy(normal_map=host_map), dense, dense_bvh=host_bvh)
        same = float((np.abs(gpu_map.astype(int) - host_map.astype(int)).max(-1) <= 1).mean())
        p50, p20, p80 = percentiles(gpu_t)
        lines.append(f"| {size}^2 | {np.mean(gpu_t) * 1e3:.1f} ms | {p50 * 1e3:.1f} ms | "
                     f"{max(gpu_t) * 1e3:.1f} ms | {np.median(host_t) * 1e3:.0f} ms | {err_gpu:.3f} | "
                     f"{err_host:.3f} |")
        lines.append(f"|  | first call {bake_compile:.2f} s | texels within 1 level of host: {same:.4f} "
                     "| | | | |")
        rows.append(("normal_bake", "numba-cuda", "latency", "s", f"{size}", p50, p20, p80))
        rows.append(("normal_bake", "host numba", "latency", "s", f"{size}", float(np.median(host_t)),
                     None, None))
        rows.append(("normal_bake", "numba-cuda", "baked_err", "deg", f"{size}", err_gpu, None, None))
        rows.append(("normal_bake", "host numba", "baked_err", "deg", f"{size}", err_host, None, None))
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="*", default=["bunny"])
    parser.add_argument("--resolution", type=int, default=512, help="dense marching-cubes resolution")
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--low-faces", type=int, default=5000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--host-repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/bvh_bake_gpu.md")
    parser.add_argument("--csv", default="benchmarks/results/h100.csv")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name()
    torch.cuda.reset_peak_memory_stats()
    rows: list = []
    lines = [f"# GPU LBVH and normal bake ({gpu})", ""]
    for name in args.assets:
        bench_asset(name, args, rows, lines)
    peak = torch.cuda.max_memory_allocated() / 2**30
    lines.append(f"Peak GPU memory (torch.cuda.max_memory_allocated, whole run): {peak:.2f} GiB")
    for name, variant, metric, unit, size, p50, p20, p80 in rows:
        append_result(args.csv, name, variant, metric, unit, size, p50, p20, p80,
                      f"dense={args.resolution} assets={'+'.join(args.assets)}",
                      gpu if "cuda" in variant else "cpu")
    append_result(args.csv, "bvh_bake_gpu", "numba-cuda", "peak_memory", "GiB", "-", peak, None, None,
                  f"dense={args.resolution}", gpu)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
