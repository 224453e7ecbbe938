"""3D inpainting on the GPU (knn_grid + inpaint_gpu) against the CPU reference (scipy cKDTree) in one run.

Input per asset: the shared mesh scaled into the unit sphere, simplified with ``simplify_qem`` to --faces,
unwrapped with xatlas at --atlas, and its texel geometry (``texel_geometry``). Unknown texels, standing in
for those no view sees: every texel within 0.12 of five surface points picked at random (seeded) plus
those whose normal points down (n_y < -0.8); known texels get a smooth colour of their position.

Measured (GPU: CUDA events, median/p20/p80 of --repeats after one warm-up call; CPU: wall clock):
  * index build (``build_grid`` over the known texels) and queries over all targets: nearest (round
    assignment) and k = 8 nearest; cKDTree build + the same two queries (workers=-1) in the same run;
  * the mesh-only plan (``plan_inpaint``), the colour step (``apply_inpaint``), the whole ``inpaint_gpu``,
    and ``inpaint_3d``; ``dilate_gutter_gpu`` vs ``dilate_gutter`` (16 px);
  * parity: max |colour difference| to ``inpaint_3d`` over valid texels, unfilled texels, rounds.
Floor: the index build streams ~M x 40 B plus a radix sort of M int64 keys; a query reads ~1 kB of cached
data, so both are latency bound; the targets' colour step moves ~M_t x k x 16 B (gather) per round.
``--device cpu`` runs the same kernels in numba's CUDA simulator (slow; use a small --atlas and --faces).

    python -m benchmarks.texture.inpaint_gpu --device cuda --atlas 2048 --assets spot bob duck
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import append_result, cuda_times, percentiles, time_repeats

SHARED = Path(__file__).resolve().parents[3] / "shared" / "assets"


def _texels(asset: str, faces: int, atlas: int):
    from engine.geometry.mesh import TriMesh
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.uv_unwrap import unwrap_uv
    from engine.io.asset_load import find_mesh_file, load_mesh
    from engine.texture.backproject import texel_geometry
    from engine.texture.views import normalize_to_sphere

    src = load_mesh(find_mesh_file(Path(os.environ.get("ASSETGEN_SHARED_ASSETS", SHARED)) / asset))
    v, _, _ = normalize_to_sphere(src.vertices)
    mesh, _ = simplify_qem(TriMesh(v, src.faces), faces)
    mesh, _ = unwrap_uv(mesh, atlas)
    return texel_geometry(mesh, atlas)


def _inputs(tx, seed: int = 0):
    """known bool [S, S] and atlas float32 [S, S, 3] (NaN where unknown), see the module docstring."""
    pos, nrm, valid = tx.position, tx.normal, tx.valid
    rng = np.random.default_rng(seed)
    centres = pos[valid][rng.choice(int(valid.sum()), 5, replace=False)]
    hole = (np.linalg.norm(pos[..., None, :] - centres, axis=-1) < 0.12).any(-1) | (nrm[..., 1] < -0.8)
    known = valid & ~hole
    col = np.stack([0.5 + 0.5 * np.sin(4 * pos[..., 0]), 0.5 + 0.5 * np.cos(3 * pos[..., 1]),
                    np.clip(0.5 + pos[..., 2], 0, 1)], -1)
    return known, np.where(known[..., None], col, np.nan).astype(np.float32)


def _timer(device: str, repeats: int):
    if device == "cuda":
        def run(fn):
            fn()                                                        # warm-up (compile on first use)
            return percentiles(cuda_times(fn, repeats))
    else:
        def run(fn):
            return percentiles(time_repeats(fn, repeats=1, warmup=0)[0])
    return run


def bench_inpaint(device: str, atlas_size: int, asset: str = "spot", faces: int = 20000, repeats: int = 5,
                  k: int = 8) -> dict:
    """Time index build, queries, plan/apply/whole inpaint and gutter dilation on ``asset`` at
    ``atlas_size``, with the CPU reference in the same run. Returns {metric: (p50, p20, p80) or value}."""
    import torch
    from scipy.spatial import cKDTree

    from engine.texture.inpaint import dilate_gutter, inpaint_3d
    from engine.texture.inpaint_gpu import (
        apply_inpaint,
        dilate_gutter_gpu,
        inpaint_gpu,
        plan_inpaint,
        texel_world_size_gpu,
    )
    from triton_kernels.knn_grid import build_grid, knn_grid, nearest_grid
    from triton_kernels.numba_cuda import kernel_device

    dev = kernel_device()
    tx = _texels(asset, faces, atlas_size)
    known, atlas = _inputs(tx)
    t = {n: torch.from_numpy(np.ascontiguousarray(a)).to(dev) for n, a in
         (("atlas", atlas), ("known", known), ("pos", tx.position.astype(np.float32)),
          ("nrm", tx.normal.astype(np.float32)), ("valid", tx.valid))}
    run = _timer(device, repeats)
    pos = tx.position.reshape(-1, 3).astype(np.float32)
    src, tgt = np.flatnonzero(known & tx.valid), np.flatnonzero(tx.valid & ~known)
    r: dict = {"sources": len(src), "targets": len(tgt), "valid": int(tx.valid.sum())}
    if device == "cuda":                        # components: meaningless in the simulator, skipped there
        ps, pt = torch.from_numpy(pos[src]).to(dev), torch.from_numpy(pos[tgt]).to(dev)
        cell = 2.0 * texel_world_size_gpu(t["pos"], t["valid"])
        grid = build_grid(ps, cell)
        r["build"] = run(lambda: build_grid(ps, cell))
        r["nearest"] = run(lambda: nearest_grid(grid, pt))
        r[f"knn{k}"] = run(lambda: knn_grid(grid, pt, k))
        r["plan"] = run(lambda: plan_inpaint(t["known"], t["pos"], t["nrm"], t["valid"], k))
        plan = plan_inpaint(t["known"], t["pos"], t["nrm"], t["valid"], k)
        r["apply"] = run(lambda: apply_inpaint(plan, t["atlas"]))
    res: list = []
    r["inpaint_gpu"] = run(lambda: res.append(inpaint_gpu(t["atlas"], t["known"], t["pos"], t["nrm"],
                                                          t["valid"], k)))
    r["dilate_gpu"] = run(lambda: dilate_gutter_gpu(t["atlas"], t["valid"], 16))
    out, stats = res[-1]
    t0 = time.perf_counter()
    tree = cKDTree(pos[src].astype(np.float64), balanced_tree=False, compact_nodes=False)
    r["cpu_build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree.query(pos[tgt], k=1, workers=-1)
    r["cpu_nearest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree.query(pos[tgt], k=k, workers=-1)
    r[f"cpu_knn{k}"] = time.perf_counter() - t0
    cpu_stats: dict = {}
    t0 = time.perf_counter()
    ref = inpaint_3d(atlas, known, tx, k=k, stats=cpu_stats)
    r["cpu_inpaint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dil_ref = dilate_gutter(ref, tx.valid, 16)
    r["cpu_dilate"] = time.perf_counter() - t0
    got = out.cpu().numpy()
    r["max_abs_diff"] = float(np.abs(got[tx.valid] - ref[tx.valid]).max()) if r["valid"] else 0.0
    r["unfilled"] = int(stats["inpaint_unfilled"])
    r["rounds"] = (int(stats["inpaint_rounds"]), int(cpu_stats["inpaint_rounds"]))
    dil = dilate_gutter_gpu(torch.from_numpy(ref).to(dev), t["valid"], 16).cpu().numpy()
    same = np.isclose(dil, dil_ref, equal_nan=True).all(-1)
    r["dilate_mismatch_share"] = float(1.0 - same.mean())                   # ties only (module docs)
    return r


def _report(name: str, r: dict, args, gpu: str) -> list[str]:
    size = f"{args.atlas}^2"
    config = f"asset={name},faces={args.faces},k={args.k},targets={r['targets']},sources={r['sources']}"
    lines = []
    for metric in ("build", "nearest", f"knn{args.k}", "plan", "apply", "inpaint_gpu", "dilate_gpu"):
        if metric not in r:
            continue
        p50, p20, p80 = r[metric]
        append_result(args.csv, "inpaint_gpu", f"{metric}/{name}", "latency", "s", size, p50, p20, p80,
                      config, gpu)
        lines.append(f"| {name} | {metric} | {p50 * 1e3:.2f} | {p20 * 1e3:.2f} | {p80 * 1e3:.2f} |")
    for metric in ("cpu_build", "cpu_nearest", f"cpu_knn{args.k}", "cpu_inpaint", "cpu_dilate"):
        append_result(args.csv, "inpaint_gpu", f"{metric}/{name}", "latency", "s", size, r[metric], None,
                      None, config, "cpu")
        lines.append(f"| {name} | {metric} (CPU, scipy) | {r[metric] * 1e3:.2f} | | |")
    lines.append(f"| {name} | parity: max diff {r['max_abs_diff']:.2e}, unfilled {r['unfilled']}, rounds "
                 f"{r['rounds']}, dilation tie mismatches {r['dilate_mismatch_share']:.2e} | | | |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--atlas", type=int, default=2048)
    parser.add_argument("--assets", nargs="*", default=["spot", "bob", "duck"])
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="markdown table (default: print only)")
    parser.add_argument("--csv", default=None, help="results csv (default: benchmarks/results/<device>.csv)")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")       # before numba's first import
    import torch

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    if args.csv is None:
        args.csv = "benchmarks/results/" + ("h100.csv" if "H100" in gpu else f"{gpu.split()[-1].lower()}.csv")
    lines = ["| asset | metric | p50 ms | p20 ms | p80 ms |", "|---|---|---|---|---|"]
    for name in args.assets:
        r = bench_inpaint(args.device, args.atlas, name, args.faces, args.repeats, args.k)
        lines += _report(name, r, args, gpu)
    text = f"inpaint_gpu on {gpu}, atlas {args.atlas}^2, faces {args.faces}\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
