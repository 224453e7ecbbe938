"""BVH parity against brute force (engine.geometry.bvh), tree invariants and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import AssetGenError, MeshError
from engine.geometry.bvh import build_bvh, closest_point_ref, ray_cast_ref


@pytest.fixture(scope="module")
def bunny(shared_dir):
    return welded_positions(asset_path("bunny"))


def _check_rays(verts, faces, origins, dirs, **kw):
    bvh = build_bvh(verts, faces)
    got = bvh.ray_cast(origins, dirs, **kw)
    ref = ray_cast_ref(verts, faces, origins, dirs, **kw)
    np.testing.assert_array_equal(got.face_id >= 0, ref.face_id >= 0)
    hit = ref.face_id >= 0
    assert (got.face_id[hit] == ref.face_id[hit]).mean() > 0.99      # ties only on shared edges
    np.testing.assert_allclose(got.t[hit], ref.t[hit], rtol=1e-5, atol=1e-6)
    assert np.isinf(got.t[~hit]).all() and (got.bary[~hit] == 0).all()
    # The barycentric point of the reported face is the ray point at t.
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    tri = verts[faces[got.face_id[hit]]]                                # [H, 3, 3]
    p_bary = np.einsum("hk,hkc->hc", got.bary[hit], tri)
    np.testing.assert_allclose(p_bary, origins[hit] + got.t[hit, None] * d[hit], atol=1e-4)
    return got


def _check_closest(verts, faces, points, **kw):
    got = build_bvh(verts, faces).closest_point(points, **kw)
    ref = closest_point_ref(verts, faces, points, **kw)
    np.testing.assert_array_equal(got.face_id >= 0, ref.face_id >= 0)
    hit = ref.face_id >= 0
    np.testing.assert_allclose(got.distance[hit], ref.distance[hit], rtol=1e-5, atol=1e-7)
    tri = verts[faces[got.face_id[hit]]]
    p_bary = np.einsum("hk,hkc->hc", got.bary[hit], tri)
    np.testing.assert_allclose(p_bary, got.point[hit], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.point[hit] - points[hit], axis=1), got.distance[hit],
                               rtol=1e-4, atol=1e-6)
    assert (got.bary[hit] >= -1e-6).all() and np.allclose(got.bary[hit].sum(1), 1, atol=1e-5)
    assert np.isnan(got.point[~hit]).all() and np.isinf(got.distance[~hit]).all()
    return got


def test_single_triangle_exact():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2]], np.int32)
    bvh = build_bvh(v, f)
    o = np.array([[0.25, 0.25, 2.0], [0.25, 0.25, -2.0], [0.9, 0.9, 1.0]])
    d = np.array([[0, 0, -3.0], [0, 0, 1.0], [0, 0, -1.0]])
    h = bvh.ray_cast(o, d)
    np.testing.assert_array_equal(h.face_id, [0, 0, -1])
    np.testing.assert_allclose(h.t[:2], [2.0, 2.0])
    np.testing.assert_allclose(h.bary[0], [0.5, 0.25, 0.25], atol=1e-7)
    # The normal is +z: the first ray sees the front, the second the back.
    np.testing.assert_array_equal(bvh.ray_cast(o, d, cull_backfaces=True).face_id, [0, -1, -1])
    np.testing.assert_array_equal(bvh.ray_cast(o, d, t_max=1.5).face_id, [-1, -1, -1])
    c = bvh.closest_point(np.array([[2.0, -1.0, 0.5], [0.2, 0.3, -1.0]]))
    np.testing.assert_allclose(c.point, [[1, 0, 0], [0.2, 0.3, 0]], atol=1e-7)
    np.testing.assert_allclose(c.distance, [np.sqrt(2.25), 1.0], rtol=1e-6)
    np.testing.assert_allclose(c.bary, [[0, 1, 0], [0.5, 0.2, 0.3]], atol=1e-7)


def test_tree_invariants_with_duplicate_centroids():
    v, f = icosphere(2)
    f = np.concatenate([f, f, f[:7]])                                   # equal Morton codes and centroids
    bvh = build_bvh(v, f)
    n = f.shape[0]
    assert bvh.left.shape == (n - 1,) and bvh.parent.shape == (2 * n - 1,)
    assert np.array_equal(np.sort(bvh.leaf_face), np.arange(n))
    children = np.concatenate([bvh.left, bvh.right])
    assert np.array_equal(np.sort(children), np.arange(1, 2 * n - 1))     # every node but the root once
    assert bvh.parent[0] == -1
    np.testing.assert_array_equal(bvh.parent[bvh.left], np.arange(n - 1))
    np.testing.assert_array_equal(bvh.parent[bvh.right], np.arange(n - 1))
    for child in (bvh.left, bvh.right):
        assert (bvh.aabb_lo[:n - 1] <= bvh.aabb_lo[child]).all()
        assert (bvh.aabb_hi[:n - 1] >= bvh.aabb_hi[child]).all()
    tri = v[f[bvh.leaf_face]]
    np.testing.assert_array_equal(bvh.aabb_lo[n - 1:], tri.min(1))
    np.testing.assert_array_equal(bvh.aabb_hi[n - 1:], tri.max(1))


def test_rays_sphere_parity_and_culling():
    rng = np.random.default_rng(0)
    v, f = icosphere(3)
    o = rng.normal(size=(400, 3)) * 2.0
    d = rng.normal(size=(400, 3)) * 0.3 - o                             # mostly towards the sphere
    got = _check_rays(v, f, o, d)
    assert (got.face_id >= 0).mean() > 0.5
    _check_rays(v, f, o, d, cull_backfaces=True)
    _check_rays(v, f, o, d, t_max=2.0)
    inside = rng.normal(size=(200, 3)) * 0.2                            # from inside: only back faces
    assert (build_bvh(v, f).ray_cast(inside, rng.normal(size=(200, 3)), cull_backfaces=True).face_id
            == -1).all()


def test_axis_aligned_rays_on_grid_hit_cube_everywhere():
    # Unit cube, 12 faces; rays along -z with zero x/y components, many exactly through shared edges.
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    g = np.linspace(0.0, 1.0, 33)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    o = np.concatenate([xy, np.full((xy.shape[0], 1), 3.0)], 1)
    d = np.tile([0.0, 0.0, -1.0], (xy.shape[0], 1))
    h = build_bvh(v, f).ray_cast(o, d)
    assert (h.face_id >= 0).all()
    np.testing.assert_allclose(h.t, 2.0, atol=1e-6)


def _nested_scene() -> tuple[np.ndarray, np.ndarray]:
    """Two nested spheres and a stray triangle: rays from inside, outside and between the shells."""
    v, f = icosphere(2)
    vi, fi = icosphere(1, 0.4)
    tri = np.array([[1.5, 0, 0], [1.5, 1, 0], [1.5, 0, 1]], np.float32)
    faces = np.concatenate([f, fi + v.shape[0], [[0, 1, 2]] + np.int32(v.shape[0] + vi.shape[0])])
    return np.concatenate([v, vi, tri]), faces.astype(np.int32)


def test_any_hit_answers_whether_a_ray_hits_exactly():
    verts, faces = _nested_scene()
    rng = np.random.default_rng(3)
    o, d = rng.uniform(-2, 2, (4000, 3)), rng.normal(size=(4000, 3))
    bvh = build_bvh(verts, faces)
    for t_max in (np.inf, 0.3):
        got = bvh.ray_cast(o, d, t_max, any_hit=True)
        np.testing.assert_array_equal(got.face_id >= 0, ray_cast_ref(verts, faces, o, d, t_max).face_id >= 0)
        hit = got.face_id >= 0
        assert 0.02 < hit.mean() < 0.9                                   # both answers are common
    assert (bvh.ray_cast(np.zeros((500, 3)), d[:500], any_hit=True).face_id >= 0).all()   # enclosed


def test_closest_point_parity_sphere_and_max_distance():
    rng = np.random.default_rng(1)
    v, f = icosphere(3)
    p = rng.normal(size=(400, 3)) * 0.8
    _check_closest(v, f, p)
    got = _check_closest(v, f, p, max_distance=0.2)
    assert 0 < (got.face_id >= 0).sum() < p.shape[0]
    assert (got.distance[got.face_id >= 0] <= 0.2).all()


def test_bunny_rays_and_closest_points(bunny):
    v, f = bunny
    rng = np.random.default_rng(2)
    lo, hi = v.min(0), v.max(0)
    c, s = (lo + hi) / 2, float((hi - lo).max())
    o = c + rng.normal(size=(150, 3)) * s
    d = c + rng.normal(size=(150, 3)) * 0.2 * s - o
    assert (_check_rays(v, f, o, d).face_id >= 0).mean() > 0.3
    _check_closest(v, f, c + rng.normal(size=(60, 3)) * 0.4 * s)
    # Points on the surface are their own closest points.
    k = rng.integers(0, f.shape[0], 200)
    w = rng.dirichlet([1, 1, 1], 200)
    on = np.einsum("pk,pkc->pc", w, v[f[k]])
    got = build_bvh(v, f).closest_point(on)
    assert got.distance.max() < 1e-6


def test_bad_inputs_raise_one_line_errors():
    v, f = icosphere(1)
    with pytest.raises(MeshError):
        build_bvh(v, np.zeros((0, 3), np.int32))
    with pytest.raises(MeshError):
        build_bvh(v, f + v.shape[0])
    bad = v.copy()
    bad[3, 1] = np.nan
    with pytest.raises(MeshError):
        build_bvh(bad, f)
    bvh = build_bvh(v, f)
    with pytest.raises(AssetGenError):
        bvh.ray_cast(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(AssetGenError):
        bvh.ray_cast(np.zeros((2, 3)), np.ones((3, 3)))
    with pytest.raises(AssetGenError):
        bvh.closest_point(np.zeros((4, 2)))
    with pytest.raises(AssetGenError):
        bvh.closest_point(np.full((1, 3), np.inf))
    empty = bvh.closest_point(np.zeros((0, 3)))
    assert empty.face_id.shape == (0,)
