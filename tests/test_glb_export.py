"""GLB export: the asset contract, Khronos glTF-Validator (0 errors, 0 warnings), atomic writes, summaries."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from conftest import asset_path
from gltf_validator import format_issues, require_validator, validate_gltf
from meshes import icosphere

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, vertex_normals
from engine.io.asset_load import load_mesh, split_glb
from engine.io.atomic import atomic_write_bytes
from engine.io.glb_export import (
    ROUGHNESS_FACTOR,
    assemble_glb,
    encode_glb,
    encode_texture,
    pack_geometry,
    read_glb_summary,
    write_glb,
)


def uv_tangents(v: np.ndarray, f: np.ndarray, uv: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-vertex tangents [V, 4] from UV gradients (Lengyel), orthonormalised against n, w = handedness."""
    p0, p1, p2 = (v[f[:, i]] for i in range(3))
    t0, t1, t2 = (uv[f[:, i]] for i in range(3))
    e1, e2, d1, d2 = p1 - p0, p2 - p0, t1 - t0, t2 - t0
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(det) > 1e-12, 1.0 / np.where(det == 0, 1, det), 0.0)[:, None]
    tan, bit = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) * r, (e2 * d1[:, :1] - e1 * d2[:, :1]) * r
    T, B = np.zeros_like(v), np.zeros_like(v)
    for i in range(3):
        np.add.at(T, f[:, i], tan)
        np.add.at(B, f[:, i], bit)
    T = T - n * np.sum(T * n, axis=1, keepdims=True)
    fallback = np.cross(n, np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    T = np.where(np.linalg.norm(T, axis=1, keepdims=True) > 1e-9, T, fallback)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    w = np.where(np.sum(np.cross(n, T) * B, axis=1) < 0, -1.0, 1.0)
    return np.concatenate([T, w[:, None]], axis=1)


@pytest.fixture(scope="module")
def textured_sphere() -> TriMesh:
    """An icosphere unwrapped by xatlas, with tangents, a generated base colour and a flat normal map."""
    import xatlas

    v, f = icosphere(3)
    vmap, idx, uv = xatlas.parametrize(v.astype(np.float32), f.astype(np.uint32))
    v, f = v[vmap], idx.astype(np.int64)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    yy, xx = np.mgrid[0:128, 0:128]
    base = np.stack([xx * 2, yy * 2, np.full_like(xx, 128)], axis=2).astype(np.uint8)
    nmap = np.zeros((64, 64, 3), np.uint8) + np.array([128, 128, 255], np.uint8)
    return TriMesh(v, f, normals=n.astype(np.float32), uvs=uv.astype(np.float32),
                   tangents=uv_tangents(v, f, uv.astype(np.float64), n).astype(np.float32),
                   base_color=base, normal_map=nmap)


def _validate_clean(path) -> dict:
    require_validator()
    report = validate_gltf(path)
    print(format_issues(report))
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, format_issues(report)
    return report


def test_sphere_passes_khronos_validator(textured_sphere, tmp_path):
    out = tmp_path / "sphere.glb"
    write_glb(textured_sphere, out)
    report = _validate_clean(out)
    assert report["info"]["totalTriangleCount"] == textured_sphere.num_faces
    assert report["info"]["materialCount"] == 1 and report["info"]["hasTextures"]


def test_parts_assemble_to_the_same_bytes(textured_sphere):
    """The engine's split (geometry after the unwrap, normal map after the bake, base colour last) gives
    encode_glb's bytes, and assembling leaves the packed geometry as it was (it can be assembled again)."""
    geometry = pack_geometry(textured_sphere.copy(base_color=None, normal_map=None))
    normal_png = encode_texture(textured_sphere.normal_map, "normal_map")
    base_png = encode_texture(textured_sphere.base_color, "base_color")
    first = assemble_glb(geometry, base_png, normal_png)
    assert first == encode_glb(textured_sphere) == assemble_glb(geometry, base_png, normal_png)


def test_contract_layout(textured_sphere, tmp_path):
    out = tmp_path / "sphere.glb"
    write_glb(textured_sphere, out)
    gltf, blob = split_glb(out.read_bytes(), out)
    prim = gltf["meshes"][0]["primitives"][0]
    assert set(prim["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0", "TANGENT"}
    acc = gltf["accessors"]
    assert acc[prim["indices"]]["componentType"] == 5123          # uint16 below 65536 vertices
    pos = acc[prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(pos["min"], textured_sphere.vertices.min(0), atol=1e-6)
    np.testing.assert_allclose(pos["max"], textured_sphere.vertices.max(0), atol=1e-6)
    assert all(v["byteOffset"] % 4 == 0 for v in gltf["bufferViews"])
    assert all("byteStride" in gltf["bufferViews"][a["bufferView"]] for a in acc if a["type"] != "SCALAR")
    mat = gltf["materials"][0]
    assert mat["pbrMetallicRoughness"]["metallicFactor"] == 0
    assert mat["pbrMetallicRoughness"]["roughnessFactor"] == ROUGHNESS_FACTOR
    assert "normalTexture" in mat and gltf["asset"]["generator"] == "assetgen"
    for image in gltf["images"]:
        view = gltf["bufferViews"][image["bufferView"]]
        png = blob[view["byteOffset"]: view["byteOffset"] + view["byteLength"]]
        chunks = _png_chunk_types(png)
        assert not {"iCCP", "sRGB", "gAMA", "cHRM"} & set(chunks), chunks
    tangents = _read_accessor(gltf, blob, prim["attributes"]["TANGENT"], 4)
    assert set(np.unique(tangents[:, 3])) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-6)


def test_round_trip_and_summary(textured_sphere, tmp_path):
    out = tmp_path / "sphere.glb"
    write_glb(textured_sphere, out)
    back = load_mesh(out)
    np.testing.assert_array_equal(back.faces, textured_sphere.faces)
    np.testing.assert_allclose(back.vertices, textured_sphere.vertices, atol=1e-7)
    np.testing.assert_allclose(back.uvs, textured_sphere.uvs, atol=1e-7)
    np.testing.assert_array_equal(back.base_color, textured_sphere.base_color)
    s = read_glb_summary(out)
    assert s["faces"] == textured_sphere.num_faces and s["vertices"] == textured_sphere.num_vertices
    assert all(s[k] for k in ("has_uv", "has_tangents", "has_normals", "has_normal_map", "has_base_color"))
    assert s["texture_sizes"] == {"base_color": (128, 128), "normal_map": (64, 64)}
    np.testing.assert_allclose(s["bounds"][0], textured_sphere.vertices.min(0), atol=1e-6)
    assert s["generator"] == "assetgen"


def test_large_mesh_uses_uint32_and_validates(tmp_path):
    """A 70K-vertex grid: uint32 indices; tangents and normals constant; still 0 errors / 0 warnings."""
    n = 265                                                      # 265^2 = 70225 vertices
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    v = np.stack([xx.ravel(), np.zeros(n * n), -yy.ravel()], axis=1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    normals = vertex_normals(v.astype(np.float32), f)
    assert np.allclose(normals, [0, 1, 0])
    mesh = TriMesh(v, f, normals=normals, uvs=np.stack([xx.ravel(), yy.ravel()], 1),
                   tangents=np.tile([[1.0, 0, 0, 1.0]], (n * n, 1)),
                   base_color=np.full((8, 8, 3), 200, np.uint8), normal_map=np.full((8, 8, 3), 128, np.uint8))
    out = tmp_path / "grid.glb"
    write_glb(mesh, out)
    gltf, _ = split_glb(out.read_bytes(), out)
    assert gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]["componentType"] == 5125
    _validate_clean(out)


@pytest.mark.parametrize("missing", ["normals", "uvs", "tangents", "base_color", "normal_map"])
def test_missing_attribute_is_an_error_and_leaves_no_file(textured_sphere, tmp_path, missing):
    out = tmp_path / "bad.glb"
    with pytest.raises(MeshError, match=missing):
        write_glb(textured_sphere.copy(**{missing: None}), out)
    assert list(tmp_path.iterdir()) == []


def test_zero_length_normal_and_bad_handedness(textured_sphere, tmp_path):
    normals = textured_sphere.normals.copy()
    normals[3] = 0.0
    with pytest.raises(MeshError, match="zero-length normals"):
        write_glb(textured_sphere.copy(normals=normals), tmp_path / "a.glb")
    tangents = textured_sphere.tangents.copy()
    tangents[0, 3] = 0.0
    with pytest.raises(MeshError, match="handedness"):
        write_glb(textured_sphere.copy(tangents=tangents), tmp_path / "b.glb")
    with pytest.raises(MeshError, match="base_color"):
        write_glb(textured_sphere.copy(base_color=np.zeros((4, 4, 4), np.uint8)), tmp_path / "c.glb")
    with pytest.raises(MeshError, match="does not exist"):
        write_glb(textured_sphere, tmp_path / "no_such_dir" / "d.glb")
    assert list(tmp_path.iterdir()) == []


def test_non_unit_inputs_are_normalised(textured_sphere):
    stretch = np.array([2.0, 2.0, 2.0, 5.0], np.float32)
    scaled = textured_sphere.copy(normals=textured_sphere.normals * 3.0,
                                  tangents=textured_sphere.tangents * stretch)
    gltf, blob = split_glb(encode_glb(scaled), None)
    prim = gltf["meshes"][0]["primitives"][0]
    normals = _read_accessor(gltf, blob, prim["attributes"]["NORMAL"], 3)
    np.testing.assert_allclose(normals, textured_sphere.normals, atol=1e-6)
    assert set(np.unique(_read_accessor(gltf, blob, prim["attributes"]["TANGENT"], 4)[:, 3])) <= {-1.0, 1.0}


def test_atomic_write_replaces_or_keeps_old(tmp_path, monkeypatch):
    import os

    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "text is not bytes")             # fails inside write()
    assert target.read_bytes() == b"new contents"

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)                      # fails after the bytes were written
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"partial")
    monkeypatch.undo()
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_reference_assets_summary_and_validator_agree(tmp_path):
    """read_glb_summary on a third-party GLB matches the validator's own counts."""
    path = asset_path("duck")
    s = read_glb_summary(path)
    assert s["faces"] == 4212 and s["has_base_color"] and s["texture_sizes"]["base_color"] == (512, 512)
    require_validator()
    info = validate_gltf(path)["info"]
    assert info["totalTriangleCount"] == s["faces"] and info["totalVertexCount"] == s["vertices"]


