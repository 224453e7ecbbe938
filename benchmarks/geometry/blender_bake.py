"""Blender's tangent-space normal bake (Cycles, CPU) of a dense mesh onto a UV-mapped low mesh: the
baseline of paper Table 4 ("Blender" column), run by a separate Python 3.11 venv that has ``bpy``.

Not imported by the engine. The bake runs in a process of its own because ``bpy`` (Blender as a Python
module, 5.0.1 on PyPI for CPython 3.11) is a 370 MB wheel with its own numpy pin:

    python3.11 -m venv /work/bpyvenv && /work/bpyvenv/bin/pip install bpy
    /work/bpyvenv/bin/python benchmarks/geometry/blender_bake.py --low LOW.npz --dense DENSE.npz \
        --size 1024 --margin 8 --distance-fraction 0.01 --out MAP.npz

Inputs (``.npz``; arrays as ``engine.geometry.mesh.TriMesh`` holds them, glTF conventions):
  LOW:   vertices float32 [V, 3], faces int32 [F, 3] (CCW), uvs float32 [V, 2] (glTF: origin top-left,
         v down), normals float32 [V, 3] (smooth, identical across UV-seam copies);
  DENSE: vertices float32 [V, 3], faces int32 [F, 3]; optional normals float32 [V, 3].
Both are loaded without any axis change (a rotation of the whole scene leaves a tangent-space bake
unchanged, and no mirroring is applied, so CCW faces stay front faces in Blender too).

What is matched to ``engine.geometry.normal_bake.bake_normal_map``:
  * shading normals: both objects are shaded smooth and get our vertex normals as custom normals (the low
    mesh's own; the dense mesh's area-weighted ones, ``vertex_normals``, unless the file has normals), so
    both bakers aim at the same target field; Blender derives its tangents with MikkTSpace from these
    normals and the UVs (ours, ``engine.geometry.tangents``, follow the same convention);
  * search distance: ours accepts the closest dense point within d = distance_fraction x the low mesh's
    bounding-box diagonal. Blender's selected-to-active casts a ray from p + d n towards -n, of length
    max_ray_distance; we set cage_extrusion = d and max_ray_distance = 2 d, so it searches the same band
    [-d, +d] around the low surface (first hit along the normal, not the closest point: Blender's method);
  * gutter: margin = our dilation in texels, margin_type EXTEND (copy the nearest baked texel outwards,
    like our ring-by-ring dilation); unbaked texels are Blender's tangent clear colour (0.5, 0.5, 1);
  * encoding: Blender writes rgb = n / 2 + 0.5 into a float, Non-Color image (no sRGB transfer); we
    quantise it exactly as ``encode_normals`` does: uint8 = round(rgb x 255);
  * conventions: Blender's UV origin is bottom-left (v up) and its image rows are stored bottom row first;
    glTF v points down and our map's row 0 is the top. So the low mesh gets UV (u, 1 - v) and the pixel
    buffer is flipped vertically (``pixels_to_map``). Green: Blender's tangent space is OpenGL (+Y = +v_up =
    image up), the same as glTF's, so no channel is negated. Checked by the icosphere case (low = dense
    gives ~(128, 128, 255)) and by tests/test_bake_table.py's convention tests.
  * sampling: Cycles, CPU, 1 sample per texel (a normal bake has nothing to integrate; ours casts one
    query per texel centre), no denoising.

Timing: ``bake_seconds`` holds the wall time of each ``bpy.ops.object.bake`` call alone (it includes Cycles'
scene sync and BVH build of the dense mesh, as ours includes its BVH build); ``setup_seconds`` is loading
the files and building the Blender scene; both are written into the output with the thread count.

Output ``--out`` (``.npz``): normal_map uint8 [size, size, 3] in our convention (row 0 = glTF v in
[0, 1/size)), bake_seconds, setup_seconds, threads, samples, blender_version, distance, margin.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------ conventions (pure numpy, testable)
def gltf_to_blender_uv(uvs: np.ndarray) -> np.ndarray:
    """glTF UVs float [V, 2] (origin top-left, v down) -> Blender UVs (origin bottom-left, v up)."""
    uv = np.asarray(uvs, np.float32)
    return np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)


def pixels_to_map(pixels: np.ndarray, size: int) -> np.ndarray:
    """Blender's flat float RGBA pixel buffer (bottom row first, rgb = n / 2 + .5) -> our uint8
    [size, size, 3] map (top row first), quantised as ``encode_normals``: round(rgb x 255)."""
    rgba = np.asarray(pixels, np.float32).reshape(size, size, 4)
    rgb = rgba[::-1, :, :3].astype(np.float64)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def area_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals float32 [V, 3], face normals weighted by area (as ``vertex_normals``)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])       # [F, 3], length = 2 area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-30, n / np.maximum(length, 1e-30), (0.0, 0.0, 1.0)).astype(np.float32)


def bake_distance(low_vertices: np.ndarray, low_faces: np.ndarray, fraction: float) -> float:
    """fraction x the bounding-box diagonal of the referenced low vertices (TriMesh.diagonal)."""
    used = np.asarray(low_vertices)[np.unique(low_faces)]
    return float(fraction * np.linalg.norm(used.max(axis=0).astype(np.float64) - used.min(axis=0)))


# ------------------------------------------------------------------------------------- Blender scene
def _mesh_object(bpy, name: str, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                 uvs: np.ndarray | None):
    """A smooth-shaded Blender object with custom vertex normals (and per-corner UVs when given)."""
    me = bpy.data.meshes.new(name)
    nv, nf = len(vertices), len(faces)
    me.vertices.add(nv)
    me.vertices.foreach_set("co", np.ascontiguousarray(vertices, np.float32).ravel())
    me.loops.add(3 * nf)
    me.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, np.int32).ravel())
    me.polygons.add(nf)
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * nf, 3, dtype=np.int32))
    me.update(calc_edges=True)
    if uvs is not None:
        layer = me.uv_layers.new(name="UVMap")
        corner_uv = gltf_to_blender_uv(uvs)[np.asarray(faces).ravel()]       # [3F, 2]
        layer.data.foreach_set("uv", np.ascontiguousarray(corner_uv, np.float32).ravel())
    me.shade_smooth()
    me.normals_split_custom_set_from_vertices(np.ascontiguousarray(normals, np.float32))
    obj = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _bake_target(bpy, obj, size: int):
    """Float, Non-Color image of size^2 on an active Image Texture node of obj's only material."""
    image = bpy.data.images.new("bake", size, size, alpha=False, float_buffer=True)
    image.colorspace_settings.name = "Non-Color"
    mat = bpy.data.materials.new("bake")
    if bpy.app.version < (5, 0, 0):                     # node materials are the only kind from 5.0 on
        mat.use_nodes = True
    node = mat.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    mat.node_tree.nodes.active = node
    obj.data.materials.append(mat)
    return image


