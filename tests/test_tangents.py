"""MikkTSpace-convention tangents: analytic planes, degenerate UVs, and the glTF reference assets
NormalTangentMirrorTest (ships TANGENT) and NormalTangentTest (normal map of convex bumps)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from conftest import asset_path

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh
from engine.geometry.normal_bake import sample_normal_map
from engine.geometry.rasterize import rasterize_uv
from engine.geometry.tangents import compute_tangents, face_uv_derivatives, shading_frame

_COMPONENT = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def read_glb_primitive(path) -> dict:
    """First primitive's attributes, indices [F, 3] and normal texture (uint8 RGB) of a GLB file.

    A minimal reader for the two reference assets (asset_load does not read TANGENT / normalTexture).
    Node transforms are ignored: tangents are compared in mesh space."""
    from PIL import Image

    data = path.read_bytes()
    jlen = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + jlen])
    blen = struct.unpack_from("<I", data, 20 + jlen)[0]
    blob = data[28 + jlen: 28 + jlen + blen]

    def view(i):
        bv = gltf["bufferViews"][i]
        start = bv.get("byteOffset", 0)
        return blob[start: start + bv["byteLength"]]

    def accessor(i):
        acc = gltf["accessors"][i]
        dtype, width = np.dtype(_COMPONENT[acc["componentType"]]), _WIDTH[acc["type"]]
        stride = gltf["bufferViews"][acc["bufferView"]].get("byteStride", dtype.itemsize * width)
        return np.ndarray((acc["count"], width), dtype, view(acc["bufferView"]), acc.get("byteOffset", 0),
                          (stride, dtype.itemsize))

    prim = gltf["meshes"][0]["primitives"][0]
    out = {name: accessor(i).copy() for name, i in prim["attributes"].items()}
    out["indices"] = accessor(prim["indices"]).reshape(-1, 3).astype(np.int32)
    tex = gltf["materials"][prim.get("material", 0)]["normalTexture"]["index"]
    png = view(gltf["images"][gltf["textures"][tex]["source"]]["bufferView"])
    out["normal_map"] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return out


def _quad(uvs) -> TriMesh:
    """Unit quad in the XY plane facing +Z (CCW from +Z)."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    return TriMesh(v, np.array([[0, 1, 2], [0, 2, 3]]), normals=np.tile([0, 0, 1], (4, 1)).astype(np.float32),
                   uvs=np.asarray(uvs, np.float32))


def test_plane_tangent_points_along_u_and_bitangent_image_up():
    # world +x is +u; world +y is image-up, i.e. decreasing glTF v
    t = compute_tangents(_quad([[0, 1], [1, 1], [1, 0], [0, 0]]))
    np.testing.assert_allclose(t, np.tile([1, 0, 0, 1], (4, 1)), atol=1e-6)
    # u mirrored: tangent flips to -x, handedness -1 so B = w cross(N, T) is still +y (image up)
    t = compute_tangents(_quad([[1, 1], [0, 1], [0, 0], [1, 0]]))
    np.testing.assert_allclose(t, np.tile([-1, 0, 0, -1], (4, 1)), atol=1e-6)
    b = t[:, 3:4] * np.cross([0, 0, 1], t[:, :3])
    np.testing.assert_allclose(b, np.tile([0, 1, 0], (4, 1)), atol=1e-6)
    # v mirrored only (image up == world -y): tangent +x, w = -1
    t = compute_tangents(_quad([[0, 0], [1, 0], [1, 1], [0, 1]]))
    np.testing.assert_allclose(t, np.tile([1, 0, 0, -1], (4, 1)), atol=1e-6)


def test_rotated_uvs_and_non_orthogonal_normals():
    # UVs rotated by 90 degrees: u = y, v = x, so +u runs along world +y and image-up along -x
    t = compute_tangents(_quad([[0, 0], [0, 1], [1, 1], [1, 0]]))
    np.testing.assert_allclose(t, np.tile([0, 1, 0, 1], (4, 1)), atol=1e-6)
    # tilted vertex normals: tangents are orthogonalised against them and stay unit
    mesh = _quad([[0, 1], [1, 1], [1, 0], [0, 0]])
    n = np.array([[0.3, 0, 1], [0, 0.2, 1], [-0.1, 0.1, 1], [0.2, 0.2, 1]], np.float32)
    mesh.normals = n / np.linalg.norm(n, axis=1, keepdims=True)
    t = compute_tangents(mesh)
    assert np.abs(np.einsum("ij,ij->i", t[:, :3], mesh.normals)).max() < 1e-6
    np.testing.assert_allclose(np.linalg.norm(t[:, :3], axis=1), 1, atol=1e-6)
    assert (t[:, 0] > 0.9).all() and (t[:, 3] == 1).all()


def test_degenerate_uvs_fall_back_to_perpendicular_tangent():
    t = compute_tangents(_quad(np.full((4, 2), 0.5)))
    np.testing.assert_allclose(np.linalg.norm(t[:, :3], axis=1), 1, atol=1e-6)
    assert np.abs(t[:, 2]).max() < 1e-6 and (t[:, 3] == 1).all()
    _, _, ok = face_uv_derivatives(_quad(np.full((4, 2), 0.5)).vertices, np.array([[0, 1, 2]]),
                                   np.full((4, 2), 0.5))
    assert not ok.any()


