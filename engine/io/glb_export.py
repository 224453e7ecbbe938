"""GLB export of the finished asset, and a summary reader for ``assetgen info``.

The asset contract (one mesh, one primitive, one material), glTF 2.0 binary:

- attributes: POSITION float32 VEC3 (with accessor min/max), NORMAL float32 VEC3 (unit length),
  TEXCOORD_0 float32 VEC2 (glTF UVs: origin top-left, v down), TANGENT float32 VEC4 (unit xyz, w = +1/-1,
  MikkTSpace handedness); indices UNSIGNED_SHORT when V < 65536, else UNSIGNED_INT; mode TRIANGLES.
- material: pbrMetallicRoughness with baseColorTexture (sRGB PNG), metallicFactor 0 and roughnessFactor 0.9
  (generated assets carry no metal/roughness map; 0.9 is a matte, near-diffuse default that keeps a faint
  specular lobe so shapes read under image-based lighting), normalTexture (tangent-space, linear PNG).
- images: PNG (``engine.io.png_encode``: Up filter, zlib in row bands) with no colour-management chunks (no
  iCCP / sRGB / gAMA / cHRM), embedded in the binary chunk through bufferViews; one sampler (linear,
  mip-mapped, clamp to edge: atlas charts must not wrap).
- layout: one bufferView per attribute / index / image, each starting on a 4-byte boundary; vertex
  bufferViews carry ``byteStride`` and target ARRAY_BUFFER, the index bufferView ELEMENT_ARRAY_BUFFER.
- scene: one node with the mesh and no transform, +Y up, metres (the engine's convention), and
  ``asset.generator = "assetgen"``.

The work comes in three parts so the engine can run two of them early, beside the GPU stages
(``engine.pipeline``): ``pack_geometry`` (the vertex and index buffers, once the mesh is unwrapped),
``encode_texture`` (one PNG, e.g. the normal map once baked) and ``assemble_glb`` (the container around
them). ``encode_glb`` chains the three; the bytes do not depend on which way they were produced.
The file is written atomically (``engine.io.atomic``): a failure leaves no partial file.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.io.atomic import atomic_write_bytes
from engine.io.png_encode import encode_png

ROUGHNESS_FACTOR = 0.9
METALLIC_FACTOR = 0.0
GENERATOR = "assetgen"
# zlib settings of the PNGs (engine.io.png_encode). The crate's textures (weight-free path, default preset) on
# the 2-core CI machine (shared with other jobs, the second core busy: one thread), medians of 7:
#   base colour 2048^2  Pillow level 1, adaptive filters (before)  178 ms  2.041 MB
#                       Up filter, level 1 (now)                     84 ms  2.048 MB
#                       Up filter, level 1, Z_RLE                    72 ms  2.155 MB
#   normal map 1024^2   Pillow level 1, adaptive filters (before)   83 ms  0.733 MB
#                       Up filter, level 1                           30 ms  0.738 MB
#                       Up filter, level 1, Z_RLE (now)              26 ms  0.610 MB
# Z_RLE costs the base colour +5-8 % bytes on photo-like pictures (five shared pictures at 2048^2) and saves
# ~10 %; the normal map (smooth, off the critical path) compresses best with it.
# python3 -m benchmarks.geometry.warm_profile --export-only compares encode_glb with the Pillow encoder.
PNG_COMPRESS_LEVEL = 1
BASE_COLOR_STRATEGY = zlib.Z_DEFAULT_STRATEGY
NORMAL_MAP_STRATEGY = zlib.Z_RLE

_FLOAT, _USHORT, _UINT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_GLB_MAGIC, _CHUNK_JSON, _CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


@dataclass(frozen=True)
class GeometryBuffers:
    """The mesh half of a GLB: the vertex/index bufferViews and accessors, and their bytes (``blob``);
    images are appended behind them by ``assemble_glb``."""

    blob: bytes
    views: tuple[dict, ...]
    accessors: tuple[dict, ...]
    attributes: dict[str, int]  # glTF attribute name -> accessor index
    indices: int  # accessor index
    num_vertices: int


def write_glb(mesh: TriMesh, path: str | Path) -> None:
    """Write ``mesh`` as a GLB following the asset contract above (atomic; MeshError on bad input).

    mesh needs: vertices float32 [V, 3], faces int32 [F, 3], normals [V, 3], uvs [V, 2], tangents [V, 4],
    base_color uint8 [H, W, 3], normal_map uint8 [H, W, 3]. Normals and tangent xyz are renormalised
    (a zero-length or non-finite one is an error); tangent w is snapped to its sign.
    """
    write_glb_bytes(encode_glb(mesh), path)


def write_glb_bytes(data: bytes, path: str | Path) -> None:
    """Write finished GLB bytes to ``path`` atomically; MeshError if its folder does not exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MeshError(f"output folder {path.parent} does not exist", "create it or choose another path")
    atomic_write_bytes(path, data)