def _scene(bpy, threads: int, samples: int) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    if threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = threads


def blender_bake(low: dict, dense: dict, size: int, margin: int, fraction: float, threads: int = 0,
                 samples: int = 1, repeats: int = 1) -> dict:
    """Bake ``dense`` onto ``low`` (dicts of arrays, module docstring) in a fresh Blender scene,
    ``repeats`` times (the same scene; the first call includes Cycles' first scene sync).

    Returns {normal_map uint8 [size, size, 3] (last bake), bake_seconds float64 [repeats],
    setup_seconds, threads, samples, blender_version, distance, margin}.
    """
    import bpy

    t0 = time.perf_counter()
    _scene(bpy, threads, samples)
    dense_n = dense.get("normals")
    if dense_n is None:
        dense_n = area_weighted_normals(dense["vertices"], dense["faces"])
    hi = _mesh_object(bpy, "dense", dense["vertices"], dense["faces"], dense_n, None)
    lo = _mesh_object(bpy, "low", low["vertices"], low["faces"], low["normals"], low["uvs"])
    image = _bake_target(bpy, lo, size)
    for obj in (hi, lo):
        obj.select_set(True)
    bpy.context.view_layer.objects.active = lo
    d = bake_distance(low["vertices"], low["faces"], fraction)
    setup = time.perf_counter() - t0

    bake = []
    for _ in range(repeats):
        t1 = time.perf_counter()
        bpy.ops.object.bake(type="NORMAL", use_selected_to_active=True, cage_extrusion=d,
                            max_ray_distance=2.0 * d, margin=margin, margin_type="EXTEND",
                            normal_space="TANGENT", normal_r="POS_X", normal_g="POS_Y", normal_b="POS_Z",
                            target="IMAGE_TEXTURES", use_clear=True)
        bake.append(time.perf_counter() - t1)

    pixels = np.empty(size * size * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return {"normal_map": pixels_to_map(pixels, size), "bake_seconds": np.array(bake), "setup_seconds": setup,
            "threads": bpy.context.scene.render.threads, "samples": samples,
            "blender_version": bpy.app.version_string, "distance": d, "margin": margin}


def _arrays(path: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    data = np.load(path)
    missing = [k for k in keys if k not in data.files]
    if missing:
        raise SystemExit(f"{path} lacks arrays {missing}; write it with bake_table.py --prepare")
    return {k: data[k] for k in keys + tuple(k for k in optional if k in data.files)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--low", required=True, help=".npz with vertices, faces, uvs, normals")
    ap.add_argument("--dense", required=True, help=".npz with vertices, faces (optional normals)")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--margin", type=int, default=8, help="gutter texels (our dilation)")
    ap.add_argument("--distance-fraction", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads (0: all cores)")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="timed bake calls on the same scene")
    args = ap.parse_args()
    low = _arrays(args.low, ("vertices", "faces", "uvs", "normals"))
    dense = _arrays(args.dense, ("vertices", "faces"), ("normals",))
    result = blender_bake(low, dense, args.size, args.margin, args.distance_fraction, args.threads,
                          args.samples, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **result)
    print(f"blender {result['blender_version']}: bake {np.median(result['bake_seconds']):.3f} s "
          f"(setup {result['setup_seconds']:.3f} s, {result['threads']} threads) -> {args.out}")


if __name__ == "__main__":
    main()