def test_missing_uvs_is_a_mesh_error():
    with pytest.raises(MeshError, match="no UVs"):
        compute_tangents(TriMesh(np.eye(3), np.array([[0, 1, 2]])))


def test_shading_frame_is_orthonormal_right_or_left_handed():
    rng = np.random.default_rng(1)
    n = rng.normal(size=(500, 3))
    t = np.concatenate([rng.normal(size=(500, 3)), rng.choice([-1.0, 1.0], (500, 1))], axis=1)
    ta, ba, na, ok = shading_frame(n, t)
    assert ok.all()
    frame = np.stack([ta, ba, na], axis=1)                                   # [P, 3, 3]
    np.testing.assert_allclose(frame @ frame.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (500, 3, 3)),
                               atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(frame), t[:, 3], atol=1e-9)
    _, _, _, ok = shading_frame(np.array([[0, 0, 1.0]]), np.array([[0, 0, 2.0, 1]]))
    assert not ok[0]


def _reference_mesh(name: str) -> tuple[TriMesh, dict]:
    d = read_glb_primitive(asset_path(name))
    return TriMesh(d["POSITION"], d["indices"], normals=d["NORMAL"], uvs=d["TEXCOORD_0"]), d


def test_matches_normal_tangent_mirror_reference(shared_dir):
    mesh, d = _reference_mesh("ntmirror")
    ref = d["TANGENT"]
    ours = compute_tangents(mesh)
    cos = np.einsum("ij,ij->i", ours[:, :3], ref[:, :3])
    assert cos.mean() > 0.99 and np.percentile(cos, 1) > 0.95
    assert (np.sign(ours[:, 3]) == np.sign(ref[:, 3])).mean() > 0.99
    assert (ref[:, 3] < 0).sum() > 10                                        # the asset really is mirrored
    # the opposite v convention (OpenGL UVs fed unconverted) gets every handedness wrong
    flipped = compute_tangents(mesh.copy(uvs=mesh.uvs * np.float32([1, -1]) + np.float32([0, 1])))
    assert (np.sign(flipped[:, 3]) == np.sign(ref[:, 3])).mean() < 0.05


@pytest.mark.parametrize("name", ["nttest", "ntmirror"])
def test_reference_normal_maps_decode_to_convex_bumps(shared_dir, name):
    """The assets' maps hold convex hemispherical bumps. Decoded with our frame, the world normal's
    tangential part g must grow when stepping along g (outwards); a wrong T or B direction turns the
    bump into a saddle (about half the samples would fail)."""
    mesh, d = _reference_mesh(name)
    mesh.tangents = compute_tangents(mesh)
    face_id, texel_bary = rasterize_uv(mesh.uvs, mesh.faces, 1024)          # samples at texel centres
    fid = face_id[face_id >= 0]
    bary = texel_bary[face_id >= 0].astype(np.float64)

    def lerp(a):
        return np.einsum("pk,pkc->pc", bary, np.asarray(a, np.float64)[mesh.faces[fid]])

    uv = lerp(mesh.uvs)
    ta, ba, na, _ = shading_frame(lerp(mesh.normals), lerp(mesh.tangents))
    c = sample_normal_map(d["normal_map"], uv)
    slope = np.linalg.norm(c[:, :2], axis=1)
    dpds, dpdt, ok = face_uv_derivatives(mesh.vertices, mesh.faces, mesh.uvs)
    sel = (slope > 0.2) & (slope < 0.6) & ok[fid]                            # on a bump's flank
    pinv = np.linalg.pinv(np.stack([dpds[fid], dpdt[fid]], axis=2))        # [P, 2, 3] of d(P)/d(s, t)

    def outward_growth(t_axis, b_axis):
        world = c[:, :1] * t_axis + c[:, 1:2] * b_axis + c[:, 2:3] * na
        g = world - np.einsum("pi,pi->p", world, na)[:, None] * na
        duv = np.einsum("pij,pj->pi", pinv, g) * np.array([1.0, -1.0])    # (du, dv) with v = -t
        duv *= 0.002 / np.maximum(np.linalg.norm(duv, axis=1, keepdims=True), 1e-30)
        c2 = sample_normal_map(d["normal_map"], uv + duv)
        world2 = c2[:, :1] * t_axis + c2[:, 1:2] * b_axis + c2[:, 2:3] * na
        change = world2 / np.linalg.norm(world2, axis=1, keepdims=True) \
            - world / np.linalg.norm(world, axis=1, keepdims=True)
        return (np.einsum("pi,pi->p", change, g) > 0)[sel].mean()

    assert sel.sum() > 5000
    assert outward_growth(ta, ba) > 0.8                                      # measured 0.895
    assert outward_growth(ta, -ba) < 0.6                                     # wrong handedness: 0.50