def encode_glb(mesh: TriMesh) -> bytes:
    """The GLB bytes for ``mesh`` (see ``write_glb``); nothing is written."""
    geometry = pack_geometry(mesh)
    _require(mesh, ("base_color", "normal_map"))
    return assemble_glb(geometry, encode_texture(mesh.base_color, "base_color"),
                        encode_texture(mesh.normal_map, "normal_map"))


def pack_geometry(mesh: TriMesh) -> GeometryBuffers:
    """Validate ``mesh``'s geometry and lay out its vertex attributes and indices (see ``write_glb``; the
    textures are not read)."""
    validate_mesh(mesh, "mesh to export")
    _require(mesh, ("normals", "uvs", "tangents"))
    nv = mesh.num_vertices
    normals = _unit_rows(_vertex_attr(mesh.normals, nv, 3, "normals"), "normals")
    uvs = _vertex_attr(mesh.uvs, nv, 2, "uvs").astype(np.float32)
    tangents = _vertex_attr(mesh.tangents, nv, 4, "tangents")
    if np.any(tangents[:, 3] == 0.0):
        raise MeshError("mesh to export has tangents with handedness w = 0", "set w to +1 or -1")
    tangents = np.concatenate([_unit_rows(tangents[:, :3], "tangents"),
                               np.where(tangents[:, 3:] < 0, -1.0, 1.0).astype(np.float32)], axis=1)
    index_type, indices = (_USHORT, mesh.faces.astype(np.uint16)) if nv < 65536 else \
        (_UINT, mesh.faces.astype(np.uint32))

    builder = _BufferBuilder()
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    attributes = {
        "POSITION": builder.accessor(mesh.vertices, "VEC3", min_max=(lo, hi)),
        "NORMAL": builder.accessor(normals, "VEC3"),
        "TEXCOORD_0": builder.accessor(uvs, "VEC2"),
        "TANGENT": builder.accessor(tangents, "VEC4"),
    }
    index_accessor = builder.accessor(indices.reshape(-1), "SCALAR", component=index_type)
    return GeometryBuffers(bytes(builder.blob), tuple(builder.views), tuple(builder.accessors), attributes,
                           index_accessor, nv)


def encode_texture(image: np.ndarray, name: str) -> bytes:
    """PNG bytes of one texture slot, ``name`` "base_color" or "normal_map" (uint8 [H, W, 3], else
    MeshError), at that slot's zlib settings."""
    strategy = {"base_color": BASE_COLOR_STRATEGY, "normal_map": NORMAL_MAP_STRATEGY}[name]
    return encode_png(_texture(image, name), PNG_COMPRESS_LEVEL, strategy)


