"""GPU UV rasteriser (triton_kernels/rasterize_uv.py) and GPU normal baker (engine.geometry.normal_bake_gpu)
against the host rasteriser and baker. CI runs the kernels in numba's CUDA simulator at 16-64 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import TriMesh, vertex_normals
from engine.geometry.normal_bake import bake_normal_map, dilate_normals
from engine.geometry.normal_bake_gpu import bake_normal_map_gpu, dilate_normals_torch, vertex_normals_torch
from engine.geometry.rasterize import rasterize_uv
from engine.geometry.simplify import simplify_qem
from engine.geometry.tangents import compute_tangents
from engine.geometry.uv_unwrap import unwrap_uv
from triton_kernels.rasterize_uv import rasterize_uv_host


def _grid_and_overlaps(n: int = 6, extra: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A UV grid of quads (shared edges; vertices on texel centres at some sizes) plus overlapping
    random triangles of both windings and one degenerate triangle."""
    g = np.linspace(0.0625, 0.9375, n + 1)
    x, y = np.meshgrid(g, g)
    uv = np.stack([x.ravel(), y.ravel()], 1)
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    faces = np.concatenate([np.stack([i, i + 1, i + n + 2], -1).reshape(-1, 3),
                            np.stack([i, i + n + 2, i + n + 1], -1).reshape(-1, 3)])
    rng = np.random.default_rng(0)
    more = rng.random((3 * extra, 2))
    tris = len(uv) + np.arange(3 * extra).reshape(extra, 3)
    degenerate = [[0, 1, 1]]
    return (np.concatenate([uv, more]).astype(np.float32),
            np.concatenate([faces, tris, degenerate]).astype(np.int32))


@pytest.mark.parametrize("size", [16, 37])
def test_uv_raster_matches_host(size):
    uv, faces = _grid_and_overlaps()
    fid, bary = rasterize_uv_host(uv, faces, size)
    ref_fid, ref_bary = rasterize_uv(uv, faces, size)
    np.testing.assert_array_equal(fid, ref_fid)
    np.testing.assert_allclose(bary, ref_bary, atol=1e-5)
    assert (fid >= 0).mean() > 0.5


def _prepared_low(verts: np.ndarray, faces: np.ndarray, atlas: int) -> TriMesh:
    low = TriMesh(verts, faces, normals=vertex_normals(verts, faces))
    low, _ = unwrap_uv(low, resolution=atlas, padding=2)
    low.tangents = compute_tangents(low)
    return low


def _assert_bake_parity(low: TriMesh, dense, host_dense: TriMesh, size: int, fraction: float) -> None:
    got, report = bake_normal_map_gpu(low, dense, size=size, max_distance_fraction=fraction)
    ref, ref_report = bake_normal_map(low, host_dense, size=size, max_distance_fraction=fraction)
    assert got.shape == ref.shape == (size, size, 3) and got.dtype == np.uint8
    close = np.abs(got.astype(int) - ref.astype(int)).max(-1) <= 1
    assert close.mean() >= 0.995
    assert report.texels == ref_report.texels
    assert abs(report.rejected_distance - ref_report.rejected_distance) <= max(2, 0.005 * report.texels)
    assert report.rejected_uv == ref_report.rejected_uv
    assert (ref != [128, 128, 255]).any(axis=-1).mean() > 0.1           # the map carries detail


def test_icosphere_pair_bakes_like_the_host():
    low = _prepared_low(*icosphere(1), atlas=64)
    v, f = icosphere(3)
    v = (v * (1 + 0.03 * np.random.default_rng(1).standard_normal((len(v), 1)))).astype(np.float32)
    dense = TriMesh(v, f)
    _assert_bake_parity(low, dense, dense, size=64, fraction=0.05)
    # the same dense mesh as a DeviceMesh (normals computed on the device) bakes the same map
    _assert_bake_parity(low, DeviceMesh.from_trimesh(dense, "cpu"), dense, size=64, fraction=0.05)


@pytest.fixture(scope="module")
def bunny_pair(shared_dir):
    v, f = welded_positions(asset_path("bunny"))
    dense, _ = simplify_qem(TriMesh(v, f), 1200)
    low, _ = simplify_qem(dense, 300)   # above this pair's topology floor (237)
    return _prepared_low(low.vertices, low.faces, atlas=64), dense


def test_real_asset_pair_bakes_like_the_host(bunny_pair):
    low, dense = bunny_pair
    _assert_bake_parity(low, dense, dense, size=64, fraction=0.01)


def test_device_helpers_match_host():
    v, f = icosphere(2)
    v = (v * np.linspace(0.5, 1.5, len(v))[:, None]).astype(np.float32)
    np.testing.assert_allclose(vertex_normals_torch(torch.from_numpy(v), torch.from_numpy(f)).numpy(),
                               vertex_normals(v, f), atol=1e-6)
    rng = np.random.default_rng(2)
    img = rng.normal(size=(20, 24, 3)).astype(np.float32)
    valid = rng.random((20, 24)) < 0.1
    ref_v, ref_ok = dilate_normals(img, valid, 3)
    got_v, got_ok = dilate_normals_torch(torch.from_numpy(img), torch.from_numpy(valid), 3)
    np.testing.assert_array_equal(got_ok.numpy(), ref_ok)
    np.testing.assert_allclose(got_v.numpy()[ref_ok], ref_v[ref_ok], atol=1e-6)


def test_bad_input_is_refused():
    low = _prepared_low(*icosphere(0), atlas=32)
    dense = TriMesh(*icosphere(1))
    with pytest.raises(ConfigError, match="size"):
        bake_normal_map_gpu(low, dense, size=8)
    with pytest.raises(ConfigError, match="fraction"):
        bake_normal_map_gpu(low, dense, size=16, max_distance_fraction=0.0)
    with pytest.raises(MeshError, match="tangents"):
        bake_normal_map_gpu(low.copy(tangents=None), dense, size=16)
    with pytest.raises(MeshError, match="no faces"):
        bake_normal_map_gpu(low, TriMesh(dense.vertices, dense.faces[:0]), size=16)


@pytest.mark.gpu
def test_bake_on_the_gpu_matches_host_at_256():
    low = _prepared_low(*icosphere(2), atlas=256)
    v, f = icosphere(6)
    v = (v * (1 + 0.02 * np.sin(7 * v[:, :1]) * np.cos(5 * v[:, 1:2]))).astype(np.float32)
    dense = TriMesh(v, f)
    _assert_bake_parity(low, dense, dense, size=256, fraction=0.05)