def test_summary_of_bad_files(tmp_path):
    with pytest.raises(MeshError, match="not found"):
        read_glb_summary(tmp_path / "none.glb")
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF" + struct.pack("<II", 2, 999) + b"\0" * 12)
    with pytest.raises(MeshError, match="truncated"):
        read_glb_summary(bad)
    bad.write_bytes(b"not a glb at all, just text")
    with pytest.raises(MeshError, match="not a GLB"):
        read_glb_summary(bad)


def _png_chunk_types(png: bytes) -> list[str]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    types, at = [], 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at: at + 8])
        (crc,) = struct.unpack(">I", png[at + 8 + length: at + 12 + length])
        assert zlib.crc32(png[at + 4: at + 8 + length]) == crc
        types.append(kind.decode())
        at += 12 + length
    return types


def _read_accessor(gltf: dict, blob: bytes, index: int, width: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    return np.frombuffer(blob, "<f4", acc["count"] * width, start).reshape(-1, width)


def test_json_is_compact_and_valid(textured_sphere):
    gltf, _ = split_glb(encode_glb(textured_sphere), None)
    assert json.dumps(gltf)  # serialisable round trip
    assert gltf["scenes"][0]["nodes"] == [0] and "matrix" not in gltf["nodes"][0]


@pytest.mark.parametrize("name", ["spot", "helmet"])
def test_real_asset_round_trips_through_export_and_validator(name, tmp_path):
    """A real textured asset (OBJ or GLB in, our GLB out): validator-clean, geometry and texture preserved."""
    mesh = load_mesh(asset_path(name))
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    n = mesh.normals.astype(np.float64)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    asset = mesh.copy(normals=n, tangents=uv_tangents(v, f, mesh.uvs.astype(np.float64), n),
                      normal_map=np.full((16, 16, 3), (128, 128, 255), np.uint8))
    out = tmp_path / f"{name}.glb"
    write_glb(asset, out)
    report = _validate_clean(out)
    assert report["info"]["totalTriangleCount"] == mesh.num_faces
    back = load_mesh(out)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.base_color, mesh.base_color)