def assemble_glb(geometry: GeometryBuffers, base_color_png: bytes, normal_map_png: bytes) -> bytes:
    """The GLB bytes: ``geometry``'s buffers, then the two PNGs (base colour, normal map), and the JSON."""
    builder = _BufferBuilder(geometry)
    image_views = [builder.view(png) for png in (base_color_png, normal_map_png)]
    gltf = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "asset"}],
        "meshes": [{"name": "asset", "primitives": [
            {"attributes": dict(geometry.attributes), "indices": geometry.indices, "material": 0,
             "mode": 4}]}],
        "materials": [{
            "name": "asset",
            "pbrMetallicRoughness": {"baseColorTexture": {"index": 0, "texCoord": 0},
                                     "metallicFactor": METALLIC_FACTOR,
                                     "roughnessFactor": ROUGHNESS_FACTOR},
            "normalTexture": {"index": 1, "texCoord": 0},
        }],
        "textures": [{"sampler": 0, "source": 0}, {"sampler": 0, "source": 1}],
        "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                      "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}],
        "images": [{"bufferView": v, "mimeType": "image/png"} for v in image_views],
        "accessors": builder.accessors,
        "bufferViews": builder.views,
        "buffers": [{"byteLength": len(builder.blob)}],
    }
    return _pack_glb(gltf, bytes(builder.blob))


