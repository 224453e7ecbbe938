"""Per-stage latency of the geometry stage on the GPU, beside the paper's Table 5 (H100) and our targets.

What runs: for each asset, the dense watertight marching-cubes mesh (``dense_inputs.dense_mesh``, 512^3
by default, ~0.4-1.9M faces) goes through exactly the calls ``assetgen process --device cuda`` makes:
  1. floaters + simplification   remove_floaters_gpu + simplify_qem_gpu to ``--faces`` (20K, pipeline default)
  2. hidden-face removal         remove_hidden_faces_gpu, 512 views at 1024 px (paper 6.2)
  3. UV unwrapping               vertex normals + unwrap_uv_parallel (CPU worker processes) + tangents,
                                 atlas ``--atlas`` (the pipeline's 2048)
  4. normal bake                 bake_normal_map_gpu at 1024^2 (paper Table 4 size), dense BVH built inside
Each stage is timed wall-clock between ``torch.cuda.synchronize()`` calls (stages mix host and device work,
so this equals CUDA-event time for the device part). One untimed warm-up chain per asset first (numba
compiles, the UV worker pool starts: reported separately), then ``--repeats`` chains; medians (p20/p80).
Peak GPU memory (``torch.cuda.max_memory_allocated``) is over a whole timed chain: the issue's "whole
stage" budget. The upload of the dense mesh (host -> device) is timed separately.

Run (GPU machine):  python -m benchmarks.geometry.stage_latency --assets bunny armadillo --out FILE.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, append_result, percentiles
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, dense_mesh
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import vertex_normals

NAME = "geometry_stage"
# stage -> (paper Table 5 default preset on H100, seconds; our target, seconds)
PAPER = {
    "floaters + simplify": (0.654, 0.10),
    "hidden faces": (0.362, 0.08),
    "uv unwrap": (2.561, 0.60),
    "normal bake 1024": (0.265, 0.05),
}


def _timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run_chain(dense: DeviceMesh, faces: int, atlas: int, placement) -> tuple[dict[str, float], dict]:
    """One pass of the four stages; (seconds per stage, facts about the outputs)."""
    from engine.geometry.floaters_gpu import remove_floaters_gpu
    from engine.geometry.hidden_faces_gpu import remove_hidden_faces_gpu
    from engine.geometry.normal_bake_gpu import bake_normal_map_gpu
    from engine.geometry.simplify_gpu import simplify_qem_gpu
    from engine.geometry.tangents import compute_tangents
    from engine.geometry.uv_parallel import unwrap_uv_parallel

    secs: dict[str, float] = {}

    def simplify():
        kept, _ = remove_floaters_gpu(dense, 0.01)
        return simplify_qem_gpu(kept, faces, placement)

    (low, simp), secs["floaters + simplify"] = _timed(simplify)
    (visible, hidden), secs["hidden faces"] = _timed(lambda: remove_hidden_faces_gpu(low, 512, 1024))

    def unwrap():
        mesh = visible.copy(normals=vertex_normals(visible.vertices, visible.faces))
        out, report = unwrap_uv_parallel(mesh, resolution=atlas)
        out.tangents = compute_tangents(out)
        return out, report

    (unwrapped, uv), secs["uv unwrap"] = _timed(unwrap)
    (_, bake), secs["normal bake 1024"] = _timed(lambda: bake_normal_map_gpu(unwrapped, dense, size=1024))
    facts = {"faces_low": simp.faces_out, "reached": simp.reached, "faces_visible": hidden.faces_out,
             "charts": uv.charts, "utilisation": uv.utilisation, "bake_texels": bake.texels}
    return secs, facts


def bench_asset(name: str, args, placement) -> tuple[dict[str, list[float]], dict]:
    mesh, _ = dense_mesh(name, args.resolution, cache_dir=Path(args.dense_cache))
    dense, upload = _timed(lambda: DeviceMesh.from_trimesh(mesh, "cuda"))
    t0 = time.perf_counter()
    run_chain(dense, args.faces, args.atlas, placement)                  # warm-up: compiles, pool start
    warm = time.perf_counter() - t0
    samples: dict[str, list[float]] = {k: [] for k in PAPER}
    peak = 0
    facts: dict = {}
    for _ in range(args.repeats):
        torch.cuda.reset_peak_memory_stats()
        secs, facts = run_chain(dense, args.faces, args.atlas, placement)
        peak = max(peak, torch.cuda.max_memory_allocated())
        for k, v in secs.items():
            samples[k].append(v)
    facts.update(dense_faces=mesh.num_faces, upload_s=upload, warmup_s=warm, peak_gb=peak / 1e9)
    return samples, facts


def table(rows: list[tuple[str, dict[str, list[float]], dict]], args, gpu: str) -> str:
    lines = [f"# Geometry stage latency on the GPU ({gpu})", "",
             f"Dense {args.resolution}^3 watertight MC meshes -> {args.faces} faces, hidden faces at 512 "
             f"views x 1024 px, UV atlas {args.atlas}, bake 1024^2; placement {args.placement}; median "
             f"(p20-p80) of {args.repeats} chains after one warm-up chain. Paper: Table 5, default preset, "
             "H100.", "",
             "| asset | dense faces | " + " | ".join(PAPER)
             + " | total | peak GPU GB | low / visible faces |",
             "|---|---|" + "---|" * len(PAPER) + "---|---|---|"]
    for name, samples, facts in rows:
        cells = []
        total = 0.0
        for k in PAPER:
            p50, p20, p80 = percentiles(samples[k])
            total += p50
            cells.append(f"{1e3 * p50:.1f} ms ({1e3 * p20:.1f}-{1e3 * p80:.1f})")
        lines.append(f"| {name} | {facts['dense_faces']} | " + " | ".join(cells) +
                     f" | {1e3 * total:.0f} ms | {facts['peak_gb']:.2f} | {facts['faces_low']} / "
                     f"{facts['faces_visible']} |")
    med = {k: float(np.median([np.median(s[k]) for _, s, _ in rows])) for k in PAPER}
    lines += ["", "| stage | paper (H100) | target | ours, median over assets | x paper | meets target |",
              "|---|---|---|---|---|---|"]
    for k, (paper, target) in PAPER.items():
        lines.append(f"| {k} | {paper:.3f} s | <= {target:.2f} s | {med[k]:.3f} s | {paper / med[k]:.1f}x | "
                     f"{'yes' if med[k] <= target else 'no'} |")
    lines += ["", "Warm-up chain (numba compile + UV pool start) and upload per asset: " + "; ".join(
        f"{n} {f['warmup_s']:.1f} s / {1e3 * f['upload_s']:.1f} ms" for n, _, f in rows), ""]
    return "\n".join(lines)


def main() -> None:
    from engine.geometry.simplify import Placement

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", nargs="+", default=["bunny", "armadillo", "spot", "duck", "trellis_T"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--atlas", type=int, default=2048)
    ap.add_argument("--placement", choices=[p.value for p in Placement],
                    default=Placement.BOUNDED_OPTIMAL.value)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--out", default=str(RESULTS / "geometry_stage_h100.md"))
    ap.add_argument("--csv", default=str(RESULTS / "h100.csv"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("stage_latency needs a CUDA GPU (run it through benchmarks/gpu_run.sh)")
    gpu = torch.cuda.get_device_name()
    placement = Placement(args.placement)
    rows = []
    for name in args.assets:
        samples, facts = bench_asset(name, args, placement)
        rows.append((name, samples, facts))
        print(name, {k: round(float(np.median(v)), 4) for k, v in samples.items()}, facts, flush=True)
        for k, v in samples.items():
            append_result(args.csv, NAME, k, "latency", "s", name, *percentiles(v),
                          f"res{args.resolution} faces{args.faces} atlas{args.atlas} {args.placement}", gpu)
        Path(args.out).write_text(table(rows, args, gpu))                 # after every asset
    print(table(rows, args, gpu))


if __name__ == "__main__":
    main()
