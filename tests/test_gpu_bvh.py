"""GPU LBVH (triton_kernels/lbvh.py via engine.geometry.bvh_gpu) against the host BVH (engine.geometry.bvh).

CI runs the kernels in numba's CUDA simulator on small meshes; the ``gpu`` test repeats the parity on a
larger mesh on a real GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import icosphere

from engine.errors import AssetGenError, MeshError
from engine.geometry.bvh import build_bvh
from engine.geometry.bvh_gpu import build_bvh_gpu
from engine.io.asset_load import load_mesh

LAYOUT = ("left", "right", "parent", "aabb_lo", "aabb_hi", "leaf_face")


@pytest.fixture(scope="module")
def bunny_part(shared_dir):
    """The first ~500 faces of the bunny (a real, irregular, open patch), compacted."""
    mesh = load_mesh(asset_path("bunny"))
    faces = mesh.faces[:500]
    used, inverse = np.unique(faces, return_inverse=True)
    return mesh.vertices[used], inverse.reshape(-1, 3).astype(np.int32)


def _gpu(verts, faces):
    return build_bvh_gpu(torch.from_numpy(verts), torch.from_numpy(faces))


def _assert_same_tree(verts, faces):
    host, dev = build_bvh(verts, faces), _gpu(verts, faces)
    for name in LAYOUT:
        np.testing.assert_array_equal(getattr(dev, name).cpu().numpy(), getattr(host, name), err_msg=name)
    return host, dev


def _rays(verts, faces, count, seed):
    """Rays from a shell around the mesh: half aimed at face centroids, half at points around the mesh
    (many of those miss)."""
    rng = np.random.default_rng(seed)
    centre = verts.mean(0)
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    origins = centre + rng.normal(size=(count, 3)) * radius * 1.5
    targets = verts[faces[rng.integers(0, len(faces), count)]].mean(1)
    targets[count // 2:] += rng.normal(size=(count - count // 2, 3)) * radius * 0.7
    return origins.astype(np.float32), (targets - origins).astype(np.float32)


def _assert_rays(host, dev, origins, dirs, **kw):
    ref = host.ray_cast(origins, dirs, **kw)
    face, t, bary = (x.cpu().numpy() for x in dev.ray_cast(torch.from_numpy(origins), torch.from_numpy(dirs),
                                                           **kw))
    np.testing.assert_array_equal(face >= 0, ref.face_id >= 0)
    hit = ref.face_id >= 0
    assert (face[hit] == ref.face_id[hit]).mean() >= 0.99          # only exact ties may differ
    np.testing.assert_allclose(t[hit], ref.t[hit], rtol=1e-5)
    same = hit & (face == ref.face_id)                             # a tie's bary belongs to another face
    np.testing.assert_allclose(bary[same], ref.bary[same], atol=1e-5)
    assert np.isinf(t[~hit]).all() and (face[~hit] == -1).all() and (bary[~hit] == 0).all()
    return hit


def _assert_closest(host, dev, points, **kw):
    ref = host.closest_point(points, **kw)
    face, point, bary, dist = (x.cpu().numpy() for x in dev.closest_point(torch.from_numpy(points), **kw))
    np.testing.assert_array_equal(face >= 0, ref.face_id >= 0)
    hit = ref.face_id >= 0
    np.testing.assert_allclose(dist[hit], ref.distance[hit], rtol=0, atol=1e-5)
    np.testing.assert_allclose(point[hit], ref.point[hit], atol=1e-5)
    # A point closest to a shared edge or vertex is equally close to several faces (a tie: ~1.7% of random
    # queries on the H100, where FMA rounds differently); whichever face is returned, the point must lie on
    # it at the returned barycentrics.
    tri = host.vertices[host.faces[face[hit]]].astype(np.float64)          # [H, 3, 3]
    on_face = np.einsum("hk,hkc->hc", bary[hit].astype(np.float64), tri)
    np.testing.assert_allclose(on_face, point[hit], atol=1e-5)
    assert (face[hit] == ref.face_id[hit]).mean() >= 0.95
    assert np.isinf(dist[~hit]).all() and np.isnan(point[~hit]).all()
    return hit


def test_icosphere_tree_rays_and_closest_points_match_host():
    verts, faces = icosphere(2)
    host, dev = _assert_same_tree(verts, faces)
    origins, dirs = _rays(verts, faces, 256, seed=1)
    hit = _assert_rays(host, dev, origins, dirs)
    assert 0.2 < hit.mean() < 1.0                                  # both hits and misses exercised
    _assert_rays(host, dev, origins, dirs, cull_backfaces=True, t_max=2.0)
    points = np.random.default_rng(2).normal(size=(256, 3)).astype(np.float32)
    hit = _assert_closest(host, dev, points, max_distance=0.5)
    assert 0.2 < hit.mean() < 1.0


def test_real_asset_patch_matches_host(bunny_part):
    verts, faces = bunny_part
    host, dev = _assert_same_tree(verts, faces)
    origins, dirs = _rays(verts, faces, 200, seed=3)
    assert 0.2 < _assert_rays(host, dev, origins, dirs).mean() < 1.0
    rng = np.random.default_rng(4)
    points = (verts[rng.integers(0, len(verts), 200)] + rng.normal(size=(200, 3)) * 0.01).astype(np.float32)
    _assert_closest(host, dev, points)


@pytest.mark.parametrize("case", ["one", "two", "degenerate"])
def test_odd_meshes_match_host(case):
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 0]], np.float32)
    faces = {"one": [[0, 1, 2]], "two": [[0, 1, 2], [1, 3, 2]],
             "degenerate": [[0, 1, 2], [0, 0, 1], [0, 4, 3], [1, 3, 2], [4, 4, 4]]}[case]
    faces = np.array(faces, np.int32)
    host, dev = _assert_same_tree(verts, faces)
    origins = np.array([[0.2, 0.2, 1], [0.7, 0.7, -1], [5, 5, 1], [0.5, 0.5, 1]], np.float32)
    dirs = np.array([[0, 0, -1], [0, 0, 1], [0, 0, -1], [1, 0, 0]], np.float32)     # hit, hit, miss, parallel
    hit = _assert_rays(host, dev, origins, dirs)
    assert hit.tolist() == [True, case != "one", False, False]
    points = np.array([[0.2, 0.2, 0.3], [2, 2, 0], [-1, 0.5, 0], [0.5, 0.5, 0]], np.float32)
    _assert_closest(host, dev, points)
    _assert_closest(host, dev, points, max_distance=0.4)


def test_bad_input_is_refused_with_a_mesh_error():
    verts, faces = icosphere(0)
    with pytest.raises(MeshError, match="no faces"):
        _gpu(verts, faces[:0])
    bad = verts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(MeshError, match="NaN"):
        _gpu(bad, faces)
    with pytest.raises(MeshError, match="outside"):
        _gpu(verts, faces + 1)
    with pytest.raises(MeshError, match=r"\[F, 3\]"):
        _gpu(verts, faces[:, :2])
    dev = _gpu(verts, faces)
    with pytest.raises(AssetGenError, match="zero length"):
        dev.ray_cast(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(AssetGenError, match=r"\[N, 3\]"):
        dev.closest_point(torch.zeros(4, 2))
    with pytest.raises(AssetGenError, match="NaN"):
        dev.closest_point(torch.full((1, 3), float("inf")))


def test_empty_queries_return_empty_outputs():
    dev = _gpu(*icosphere(0))
    face, t, bary = dev.ray_cast(torch.zeros(0, 3), torch.zeros(0, 3))
    assert face.shape == (0,) and t.shape == (0,) and bary.shape == (0, 3)
    face, point, bary, dist = dev.closest_point(torch.zeros(0, 3))
    assert face.shape == (0,) and point.shape == (0, 3)


@pytest.mark.gpu
def test_large_mesh_on_the_gpu_matches_host():
    verts, faces = icosphere(6)                                        # 81920 faces
    rng = np.random.default_rng(5)
    verts = (verts * (1 + 0.05 * rng.standard_normal((len(verts), 1)))).astype(np.float32)
    host, dev = _assert_same_tree(verts, faces)
    assert dev.left.is_cuda
    origins, dirs = _rays(verts, faces, 20000, seed=6)
    _assert_rays(host, dev, origins, dirs)
    _assert_closest(host, dev, rng.normal(size=(20000, 3)).astype(np.float32), max_distance=0.3)
