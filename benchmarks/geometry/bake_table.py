"""Normal-bake latency and baked-normal error: ours (CPU reference, GPU) beside Blender (paper Table 4).

Every method bakes the SAME low mesh with the SAME UVs from the same dense mesh, and every map is scored by
the same metric (``engine.geometry.normal_bake.baked_normal_error``: mean angle in degrees between the
map-perturbed normal, in our shading frame, and the dense mesh's smooth normal at the closest point, over
``--points`` area-uniform samples of the low mesh, seed 0).
  * dense: ``benchmarks.geometry.dense_inputs.dense_mesh(asset, --resolution)`` (512: ~1M faces); the
    prepare phase records its sha256 and every later phase refuses a dense mesh that hashes differently;
  * low: ``simplify_qem(dense, --faces)`` then ``unwrap_uv(low, --uv-resolution)`` and ``compute_tangents``;
  * methods: ``ours_cpu`` = ``bake_normal_map`` (numba CPU; BVH build included, as in Blender's call);
    ``ours_gpu`` = ``engine.geometry.normal_bake_gpu.bake_normal_map_gpu`` (when it exists and CUDA is
    available; CUDA-event timing); ``blender`` = ``blender_bake.py`` in the bpy venv (``--bpy-python``),
    Cycles CPU, time of the bake operator alone (scene setup reported separately);
  * all at ``--size`` (1024) with max_distance_fraction 0.01 and an 8-texel gutter (Blender: margin 8).

Phases (the GPU machine has no bpy, this one no GPU):
  --prepare DIR                          writes DIR/<asset>.npz (low mesh + UVs + tangents) + manifest.json
  --method M --prepared DIR --results F  bakes with one method, writes F (JSON: latencies, errors, device)
  --table F1 F2 ...                      merges into benchmarks/results/geometry_bake.md and CSV rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result, git_sha, percentiles
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, all_assets, dense_mesh, mesh_sha256, shared_dir
from engine.errors import AssetGenError
from engine.geometry.mesh import TriMesh

METHODS = ("ours_cpu", "ours_gpu", "blender")
BLENDER_SCRIPT = Path(__file__).with_name("blender_bake.py")
DEFAULT_BPY = Path("/work/bpyvenv/bin/python")
DILATE = 8
DISTANCE = 0.01


# ----------------------------------------------------------------------------- shared with table2.py
def device_name() -> str:
    """'cpu' or the CUDA device's name (the device of the rows this process measures)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def machine() -> str:
    """One line: CPU model / cores, and the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = device_name()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores" + ("" if gpu == "cpu" else f", {gpu}")


def csv_for(device: str) -> Path:
    """benchmarks/results/<device>.csv: cpu.csv, h100.csv, h200.csv, else a slug of the name."""
    low = device.lower()
    for tag in ("h100", "h200", "a100", "l40"):
        if tag in low:
            return RESULTS / f"{tag}.csv"
    return RESULTS / ("".join(c if c.isalnum() else "_" for c in low) + ".csv")


def checked_dense(asset: str, resolution: int, sha: str | None, shared: Path | None) -> TriMesh:
    """The dense mesh, refused when it does not hash to ``sha`` (the one the prepare phase saw)."""
    dense, _ = dense_mesh(asset, resolution, shared)
    got = mesh_sha256(dense)
    if sha is not None and got != sha:
        raise SystemExit(f"dense mesh of {asset} at {resolution} hashes to {got[:12]}, prepared with "
                         f"{sha[:12]}: rebuild the cache with the same code (dense_inputs.py)")
    return dense


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))


def gpu_timer():
    """(start(), stop() -> seconds): CUDA events on the current stream when CUDA is up, else wall time."""
    import torch

    if not torch.cuda.is_available():
        box = {}
        return (lambda: box.__setitem__("t", time.perf_counter()),
                lambda: time.perf_counter() - box["t"])
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]

    def stop() -> float:
        ev[1].record()
        ev[1].synchronize()
        return ev[0].elapsed_time(ev[1]) / 1e3
    return ev[0].record, stop


# ------------------------------------------------------------------------------------------- prepare
def low_mesh(dense: TriMesh, faces: int, uv_resolution: int) -> tuple[TriMesh, dict]:
    """simplify_qem -> unwrap_uv -> compute_tangents; returns (low, info)."""
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.tangents import compute_tangents
    from engine.geometry.uv_unwrap import unwrap_uv

    simple, rep = simplify_qem(dense, faces)
    low, uv = unwrap_uv(simple, uv_resolution)
    low.tangents = compute_tangents(low)
    return low, {"low_faces": low.num_faces, "simplify_reached": rep.reached, "charts": uv.charts,
                 "uv_utilisation": uv.utilisation}


def save_low(path: Path, low: TriMesh) -> None:
    np.savez(path, vertices=low.vertices, faces=low.faces, uvs=low.uvs, normals=low.normals,
             tangents=low.tangents)


def load_low(path: Path) -> TriMesh:
    d = np.load(path)
    return TriMesh(d["vertices"], d["faces"], normals=d["normals"], uvs=d["uvs"], tangents=d["tangents"])


def prepare(args) -> None:
    out = Path(args.prepare)
    out.mkdir(parents=True, exist_ok=True)
    shared = shared_dir(args.shared)
    entries = []
    for asset in args.assets or all_assets(shared):
        try:
            dense, _ = dense_mesh(asset, args.resolution, shared)
            low, info = low_mesh(dense, args.faces, args.uv_resolution)
        except AssetGenError as err:
            print(f"{asset}: skipped ({err})", flush=True)
            continue
        save_low(out / f"{asset}.npz", low)
        entries.append({"asset": asset, "dense_faces": dense.num_faces, "dense_sha256": mesh_sha256(dense),
                        **info})
        print(f"{asset}: dense {dense.num_faces} -> low {low.num_faces} faces, {info['charts']} charts, "
              f"utilisation {info['uv_utilisation']:.2f}", flush=True)
    write_json(out / "manifest.json", {"resolution": args.resolution, "faces": args.faces,
                                       "uv_resolution": args.uv_resolution, "git_sha": git_sha(),
                                       "assets": entries})


# ------------------------------------------------------------------------------------------- methods
def bake_ours_cpu(low: TriMesh, dense: TriMesh, size: int, repeats: int) -> tuple[np.ndarray, dict]:
    from engine.geometry.normal_bake import bake_normal_map

    bake_normal_map(low, dense, 64, DISTANCE, DILATE)                     # numba JIT / cache load
    times, nm = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        nm, _ = bake_normal_map(low, dense, size, DISTANCE, DILATE)
        times.append(time.perf_counter() - t0)
    return nm, {"latency_s": times}


def bake_ours_gpu(low: TriMesh, dense: TriMesh, size: int, repeats: int) -> tuple[np.ndarray, dict]:
    import torch

    from engine.geometry.normal_bake_gpu import bake_normal_map_gpu

    bake_normal_map_gpu(low, dense, size, max_distance_fraction=DISTANCE, dilate=DILATE)   # warm-up
    torch.cuda.reset_peak_memory_stats()
    start, stop = gpu_timer()
    times, nm = [], None
    for _ in range(repeats):
        start()
        nm, _ = bake_normal_map_gpu(low, dense, size, max_distance_fraction=DISTANCE, dilate=DILATE)
        times.append(stop())
    return np.asarray(nm), {"latency_s": times, "peak_gpu_bytes": torch.cuda.max_memory_allocated()}


def bake_blender(low_path: Path, dense: TriMesh, asset: str, resolution: int, size: int, repeats: int,
                 bpy_python: Path) -> tuple[np.ndarray, dict]:
    """blender_bake.py in the bpy venv on the prepared low file and the cached dense file."""
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = DEFAULT_CACHE / f"{asset}_{resolution}.npz"
        if not dense_path.is_file():
            dense_path = Path(tmp) / "dense.npz"
            np.savez(dense_path, vertices=dense.vertices, faces=dense.faces)
        out = Path(tmp) / "map.npz"
        cmd = [str(bpy_python), str(BLENDER_SCRIPT), "--low", str(low_path), "--dense", str(dense_path),
               "--out", str(out), "--size", str(size), "--margin", str(DILATE),
               "--distance-fraction", str(DISTANCE), "--repeats", str(repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"blender bake of {asset} failed:\n{proc.stderr[-2000:]}")
        r = np.load(out)
        return r["normal_map"], {"latency_s": [float(t) for t in r["bake_seconds"]],
                                 "setup_s": float(r["setup_seconds"]), "threads": int(r["threads"]),
                                 "blender_version": str(r["blender_version"])}


def method_available(method: str, bpy_python: Path) -> str | None:
    """None when ``method`` can run here, else the reason it cannot."""
    if method == "blender" and not bpy_python.is_file():
        return f"no bpy venv at {bpy_python} (python3.11 -m venv ... && pip install bpy)"
    if method == "ours_gpu":
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available"
        if importlib.util.find_spec("engine.geometry.normal_bake_gpu") is None:
            return "engine.geometry.normal_bake_gpu does not exist yet"
    return None


def run_method(args) -> None:
    from engine.geometry.bvh import build_bvh
    from engine.geometry.normal_bake import baked_normal_error

    prepared = Path(args.prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    bpy_python = Path(args.bpy_python)
    reason = method_available(args.method, bpy_python)
    payload = {"method": args.method, "device": "cpu" if args.method != "ours_gpu" else device_name(),
               "machine": machine(), "git_sha": git_sha(), "size": args.size, "repeats": args.repeats,
               "points": args.points, "prepared": manifest | {"assets": None}, "skipped": reason, "rows": []}
    if reason:
        print(f"{args.method}: skipped: {reason}")
        write_json(args.results, payload)
        return
    for entry in manifest["assets"]:
        asset = entry["asset"]
        if args.assets and asset not in args.assets:
            continue
        dense = checked_dense(asset, manifest["resolution"], entry["dense_sha256"], args.shared)
        low = load_low(prepared / f"{asset}.npz")
        if args.method == "ours_cpu":
            nm, row = bake_ours_cpu(low, dense, args.size, args.repeats)
        elif args.method == "ours_gpu":
            nm, row = bake_ours_gpu(low, dense, args.size, args.repeats)
        else:
            nm, row = bake_blender(prepared / f"{asset}.npz", dense, asset, manifest["resolution"], args.size,
                                   args.repeats, bpy_python)
        row["error_deg"] = baked_normal_error(low.copy(normal_map=nm), dense, n=args.points, seed=0,
                                              dense_bvh=build_bvh(dense.vertices, dense.faces))
        row |= {"asset": asset, "dense_faces": entry["dense_faces"], "low_faces": low.num_faces}
        payload["rows"].append(row)
        print(f"{args.method} {asset}: median {np.median(row['latency_s']):.3f} s, error "
              f"{row['error_deg']:.3f} deg", flush=True)
        write_json(args.results, payload)
    write_json(args.results, payload)


# -------------------------------------------------------------------------------------------- table
def table(args) -> None:
    runs = [json.loads(Path(f).read_text()) for f in args.table]
    lines = ["# Normal bake: ours vs Blender (paper Table 4 protocol)", "",
             f"Merged by `python -m benchmarks.geometry.bake_table --table` at git `{git_sha()}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    done = [r for r in runs if not r["skipped"] and r["rows"]]
    if done:
        p = done[0]["prepared"]
        lines += [f"Inputs: dense = watertight MC {p['resolution']}^3 of each asset (dense_inputs.py; sha256 "
                  f"checked in every phase), low = simplify_qem to {p['faces']} faces + unwrap_uv "
                  f"({p['uv_resolution']}^2 atlas) + compute_tangents; the same low mesh and UVs for every "
                  f"method. Map {done[0]['size']}^2, distance 0.01 x low diagonal, gutter {DILATE} texels. "
                  "Error = baked_normal_error (degrees, mean over the samples; the same code for every map). "
                  "Latency = per-asset median of the timed calls, then mean / median / max over assets.", ""]
    lines += ["| Method | Device | Assets | Latency mean (s) | median (s) | max (s) | Error mean (deg) | "
              "Error max (deg) |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["skipped"] or not r["rows"]:
            lines.append(f"| {r['method']} | - | 0 | skipped: {r['skipped'] or 'no rows'} | | | | |")
            continue
        lat = [float(np.median(x["latency_s"])) for x in r["rows"]]
        err = [x["error_deg"] for x in r["rows"]]
        lines.append(f"| {r['method']} | {r['device']} | {len(lat)} | {np.mean(lat):.3f} | "
                     f"{np.median(lat):.3f} | {np.max(lat):.3f} | {np.mean(err):.3f} | {np.max(err):.3f} |")
        if not args.no_csv:
            add_csv_rows(r, lat, err)
    lines += ["", "Machines (latency is only comparable within one machine):", ""]
    lines += [f"- {r['method']}: {r['machine']}; {r['repeats']} timed calls per asset" +
              (f"; Blender {r['rows'][0].get('blender_version')} Cycles CPU, {r['rows'][0].get('threads')} "
               f"threads, scene setup mean {np.mean([x['setup_s'] for x in r['rows']]):.2f} s (not in the "
               "latency); first (cold) bake call mean "
               f"{np.mean([x['latency_s'][0] for x in r['rows']]):.2f} s -- later calls reuse Cycles' synced "
               "scene, while ours rebuilds its BVH every call" if r["method"] == "blender" else "")
              for r in done]
    lines += ["", "Per asset (latency s / error deg):", "",
              "| Asset | Dense faces | " + " | ".join(r["method"] for r in done) + " |",
              "|---|---|" + "---|" * len(done)]
    per = {r["method"]: {x["asset"]: x for x in r["rows"]} for r in done}
    for asset in sorted({a for m in per.values() for a in m}):
        cells = [per[r["method"]].get(asset) for r in done]
        faces = next(c["dense_faces"] for c in cells if c)
        lines.append(f"| {asset} | {faces:,} | " + " | ".join(
            "-" if c is None else f"{np.median(c['latency_s']):.3f} / {c['error_deg']:.3f}" for c in cells)
            + " |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.md}")


def add_csv_rows(run: dict, lat: list[float], err: list[float]) -> None:
    size = f"{len(lat)} assets, {run['size']}^2"
    config = (f"dense MC {run['prepared']['resolution']}^3 -> {run['prepared']['faces']} faces; "
              f"distance {DISTANCE}; gutter {DILATE}; points {run['points']}; stats across assets")
    path = csv_for(run["device"])
    append_result(path, "geometry_bake", run["method"], "latency", "s", size, *percentiles(lat), config,
                  run["device"])
    append_result(path, "geometry_bake", run["method"], "baked_mean_error", "deg", size, *percentiles(err),
                  config, run["device"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phase = ap.add_mutually_exclusive_group(required=True)
    phase.add_argument("--prepare", metavar="DIR")
    phase.add_argument("--method", choices=METHODS)
    phase.add_argument("--table", nargs="+", metavar="RESULTS_JSON")
    ap.add_argument("--prepared", metavar="DIR")
    ap.add_argument("--results", metavar="FILE.json")
    ap.add_argument("--assets", nargs="*", default=None)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--faces", type=int, default=5000)
    ap.add_argument("--uv-resolution", type=int, default=1024)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--bpy-python", default=str(DEFAULT_BPY))
    ap.add_argument("--md", default=str(RESULTS / "geometry_bake.md"))
    ap.add_argument("--no-csv", action="store_true", help="--table: write no CSV rows (trial runs)")
    args = ap.parse_args()
    if args.prepare:
        prepare(args)
    elif args.method:
        if not (args.prepared and args.results):
            ap.error("--method needs --prepared DIR and --results FILE.json")
        run_method(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
