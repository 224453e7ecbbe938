"""Mesh loading: every shared asset, cross-checked with pymeshlab where it reads the format; hand-built glTF
(node transforms, byteStride, normalized ints, data URIs, modes), OBJ (v/vt/vn splits, polygons, negative
indices, MTL textures), PLY (ascii / binary LE / BE), OFF; and every bad-file case."""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
from conftest import ASSETS, asset_path

from engine.errors import MeshError
from engine.geometry.mesh import face_normals
from engine.io.asset_load import load_mesh

FACES = {"bunny": 69451, "armadillo": 86482, "camelhead": 22704, "trellis_T": 61402, "duck": 4212, "fox": 576,
         "helmet": 15452, "milktruck": 3624, "sofa": 4196, "suzanne": 3936, "twosidedplane": 2, "spot": 5856,
         "bob": 10688, "ntmirror": 5240, "nttest": 7774, "texcoordtest": 10}
TEXTURED = ["duck", "spot", "bob", "suzanne", "helmet", "milktruck", "fox", "nttest", "ntmirror",
            "twosidedplane"]


def _asset(name: str):
    if not (ASSETS / name).is_dir():
        pytest.skip(f"shared asset {name} not found")
    return asset_path(name)


# ------------------------------------------------------------------------------------------ real assets

@pytest.mark.parametrize("name", sorted(FACES))
def test_every_shared_asset_loads(name):
    mesh = load_mesh(_asset(name))
    assert mesh.num_faces == FACES[name]
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert np.isfinite(mesh.vertices).all() and mesh.faces.max() < mesh.num_vertices
    fm = mesh.meta["face_material"]
    assert fm.dtype == np.int32 and fm.shape == (mesh.num_faces,)
    assert 0 <= fm.min() and fm.max() < len(mesh.meta["materials"])
    for mat in mesh.meta["materials"]:
        assert mat["factor"].shape == (4,) and mat["factor"].dtype == np.float32
        tex = mat["texture"]
        assert tex is None or (tex.dtype == np.uint8 and tex.ndim == 3 and tex.shape[2] == 3)
    if mesh.uvs is not None:
        assert mesh.uvs.shape == (mesh.num_vertices, 2)
    if mesh.normals is not None:
        np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", TEXTURED)
def test_textured_assets_get_their_texture(name):
    mesh = load_mesh(_asset(name))
    textured = [m for m in mesh.meta["materials"] if m["texture"] is not None]
    assert textured and mesh.uvs is not None
    assert mesh.base_color is not None and mesh.base_color.shape[2] == 3
    assert mesh.base_color.std() > 1.0                            # a real picture, not a constant
    used = np.unique(mesh.meta["face_material"])
    assert any(mesh.meta["materials"][i]["texture"] is not None for i in used)


def test_multi_material_assets():
    truck = load_mesh(_asset("milktruck"))
    names = [m["name"] for m in truck.meta["materials"]]
    assert names == ["wheels", "truck", "glass", "window_trim"]
    assert np.bincount(truck.meta["face_material"]).tolist() == [1536, 1744, 56, 288]  # 2 wheel instances
    np.testing.assert_allclose(truck.meta["materials"][2]["factor"], [0, 0.0405063, 0.0212407, 1], atol=1e-6)
    sofa = load_mesh(_asset("sofa"))                               # factors only: no base-colour texture
    assert sofa.base_color is None and all(m["texture"] is None for m in sofa.meta["materials"])
    assert len(sofa.meta["materials"]) == 7


@pytest.mark.parametrize("name", ["bunny", "armadillo", "camelhead", "trellis_T"])
def test_geometry_matches_pymeshlab(name):
    pymeshlab = pytest.importorskip("pymeshlab")
    ms = pymeshlab.MeshSet()
    ms.load_new_mesh(str(_asset(name)))
    ref = ms.current_mesh()
    mesh = load_mesh(_asset(name))
    assert mesh.num_vertices == ref.vertex_number() and mesh.num_faces == ref.face_number()
    np.testing.assert_allclose(mesh.vertices, ref.vertex_matrix(), atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, ref.face_matrix())


