"""Warm profile of the geometry stages' top rows (issue 10 item 6), new code vs its baseline in one run.

Rows (each: warm-up call, then ``--repeats`` timed calls; median, p20, p80):
- ``floaters + simplify``: ``remove_floaters_gpu`` + ``simplify_qem_gpu`` on the dense 512^3 marching-cubes
  mesh of each asset (``dense_inputs.dense_mesh``, ~1.2-1.9M faces) -> ``--faces``. Variants: ``graphs``
  (the default path: each pass's two phases replayed as CUDA graphs), ``eager`` (the same fixed-argument
  launches without graphs) and ``baseline`` (``simplify_gpu.py`` + ``qem_collapse.py`` as of
  ``--baseline-rev``, loaded from git into a temporary folder). The outputs of all three are compared
  (identical faces and vertices expected) and the pass count is reported.
- ``marching cubes``: the stage on a 512^3 SDF on the GPU: ``extract_mesh_device`` (new), the baseline
  ``DeviceMesh.from_trimesh(extract_mesh(grid))`` (host weld and compaction) and the Triton kernel alone
  (``marching_cubes_triton``); the new and baseline meshes are compared. Fields: each asset's watertight
  SDF (``mesh_to_sdf_gpu``) and the silhouette prior of ``--images`` (``sdf_from_mask(..., device="cuda")``).
- ``glb export``: ``encode_glb`` of the simplified asset with a 2048^2 base colour (a shared picture,
  resized) and a 1024^2 normal map; new (Up filter, level 1, row bands on threads; and the engine's last
  stage alone: base colour + assembly) vs baseline (Pillow level 1, 2 threads). CPU-only:
  ``--export-only`` runs just this row (the numbers quoted in ``engine/io/glb_export.py``).

GPU timings are synchronised wall-clock seconds (``torch.cuda.synchronize`` around each call: the stages
sync to the host themselves, so CUDA events would add nothing). Results: a markdown table (``--out``) and
rows appended to ``--csv``.

    python3 -m benchmarks.geometry.warm_profile --assets bunny armadillo spot --out X.md --csv Y.csv
    python3 -m benchmarks.geometry.warm_profile --export-only --assets bunny --out cpu.md --csv cpu.csv
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, append_result, percentiles
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, dense_mesh, shared_dir, source_mesh

NAME = "warm_profile"
BASELINE_REV = "d0d93e7"        # main before the QEM graph passes / device marching-cubes stage


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """(seconds of ``repeats`` synchronised calls after one warm-up call, last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return times, out


def interleaved(variants: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Times of each variant, calls interleaved (v1, v2, ..., v1, v2, ...) after one warm-up each."""
    outs = {k: fn() for k, fn in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            _sync()
            t0 = time.perf_counter()
            outs[k] = fn()
            _sync()
            times[k].append(time.perf_counter() - t0)
    return times, outs


def load_baseline_simplify(rev: str):
    """``simplify_qem_gpu`` of ``rev``: its simplify_gpu.py and qem_collapse.py written to a temporary
    folder and imported under private names (the kernels compile anew; nothing of today's code is used)."""
    folder = Path(tempfile.mkdtemp(prefix="assetgen_baseline_"))
    names = {"triton_kernels/qem_collapse.py": "_baseline_qem_collapse",
             "engine/geometry/simplify_gpu.py": "_baseline_simplify_gpu"}
    for path, module in names.items():
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout
        text = text.replace("from triton_kernels.qem_collapse import", "from _baseline_qem_collapse import")
        (folder / f"{module}.py").write_text(text)
    for module in names.values():
        spec = importlib.util.spec_from_file_location(module, folder / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        spec.loader.exec_module(mod)
    return sys.modules["_baseline_simplify_gpu"].simplify_qem_gpu


def _same_mesh(a, b) -> bool:
    import torch

    return (a.faces.shape == b.faces.shape and a.vertices.shape == b.vertices.shape
            and bool(torch.equal(a.faces.cpu(), b.faces.cpu()))
            and bool(torch.equal(a.vertices.cpu(), b.vertices.cpu())))


def bench_simplify(dm, faces: int, repeats: int, baseline) -> tuple[dict, dict]:
    from engine.geometry.floaters_gpu import remove_floaters_gpu
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    def run(simplify, **kw):
        return lambda: simplify(remove_floaters_gpu(dm)[0], faces, **kw)[0]

    times, outs = interleaved({"graphs": run(simplify_qem_gpu, cuda_graphs=True),
                               "eager": run(simplify_qem_gpu, cuda_graphs=False),
                               "baseline": run(baseline)}, repeats)
    facts = {"passes": outs["graphs"].meta["simplify_passes"],
             "graphs used": outs["graphs"].meta["simplify_cuda_graphs"],
             "faces out": outs["graphs"].num_faces,
             "identical to baseline": _same_mesh(outs["graphs"], outs["baseline"])
             and _same_mesh(outs["eager"], outs["baseline"])}
    return times, facts


def bench_marching_cubes(grid, repeats: int) -> tuple[dict, dict]:
    import torch

    from engine.geometry.device_mesh import DeviceMesh
    from engine.geometry.marching_cubes import extract_mesh, extract_mesh_device
    from triton_kernels.marching_cubes import marching_cubes_triton

    dev = grid.values.device
    times, outs = interleaved({
        "device stage": lambda: extract_mesh_device(grid),
        "baseline stage": lambda: DeviceMesh.from_trimesh(extract_mesh(grid), dev),
        "kernel alone": lambda: marching_cubes_triton(grid.values.to(torch.float32), 0.0),
    }, repeats)
    facts = {"faces": outs["device stage"].num_faces,
             "identical to baseline": _same_mesh(outs["device stage"], outs["baseline stage"])}
    return times, facts


def export_mesh(mesh, shared: Path):
    """``mesh`` with the attributes the GLB needs: vertex normals, planar UVs, tangents, a 2048^2 base colour
    (a shared picture, resized) and a 1024^2 normal map (smooth waves plus noise)."""
    from PIL import Image

    from engine.geometry.mesh import vertex_normals

    v = np.asarray(mesh.vertices, np.float32)
    n = vertex_normals(v, mesh.faces)
    lo, hi = v.min(axis=0), v.max(axis=0)
    uv = ((v[:, :2] - lo[:2]) / np.maximum(hi[:2] - lo[:2], 1e-6)).astype(np.float32)
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t = np.cross(n, helper)
    tangents = np.concatenate([t / np.linalg.norm(t, axis=1, keepdims=True), np.ones((len(v), 1))], axis=1)
    picture = sorted((shared / "images").glob("*.png"))[0]
    base = np.asarray(Image.open(picture).convert("RGB").resize((2048, 2048), Image.BICUBIC))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:1024, :1024] / 1024.0
    w = np.stack([0.3 * np.sin(20 * xx), 0.3 * np.cos(17 * yy), np.ones_like(xx)], -1)
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    normal_map = ((w * 0.5 + 0.5) * 255 + rng.normal(0, 1.0, w.shape)).clip(0, 255).astype(np.uint8)
    return mesh.copy(vertices=v, normals=n, uvs=uv, tangents=tangents.astype(np.float32),
                     base_color=np.ascontiguousarray(base), normal_map=normal_map)


def _baseline_encode(mesh) -> bytes:
    """``encode_glb`` as before the PNG encoder of ``engine.io.png_encode``: both PNGs by Pillow (adaptive
    filters, zlib level 1), in two threads."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from engine.io import glb_export

    def pillow(rgb):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    geometry = glb_export.pack_geometry(mesh)
    with ThreadPoolExecutor(max_workers=2) as pool:
        base_png, normal_png = pool.map(pillow, [mesh.base_color, mesh.normal_map])
    return glb_export.assemble_glb(geometry, base_png, normal_png)


def bench_export(mesh, repeats: int) -> tuple[dict, dict]:
    """Whole encode, new vs baseline; and the part the engine's last stage still runs (the base colour's PNG
    and the assembly: the geometry and the normal map are encoded beside the GPU stages)."""
    from engine.io.glb_export import assemble_glb, encode_glb, encode_texture, pack_geometry

    geometry, normal_png = pack_geometry(mesh), encode_texture(mesh.normal_map, "normal_map")
    times, outs = interleaved({
        "encode_glb (Up filter, level 1, bands)": lambda: encode_glb(mesh),
        "last stage only (base colour + assembly)":
            lambda: assemble_glb(geometry, encode_texture(mesh.base_color, "base_color"), normal_png),
        "baseline Pillow level 1, 2 threads": lambda: _baseline_encode(mesh)}, repeats)
    new = outs["encode_glb (Up filter, level 1, bands)"]
    facts = {"bytes": len(new), "baseline bytes": len(outs["baseline Pillow level 1, 2 threads"]),
             "deterministic": encode_glb(mesh) == new,
             "split == whole": outs["last stage only (base colour + assembly)"] == new}
    return times, facts


def _emit(rows: list[str], csv_path: str, device: str, row: str, size: str, times: dict, facts: dict,
          config: str) -> None:
    for variant, samples in times.items():
        p50, p20, p80 = percentiles(samples)
        append_result(csv_path, NAME, f"{row}: {variant}", "latency", "s", size, p50, p20, p80, config,
                      device)
        rows.append(f"| {row} | {size} | {variant} | {1e3 * p50:.1f} | {1e3 * p20:.1f} | {1e3 * p80:.1f} |")
    rows.append(f"| {row} | {size} | facts | {', '.join(f'{k}: {v}' for k, v in facts.items())} | | |")
    print(rows[-len(times) - 1:], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", nargs="+", default=["bunny", "armadillo", "spot"])
    ap.add_argument("--images", nargs="*", default=["typical_creature_dragon", "typical_misc_crate"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--dense-cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--shared", default=None)
    ap.add_argument("--export-only", action="store_true", help="only the GLB export row (CPU)")
    ap.add_argument("--out", default=str(RESULTS / "warm_profile_h100.md"))
    ap.add_argument("--csv", default=str(RESULTS / "h100.csv"))
    args = ap.parse_args()
    shared = shared_dir(args.shared)
    rows = ["| row | input | variant | p50 ms | p20 ms | p80 ms |", "|---|---|---|---|---|---|"]
    config = f"res={args.resolution} faces={args.faces} repeats={args.repeats} baseline={args.baseline_rev}"
    if args.export_only:
        from engine.geometry.mesh import clean_mesh
        from engine.geometry.simplify import simplify_qem

        for name in args.assets:
            low, _ = simplify_qem(clean_mesh(source_mesh(name, shared)), args.faces)
            times, facts = bench_export(export_mesh(low, shared), args.repeats)
            _emit(rows, args.csv, "cpu", "glb export", name, times, facts, config)
    else:
        run_gpu(args, shared, rows, config)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(f"# Warm profile ({config})\n\n" + "\n".join(rows) + "\n")


def run_gpu(args, shared: Path, rows: list[str], config: str) -> None:
    import torch

    from engine.geometry.device_mesh import DeviceMesh
    from engine.geometry.silhouette_prior import sdf_from_mask
    from engine.geometry.watertight_gpu import mesh_to_sdf_gpu
    from engine.io.image_input import prepare_image
    from triton_kernels.numba_cuda import kernel_device

    device = torch.cuda.get_device_name()
    baseline = load_baseline_simplify(args.baseline_rev)
    for name in args.assets:
        dense, _ = dense_mesh(name, args.resolution, shared, Path(args.dense_cache), backend="gpu")
        dm = DeviceMesh.from_trimesh(dense, kernel_device())
        size = f"{name} {dense.num_faces} faces"
        times, facts = bench_simplify(dm, args.faces, args.repeats, baseline)
        _emit(rows, args.csv, device, "floaters + simplify", size, times, facts, config)
        grid = mesh_to_sdf_gpu(source_mesh(name, shared), args.resolution).grid
        times, facts = bench_marching_cubes(grid, args.repeats)
        _emit(rows, args.csv, device, "marching cubes", f"{name} sdf", times, facts, config)
        from engine.geometry.simplify_gpu import simplify_qem_gpu

        low, _ = simplify_qem_gpu(dense, args.faces)
        times, facts = bench_export(export_mesh(low, shared), args.repeats)
        _emit(rows, args.csv, device, "glb export", name, times, facts, config)
    for image in args.images:
        mask = prepare_image(shared / "images" / f"{image}.png").mask
        grid = sdf_from_mask(mask, args.resolution, device="cuda")
        times, facts = bench_marching_cubes(grid, args.repeats)
        _emit(rows, args.csv, device, "marching cubes", f"{image} prior", times, facts, config)


if __name__ == "__main__":
    main()
