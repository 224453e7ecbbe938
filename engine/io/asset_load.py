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
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, validate_mesh

FORMATS = (".glb", ".gltf", ".obj", ".ply", ".off")


@dataclass
class _Part:
    """One piece of geometry with one material: positions [n, 3], faces [m, 3] local, optional attributes."""

    positions: np.ndarray
    faces: np.ndarray
    material: int | np.ndarray      # one index, or int32 [m] per face
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    colors: np.ndarray | None = None


class _Materials:
    """Growing material table; textures are deduplicated by a source key so sharing can be detected."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.texture_keys: list[object] = []

    def add(self, name: str, texture: np.ndarray | None, factor, texture_key: object = None) -> int:
        self.entries.append({"name": name, "texture": texture,
                             "factor": np.asarray(factor, dtype=np.float32).reshape(4)})
        self.texture_keys.append(texture_key if texture is not None else None)
        return len(self.entries) - 1


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


# ----------------------------------------------------------------------------------------------- images

def _decode_texture(data: bytes, what: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] from encoded PNG/JPEG/WebP bytes (16-bit and palette images handled)."""
    from engine.errors import InputImageError
    from engine.io.image_input import decode_image_bytes

    try:
        return np.ascontiguousarray(decode_image_bytes(data, what)[..., :3])
    except InputImageError as e:
        raise MeshError(f"texture {e.problem}", "re-export the mesh with valid texture images") from None


# ----------------------------------------------------------------------------------------------- glTF

_COMPONENT = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
              5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_REFUSED_EXTENSIONS = {"KHR_draco_mesh_compression": "Draco", "EXT_meshopt_compression": "meshopt"}


def split_glb(data: bytes, path: Path) -> tuple[dict, bytes | None]:
    """(glTF JSON dict, BIN chunk bytes or None) of a GLB container; MeshError when malformed."""
    if len(data) < 20:
        raise MeshError(f"{path}: file too short for a GLB ({len(data)} bytes)", "re-export the file")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != 0x46546C67:
        raise MeshError(f"{path}: not a GLB file (bad magic)", "give a binary glTF (.glb) or rename to .gltf")
    if version != 2:
        raise MeshError(f"{path}: glTF version {version} is unsupported", "convert the file to glTF 2.0")
    if length > len(data):
        raise MeshError(f"{path}: GLB is truncated ({len(data)} of {length} bytes)", "re-download the file")
    gltf, blob, offset = None, None, 12
    while offset + 8 <= length:
        chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8: offset + 8 + chunk_len]
        if len(chunk) != chunk_len:
            raise MeshError(f"{path}: GLB chunk runs past the end of the file", "re-download the file")
        if chunk_type == 0x4E4F534A and gltf is None:
            gltf = _parse_json(chunk, path)
        elif chunk_type == 0x004E4942 and blob is None:
            blob = chunk
        offset += 8 + chunk_len + (-chunk_len % 4)
    if gltf is None:
        raise MeshError(f"{path}: GLB has no JSON chunk", "re-export the file")
    return gltf, blob


def _parse_json(raw: bytes, path: Path) -> dict:
    try:
        gltf = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MeshError(f"{path}: invalid glTF JSON ({e})", "re-export the file") from None
    if not isinstance(gltf, dict) or not str(gltf.get("asset", {}).get("version", "")).startswith("2"):
        raise MeshError(f"{path}: not a glTF 2.0 document", "convert the file to glTF 2.0")
    return gltf


