"""Load triangle meshes from GLB / glTF / OBJ / PLY / OFF into a ``TriMesh`` (own parsers, numpy only).

Conventions of the result (see ``engine.geometry.mesh``): positions float32 [V, 3], faces int32 [F, 3],
UVs in glTF convention (origin top-left, v down), vertex colours linear float32 [V, 3].

- glTF / GLB: the default scene's node tree is walked, node transforms (matrix or TRS) are baked into the
  positions (normals by the inverse transpose; mirroring transforms flip the winding so fronts stay CCW).
  Every TRIANGLES / TRIANGLE_STRIP / TRIANGLE_FAN primitive is loaded, indexed or not; points and lines are
  skipped with a note in ``meta["notes"]``. Accessors honour byteStride and normalized integers; sparse
  accessors and Draco / meshopt compression are refused with a MeshError. Skinned meshes load in their bind
  pose (the skinned node's own transform is ignored, as the spec requires). KHR_texture_transform on a
  base-colour texture is applied to that primitive's UVs. Only the base-colour texture is read.
- OBJ / PLY / OFF: coordinates are taken as-is (no axis or unit change: OBJ scans are often Y-up but
  PLY/OFF are frequently Z-up; the caller decides). OBJ ``v/vt/vn`` corners with separate indices are split
  into unique vertices; polygons are fan-triangulated; negative (relative) indices are resolved. OBJ ``vt``
  has its origin bottom-left, so ``v_gltf = 1 - v_obj``. PLY 8-bit colours are sRGB and converted to linear.

Materials: ``meta["materials"]`` is a list of ``{"name": str, "texture": uint8 [H, W, 3] | None,
"factor": float32 [4]}`` (glTF baseColorFactor / OBJ Kd + d; the texture is the base-colour image, RGB,
sRGB encoded) and ``meta["face_material"]`` int32 [F] indexes it for every face (always filled; a mesh
without materials gets one default entry). When exactly one distinct base-colour image is used,
``mesh.base_color`` holds it and ``mesh.uvs`` the UVs. Faces of untextured materials have UV (0, 0).

The parsers live beside this module: ``asset_load_gltf`` (glTF / GLB, ``split_glb``), ``asset_load_obj``
(OBJ + MTL), ``asset_load_ply`` (PLY, OFF); ``asset_load_common`` holds what they share.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.io.asset_load_common import _Materials, _Part
from engine.io.asset_load_gltf import _load_gltf, split_glb
from engine.io.asset_load_obj import _load_obj
from engine.io.asset_load_ply import _load_off, _load_ply

__all__ = ["FORMATS", "find_mesh_file", "load_mesh", "split_glb"]

FORMATS = (".glb", ".gltf", ".obj", ".ply", ".off")


def load_mesh(path: str | Path) -> TriMesh:
    """Load a mesh file (.glb, .gltf, .obj, .ply, .off) into a TriMesh; MeshError naming the file on failure.

    Returns vertices float32 [V, 3], faces int32 [F, 3], optional normals / uvs / colors, ``base_color``
    when exactly one base-colour texture is used, and ``meta`` with "source", "format", "materials",
    "face_material" int32 [F] and "notes" (list[str] of what was skipped or assumed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise MeshError(f"{path}: unknown mesh format '{suffix}'", f"give one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise MeshError(f"mesh file {path} not found", "check the path")
    if path.stat().st_size == 0:
        raise MeshError(f"mesh file {path} is empty (0 bytes)", "re-export or re-download the file")
    notes: list[str] = []
    materials = _Materials()
    try:
        if suffix in (".glb", ".gltf"):
            parts = _load_gltf(path, materials, notes)
        elif suffix == ".obj":
            parts = _load_obj(path, materials, notes)
        elif suffix == ".ply":
            parts = [_load_ply(path)]
        else:
            parts = [_load_off(path)]
        mesh = _merge(parts, materials, notes)
    except MeshError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, struct.error, UnicodeDecodeError,
            OverflowError) as e:
        raise MeshError(f"{path}: could not parse {suffix[1:].upper()} file ({type(e).__name__}: {e})",
                        "check that the file is complete and valid, or re-export it") from None
    mesh.meta.update(source=str(path), format=suffix[1:], notes=notes)
    validate_mesh(mesh, str(path))
    return mesh


def find_mesh_file(folder: Path) -> Path:
    """First mesh file in ``folder``: by extension in ``FORMATS`` order (.glb first), then by sorted name.

    Raises FileNotFoundError naming the folder when it holds none (or does not exist).
    """
    folder = Path(folder)
    for ext in FORMATS:
        hits = sorted(p for p in folder.glob(f"*{ext}") if p.is_file())
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no mesh file ({', '.join(FORMATS)}) in {folder}")


def _merge(parts: list[_Part], materials: _Materials, notes: list[str]) -> TriMesh:
    """Concatenate parts; attributes present on some parts only are zero-filled (normals: dropped)."""
    if not materials.entries:
        materials.add("default", None, (1.0, 1.0, 1.0, 1.0))
    parts = [p for p in parts if p.faces.shape[0] > 0]
    if not parts:
        return TriMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                       meta={"materials": materials.entries, "face_material": np.zeros(0, np.int32)})
    offsets = np.cumsum([0] + [p.positions.shape[0] for p in parts])
    vertices = np.concatenate([p.positions for p in parts])
    faces = np.concatenate([p.faces + off for p, off in zip(parts, offsets[:-1])])
    face_material = np.concatenate([np.broadcast_to(np.asarray(p.material, np.int32), (p.faces.shape[0],))
                                    for p in parts])

    def gather(name: str, width: int, fill_missing: bool) -> np.ndarray | None:
        have = [getattr(p, name) is not None for p in parts]
        if not any(have) or (not all(have) and not fill_missing):
            return None
        blocks = [np.zeros((p.positions.shape[0], width)) if getattr(p, name) is None else getattr(p, name)
                  for p in parts]
        return np.concatenate(blocks).astype(np.float32)

    normals = gather("normals", 3, False)
    if normals is None and any(p.normals is not None for p in parts):
        notes.append("some primitives have no normals; normals dropped")
    mesh = TriMesh(vertices, faces, normals=normals, uvs=gather("uvs", 2, True),
                   colors=gather("colors", 3, False))
    used_keys = {materials.texture_keys[m] for m in np.unique(face_material)} - {None}
    if len(used_keys) == 1 and mesh.uvs is not None:
        key = used_keys.pop()
        mesh.base_color = materials.entries[materials.texture_keys.index(key)]["texture"]
    mesh.meta["materials"] = materials.entries
    mesh.meta["face_material"] = face_material
    return mesh