def test_gltf_external_files_and_obj_textures():
    suzanne = load_mesh(_asset("suzanne"))                         # .gltf + .bin + external PNG
    assert suzanne.base_color.shape == (1024, 1024, 3)
    spot = load_mesh(_asset("spot"))                               # OBJ + MTL map_Kd
    assert spot.base_color.shape == (1024, 1024, 3) and spot.normals is not None
    vt = np.array([ln.split()[1:3] for ln in _asset("spot").read_text().splitlines() if ln.startswith("vt ")],
                  np.float64)                                      # spot's raw vt (bottom-left origin)
    np.testing.assert_allclose(spot.uvs[:, 0].min(), vt[:, 0].min(), atol=1e-6)
    np.testing.assert_allclose(spot.uvs[:, 1].max(), 1.0 - vt[:, 1].min(), atol=1e-6)   # v flipped
    np.testing.assert_allclose(spot.uvs[:, 1].min(), 1.0 - vt[:, 1].max(), atol=1e-6)


# ------------------------------------------------------------------------------------------ glTF by hand

def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _hand_gltf(tmp_path, **extra) -> tuple:
    """A glTF with an interleaved POSITION/NORMAL view (byteStride 24), normalized uint16 UVs, uint8
    indices, a non-indexed primitive, a points primitive, a TRS node tree and a mirroring matrix node."""
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    nrm = np.tile(np.array([[0, 0, 1]], np.float32), (4, 1))
    inter = np.concatenate([pos, nrm], axis=1).tobytes()                         # 4 x 24 bytes
    uv = np.array([[0, 0], [65535, 0], [0, 65535], [65535, 65535]], np.uint16).tobytes()   # 16 bytes
    idx = np.array([0, 1, 2, 2, 1, 3], np.uint8).tobytes() + b"\0\0"             # 6 (+2 pad)
    blob = inter + uv + idx
    gltf = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"translation": [1, 2, 3], "children": [1, 2]},
                  {"rotation": [0, np.sin(np.pi / 4), 0, np.cos(np.pi / 4)], "scale": [2, 2, 2], "mesh": 0},
                  {"matrix": [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "mesh": 1}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2}, "indices": 3,
                                    "material": 0},
                                   {"attributes": {"POSITION": 0}, "mode": 0}]},
                   {"primitives": [{"attributes": {"POSITION": 4, "NORMAL": 5}}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0},
                                                "baseColorFactor": [1, 0.5, 0.5, 1]}}],
        "textures": [{"source": 0}],
        "images": [{"uri": _png_data_uri(np.full((4, 4, 3), (10, 200, 30), np.uint8))}],
        "buffers": [{"byteLength": len(blob),
                     "uri": "data:application/octet-stream;base64," + base64.b64encode(blob).decode()}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 96, "byteStride": 24},
                        {"buffer": 0, "byteOffset": 96, "byteLength": 16},
                        {"buffer": 0, "byteOffset": 112, "byteLength": 6}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3"},
                      {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": 4, "type": "VEC3"},
                      {"bufferView": 1, "componentType": 5123, "normalized": True, "count": 4,
                       "type": "VEC2"},
                      {"bufferView": 2, "componentType": 5121, "count": 6, "type": "SCALAR"},
                      {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"},
                      {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": 3, "type": "VEC3"}],
    }
    for key, value in extra.items():
        gltf[key] = value
    path = tmp_path / "hand.gltf"
    path.write_text(json.dumps(gltf))
    return path, gltf, pos


def test_hand_built_gltf(tmp_path):
    path, _, pos = _hand_gltf(tmp_path)
    mesh = load_mesh(path)
    assert mesh.num_faces == 2 + 1 and mesh.num_vertices == 4 + 3
    # node 1: translate(1,2,3) @ rotY(90) @ scale(2): x -> -z, z -> x
    rot = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], np.float64)
    np.testing.assert_allclose(mesh.vertices[:4], (2 * pos) @ rot.T + [1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(mesh.normals[:4], np.tile([[1, 0, 0]], (4, 1)), atol=1e-6)
    # node 2 mirrors x: winding flipped so the geometric normal still agrees with the (mirrored) normal
    np.testing.assert_allclose(mesh.vertices[4:], pos[:3] * [-1, 1, 1] + [1, 2, 3], atol=1e-6)
    fn = face_normals(mesh.vertices, mesh.faces)
    vn = mesh.normals[mesh.faces[:, 0]]
    assert (np.sum(fn * vn, axis=1) > 0.99).all()
    np.testing.assert_allclose(mesh.uvs[:4], [[0, 0], [1, 0], [0, 1], [1, 1]], atol=1e-6)  # normalized u16
    np.testing.assert_array_equal(mesh.base_color[0, 0], (10, 200, 30))
    assert mesh.meta["face_material"].tolist() == [0, 0, 1]       # last primitive: default material
    np.testing.assert_allclose(mesh.meta["materials"][0]["factor"], [1, 0.5, 0.5, 1])
    assert any("points" in note for note in mesh.meta["notes"])


def test_gltf_texture_transform(tmp_path):
    path, gltf, _ = _hand_gltf(tmp_path)
    ref = gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]
    ref["extensions"] = {"KHR_texture_transform": {"offset": [0.5, 0.25], "scale": [0.5, 0.5]}}
    path.write_text(json.dumps(gltf))
    mesh = load_mesh(path)
    np.testing.assert_allclose(mesh.uvs[:4], [[0.5, 0.25], [1.0, 0.25], [0.5, 0.75], [1.0, 0.75]], atol=1e-6)


def test_gltf_refusals(tmp_path):
    path, gltf, _ = _hand_gltf(tmp_path)
    gltf["accessors"][0]["sparse"] = {"count": 1}
    path.write_text(json.dumps(gltf))
    with pytest.raises(MeshError, match="sparse"):
        load_mesh(path)
    path, gltf, _ = _hand_gltf(tmp_path, extensionsRequired=["KHR_draco_mesh_compression"])
    with pytest.raises(MeshError, match="Draco"):
        load_mesh(path)
    path, gltf, _ = _hand_gltf(tmp_path)
    gltf["buffers"][0]["uri"] = "missing.bin"
    path.write_text(json.dumps(gltf))
    with pytest.raises(MeshError, match="missing.bin"):
        load_mesh(path)
    gltf["buffers"][0]["uri"] = "data:application/octet-stream;base64,AAAA"   # 3 bytes, far too short
    path.write_text(json.dumps(gltf))
    with pytest.raises(MeshError, match="truncated"):
        load_mesh(path)
    path, gltf, _ = _hand_gltf(tmp_path)
    gltf["images"][0]["uri"] = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n junk").decode()
    path.write_text(json.dumps(gltf))
    with pytest.raises(MeshError, match="texture .*image 0"):
        load_mesh(path)


def test_truncated_glb(tmp_path):
    data = _asset("duck").read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[: len(data) // 2])
    with pytest.raises(MeshError, match="truncated"):
        load_mesh(tmp_path / "cut.glb")
    header = b"glTF" + struct.pack("<II", 2, 28) + struct.pack("<II", 8, 0x4E4F534A)
    (tmp_path / "junk.glb").write_bytes(header + b"{broken}")
    with pytest.raises(MeshError, match="invalid glTF JSON"):
        load_mesh(tmp_path / "junk.glb")


# ------------------------------------------------------------------------------------------ OBJ / PLY / OFF

def test_obj_polygons_negative_indices_and_materials(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((2, 2, 3), 99, np.uint8)).save(tmp_path / "tex.png")
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\nd 0.5\nnewmtl tex\nmap_Kd -s 1 1 1 tex.png\n")
    (tmp_path / "a.obj").write_text(
        "# test\nmtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\n"
        "usemtl red\nf 1/1/1 2/2/1 3/3/1 4/4/1\n"                          # quad -> 2 triangles
        "v 2 0 0\nv 3 0 0\nv 3 1 0\nv 2.5 2 0\nv 2 1 0\n"
        "usemtl tex\nf -5/-4/-1 -4/-3/-1 -3/-2/-1 -2/-1/-1 -1/-1/-1\n")   # pentagon, relative indices
    mesh = load_mesh(tmp_path / "a.obj")
    assert mesh.num_faces == 2 + 3
    assert mesh.meta["face_material"].tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(mesh.meta["materials"][0]["factor"], [1, 0, 0, 0.5])
    assert mesh.base_color is not None and (mesh.base_color == 99).all()
    tri = mesh.vertices[mesh.faces]                                             # [F, 3, 3]
    np.testing.assert_allclose(tri[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(tri[2], [[2, 0, 0], [3, 0, 0], [3, 1, 0]])       # fan from the first corner
    np.testing.assert_allclose(tri[4], [[2, 0, 0], [2.5, 2, 0], [2, 1, 0]])
    uv = mesh.uvs[mesh.faces[0]]
    np.testing.assert_allclose(uv, [[0, 1], [1, 1], [1, 0]])                   # v flipped to glTF
    assert (face_normals(mesh.vertices, mesh.faces)[:, 2] > 0.99).all()


def test_obj_split_vertices_and_plain(tmp_path):
    (tmp_path / "s.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvt 0.5 0.5\n"
                                    "f 1/1 2/2 3/3\nf 3/4 2/2 4/4\n")         # vertex 3 has two UVs: split
    mesh = load_mesh(tmp_path / "s.obj")
    assert mesh.num_vertices == 5 and mesh.normals is None
    assert mesh.meta["materials"][0]["name"] == "default"
    (tmp_path / "p.obj").write_text("v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 0 1 0 0 0 1\nv 5 5 5 1 1 1\nf 1 2 3\n")
    mesh = load_mesh(tmp_path / "p.obj")
    assert mesh.num_vertices == 4                                  # geometry only: kept as-is
    np.testing.assert_allclose(mesh.colors[:3], np.eye(3))


def _cube() -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    v = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], np.float32)
    quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]]
    rgb = (np.arange(24).reshape(8, 3) * 10).astype(np.uint8)
    return v, quads, rgb