def test_validator_harness_reports_real_errors(textured_sphere, tmp_path):
    """The harness is no rubber stamp: a tangent w = 0.5 patched in behind write_glb's back is an error."""
    require_validator()
    data = bytearray(encode_glb(textured_sphere))
    gltf, _ = split_glb(bytes(data), None)
    acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["TANGENT"]]
    json_len = struct.unpack_from("<I", data, 12)[0]
    w_at = 12 + 8 + json_len + 8 + gltf["bufferViews"][acc["bufferView"]]["byteOffset"] + 12
    struct.pack_into("<f", data, w_at, 0.5)
    out = tmp_path / "broken.glb"
    out.write_bytes(bytes(data))
    report = validate_gltf(out)
    assert report["issues"]["numErrors"] >= 1
    codes = {m["code"] for m in report["issues"]["messages"]}
    assert "ACCESSOR_INVALID_SIGN" in codes, format_issues(report)


def test_missing_validator_fails_in_ci_and_skips_locally(monkeypatch, tmp_path):
    import gltf_validator

    monkeypatch.setattr(gltf_validator, "PACKAGE", tmp_path / "nowhere")
    with pytest.raises(gltf_validator.ValidatorUnavailable, match="npm install"):
        validate_gltf(tmp_path / "x.glb")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require_validator()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_validator()