class _GltfReader:
    """Resolves buffers, accessors and images of one glTF document (cached)."""

    def __init__(self, gltf: dict, blob: bytes | None, path: Path) -> None:
        self.gltf, self.blob, self.path = gltf, blob, path
        self.buffers: dict[int, bytes] = {}
        self.images: dict[int, np.ndarray] = {}

    def _uri_bytes(self, uri: str) -> bytes:
        if uri.startswith("data:"):
            return base64.b64decode(uri.split(",", 1)[1])
        target = self.path.parent / unquote(uri)
        if not target.is_file():
            raise MeshError(f"{self.path}: referenced file '{uri}' not found next to it",
                            "keep the .bin and image files beside the .gltf, or export a .glb")
        return target.read_bytes()

    def buffer(self, index: int) -> bytes:
        if index not in self.buffers:
            spec = self.gltf["buffers"][index]
            if "uri" in spec:
                data = self._uri_bytes(spec["uri"])
            elif self.blob is not None:
                data = self.blob
            else:
                raise MeshError(f"{self.path}: buffer {index} has no data", "re-export the file")
            if len(data) < spec["byteLength"]:
                raise MeshError(f"{self.path}: buffer {index} is truncated", "re-export the file")
            self.buffers[index] = data
        return self.buffers[index]

    def view_bytes(self, index: int) -> tuple[bytes, int, int, int | None]:
        """(buffer bytes, start offset, byte length, byteStride or None) of a bufferView."""
        view = self.gltf["bufferViews"][index]
        buffer = self.buffer(view["buffer"])
        return buffer, view.get("byteOffset", 0), view["byteLength"], view.get("byteStride")

    def accessor(self, index: int) -> np.ndarray:
        """Accessor data as [count, width] (float32 for normalized / float, integer dtype otherwise)."""
        acc = self.gltf["accessors"][index]
        if "sparse" in acc:
            raise MeshError(f"{self.path}: accessor {index} is sparse (unsupported)",
                            "re-export without sparse accessors (e.g. gltf-transform dequantize/unpartition)")
        dtype, width, count = np.dtype(_COMPONENT[acc["componentType"]]).newbyteorder("<"), \
            _WIDTH[acc["type"]], int(acc["count"])
        if "bufferView" not in acc:
            return np.zeros((count, width), dtype)
        buf, start, length, stride = self.view_bytes(acc["bufferView"])
        start += acc.get("byteOffset", 0)
        elem = dtype.itemsize * width
        stride = stride or elem
        end = start + stride * (count - 1) + elem if count else start
        if end > len(buf) or stride < elem:
            raise MeshError(f"{self.path}: accessor {index} reads past its buffer", "re-export the file")
        raw = np.frombuffer(buf, np.uint8, count=end - start, offset=start)
        rows = np.lib.stride_tricks.as_strided(raw, shape=(count, elem), strides=(stride, 1))
        out = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
        if acc.get("normalized") and dtype.kind in "iu":
            scale = float(np.iinfo(dtype).max)
            return np.maximum(out.astype(np.float32) / scale, -1.0)
        return out

    def image(self, index: int) -> np.ndarray:
        if index not in self.images:
            spec = self.gltf["images"][index]
            if "bufferView" in spec:
                buf, start, length, _ = self.view_bytes(spec["bufferView"])
                data = buf[start:start + length]
            else:
                data = self._uri_bytes(spec["uri"])
            self.images[index] = _decode_texture(data, f"{self.path} image {index}")
        return self.images[index]


def _load_gltf(path: Path, materials: _Materials, notes: list[str]) -> list[_Part]:
    data = path.read_bytes()
    gltf, blob = split_glb(data, path) if path.suffix.lower() == ".glb" else (_parse_json(data, path), None)
    for ext in gltf.get("extensionsRequired", []):
        if ext in _REFUSED_EXTENSIONS:
            raise MeshError(f"{path}: uses {_REFUSED_EXTENSIONS[ext]} compression ({ext}), unsupported",
                            "decompress it first, e.g. `gltf-transform copy in.glb out.glb`")
    reader = _GltfReader(gltf, blob, path)
    texcoords = _gltf_materials(reader, materials)
    default_material: list[int] = []
    parts: list[_Part] = []
    for node_index, world in _walk_scene(gltf):
        node = gltf["nodes"][node_index]
        if "mesh" not in node:
            continue
        if "skin" in node:
            world = np.eye(4)
        for prim in gltf["meshes"][node["mesh"]]["primitives"]:
            mode = prim.get("mode", 4)
            if mode not in (4, 5, 6):
                notes.append(f"skipped a {['points', 'lines', 'line loop', 'line strip'][mode]} primitive")
                continue
            if "extensions" in prim and set(prim["extensions"]) & set(_REFUSED_EXTENSIONS):
                raise MeshError(f"{path}: a primitive uses Draco/meshopt compression, unsupported",
                                "decompress it first, e.g. `gltf-transform copy in.glb out.glb`")
            if "material" in prim:
                mat = prim["material"]
            else:
                if not default_material:
                    default_material.append(materials.add("default", None, (1.0, 1.0, 1.0, 1.0)))
                mat = default_material[0]
            parts.append(_gltf_primitive(reader, prim, mode, world, mat, texcoords.get(mat)))
    return parts