class _BufferBuilder:
    """Appends arrays to one binary buffer, each bufferView starting on a 4-byte boundary."""

    _components = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}

    def __init__(self, start: GeometryBuffers | None = None) -> None:
        """start: continue behind these buffers (copied, never modified)."""
        self.blob = bytearray(start.blob if start else b"")
        self.views: list[dict] = [dict(v) for v in start.views] if start else []
        self.accessors: list[dict] = [dict(a) for a in start.accessors] if start else []

    def view(self, payload: bytes, target: int | None = None, stride: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(payload)}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self.blob.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, component: int = _FLOAT,
                 min_max: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        dtype = {_FLOAT: "<f4", _USHORT: "<u2", _UINT: "<u4"}[component]
        array = np.ascontiguousarray(array, dtype=dtype)
        if kind == "SCALAR":
            view = self.view(array.tobytes(), target=_ELEMENT_ARRAY_BUFFER)
        else:  # vertex attribute: byteStride is required for ARRAY_BUFFER views shared or not
            view = self.view(array.tobytes(), target=_ARRAY_BUFFER, stride=array.itemsize * array.shape[1])
        acc = {"bufferView": view, "componentType": component, "count": int(array.shape[0]), "type": kind}
        if min_max is not None:
            acc["min"] = [float(x) for x in min_max[0]]
            acc["max"] = [float(x) for x in min_max[1]]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _pack_glb(gltf: dict, blob: bytes) -> bytes:
    """GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    blob += b"\0" * (-len(blob) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total),
                     struct.pack("<II", len(js), _CHUNK_JSON), js,
                     struct.pack("<II", len(blob), _CHUNK_BIN), blob])


def _require(mesh: TriMesh, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(mesh, name) is None:
            raise MeshError(f"mesh to export has no {name}",
                            f"compute {name} before export (the GLB contract needs every attribute)")


def _vertex_attr(array: np.ndarray, nv: int, width: int, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != (nv, width):
        raise MeshError(f"mesh to export has {name} of shape {array.shape}, expected ({nv}, {width})",
                        f"give one {width}-vector of {name} per vertex")
    if not np.isfinite(array).all():
        raise MeshError(f"mesh to export has non-finite {name}", f"recompute {name}")
    return array.astype(np.float64)


def _unit_rows(vectors: np.ndarray, name: str) -> np.ndarray:
    """float32 [N, 3] unit vectors; zero-length rows are an error (they cannot be made unit)."""
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    bad = int((length[:, 0] < 1e-12).sum())
    if bad:
        raise MeshError(f"mesh to export has {bad} zero-length {name}", f"recompute {name} before export")
    return (vectors / length).astype(np.float32)


def _texture(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise MeshError(f"mesh to export has {name} of shape {image.shape} dtype {image.dtype}",
                        f"give {name} as uint8 [H, W, 3]")
    return image


def read_glb_summary(path: str | Path) -> dict:
    """Describe a GLB for ``assetgen info`` without loading its geometry.

    Returns {"faces": int, "vertices": int, "primitives": int, "has_uv": bool, "has_normals": bool,
    "has_tangents": bool, "has_base_color": bool, "has_normal_map": bool,
    "texture_sizes": {"base_color": (W, H) | None, "normal_map": (W, H) | None},
    "bounds": ([x, y, z], [x, y, z]) | None (over the scene's mesh instances, after node transforms),
    "generator": str | None, "file_bytes": int}. Texture sizes are of the first material that has one.
    Every accessor a triangle primitive uses is range-checked (as ``process`` does): one that reads past
    its buffer, or a dangling index into the document, is a MeshError.
    """
    from engine.io.asset_load import split_glb

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"GLB file {path} not found", "check the path")
    data = path.read_bytes()
    gltf, blob = split_glb(data, path)
    try:
        faces, vertices, primitives, attrs_seen, bounds = _scene_summary(gltf, blob, path)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MeshError(f"{path}: malformed glTF document ({type(exc).__name__}: {exc})",
                        "re-export the file; `assetgen info` reads only valid GLBs") from None
    sizes = {"base_color": None, "normal_map": None}
    for mat in gltf.get("materials", []):
        slots = {"base_color": mat.get("pbrMetallicRoughness", {}).get("baseColorTexture"),
                 "normal_map": mat.get("normalTexture")}
        for key, ref in slots.items():
            if ref is not None and sizes[key] is None:
                sizes[key] = _texture_size(gltf, blob, ref["index"], path)
    return {
        "faces": faces, "vertices": vertices, "primitives": primitives,
        "has_uv": "TEXCOORD_0" in attrs_seen, "has_normals": "NORMAL" in attrs_seen,
        "has_tangents": "TANGENT" in attrs_seen,
        "has_base_color": sizes["base_color"] is not None, "has_normal_map": sizes["normal_map"] is not None,
        "texture_sizes": sizes,
        "bounds": bounds,
        "generator": gltf.get("asset", {}).get("generator"), "file_bytes": len(data),
    }


def _scene_summary(gltf: dict, blob: bytes | None, path: Path):
    """(faces, vertices, primitives, attribute names, world bounds or None) of the triangle primitives;
    every accessor they use is read through the loader's range checks."""
    from engine.io.asset_load_gltf import _GltfReader, _walk_scene

    reader = _GltfReader(gltf, blob, path)
    faces = vertices = primitives = 0
    attrs_seen: set[str] = set()
    for mesh in gltf.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if prim.get("mode", 4) != 4 or "POSITION" not in prim.get("attributes", {}):
                continue
            primitives += 1
            attrs_seen.update(prim["attributes"])
            for accessor in [*prim["attributes"].values(), *([prim["indices"]] if "indices" in prim else [])]:
                reader.accessor(accessor)                       # range check (MeshError past the buffer)
            pos = gltf["accessors"][prim["attributes"]["POSITION"]]
            vertices += int(pos["count"])
            count = gltf["accessors"][prim["indices"]]["count"] if "indices" in prim else pos["count"]
            faces += int(count) // 3
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for node, world in _walk_scene(gltf):
        if "mesh" not in gltf["nodes"][node]:
            continue
        for prim in gltf["meshes"][gltf["nodes"][node]["mesh"]].get("primitives", []):
            if prim.get("mode", 4) != 4 or "POSITION" not in prim.get("attributes", {}):
                continue
            xyz = reader.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
            placed = xyz @ world[:3, :3].T + world[:3, 3]
            if len(placed):
                lo, hi = np.minimum(lo, placed.min(0)), np.maximum(hi, placed.max(0))
    bounds = (lo.tolist(), hi.tolist()) if np.isfinite(lo).all() else None
    return faces, vertices, primitives, attrs_seen, bounds


def _texture_size(gltf: dict, blob: bytes | None, texture_index: int, path: Path) -> tuple[int, int] | None:
    """(width, height) of an embedded texture, read from its header only; None if external/unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = gltf["images"][gltf["textures"][texture_index]["source"]]
        view = gltf["bufferViews"][image["bufferView"]]
    except (KeyError, IndexError):
        return None
    start = view.get("byteOffset", 0)
    if blob is None or start + view["byteLength"] > len(blob):
        raise MeshError(f"{path}: texture bufferView lies outside the binary chunk", "re-export the file")
    try:
        with Image.open(io.BytesIO(blob[start:start + view["byteLength"]])) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        return None
