"""Geometry metrics of the reference QEM simplifier beside MeshLab and meshoptimizer (paper Table 2, CPU).

What runs (all in the same process, same inputs, same metric code):
  * inputs: the DENSE watertight marching-cubes remesh (``engine.geometry.watertight.watertight_mesh``) of
    real third-party assets from ../shared/assets, at ``--resolution`` (256 by default: the 2-core CPU
    budget; the paper extracts at 512^3, ~1M faces). Each asset is first scaled into [-1, 1]^3 (longest
    box side 2, centred) so distances are in the paper's normalised object units.
  * methods, each asked for exactly ``target`` faces:
      - ``qem_ref``: ``engine.geometry.simplify.simplify_qem`` (paper 6.1 on-edge placement, serial numba);
      - ``qem_ref_bounded``: the same with ``Placement.BOUNDED_OPTIMAL`` (our variant);
      - ``meshlab``: pymeshlab ``meshing_decimation_quadric_edge_collapse`` with preserveboundary,
        preservenormal, optimalplacement and planarquadric all True (planarquadric adds the planar
        constraints MeshLab recommends for flat regions, which marching-cubes meshes have; qualitythr and
        the rest at MeshLab's defaults) -- MeshLab's best-quality setting, the fair comparison;
      - ``meshoptimizer``: ``meshoptimizer.simplify`` with SIMPLIFY_LOCK_BORDER and target_error = 1 (no
        error cap, so the face count decides; meshoptimizer keeps a subset of the input vertices).
  * latency: median (p20/p80) of 3 timed runs after a JIT warm-up of ``simplify_qem`` on a small mesh
    (compile time reported separately); also dense -> 20K faces (the pipeline's default budget) and a
    ~1.5M-face mesh (one midpoint subdivision of the dense armadillo: a timing input only) -> 20K faces;
  * metrics on the result vs the dense mesh (``engine.metrics``, distances in units of the dense mesh's
    longest bounding-box side): Chamfer (x 1e-5, mean of both directions of exact point-to-surface
    distances of ``--points`` samples; the paper samples 256K) and Hausdorff (x 1e-3), flipped-normal
    pixels (24 views at ``--view-px`` px per view instead of the paper's 1024, CPU budget), geometric
    normal error (degrees, ``engine.metrics.normal_angular_error``: face normals; the paper's "Geo Mean").
    The paper's "Baked Mean" needs UV unwrapping + baking per result and is left out here.
Writes benchmarks/results/geometry_simplify_cpu.md and appends rows to benchmarks/results/cpu.csv.

Run:  python -m benchmarks.geometry.simplify_reference [--assets bunny armadillo ...] [--resolution 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result, git_sha, percentiles, time_repeats
from engine.geometry.mesh import TriMesh

ASSET_DIR = Path(__file__).resolve().parents[3] / "shared" / "assets"
DEFAULT_ASSETS = ("bunny", "armadillo", "spot", "duck", "trellis_T")
TARGETS = (5000, 10000)
NAME = "geometry_simplify"


def normalised(mesh: TriMesh) -> TriMesh:
    """Geometry scaled into [-1, 1]^3: centred box, longest side 2."""
    lo, hi = mesh.bounds()
    scale = 2.0 / float(np.max(hi - lo))
    return TriMesh((mesh.vertices - (lo + hi) / 2.0) * scale, mesh.faces.copy())


def dense_mesh(name: str, resolution: int) -> tuple[TriMesh, float]:
    """(dense watertight MC mesh of the asset, seconds to build it)."""
    from engine.geometry.watertight import watertight_mesh
    from engine.io.asset_load import find_mesh_file, load_mesh

    raw = normalised(load_mesh(find_mesh_file(ASSET_DIR / name)))
    t0 = time.perf_counter()
    dense = watertight_mesh(raw, resolution)
    return dense, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ methods
def run_qem_ref(mesh: TriMesh, target: int, bounded: bool = False) -> TriMesh:
    from engine.geometry.simplify import Placement, simplify_qem

    placement = Placement.BOUNDED_OPTIMAL if bounded else Placement.ON_EDGE
    out, report = simplify_qem(mesh, target, placement)
    if report.reason:
        print(f"    qem_ref ({placement.value}) at {target}: {report.reason}")
    return out


def run_meshlab(mesh: TriMesh, target: int) -> TriMesh:
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int32)))
    ms.meshing_decimation_quadric_edge_collapse(targetfacenum=target, preserveboundary=True,
                                                preservenormal=True, optimalplacement=True,
                                                planarquadric=True)
    m = ms.current_mesh()
    return TriMesh(m.vertex_matrix(), m.face_matrix())


def run_meshoptimizer(mesh: TriMesh, target: int) -> TriMesh:
    import meshoptimizer

    indices = mesh.faces.astype(np.uint32).reshape(-1)
    dest = np.empty_like(indices)
    count = meshoptimizer.simplify(dest, indices, np.ascontiguousarray(mesh.vertices, dtype=np.float32),
                                   target_index_count=3 * target, target_error=1.0,
                                   options=meshoptimizer.SIMPLIFY_LOCK_BORDER)
    faces = dest[:count].reshape(-1, 3).astype(np.int64)
    used, remap = np.unique(faces, return_inverse=True)
    return TriMesh(mesh.vertices[used], remap.reshape(-1, 3))


METHODS: dict[str, Callable[[TriMesh, int], TriMesh]] = {
    "qem_ref": run_qem_ref,
    "qem_ref_bounded": lambda mesh, target: run_qem_ref(mesh, target, bounded=True),
    "meshlab": run_meshlab,
    "meshoptimizer": run_meshoptimizer,
}
QUALITY = (("chamfer", "x1e-5", "Chamfer (x1e-5)"), ("hausdorff", "x1e-3", "Hausdorff (x1e-3)"),
           ("flipped_px", "px", "Flipped px"), ("geo_mean", "deg", "Geo mean (deg)"))


def subdivide(mesh: TriMesh) -> TriMesh:
    """One midpoint subdivision (4 x faces, same surface): a large timing input."""
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces.astype(np.int64)
    n = v.shape[0]
    e = np.sort(np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
    keys, inv = np.unique(e[:, 0] * n + e[:, 1], return_inverse=True)
    mid = n + inv.reshape(-1, 3)                                  # [F, 3] new vertex of edges 01, 12, 20
    a, b, c = f.T
    ab, bc, ca = mid.T
    faces = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return TriMesh(np.vstack([v, (v[keys // n] + v[keys % n]) / 2.0]), faces)


def quality(dense: TriMesh, out: TriMesh, points: int, view_px: int) -> dict[str, float]:
    from engine.metrics import chamfer_hausdorff, flipped_normal_pixels, normal_angular_error

    chamfer, hausdorff = chamfer_hausdorff(dense, out, n=points, seed=0)
    return {"chamfer": chamfer / 1e-5, "hausdorff": hausdorff / 1e-3,
            "flipped_px": float(flipped_normal_pixels(out, views=24, resolution=view_px)),
            "geo_mean": normal_angular_error(dense, out, n=points, seed=0), "faces": float(out.num_faces)}


def warm_up() -> float:
    """Seconds of the first simplify_qem call on a tiny mesh (numba compile, or cache load when cached)."""
    from engine.geometry.simplify import simplify_qem

    tiny = subdivide(subdivide(TriMesh(np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))))  # 16 faces
    t0 = time.perf_counter()
    simplify_qem(tiny, 4)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", nargs="+", default=list(DEFAULT_ASSETS))
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--view-px", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=str(RESULTS / "cpu.csv"))
    ap.add_argument("--md", default=str(RESULTS / "geometry_simplify_cpu.md"))
    args = ap.parse_args()
    compile_s = warm_up()
    print(f"simplify_qem warm-up (JIT compile or cache load): {compile_s:.2f} s", flush=True)
    per: dict[tuple[str, int, str], dict[str, float]] = {}          # (asset, target, method) -> metrics
    dense_info: dict[str, tuple[int, float]] = {}
    to20k: dict[str, list[float]] = {"qem_ref": [], "qem_ref_bounded": []}
    armadillo_dense = None
    for name in args.assets:
        dense, dense_s = dense_mesh(name, args.resolution)
        dense_info[name] = (dense.num_faces, dense_s)
        mode = dense.meta.get("watertight_mode")
        print(f"{name}: dense {dense.num_faces} faces ({mode}) in {dense_s:.1f} s", flush=True)
        if name == "armadillo":
            armadillo_dense = dense
        for target in TARGETS:
            for method, fn in METHODS.items():
                times, out = time_repeats(lambda fn=fn: fn(dense, target), repeats=args.repeats, warmup=0)
                m = quality(dense, out, args.points, args.view_px)
                m["latency"] = float(np.median(times))
                per[(name, target, method)] = m
                print(f"  {target:>6} {method:<16} {m['latency']:7.3f} s  faces {int(m['faces'])}  "
                      f"CD {m['chamfer']:7.2f}  HD {m['hausdorff']:6.2f}  flip {int(m['flipped_px']):5d}  "
                      f"geo {m['geo_mean']:5.2f}", flush=True)
        for method in to20k:
            times, _ = time_repeats(lambda method=method: METHODS[method](dense, 20000), args.repeats, 0)
            to20k[method].append(float(np.median(times)))
    big = None
    if armadillo_dense is not None:
        big_mesh = subdivide(armadillo_dense)
        times, _ = time_repeats(lambda: METHODS["qem_ref"](big_mesh, 20000), args.repeats, 0)
        big = (big_mesh.num_faces, times)
        print(f"1M-class: {big_mesh.num_faces} faces -> 20000: median {np.median(times):.2f} s", flush=True)
    write_outputs(args, per, dense_info, to20k, big, compile_s)


def write_csv(args, per, dense_info, to20k, big, compile_s) -> None:
    """Rows: per (method, target, metric), p50/p20/p80 across assets (latency per asset = median of runs)."""
    assets = list(dense_info)
    config = (f"dense=watertight MC {args.resolution}^3 of {'+'.join(assets)}; points={args.points}; "
              f"flipped=24 views x {args.view_px}px; latency median of {args.repeats}; stats across assets")
    for target in TARGETS:
        size = f"{len(assets)} assets -> {target} faces"
        for method in METHODS:
            ms = [per[(a, target, method)] for a in assets]
            for key, unit in (("latency", "s"),) + tuple((q[0], q[1]) for q in QUALITY):
                append_result(args.csv, NAME, method, key, unit, size, *percentiles([m[key] for m in ms]),
                              config, "cpu")
    for method, times in to20k.items():
        append_result(args.csv, NAME, method, "latency_dense_to_20k", "s",
                      f"{len(assets)} dense meshes -> 20000", *percentiles(times), config, "cpu")
    if big is not None:
        append_result(args.csv, NAME, "qem_ref", "latency_1m_to_20k", "s", f"{big[0]} faces -> 20000",
                      *percentiles(big[1]), "subdivided dense armadillo; runs of one mesh", "cpu")
    append_result(args.csv, NAME, "qem_ref", "warmup", "s", "16 faces", compile_s, None, None,
                  "first call: numba compile or cache load", "cpu")


def markdown(args, per, dense_info, to20k, big, compile_s) -> str:
    assets = list(dense_info)
    cores = len(os.sched_getaffinity(0))
    sizes = [dense_info[a][0] for a in assets]
    out = [
        "# Mesh simplification, CPU reference (paper Table 2 protocol, scaled to CPU)", "",
        f"Generated by `python -m benchmarks.geometry.simplify_reference` at git `{git_sha()}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on {platform.machine()} CPU "
        f"({cores} cores, shared with other jobs).", "",
        f"Inputs: dense watertight marching-cubes meshes (`watertight_mesh`, {args.resolution}^3 grid; "
        f"the paper uses 512^3, ~1M faces) of {len(assets)} real assets: "
        + ", ".join(f"{a} ({dense_info[a][0]:,} faces)" for a in assets) + ".", "",
        "Metrics vs the dense mesh (`engine.metrics`; distances in units of its longest box side): "
        f"Chamfer / Hausdorff from {args.points:,} exact point-to-surface samples per direction (paper: "
        f"256K); flipped-normal pixels over 24 views at {args.view_px} px (paper: 1024 px, so counts are "
        f"~{(1024 // args.view_px) ** 2}x smaller); Geo mean = mean angle (deg) between face normals at the "
        f"samples. Latency = median of {args.repeats} runs of the whole call (input cleaning/welding "
        f"included) after a warm-up ({compile_s:.2f} s first call). Table values are means over the "
        "assets, as in the paper.", "",
        "| Target | Method | Latency (s) | Chamfer (x1e-5) | Hausdorff (x1e-3) | Flipped px | Geo mean (deg) "
        "| Faces out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        for method in METHODS:
            ms = [per[(a, target, method)] for a in assets]
            m = {k: float(np.mean([x[k] for x in ms])) for k in ms[0]}
            out.append(f"| {target // 1000}k | {method} | {m['latency']:.3f} | {m['chamfer']:.1f} | "
                       f"{m['hausdorff']:.2f} | {m['flipped_px']:.0f} | {m['geo_mean']:.2f} | "
                       f"{m['faces']:.0f} |")
    out += ["", "Per asset (Chamfer x1e-5 / Hausdorff x1e-3 / flipped px / geo deg / latency s):", "",
            "| Asset | Target | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for a in assets:
        for target in TARGETS:
            cells = [per[(a, target, k)] for k in METHODS]
            out.append(f"| {a} | {target} | " + " | ".join(
                f"{m['chamfer']:.1f} / {m['hausdorff']:.2f} / {m['flipped_px']:.0f} / "
                f"{m['geo_mean']:.2f} / {m['latency']:.2f}" for m in cells) + " |")
    out += ["", "Latency to the pipeline's 20K-face budget (median of runs per mesh; range over meshes):", ""]
    for method, times in to20k.items():
        out.append(f"- {method}: dense ({min(sizes):,}-{max(sizes):,} faces) -> 20K: median "
                   f"{np.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    if big is not None:
        out.append(f"- qem_ref: {big[0]:,} faces (subdivided dense armadillo) -> 20K: median "
                   f"{np.median(big[1]):.2f} s over {len(big[1])} runs")
    out += ["", "Settings: MeshLab `meshing_decimation_quadric_edge_collapse` with preserveboundary, "
            "preservenormal, optimalplacement and planarquadric True; meshoptimizer `simplify` with "
            "target_error=1.0 and SIMPLIFY_LOCK_BORDER; qem_ref = `simplify_qem` with the paper's on-edge "
            "placement, qem_ref_bounded = `Placement.BOUNDED_OPTIMAL`. The paper's baked-normal error is "
            "not measured here.", ""]
    return "\n".join(out)


def write_outputs(args, per, dense_info, to20k, big, compile_s) -> None:
    write_csv(args, per, dense_info, to20k, big, compile_s)
    Path(args.md).write_text(markdown(args, per, dense_info, to20k, big, compile_s))
    print(f"wrote {args.md} and rows in {args.csv}")


if __name__ == "__main__":
    main()
