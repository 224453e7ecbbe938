"""Tangent-space normal baking (paper 6.4) and the baked / geometric normal-error metrics (paper 6.1)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere

from engine.errors import ConfigError, MeshError
from engine.geometry.bvh import build_bvh
from engine.geometry.mesh import TriMesh, clean_mesh, vertex_normals
from engine.geometry.normal_bake import (
    bake_normal_map,
    baked_normal_error,
    decode_normals,
    dilate_normals,
    encode_normals,
    geometric_normal_error,
)
from engine.geometry.tangents import compute_tangents
from engine.geometry.uv_unwrap import unwrap_uv


def prepared_low(mesh: TriMesh, resolution: int) -> TriMesh:
    low, _ = unwrap_uv(mesh, resolution=resolution, padding=2)
    low.tangents = compute_tangents(low)
    return low


def quad(uv_v=(0.0, 1.0)) -> TriMesh:
    """Unit quad in the XY plane facing +Z; u along +x, image-up (decreasing v) along +y."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    lo, hi = uv_v
    m = TriMesh(v, np.array([[0, 1, 2], [0, 2, 3]]), normals=np.tile(np.float32([0, 0, 1]), (4, 1)),
                uvs=np.array([[0, hi], [1, hi], [1, lo], [0, lo]], np.float32))
    m.tangents = compute_tangents(m)
    return m


def plane_grid(n: int, rotation: np.ndarray | None = None) -> TriMesh:
    """A 2 x 2 plane (n x n quads) centred on the unit quad's centre, optionally rotated about it."""
    g = np.linspace(-0.5, 1.5, n + 1)
    x, y = np.meshgrid(g, g)
    v = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    if rotation is not None:
        v = (v - [0.5, 0.5, 0]) @ rotation.T + [0.5, 0.5, 0]
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    f = np.concatenate([np.stack([i, i + 1, i + n + 2], -1).reshape(-1, 3),
                        np.stack([i, i + n + 2, i + n + 1], -1).reshape(-1, 3)])
    return TriMesh(v, f)


