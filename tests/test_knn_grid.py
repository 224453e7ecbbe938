"""knn_grid: exact k-nearest / nearest queries vs scipy's cKDTree (CUDA simulator on small inputs, the
real kernel on realistic sizes under the gpu marker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from triton_kernels.knn_grid import build_grid, knn_grid, knn_ref, nearest_grid
from triton_kernels.numba_cuda import kernel_device


def _sheet(n: int, seed: int) -> np.ndarray:
    """Points on a curved sheet (a texel-like surface sample) plus a cluster of exact duplicates."""
    rng = np.random.default_rng(seed)
    uv = rng.random((n, 2))
    p = np.stack([uv[:, 0], uv[:, 1], 0.3 * np.sin(3 * uv[:, 0]) * uv[:, 1]], -1)
    p[: n // 50] = p[0]                                                         # duplicates: equal keys
    return p.astype(np.float32)


def _queries(n_near: int, n_far: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = rng.random((n_near, 3)) * [1.0, 1.0, 0.4]
    far = rng.normal(size=(n_far, 3)) * 3.0                                     # forces the octree walk
    return np.concatenate([near, far]).astype(np.float32)


def _check(points, queries, dist, idx, k, tol):
    """Distances equal the KD-tree's; returned indices are at their reported distance; where the k-th
    neighbour is not tied, the neighbour sets are equal."""
    rd, ri = knn_ref(points, queries, k)
    dist, idx = dist.cpu().numpy().astype(np.float64), idx.cpu().numpy()
    np.testing.assert_allclose(dist, rd, rtol=0, atol=tol)
    actual = np.linalg.norm(points[idx].astype(np.float64) - queries[:, None].astype(np.float64), axis=-1)
    np.testing.assert_allclose(actual, rd, rtol=0, atol=tol)
    d_next, _ = knn_ref(points, queries, k + 1) if k < len(points) else (None, None)
    for q in range(len(queries)):
        if d_next is None or d_next[q, k] - d_next[q, k - 1] > 1e-6:
            assert set(idx[q]) == set(ri[q]), q


def test_knn_matches_kdtree_on_a_surface():
    dev = kernel_device()
    pts, qs = _sheet(1500, 0), _queries(120, 12, 1)
    grid = build_grid(torch.from_numpy(pts).to(dev), 0.04)
    d, i = knn_grid(grid, torch.from_numpy(qs).to(dev), 8)
    assert d.dtype == torch.float32 and i.dtype == torch.int64 and d.shape == (132, 8)
    _check(pts, qs, d, i, 8, 2e-6)
    d1, i1 = nearest_grid(grid, torch.from_numpy(qs).to(dev))
    assert d1.dtype == torch.float64
    rd, _ = knn_ref(pts, qs, 1)
    np.testing.assert_allclose(d1.cpu().numpy(), rd[:, 0], rtol=1e-12, atol=1e-12)
    _check(pts, qs, d1[:, None], i1[:, None], 1, 1e-12)


def test_knn_small_sets_k16_and_coarse_cells():
    dev = kernel_device()
    pts = _sheet(40, 2)
    qs = _queries(10, 3, 3)
    for cell in (1e-3, 0.3, 10.0):                  # tiny cells (deep tree), a few per cell, one cell
        grid = build_grid(torch.from_numpy(pts).to(dev), cell)
        d, i = knn_grid(grid, torch.from_numpy(qs).to(dev), 16)
        _check(pts, qs, d, i, 16, 2e-6)
    one = build_grid(torch.zeros((1, 3), device=dev), 0.1)
    d, i = knn_grid(one, torch.from_numpy(qs).to(dev), 1)
    assert (i == 0).all() and np.allclose(d.cpu().numpy()[:, 0], np.linalg.norm(qs, axis=1), atol=1e-6)


def test_knn_bad_inputs():
    dev = kernel_device()
    grid = build_grid(torch.rand((10, 3), device=dev), 0.1)
    q = torch.rand((4, 3), device=dev)
    with pytest.raises(ConfigError, match="k = 11"):
        knn_grid(grid, q, 11)
    with pytest.raises(ConfigError, match="k = 0"):
        knn_grid(grid, q, 0)
    with pytest.raises(ConfigError, match=r"\[N, 3\]"):
        knn_grid(grid, q[:, :2], 1)
    with pytest.raises(ConfigError, match="float32"):
        build_grid(torch.rand((10, 3), dtype=torch.float64, device=dev), 0.1)
    with pytest.raises(ConfigError, match="NaN"):
        build_grid(torch.tensor([[0.0, float("nan"), 0.0]], device=dev), 0.1)
    with pytest.raises(ConfigError, match="cell"):
        build_grid(q, 0.0)
    with pytest.raises(ConfigError, match="0 points"):
        build_grid(torch.zeros((0, 3), device=dev), 0.1)


@pytest.mark.gpu
def test_knn_realistic_size_on_gpu():
    """2M surface points (a 2048^2 atlas's known texels), 200k queries near the surface and 2k far."""
    pts, qs = _sheet(2_000_000, 4), _queries(200_000, 2_000, 5)
    grid = build_grid(torch.from_numpy(pts).cuda(), 2.0 / 1400)
    d, i = knn_grid(grid, torch.from_numpy(qs).cuda(), 8)
    sub = np.random.default_rng(6).choice(len(qs), 3000, replace=False)
    sub = np.concatenate([sub, np.arange(len(qs) - 200, len(qs))])
    _check(pts, qs[sub], d[sub], i[sub], 8, 2e-6)
    d1, _ = nearest_grid(grid, torch.from_numpy(qs).cuda())
    rd, _ = knn_ref(pts, qs, 1)
    np.testing.assert_allclose(d1.cpu().numpy(), rd[:, 0], rtol=1e-12, atol=1e-12)
