"""Rasteriser and camera rig: kernel vs reference, coverage rule, z-buffer, real meshes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import face_normals
from engine.geometry.rasterize import (
    interpolate,
    rasterize_ortho,
    rasterize_points_ref,
    rasterize_uv,
    rasterize_uv_ref,
)
from engine.texture.views import OrthoCamera, camera_rig, normalize_to_sphere


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-square grid: uvs [(n+1)^2, 2], faces [2 n^2, 3], both diagonals' windings mixed."""
    g = np.stack(np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="xy"), -1).reshape(-1, 2) / n
    faces = []
    for i in range(n):
        for j in range(n):
            v0 = i * (n + 1) + j
            quad = [[v0, v0 + 1, v0 + n + 2], [v0, v0 + n + 2, v0 + n + 1]]
            if (i + j) % 2:
                quad = [[v0, v0 + 1, v0 + n + 1], [v0 + 1, v0 + n + 2, v0 + n + 1]][::-1]
            faces += quad
    return g.astype(np.float32), np.asarray(faces, np.int32)


def test_uv_matches_reference_random():
    rng = np.random.default_rng(0)
    uv = rng.random((40, 2)).astype(np.float32)
    faces = rng.integers(0, 40, (60, 3)).astype(np.int32)
    fid, bary = rasterize_uv(uv, faces, 37)
    fid_ref, bary_ref = rasterize_uv_ref(uv, faces, 37)
    assert (fid == fid_ref).all()
    np.testing.assert_allclose(bary, bary_ref, atol=1e-6)
    hit = fid >= 0
    assert hit.any()
    np.testing.assert_allclose(bary[hit].sum(-1), 1.0, atol=1e-5)
    assert (bary[hit] >= 0).all()


@pytest.mark.parametrize("size", [8, 16, 13])
def test_uv_shared_edges_covered_exactly_once(size):
    uv, faces = _grid(4)   # vertices on texel boundaries/centres: many samples lie exactly on edges
    count = np.zeros((size, size), int)
    for f in range(faces.shape[0]):
        count += rasterize_uv(uv, faces[f:f + 1], size)[0] >= 0
    assert (count == 1).all()


def test_uv_texel_centre_convention():
    # a triangle covering only the left half: texel centres u = (c + 0.5) / size
    uv = np.array([[0, 0], [0.5, 0], [0, 1]], np.float32)
    fid, bary = rasterize_uv(uv, np.array([[0, 1, 2]], np.int32), 4)
    # hypotenuse u = 0.5 (1 - v): row 0 (v = 0.125) covers u < 0.4375 -> cols 0, 1; row 3 none
    expected = [[0, 0, -1, -1], [0, -1, -1, -1], [0, -1, -1, -1], [-1, -1, -1, -1]]
    assert (fid == np.asarray(expected)).all()
    # texel (0, 0) centre (u, v) = (0.125, 0.125): u = 0.5 * b1, v = b2
    np.testing.assert_allclose(bary[0, 0], [0.625, 0.25, 0.125], atol=1e-6)