def _gltf_materials(reader: _GltfReader, materials: _Materials) -> dict[int, tuple[int, dict | None]]:
    """Fill the material table in glTF order; returns {material: (texCoord set, KHR_texture_transform)}."""
    texcoords = {}
    for i, mat in enumerate(reader.gltf.get("materials", [])):
        pbr = mat.get("pbrMetallicRoughness", {})
        ref = pbr.get("baseColorTexture")
        texture = key = None
        if ref is not None:
            tex = reader.gltf["textures"][ref["index"]]
            source = tex.get("source")
            for ext in tex.get("extensions", {}).values():
                source = ext.get("source", source) if source is None else source
            if source is not None:
                texture, key = reader.image(source), source
                transform = ref.get("extensions", {}).get("KHR_texture_transform")
                texcoords[i] = ((transform or {}).get("texCoord", ref.get("texCoord", 0)), transform)
        factor = pbr.get("baseColorFactor", (1.0, 1.0, 1.0, 1.0))
        materials.add(mat.get("name", f"material_{i}"), texture, factor, key)
    return texcoords


def _walk_scene(gltf: dict):
    """Yield (node index, world matrix [4, 4]) over the default scene (or all root nodes without scenes)."""
    nodes = gltf.get("nodes", [])
    if gltf.get("scenes"):
        roots = gltf["scenes"][gltf.get("scene", 0)].get("nodes", [])
    else:
        children = {c for n in nodes for c in n.get("children", [])}
        roots = [i for i in range(len(nodes)) if i not in children]
    stack = [(r, np.eye(4)) for r in reversed(roots)]
    seen = 0
    while stack:
        index, parent = stack.pop()
        seen += 1
        if seen > 10 * max(len(nodes), 1) + 1000:
            raise ValueError("node hierarchy has a cycle")
        world = parent @ _node_matrix(nodes[index])
        yield index, world
        stack.extend((c, world) for c in reversed(nodes[index].get("children", [])))


