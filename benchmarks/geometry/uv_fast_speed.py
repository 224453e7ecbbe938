"""Projection-chart UV unwrap (``unwrap_uv_fast``) latency and quality on the engine's 20K-face inputs:
the silhouette-prior mesh of a picture (``--image``: prepare_image -> sdf_from_mask at ``--grid`` ->
extract_mesh -> simplify_qem) and the shared assets' dense marching-cubes meshes (``uv_unwrap.input_mesh``).

Per mesh: one untimed warm-up, median (p20-p80) wall time of ``--repeats`` calls, charts, UV seam edges,
utilisation (texel centres covered), overlapping texels between charts; with ``--xatlas`` also serial
xatlas's charts / seams / utilisation from one untimed call (the quality bar). ``--workers`` threads pack
candidate scales at once; ``--path-workers N`` also reports the packing schedule of N workers replayed in
one thread: its rounds and "critical path" = the unwrap's time with each round's packings counted as
their longest one (what N idle cores would take, before memory contention), labelled as a projection.

Run:  python -m benchmarks.geometry.uv_fast_speed [--image ../shared/images/T.png] [--assets ...]
          [--atlas 1024] [--repeats 5] [--workers 1] [--path-workers 16] [--xatlas] [--out table.md]
Runs on an older tree too (``--workers 1`` calls ``unwrap_uv_fast(mesh, atlas)``): the before/after rows.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import percentiles, time_repeats
from benchmarks.geometry.dense_inputs import DEFAULT_CACHE, all_assets, shared_dir
from benchmarks.geometry.uv_unwrap import input_mesh
from engine.geometry.mesh import TriMesh, vertex_normals
from engine.geometry.uv_quality import overlap_texels, uv_seam_edges


def image_mesh(image: Path, grid: int, faces: int, cache: Path) -> TriMesh:
    """The engine's weight-free shape of ``image`` at ``grid``^3, simplified to ``faces`` (cached)."""
    from engine.config import GeometryConfig
    from engine.geometry.marching_cubes import extract_mesh
    from engine.geometry.silhouette_prior import sdf_from_mask
    from engine.geometry.simplify import Placement, simplify_qem
    from engine.io.image_input import prepare_image

    path = cache / f"image_{image.stem}_{grid}_f{faces}.npz"
    if path.is_file():
        data = np.load(path)
        return TriMesh(data["vertices"], data["faces"])
    dense = extract_mesh(sdf_from_mask(prepare_image(image).mask, resolution=grid))
    mesh, _ = simplify_qem(dense, faces, Placement(GeometryConfig().placement.value))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, vertices=mesh.vertices, faces=mesh.faces)
    return mesh


def quality(out: TriMesh, report, atlas: int) -> dict:
    return dict(charts=report.charts, util=report.utilisation,
                overlap=overlap_texels(out.uvs, out.faces, atlas),
                seams=uv_seam_edges(out.faces, out.meta["vmapping"], out.uvs))


class _Replay:
    """A stand-in for uv_fast._Packer: the schedule of ``workers`` threads, packed one by one and timed
    per round as (sum, longest)."""

    def __init__(self, workers: int) -> None:
        self.workers, self.rounds, self.placed = workers, [], {}

    def __call__(self, prep, scales, resolution, padding) -> list[bool]:
        from engine.geometry.uv_fast import pack_at

        fits, times = [], []
        for s in scales:
            t0 = time.perf_counter()
            place = pack_at(prep, s, resolution, padding)
            times.append(time.perf_counter() - t0)
            fits.append(place is not None)
            if place is not None:
                self.placed[(float(s), resolution, padding)] = place
        self.rounds.append((sum(times), max(times)))
        return fits

    def overlap(self, uv, faces, chart, cell: float) -> np.ndarray:
        """The overlap check in this thread (its split over workers is not projected: counted whole)."""
        from triton_kernels.uv_charting import self_overlap_cells

        return self_overlap_cells(uv, faces, chart, cell)

    def close(self) -> None:
        return None


def critical_path(mesh: TriMesh, atlas: int, workers: int) -> tuple[float, int]:
    """(projected seconds, search rounds) with ``workers`` packing threads (module docstring): the wall time
    of the replayed schedule less each round's packings but its longest."""
    from engine.geometry import uv_fast

    replay = _Replay(workers)
    real, uv_fast._Packer = uv_fast._Packer, lambda _: replay
    try:
        t0 = time.perf_counter()
        uv_fast.unwrap_uv_fast(mesh, atlas)
        wall = time.perf_counter() - t0
    finally:
        uv_fast._Packer = real
    return wall - sum(total - longest for total, longest in replay.rounds), len(replay.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="picture for the silhouette-prior mesh")
    parser.add_argument("--grid", type=int, default=192, help="silhouette-prior grid (the CPU path's 192)")
    parser.add_argument("--assets", nargs="*", default=None, help="shared asset ids (default: all)")
    parser.add_argument("--resolution", type=int, default=256, help="assets' dense MC grid")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--atlas", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--path-workers", type=int, default=0, help="also project N threads' time")
    parser.add_argument("--xatlas", action="store_true", help="also serial xatlas's quality (one call)")
    parser.add_argument("--label", default="", help="row label, e.g. before / after")
    parser.add_argument("--shared", default=None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=None, help="markdown rows appended here")
    args = parser.parse_args()

    from engine.geometry.uv_fast import unwrap_uv_fast

    def run(mesh):
        if args.workers == 1:
            return unwrap_uv_fast(mesh, args.atlas)
        return unwrap_uv_fast(mesh, args.atlas, workers=args.workers)

    meshes = []
    if args.image is not None:
        prior = image_mesh(args.image, args.grid, args.faces, args.cache)
        meshes.append((f"{args.image.stem}.png prior", prior))
    names = args.assets if args.assets is not None else all_assets(shared_dir(args.shared))
    meshes += [(n, input_mesh(n, args.resolution, args.faces, args.cache, args.shared)) for n in names]
    rows = []
    for name, mesh in meshes:
        mesh = mesh.copy(normals=vertex_normals(mesh.vertices, mesh.faces))    # as the engine's UV stage
        times, (out, report) = time_repeats(lambda: run(mesh), repeats=args.repeats, warmup=1)
        p50, p20, p80 = percentiles(times)
        q = quality(out, report, args.atlas)
        row = (f"| {name} ({mesh.num_faces} f) | {args.label} w{args.workers} | "
               f"{p50:.3f} ({p20:.3f}-{p80:.3f}) | "
               f"{q['charts']} | {q['seams']} | {q['util']:.4f} | {q['overlap']} |")
        if args.path_workers:
            path, rounds = critical_path(mesh, args.atlas, args.path_workers)
            row += f" {path:.3f} ({rounds} rounds) |"
        if args.xatlas:
            from engine.geometry.uv_unwrap import unwrap_uv

            x = quality(*unwrap_uv(mesh, args.atlas), args.atlas)
            row += f" {x['charts']} / {x['seams']} / {x['util']:.4f} |"
        rows.append(row)
        print(row, flush=True)
    if args.out:
        with args.out.open("a") as fh:
            fh.write("\n".join(rows) + "\n")
    print(f"# {len(os.sched_getaffinity(0))} usable cores")


if __name__ == "__main__":
    main()