def test_ortho_plane_depth_and_culling():
    cam = camera_rig()[0]                               # front: looks along -Z, spans x,y in [-1, 1]
    v = np.array([[-.5, -.5, 0.25], [.5, -.5, 0.25], [.5, .5, 0.25], [-.5, .5, 0.25]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    fid, bary, depth = rasterize_ortho(v, f, cam, 8, cull_backfaces=True)
    assert (fid[2:6, 2:6] >= 0).all() and (fid >= 0).sum() == 16
    np.testing.assert_allclose(depth[2:6, 2:6], 0.75, atol=1e-6)        # h - p.d = 1 - 0.25
    assert np.isinf(depth[fid < 0]).all()
    pos = interpolate(v, f, fid, bary)
    px, _ = cam.world_to_pixel(pos[fid >= 0], 8)
    rows, cols = np.nonzero(fid >= 0)
    np.testing.assert_allclose(px, np.stack([cols + 0.5, rows + 0.5], -1), atol=1e-5)
    assert (rasterize_ortho(v, f[:, ::-1], cam, 8, cull_backfaces=True)[0] == -1).all()
    assert (rasterize_ortho(v, f[:, ::-1], cam, 8)[0] >= 0).sum() == 16


def test_ortho_nearest_depth_wins():
    cam = camera_rig()[0]
    quad = np.array([[-.5, -.5, 0], [.5, -.5, 0], [.5, .5, 0], [-.5, .5, 0]], np.float32)
    v = np.concatenate([quad + [0, 0, -0.3], quad + [0.25, 0, 0.3]]).astype(np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], np.int32)
    for order in (f, f[::-1].copy()):
        fid, _, depth = rasterize_ortho(v, order, cam, 16)
        near = np.isclose(depth, 0.7)
        far = np.isclose(depth, 1.3)
        assert near.sum() == 64 and far.sum() > 0 and (near | far | np.isinf(depth)).all()


def test_ortho_matches_reference_random():
    rng = np.random.default_rng(1)
    v = (rng.random((30, 3)) * 1.6 - 0.8).astype(np.float32)
    f = rng.integers(0, 30, (25, 3)).astype(np.int32)
    cam = camera_rig()[3]
    fid, bary, depth = rasterize_ortho(v, f, cam, 24)
    px, z = cam.world_to_pixel(v, 24)
    fid_r, bary_r, depth_r = rasterize_points_ref(px, f, z.astype(np.float64), 24, 24)
    same = fid == fid_r
    assert same.mean() > 0.99                       # float32 vs float64 depth ties may differ
    np.testing.assert_allclose(depth, depth_r, atol=1e-5)
    np.testing.assert_allclose(bary[same], bary_r[same], atol=1e-5)


def test_rig_definition():
    cams = camera_rig()
    assert [c.name for c in cams][:1] == ["front"] and [c.name for c in cams][-2:] == ["top", "bottom"]
    priors = [c.prior_weight for c in cams]
    assert priors == [1.0, 0.1, 0.01, 0.001, 1.0, 0.001, 0.01, 0.1, 0.3, 0.3]
    front = cams[0]
    px, depth = front.world_to_pixel(np.array([[-1, 1, 0], [1, -1, 0.5]], np.float32), 100)
    np.testing.assert_allclose(px, [[0, 0], [100, 100]], atol=1e-4)     # col 0 = x -1, row 0 = y +1
    np.testing.assert_allclose(depth, [1.0, 0.5])
    for c in cams:
        d = np.asarray(c.direction)
        r, u, dd = c.basis()
        np.testing.assert_allclose(np.cross(r, u), dd, atol=1e-12)
        origins, ray = c.pixel_rays(6)
        np.testing.assert_allclose(ray, -d, atol=1e-7)
        pxs, dep = c.world_to_pixel(origins.reshape(-1, 3), 6)
        grid = np.stack(np.meshgrid(np.arange(6) + 0.5, np.arange(6) + 0.5, indexing="xy"), -1)
        np.testing.assert_allclose(pxs, grid.reshape(-1, 2), atol=1e-4)
        np.testing.assert_allclose(dep, 0.0, atol=1e-6)
    assert len(camera_rig(6)) == 6
    with pytest.raises(ConfigError):
        camera_rig(7)
    with pytest.raises(ConfigError):
        OrthoCamera("bad", (0.0, 1.0, 0.0), (0.0, 2.0, 0.0), 1.0, 1.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(MeshError):
        rasterize_uv(np.zeros((3, 2), np.float32), np.array([[0, 1, 5]], np.int32), 8)
    with pytest.raises(ConfigError):
        rasterize_uv(np.zeros((3, 2), np.float32), np.array([[0, 1, 2]], np.int32), 0)
    with pytest.raises(MeshError):
        rasterize_ortho(np.full((3, 3), np.nan, np.float32), np.array([[0, 1, 2]], np.int32),
                        camera_rig()[0], 8)
    with pytest.raises(MeshError):
        normalize_to_sphere(np.zeros((4, 3)))


def test_real_watertight_mesh_views(shared_dir):
    v, f = welded_positions(asset_path("armadillo"))
    v, center, scale = normalize_to_sphere(v, 1.0)
    assert np.linalg.norm(v, axis=1).max() == pytest.approx(1.0, rel=1e-5)
    fn = face_normals(v, f)
    for cam in camera_rig()[::3]:
        fid, bary, depth = rasterize_ortho(v, f, cam, 256)
        fid_c, _, depth_c = rasterize_ortho(v, f, cam, 256, cull_backfaces=True)
        hit = fid >= 0
        assert 0.05 < hit.mean() < 0.8
        # closed surface: the nearest surface is front-facing, so culling changes (almost) nothing
        assert (fid_c == fid).mean() > 0.995
        assert (fn[fid[hit]] @ np.asarray(cam.direction) > 0).mean() > 0.99
        pos = interpolate(v, f, fid, bary)
        px, z = cam.world_to_pixel(pos[hit], 256)
        rows, cols = np.nonzero(hit)
        np.testing.assert_allclose(px, np.stack([cols + 0.5, rows + 0.5], -1), atol=2e-3)
        np.testing.assert_allclose(z, depth[hit], atol=1e-4)


def test_real_uv_mesh_coverage(shared_dir):
    import xatlas

    v, f = welded_positions(asset_path("spot"))
    vmap, faces, uvs = xatlas.parametrize(v, f)
    fid, bary = rasterize_uv(uvs.astype(np.float32), faces.astype(np.int32), 512)
    assert (fid >= 0).mean() > 0.4
    # every face that is larger than a few texels is hit; interpolated UVs land on texel centres
    uv = interpolate(uvs, faces, fid, bary)
    rows, cols = np.nonzero(fid >= 0)
    np.testing.assert_allclose(uv[rows, cols] * 512, np.stack([cols + 0.5, rows + 0.5], -1), atol=2e-3)