def _write_ply(path, fmt: str, polys: list[list[int]]) -> None:
    v, _, rgb = _cube()
    head = (f"ply\nformat {fmt} 1.0\ncomment test\nelement vertex 8\nproperty float x\nproperty float y\n"
            f"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
            f"element face {len(polys)}\nproperty list uchar int vertex_indices\nproperty uchar flags\n"
            f"element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n")
    if fmt == "ascii":
        body = "".join(f"{x} {y} {z} {r} {g} {b}\n" for (x, y, z), (r, g, b) in zip(v, rgb))
        body += "".join(f"{len(p)} {' '.join(map(str, p))} 7\n" for p in polys) + "0 1\n"
        path.write_bytes(head.encode() + body.encode())
        return
    o = "<" if fmt == "binary_little_endian" else ">"
    body = b"".join(struct.pack(o + "fffBBB", *xyz, *c) for xyz, c in zip(v.tolist(), rgb.tolist()))
    body += b"".join(struct.pack(o + "B" + "i" * len(p) + "B", len(p), *p, 7) for p in polys)
    path.write_bytes(head.encode() + body + struct.pack(o + "ii", 0, 1))


@pytest.mark.parametrize("mixed", [False, True])
def test_ply_ascii_and_binary_agree(tmp_path, mixed):
    v, quads, rgb = _cube()
    polys = quads if not mixed else quads[:4] + [[0, 4, 6], [0, 6, 2], [1, 3, 7, 5]]
    meshes = []
    for fmt in ("ascii", "binary_little_endian", "binary_big_endian"):
        _write_ply(tmp_path / f"{fmt}.ply", fmt, polys)
        meshes.append(load_mesh(tmp_path / f"{fmt}.ply"))
    for m in meshes:
        assert m.num_faces == 12 and m.num_vertices == 8
        np.testing.assert_array_equal(m.faces, meshes[0].faces)
        np.testing.assert_allclose(m.vertices, v)
        srgb = rgb / 255.0
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        np.testing.assert_allclose(m.colors, linear, atol=1e-6)
    assert abs(np.sum(face_normals(meshes[0].vertices, meshes[0].faces), axis=0)).max() < 1e-5  # closed cube