def test_textures_are_lossless_and_output_deterministic(textured_sphere):
    """The PNGs (encoded in parallel threads) decode to the exact input textures, in image order (base
    colour, then normal map), and the same mesh gives byte-identical GLBs."""
    import io

    from PIL import Image

    rng = np.random.default_rng(2)
    mesh = textured_sphere.copy(base_color=rng.integers(0, 256, (96, 64, 3), dtype=np.uint8),
                                normal_map=rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    data = encode_glb(mesh)
    assert encode_glb(mesh) == data
    gltf, blob = split_glb(data, "lossless.glb")
    decoded = []
    for image in gltf["images"]:
        view = gltf["bufferViews"][image["bufferView"]]
        start = view.get("byteOffset", 0)
        with Image.open(io.BytesIO(blob[start:start + view["byteLength"]])) as im:
            decoded.append(np.asarray(im.convert("RGB")))
    np.testing.assert_array_equal(decoded[0], mesh.base_color)
    np.testing.assert_array_equal(decoded[1], mesh.normal_map)


def _repack_glb(gltf: dict, blob: bytes) -> bytes:
    import json
    import struct

    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    blob = blob + b"\0" * (-len(blob) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(blob), 0x004E4942) + blob
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body


def test_info_bounds_follow_node_transforms_and_accessors_are_checked(shared_dir, tmp_path, capsys):
    """The duck's node scales and rotates its mesh: ``info`` bounds equal the placed mesh's (as
    ``process`` loads it). An accessor that reads past its buffer is refused in one line, exit 2."""
    from engine.cli import main
    from engine.io.asset_load import load_mesh, split_glb

    path = asset_path("duck")
    lo, hi = load_mesh(path).bounds()
    s = read_glb_summary(path)
    np.testing.assert_allclose(s["bounds"][0], lo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["bounds"][1], hi, rtol=1e-5, atol=1e-6)

    gltf, blob = split_glb(path.read_bytes(), path)
    gltf["accessors"][0]["count"] = int(gltf["accessors"][0]["count"]) * 100
    broken = tmp_path / "broken.glb"
    broken.write_bytes(_repack_glb(gltf, blob))
    with pytest.raises(MeshError, match="reads past its buffer"):
        read_glb_summary(broken)
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "reads past its buffer" in err and "\n" not in err


def test_info_into_a_closed_pipe_exits_quietly(shared_dir):
    """``assetgen info x.glb | head -1``: the reader goes away; no BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "info", str(asset_path("duck"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                                    # like `head` exiting before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
