"""glTF 2.0 / GLB reader for ``engine.io.asset_load`` (conventions of the result are documented there).

The default scene's node tree is walked, node transforms (matrix or TRS) are baked into the positions
(normals by the inverse transpose; mirroring transforms flip the winding so fronts stay CCW). Every
TRIANGLES / TRIANGLE_STRIP / TRIANGLE_FAN primitive is loaded, indexed or not; points and lines are skipped
with a note. Accessors honour byteStride and normalized integers; sparse accessors and Draco / meshopt
compression are refused with a MeshError. Skinned meshes load in their bind pose. KHR_texture_transform on a
base-colour texture is applied to that primitive's UVs. Only the base-colour texture is read.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from engine.errors import MeshError
from engine.io.asset_load_common import _decode_texture, _Materials, _Part

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