def _node_matrix(node: dict) -> np.ndarray:
    """Local transform [4, 4]: ``matrix`` (column-major) or T @ R @ S from translation/rotation/scale."""
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    m = np.eye(4)
    m[:3, :3] = rot * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), np.float64)[None, :]
    m[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return m


def _gltf_primitive(reader: _GltfReader, prim: dict, mode: int, world: np.ndarray, material: int,
                    texcoord: tuple[int, dict | None] | None) -> _Part:
    attrs = prim["attributes"]
    pos = reader.accessor(attrs["POSITION"]).astype(np.float64)[:, :3]
    if "indices" in prim:
        idx = reader.accessor(prim["indices"]).reshape(-1).astype(np.int64)
    else:
        idx = np.arange(pos.shape[0], dtype=np.int64)
    faces = _triangles(idx, mode)
    if faces.size and (faces.max() >= pos.shape[0]):
        raise MeshError(f"{reader.path}: primitive indices exceed its vertex count", "re-export the file")
    lin = world[:3, :3]
    positions = pos @ lin.T + world[:3, 3]
    if np.linalg.det(lin) < 0:
        faces = faces[:, ::-1]
    normals = None
    if "NORMAL" in attrs:
        n = reader.accessor(attrs["NORMAL"]).astype(np.float64)[:, :3] @ np.linalg.pinv(lin)  # inv-transpose
        normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    uvs = None
    uv_set, transform = texcoord if texcoord is not None else (0, None)
    if f"TEXCOORD_{uv_set}" in attrs:
        uvs = reader.accessor(attrs[f"TEXCOORD_{uv_set}"]).astype(np.float64)[:, :2]
        uvs = _texture_transform(uvs, transform) if transform else uvs
    colors = reader.accessor(attrs["COLOR_0"]).astype(np.float32)[:, :3] if "COLOR_0" in attrs else None
    return _Part(positions.astype(np.float32), faces.astype(np.int32), material, normals, uvs, colors)


def _triangles(idx: np.ndarray, mode: int) -> np.ndarray:
    """[T, 3] triangles from an index list in TRIANGLES (4), TRIANGLE_STRIP (5) or TRIANGLE_FAN (6) mode."""
    if mode == 4:
        return idx[: idx.size // 3 * 3].reshape(-1, 3)
    k = np.arange(max(idx.size - 2, 0))
    if mode == 5:  # odd triangles swap their first two corners to keep the winding
        a, b = np.where(k % 2 == 0, k, k + 1), np.where(k % 2 == 0, k + 1, k)
        return np.stack([idx[a], idx[b], idx[k + 2]], axis=1)
    return np.stack([np.full_like(k, idx[0]) if idx.size else k, idx[k + 1], idx[k + 2]], axis=1)


def _texture_transform(uv: np.ndarray, t: dict) -> np.ndarray:
    """KHR_texture_transform: uv' = T(offset) R(rotation) S(scale) uv, in glTF UV space."""
    s, r = np.asarray(t.get("scale", (1.0, 1.0))), float(t.get("rotation", 0.0))
    o = np.asarray(t.get("offset", (0.0, 0.0)))
    c, n = np.cos(r), np.sin(r)
    rot = np.array([[c, n], [-n, c]])
    return (uv * s) @ rot.T + o


# ----------------------------------------------------------------------------------------------- OBJ


def _load_obj(path: Path, materials: _Materials, notes: list[str]) -> list[_Part]:
    """Wavefront OBJ: v (3, 4 or 6 values: xyz [w] [rgb]), vt, vn, f with v/vt/vn corners, usemtl, mtllib."""
    v, vt, vn, tokens, sizes, face_mat, face_snap, snaps = [], [], [], [], [], [], [], []
    library: dict[str, dict] = {}
    by_name: dict[str, int] = {}
    current, tag = -1, ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "f" and tag != "f":  # element counts at the start of a face block (negative indices)
            snaps.append((len(v), len(vt), len(vn)))
        tag = parts[0]
        if tag == "v":
            v.append(parts[1:7])
        elif tag == "vt":
            vt.append((parts[1:3] + ["0"])[:2])
        elif tag == "vn":
            vn.append(parts[1:4])
        elif tag == "f":
            tokens.extend(parts[1:])
            sizes.append(len(parts) - 1)
            face_mat.append(current)
            face_snap.append(len(snaps) - 1)
        elif tag == "mtllib":
            for name in parts[1:]:
                library.update(_parse_mtl(path.parent / name.replace("\\", "/"), notes))
        elif tag == "usemtl":
            name = " ".join(parts[1:])
            if name not in by_name:
                by_name[name] = _obj_material(name, library.get(name), materials, notes)
            current = by_name[name]
    if not sizes:
        return []
    if -1 in face_mat:
        default = materials.add("default", None, (1.0, 1.0, 1.0, 1.0))
        face_mat = [default if m == -1 else m for m in face_mat]
    positions = np.array([row[:3] for row in v], dtype=np.float64)
    colors = np.array([row[3:6] for row in v], np.float64) if v and all(len(r) >= 6 for r in v) else None
    raw = _obj_corners(tokens)                                      # [C, 3] OBJ indices, 0 = absent
    counts = np.asarray(snaps, np.int64)[np.repeat(np.asarray(face_snap), sizes)]    # [C, 3]
    c = np.where(raw > 0, raw - 1, np.where(raw < 0, counts + raw, -1))  # 0-based, -1 = absent
    bad = (c[:, 0] < 0) | (c[:, 0] >= len(v)) | (c[:, 1] >= len(vt)) | (c[:, 2] >= len(vn))
    if bad.any():
        raise MeshError(f"{path}: face refers to a vertex/uv/normal index that does not exist",
                        "re-export the OBJ; its face indices are corrupt")
    tri_corners, tri_face = _fan(np.asarray(sizes))
    if min(sizes) < 3:
        notes.append("skipped OBJ faces with fewer than 3 corners")
    material = np.asarray(face_mat, np.int32)[tri_face]
    if (c[:, 1:] < 0).all():  # geometry only: keep the vertex list as-is
        return [_Part(positions.astype(np.float32), c[tri_corners, 0], material, colors=colors)]
    unique, inverse = np.unique(c, axis=0, return_inverse=True)  # split v/vt/vn combinations
    uvs = normals = None
    if vt:
        uv_table = np.array(vt, dtype=np.float64)
        uvs = np.where(unique[:, 1:2] >= 0, uv_table[np.maximum(unique[:, 1], 0)], 0.0)
        uvs[:, 1] = np.where(unique[:, 1] >= 0, 1.0 - uvs[:, 1], 0.0)  # OBJ v is bottom-up
    if vn and (unique[:, 2] >= 0).all():
        normals = np.array(vn, dtype=np.float64)[unique[:, 2]]
    return [_Part(positions[unique[:, 0]].astype(np.float32), inverse.reshape(-1)[tri_corners], material,
                  normals, uvs, None if colors is None else colors[unique[:, 0]])]


def _obj_corners(tokens: list[str]) -> np.ndarray:
    """int64 [C, 3] (v, vt, vn) OBJ indices of face corners 'v', 'v/vt', 'v//vn', 'v/vt/vn'; 0 = absent.

    Fast path: when every token has the first token's pattern, all are parsed in one numpy call.
    """
    first, n = tokens[0], len(tokens)
    k, double = first.count("/"), "//" in first
    joined = " ".join(tokens)
    out = None
    if joined.count("/") == k * n and joined.count("//") == (n if double else 0):
        flat = np.fromstring(joined.replace("//", "/0/").replace("/", " "), dtype=np.int64, sep=" ")
        if flat.size == n * (k + 1):
            out = flat.reshape(n, k + 1)
    if out is None:  # mixed corner patterns: token by token
        rows = [(t.split("/") + ["", ""])[:3] for t in tokens]
        out = np.array([[int(x) if x else 0 for x in row] for row in rows], np.int64)
    if (out[:, 0] == 0).any():
        raise ValueError("OBJ face corner without a vertex index (index 0)")
    return np.pad(out, ((0, 0), (0, 3 - out.shape[1])))


def _parse_mtl(path: Path, notes: list[str]) -> dict[str, dict]:
    """{name: {"kd": [3] | None, "d": float, "map_kd": Path | None}} from an MTL file (missing: noted)."""
    if not path.is_file():
        notes.append(f"material library {path.name} not found; materials untextured")
        return {}
    out: dict[str, dict] = {}
    cur: dict | None = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        if tag == "newmtl":
            cur = out.setdefault(" ".join(parts[1:]), {"kd": None, "d": 1.0, "map_kd": None})
        elif cur is None:
            continue
        elif tag == "Kd" and len(parts) >= 4:
            cur["kd"] = [float(x) for x in parts[1:4]]
        elif tag == "d" and len(parts) >= 2:
            cur["d"] = float(parts[-1])
        elif tag == "Tr" and len(parts) >= 2:
            cur["d"] = 1.0 - float(parts[-1])
        elif tag == "map_Kd" and len(parts) >= 2:  # options (-s, -o, ...) precede the file name
            cur["map_kd"] = path.parent / parts[-1].replace("\\", "/")
    return out


def _obj_material(name: str, spec: dict | None, materials: _Materials, notes: list[str]) -> int:
    if spec is None:
        notes.append(f"material '{name}' not defined in any material library")
        return materials.add(name, None, (1.0, 1.0, 1.0, 1.0))
    texture = key = None
    if spec["map_kd"] is not None:
        if spec["map_kd"].is_file():
            key = str(spec["map_kd"].resolve())
            same = [i for i, k in enumerate(materials.texture_keys) if k == key]
            texture = materials.entries[same[0]]["texture"] if same else \
                _decode_texture(spec["map_kd"].read_bytes(), str(spec["map_kd"]))
        else:
            notes.append(f"texture {spec['map_kd'].name} of material '{name}' not found")
    kd = spec["kd"] if spec["kd"] is not None else [1.0, 1.0, 1.0]
    return materials.add(name, texture, [*kd, spec["d"]], key)


def _fan(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangulation of polygons stored back to back: (corner ids [T, 3], polygon id [T])."""
    starts = np.cumsum(sizes) - sizes
    ntri = np.maximum(sizes - 2, 0)
    poly = np.repeat(np.arange(sizes.size), ntri)
    k = np.arange(poly.size) - np.repeat(np.cumsum(ntri) - ntri, ntri) + 1
    first = starts[poly]
    return np.stack([first, first + k, first + k + 1], axis=1), poly


# ----------------------------------------------------------------------------------------------- PLY / OFF

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _load_ply(path: Path) -> _Part:
    """PLY (ascii, binary_little_endian, binary_big_endian): vertex x y z [nx ny nz] [red green blue]
    [s t | u v | texture_u texture_v] and face vertex_indices lists (polygons fan-triangulated); other
    elements are read past and ignored. UV v is flipped (PLY tools use the OpenGL bottom-left origin)."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MeshError(f"{path}: not a PLY file (missing 'ply' magic or end_header)", "re-export the file")
    body_start = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    fmt, elements = None, []
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        p = line.split()
        if not p:
            continue
        if p[0] == "format":
            fmt = p[1]
        elif p[0] == "element":
            elements.append((p[1], int(p[2]), []))
        elif p[0] == "property" and elements:
            if p[1] == "list":
                elements[-1][2].append((p[4], ("list", _PLY_TYPES[p[2]], _PLY_TYPES[p[3]])))
            else:
                elements[-1][2].append((p[2], _PLY_TYPES[p[1]]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"{path}: unsupported PLY format '{fmt}'", "use ascii or binary PLY")
    tables = _ply_ascii(data[body_start:], elements) if fmt == "ascii" else \
        _ply_binary(data[body_start:], elements, "<" if fmt == "binary_little_endian" else ">")
    vert, face = tables.get("vertex", {}), tables.get("face", {})
    positions = np.stack([np.asarray(vert[a], np.float64) for a in "xyz"], axis=1)
    normals = np.stack([vert[a] for a in ("nx", "ny", "nz")], 1).astype(np.float64) \
        if all(a in vert for a in ("nx", "ny", "nz")) else None
    colors = None
    for names in (("red", "green", "blue"), ("r", "g", "b"),
                  ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(n in vert for n in names):
            rgb = np.stack([vert[n] for n in names], 1)
            rgb = rgb / 255.0 if rgb.dtype.kind in "iu" else rgb.astype(np.float64)
            colors = _srgb_to_linear(np.clip(rgb, 0.0, 1.0))
            break
    uvs = None
    for a, b in (("s", "t"), ("u", "v"), ("texture_u", "texture_v"), ("texture_s", "texture_t")):
        if a in vert and b in vert:
            uvs = np.stack([vert[a], 1.0 - np.asarray(vert[b], np.float64)], 1)
            break
    lists = face.get("vertex_indices", face.get("vertex_index"))
    faces = np.zeros((0, 3), np.int64) if lists is None else _triangulate_lists(lists)
    return _Part(positions.astype(np.float32), faces, 0, normals, uvs, colors)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _triangulate_lists(lists: np.ndarray | list) -> np.ndarray:
    """[T, 3] int64 from a fixed-width [F, k] index array or a list of variable-length polygons."""
    if isinstance(lists, np.ndarray):
        sizes, flat = np.full(lists.shape[0], lists.shape[1]), lists.reshape(-1)
    else:
        sizes = np.array([len(x) for x in lists], dtype=np.int64)
        flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    corners, _ = _fan(sizes)
    return flat.astype(np.int64)[corners]


def _ply_binary(body: bytes, elements: list, order: str) -> dict[str, dict]:
    tables: dict[str, dict] = {}
    offset = 0
    for name, count, props in elements:
        fields, at = [], offset
        for pname, ptype in props:  # guess fixed list lengths from the first record, verify below
            if isinstance(ptype, tuple):
                n = int(np.frombuffer(body, order + ptype[1], 1, at)[0]) if count else 0
                fields += [(pname + "#n", order + ptype[1]), (pname, order + ptype[2], (n,))]
                at += np.dtype(ptype[1]).itemsize + n * np.dtype(ptype[2]).itemsize
            else:
                fields.append((pname, order + ptype))
                at += np.dtype(ptype).itemsize
        dtype = np.dtype(fields) if count else np.dtype([("_", "u1")])
        if count and offset + dtype.itemsize * count > len(body):
            raise ValueError(f"element '{name}' runs past the end of the file")
        table = np.frombuffer(body, dtype, count, offset) if count else None
        lists = [p for p, t in props if isinstance(t, tuple)]
        if count and all((table[p + "#n"] == table.dtype[p].shape[0]).all() for p in lists):
            tables[name] = {p: table[p] for p, _ in props}
            offset += dtype.itemsize * count
        elif count:
            tables[name], offset = _ply_binary_variable(body, offset, count, props, order)
    return tables


def _ply_binary_variable(body: bytes, offset: int, count: int, props: list, order: str) -> tuple[dict, int]:
    """Record-by-record reader for elements whose lists vary in length (polygon meshes)."""
    out: dict[str, list] = {p: [] for p, _ in props}
    for _ in range(count):
        for pname, ptype in props:
            if isinstance(ptype, tuple):
                n = int(np.frombuffer(body, order + ptype[1], 1, offset)[0])
                offset += np.dtype(ptype[1]).itemsize
                out[pname].append(np.frombuffer(body, order + ptype[2], n, offset))
                offset += np.dtype(ptype[2]).itemsize * n
            else:
                out[pname].append(np.frombuffer(body, order + ptype, 1, offset)[0])
                offset += np.dtype(ptype).itemsize
    table = {p: (v if isinstance(t, tuple) else np.asarray(v)) for (p, t), v in zip(props, out.values())}
    return table, offset


def _ply_ascii(body: bytes, elements: list) -> dict[str, dict]:
    lines = [ln for ln in body.decode("ascii", errors="replace").splitlines() if ln.strip()]
    tables: dict[str, dict] = {}
    at = 0
    for name, count, props in elements:
        rows = [ln.split() for ln in lines[at: at + count]]
        if len(rows) < count:
            raise ValueError(f"element '{name}' has {len(rows)} of {count} records")
        at += count
        out: dict[str, list] = {p: [] for p, _ in props}
        uniform = count and len({len(r) for r in rows}) == 1
        if uniform and not any(isinstance(t, tuple) for _, t in props):
            arr = np.array(rows, dtype=np.float64)
            tables[name] = {p: arr[:, i].astype(t) for i, (p, t) in enumerate(props)}
            continue
        for r in rows:
            i = 0
            for pname, ptype in props:
                if isinstance(ptype, tuple):
                    n = int(r[i])
                    out[pname].append(np.array(r[i + 1: i + 1 + n], dtype=np.int64))
                    i += 1 + n
                else:
                    out[pname].append(float(r[i]))
                    i += 1
        tables[name] = {p: (v if isinstance(t, tuple) else np.asarray(v, t)) for (p, t), v in
                        zip(props, out.values())}
    return tables


def _load_off(path: Path) -> _Part:
    """OFF / COFF / NOFF: header, 'nv nf ne', nv vertex lines (xyz first), nf face lines 'k i0 .. ik-1'."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [row for row in (ln.split("#", 1)[0].split() for ln in text.splitlines()) if row]
    if not lines or not lines[0][0].upper().endswith("OFF") or lines[0][0][0].isdigit():
        raise MeshError(f"{path}: not an OFF file (missing 'OFF' header)", "re-export the file")
    head = lines[0][1:] if len(lines[0]) > 1 else lines[1]
    start = 1 if len(lines[0]) > 1 else 2
    nv, nf = int(head[0]), int(head[1])
    vert_rows, face_rows = lines[start: start + nv], lines[start + nv: start + nv + nf]
    if len(vert_rows) < nv or len(face_rows) < nf:
        raise MeshError(f"{path}: OFF file is truncated ({len(vert_rows)}/{nv} vertices, "
                        f"{len(face_rows)}/{nf} faces)", "re-export or re-download the file")
    positions = np.array([r[:3] for r in vert_rows], dtype=np.float64)
    polys = [np.array(r[1: 1 + int(r[0])], dtype=np.int64) for r in face_rows]
    if polys and len({p.size for p in polys}) == 1:
        return _Part(positions.astype(np.float32), _triangulate_lists(np.stack(polys)), 0)
    return _Part(positions.astype(np.float32), _triangulate_lists(polys), 0)
