"""The C++ example host (``trt_builds/cpp``) end to end on a real picture and a real mesh.

    python -m trt_builds.host_demo --packages build/pt2 --host build/trt_builds/cpp/assetgen_host \\
        --picture ../shared/images/typical_misc_crate.png --mesh ../shared/assets/spot/spot.obj \\
        --out build/demo

Prepares the host's raw inputs as the Python engine does -- the picture through
``engine.io.image_input.prepare_image`` (object crop, straight alpha) composited on white with
``engine.stages.shape_networks.picture_on_white`` at the bucket's picture size, the mesh's normal / position
condition maps from ``engine.texture.render_conditions.render_views`` on ``camera_rig`` after
``normalize_to_sphere``, mapped to [0, 1] like ``engine.stages.texture_networks._render`` -- runs the host as
a subprocess, and turns its raw outputs into files to look at: the SDF field -> marching cubes
(``engine.geometry.marching_cubes.extract_mesh``) -> ``shape.obj``; the condition maps and the decoded views
-> ``views.png`` (rows: normals, positions, generated views). With the seeded random networks of
``--preset tiny`` the shape and the views are not meaningful: the demo shows the plumbing, not quality.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np

from engine.errors import MeshError


def read_manifest(packages: Path) -> tuple[Path, dict[str, str]]:
    """(manifest path, its ``key value`` settings); ``packages`` is a manifest or a folder holding one."""
    if packages.is_dir():
        found = sorted(packages.glob("assetgen.*.manifest"))
        if len(found) != 1:
            raise SystemExit(f"{packages} holds {len(found)} manifests; pass one with --packages")
        packages = found[0]
    settings = {}
    for line in packages.read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("package "):
            key, value = line.split(" ", 1)
            settings[key] = value
    return packages, settings


def host_picture(path: Path, size: int) -> tuple[np.ndarray, str]:
    """(uint8 [size, size, 3] the engine's object crop composited on white, where its mask came from)."""
    from engine.io.image_input import prepare_image
    from engine.stages.shape_networks import picture_on_white

    prepared = prepare_image(path, size=size)
    return picture_on_white(prepared.rgba).numpy(), prepared.mask_source


def condition_maps(mesh_path: Path, num_views: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """normals, positions float32 [K, R, R, 3] in [0, 1] (backgrounds white / origin), as the stage
    renders them."""
    from engine.io.asset_load import load_mesh
    from engine.texture.render_conditions import render_views
    from engine.texture.views import camera_rig, normalize_to_sphere

    mesh = load_mesh(mesh_path)
    rig_mesh = mesh.copy(vertices=normalize_to_sphere(mesh.vertices)[0])
    renders = render_views(rig_mesh, camera_rig(num_views), size)
    mask = renders.mask[..., None]
    normals = np.where(mask, renders.normal * 0.5 + 0.5, 1.0).astype(np.float32)
    positions = np.where(mask, renders.position * 0.5 + 0.5, 0.5).astype(np.float32)
    return normals, positions


def field_to_mesh(field: np.ndarray, bounds: float):
    """(TriMesh, level) from the (G+1)^3 lattice field (x slowest, negative inside) on [-bounds, bounds]^3:
    level 0, or the field's median when 0 is never crossed (a random decoder may miss it)."""
    from engine.geometry.marching_cubes import extract_mesh
    from engine.geometry.sdf_grid import SdfGrid

    n = round(field.size ** (1 / 3))
    grid = SdfGrid(field.reshape(n, n, n), -bounds, bounds)
    try:
        return extract_mesh(grid, 0.0, backend="numpy"), 0.0
    except MeshError:
        level = float(np.median(field))
        return extract_mesh(grid, level, backend="numpy"), level


def write_obj(mesh, path: Path) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"f {a} {b} {c}" for a, b, c in mesh.faces + 1]
    path.write_text("\n".join(lines) + "\n")


def contact_sheet(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] grid of float [K, R, R, 3] rows in [0, 1] (clipped), white gaps."""
    k, r = rows[0].shape[:2]
    sheet = np.full((len(rows) * (r + pad) + pad, k * (r + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (r + pad), pad + j * (r + pad)
            sheet[y:y + r, x:x + r] = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trt_builds.host_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--packages", required=True, type=Path, help="the bucket's manifest or its folder")
    ap.add_argument("--host", required=True, type=Path, help="the built assetgen_host")
    ap.add_argument("--picture", required=True, type=Path)
    ap.add_argument("--mesh", required=True, type=Path, help="the mesh whose condition maps are rendered")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--picture-size", type=int, default=None,
                    help="crop edge in pixels (default: the bucket's largest network input, "
                         "max(dino_resolution, view_resolution))")
    args = ap.parse_args(argv)

    from engine.io.png_encode import encode_png

    manifest, cfg = read_manifest(args.packages)
    k, r = int(cfg["num_views"]), int(cfg["view_resolution"])
    size = args.picture_size or max(int(cfg["dino_resolution"]), r)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"bucket {cfg['preset']} ({manifest.name}): seeded random networks unless built with --weights -- "
          f"the shape and views below show the plumbing, not meaningful pictures")

    t0 = time.perf_counter()
    picture, mask_source = host_picture(args.picture, size)
    picture.tofile(out / "picture.u8")
    (out / "picture.png").write_bytes(encode_png(picture))
    t1 = time.perf_counter()
    print(f"picture  {args.picture.name} -> picture.u8 uint8 [{size}, {size}, 3] on white "
          f"(mask from {mask_source}; + picture.png), {t1 - t0:.2f} s")
    normals, positions = condition_maps(args.mesh, k, r)
    normals.tofile(out / "normals.f32")
    positions.tofile(out / "positions.f32")
    t2 = time.perf_counter()
    print(f"renders  {args.mesh.name} -> normals.f32, positions.f32 float32 [{k}, {r}, {r}, 3], "
          f"{t2 - t1:.2f} s")

    cmd = [str(args.host), str(manifest), str(out / "picture.u8"), str(size), str(out / "normals.f32"),
           str(out / "positions.f32"), str(args.seed), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    t3 = time.perf_counter()
    if done.returncode != 0:
        raise SystemExit(f"host failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    for line in done.stdout.strip().splitlines():
        print(f"host     {line}")
    print(f"host     process {t3 - t2:.2f} s (load + run + write)")

    g = int(cfg["grid_resolution"]) + 1
    field = np.fromfile(out / "field.f32", dtype=np.float32)
    assert field.size == g ** 3, (field.size, g)
    mesh, level = field_to_mesh(field, float(cfg["bounds"]))
    write_obj(mesh, out / "shape.obj")
    t4 = time.perf_counter()
    note = "" if level == 0.0 else " (0 never crossed: level = the field's median)"
    print(f"shape    field.f32 [{g}^3] in [{field.min():.3g}, {field.max():.3g}] -> marching cubes at level "
          f"{level:.4g}{note} -> shape.obj {mesh.num_vertices} vertices, {mesh.num_faces} faces, "
          f"{t4 - t3:.2f} s")

    views = np.fromfile(out / "views.f32", dtype=np.float32).reshape(k, 3, r, r).transpose(0, 2, 3, 1)
    sheet = contact_sheet([normals, positions, views])
    (out / "views.png").write_bytes(encode_png(sheet))
    t5 = time.perf_counter()
    print(f"views    views.f32 [{k}, 3, {r}, {r}] in [{views.min():.3g}, {views.max():.3g}] -> views.png "
          f"{sheet.shape[1]}x{sheet.shape[0]} (rows: normals, positions, views), {t5 - t4:.2f} s")


if __name__ == "__main__":
    main()