def test_encode_decode_round_trip():
    assert tuple(encode_normals(np.array([0.0, 0.0, 1.0]))) == (128, 128, 255)
    rng = np.random.default_rng(0)
    n = rng.normal(size=(1000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    assert np.abs(decode_normals(encode_normals(n)) - n).max() <= 0.5 / 127.5 + 1e-12


def test_flat_plane_bakes_neutral():
    nm, report = bake_normal_map(quad(), plane_grid(8), size=64)
    assert nm.shape == (64, 64, 3) and nm.dtype == np.uint8
    assert np.abs(nm.astype(int) - [128, 128, 255]).max() <= 1
    assert report.texels == 64 * 64 and report.rejected_distance == 0 and report.rejected_uv == 0


@pytest.mark.parametrize("axis, channel", [((0, 1, 0), 0), ((1, 0, 0), 1)])
def test_tilted_detail_lands_in_the_right_channel(axis, channel):
    """Dense normal tilted 20 deg towards +u (+x) must raise R; towards image-up (+y) must raise G."""
    angle = np.radians(20.0)
    k = np.asarray(axis, float)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx     # Rodrigues
    dense = plane_grid(8, rot.T if channel == 1 else rot)                  # rotate so the normal tilts +
    tilt = vertex_normals(dense.vertices, dense.faces)[0]
    assert tilt[channel] > 0.3
    nm, report = bake_normal_map(quad(), dense, size=32, max_distance_fraction=0.5)
    expected = encode_normals(np.array([tilt[0], tilt[1], tilt[2]]))
    assert np.abs(nm.astype(int) - expected.astype(int)).max() <= 1
    assert nm[..., channel].min() > 165 and np.abs(nm[..., 1 - channel].astype(int) - 128).max() <= 1
    # distance filter: a 5 % limit rejects texels far from the tilted plane, which stay neutral
    nm, report = bake_normal_map(quad(), dense, size=32, max_distance_fraction=0.05)
    assert 0 < report.rejected_distance < report.texels
    assert (np.all(nm == [128, 128, 255], axis=-1)).sum() >= report.rejected_distance


def test_anisotropic_uvs_are_rejected():
    low = quad(uv_v=(0.498, 0.502))                                       # v squeezed 250x
    nm, report = bake_normal_map(low, plane_grid(4, np.eye(3)), size=256, dilate=0)
    assert report.texels > 0 and report.rejected_uv == report.texels
    assert np.all(nm == [128, 128, 255])


def test_dilation_grows_rings_of_valid_neighbours():
    vals = np.zeros((9, 9, 3), np.float32)
    valid = np.zeros((9, 9), bool)
    vals[4, 4] = (0.6, 0.0, 0.8)
    valid[4, 4] = True
    out, ok = dilate_normals(vals, valid, 2)
    assert ok.sum() == 25 and ok[2:7, 2:7].all()
    np.testing.assert_allclose(out[ok], np.tile([0.6, 0.0, 0.8], (25, 1)), atol=1e-6)
    assert not valid[3, 3]                                                 # input untouched


def test_bumpy_sphere_bake_beats_geometric_normals():
    # on a smooth sphere the coarse mesh's interpolated radial normals are already exact (0.03 deg), so
    # the dense sphere carries bumps of 3 % of the radius that only the map can represent
    dense = TriMesh(*icosphere(5))  # 20480 faces
    x, y, z = dense.vertices.T
    dense.vertices = dense.vertices * (1 + 0.03 * np.sin(5 * x) * np.sin(5 * y) * np.sin(5 * z))[:, None]
    low = prepared_low(TriMesh(*icosphere(1)), 256)  # 80 faces, coarse
    nm, report = bake_normal_map(low, dense, size=256, max_distance_fraction=0.05)
    assert report.rejected_distance == 0 and report.rejected_uv == 0 and report.texels > 0.3 * 256 ** 2
    low.normal_map = nm
    baked = baked_normal_error(low, dense, n=20_000)
    geo = geometric_normal_error(low, dense, n=20_000)
    assert baked < 0.25 * geo, (baked, geo)
    # a mesh baked against itself: the map is the identity up to 8-bit rounding
    self_nm, _ = bake_normal_map(low, low, size=256)
    assert geometric_normal_error(low, low, n=5_000) < 0.01
    assert baked_normal_error(low.copy(normal_map=self_nm), low, n=5_000) < 0.5


def test_bad_inputs_raise_one_line_errors():
    low = quad()
    with pytest.raises(MeshError, match="no tangents"):
        bake_normal_map(low.copy(tangents=None), plane_grid(2))
    with pytest.raises(ConfigError, match="size"):
        bake_normal_map(low, plane_grid(2), size=3)
    with pytest.raises(ConfigError, match="fraction"):
        bake_normal_map(low, plane_grid(2), max_distance_fraction=0.0)
    with pytest.raises(MeshError, match="normal map"):
        baked_normal_error(low, plane_grid(2))
    with pytest.raises(MeshError, match="no faces"):
        bake_normal_map(low, TriMesh(np.zeros((3, 3)), np.zeros((0, 3))))


def test_bunny_bake_beats_geometric_normals(shared_dir):
    from engine.geometry.simplify import simplify_qem
    from engine.io.asset_load import load_mesh

    dense = clean_mesh(load_mesh(asset_path("bunny")))                    # 69K faces scan
    simplified, _ = simplify_qem(dense, 3000)
    low = prepared_low(simplified, 512)
    bvh = build_bvh(dense.vertices, dense.faces)
    nm, report = bake_normal_map(low, dense, size=512, dense_bvh=bvh)
    assert report.texels > 0.3 * 512 ** 2
    assert report.rejected_distance + report.rejected_uv < 0.01 * report.texels
    low.normal_map = nm
    baked = baked_normal_error(low, dense, n=20_000, dense_bvh=bvh)
    geo = geometric_normal_error(low, dense, n=20_000, dense_bvh=bvh)
    assert baked < 0.5 * geo, (baked, geo)
    # the map carries detail: far from flat, and the BVH passed in changes nothing
    assert (np.abs(nm.astype(int) - [128, 128, 255]).max(axis=-1) > 10).mean() > 0.05
    nm2, _ = bake_normal_map(low, dense, size=512)
    np.testing.assert_array_equal(nm, nm2)