def test_off_variants(tmp_path):
    v, quads, _ = _cube()
    rows = "".join(f"{x} {y} {z}\n" for x, y, z in v)
    faces = "".join(f"4 {' '.join(map(str, q))}\n" for q in quads)
    (tmp_path / "a.off").write_text(f"OFF\n# comment\n8 6 0\n{rows}{faces}")
    (tmp_path / "b.off").write_text(f"OFF 8 6 0\n{rows}{faces}")
    a, b = load_mesh(tmp_path / "a.off"), load_mesh(tmp_path / "b.off")
    assert a.num_faces == 12 and np.array_equal(a.faces, b.faces)
    (tmp_path / "c.off").write_text(f"OFF\n8 6 0\n{rows}4 0 2 3 1\n")
    with pytest.raises(MeshError, match="truncated"):
        load_mesh(tmp_path / "c.off")


def test_bad_files_raise_mesh_errors_naming_the_file(tmp_path):
    cases = {
        "x.stl": (b"solid x", "unknown mesh format"),
        "empty.obj": (b"", "empty"),
        "noverts.obj": (b"f 1 2 3\n", "does not exist"),
        "nan.obj": (b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
        "nofaces.obj": (b"v 0 0 0\nv 1 0 0\n", "no faces"),
        "words.obj": (b"v a b c\nf 1 2 3\n", "could not parse"),
        "notply.ply": (b"hello\n", "not a PLY"),
        "cut.ply": (b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\n"
                    b"property float y\nproperty float z\nend_header\n" + b"\0" * 40, "could not parse"),
        "range.off": (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "outside"),
        "notoff.off": (b"COWS\n", "not an OFF"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MeshError, match=expected) as err:
            load_mesh(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MeshError, match="not found"):
        load_mesh(tmp_path / "missing.glb")
