"""Sparse (narrow-band) marching cubes over active bricks against the dense reference (Triton interpreter in
CI, compiled on the GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triton_kernels.marching_cubes_sparse import (
    crossing_bricks,
    marching_cubes_bricks,
    marching_cubes_dense_bricks,
    marching_cubes_ref,
    marching_cubes_sparse,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"    # Triton interpreter on the CPU in CI


def _field(n: int) -> np.ndarray:
    """Sphere + torus SDF on [-1, 1]^3, float32 [n, n, n]."""
    x = np.linspace(-1, 1, n, dtype=np.float32)
    gx, gy, gz = np.meshgrid(x, x, x, indexing="ij")
    torus = np.sqrt((np.sqrt(gx**2 + gz**2) - 0.55) ** 2 + gy**2) - 0.25
    return np.minimum(torus, np.sqrt(gx**2 + gy**2 + gz**2) - 0.35).astype(np.float32)


def _sorted_triangles(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangles as rows of 9 coordinates, each rotated to start at its smallest corner, rows sorted."""
    rows = []
    for t in verts[faces].tolist():                                 # [F] of 3 corners of 3 floats
        k = min(range(3), key=lambda i: t[i])
        rows.append(t[k:] + t[:k])
    return np.array(sorted(rows), dtype=np.float32).reshape(-1, 9)


@pytest.mark.parametrize("n, brick", [(33, 8), (45, 8), (40, 4)])
def test_narrow_band_equals_dense_reference(n, brick):
    values = _field(n)
    ref_v, ref_f = marching_cubes_ref(values)
    mask = crossing_bricks(torch.from_numpy(values).to(DEVICE), brick)
    assert 0 < int(mask.sum()) < mask.numel()                       # a real narrow band, not every brick
    v, f = marching_cubes_dense_bricks(torch.from_numpy(values).to(DEVICE), 0.0, brick)
    assert v.dtype == torch.float32 and f.dtype == torch.int32
    v, f = v.cpu().numpy(), f.cpu().numpy()
    np.testing.assert_array_equal(v, ref_v)                         # same vertex order (global edge ids)
    np.testing.assert_array_equal(f.astype(np.int64), ref_f)        # same faces, same order
    np.testing.assert_array_equal(_sorted_triangles(v, f), _sorted_triangles(ref_v, ref_f))


def test_explicit_bricks_any_order_and_int_mask():
    n, brick = 33, 8
    values = torch.from_numpy(_field(n)).to(DEVICE)
    mask = crossing_bricks(values, brick)
    ref_v, ref_f = marching_cubes_ref(values.cpu().numpy())
    v, f = marching_cubes_bricks(values, mask.to(torch.int32), brick)
    np.testing.assert_array_equal(f.cpu().numpy().astype(np.int64), ref_f)
    # hand the bricks directly, shuffled, with their node values (what a hierarchical decoder returns)
    perm = torch.randperm(int(mask.sum()), generator=torch.Generator().manual_seed(0))
    bricks = torch.nonzero(mask).to(torch.int32)[perm.to(mask.device)]
    r = torch.arange(brick + 1, device=DEVICE)
    idx = [(bricks[:, a].long() * brick)[:, None] + r for a in range(3)]
    node_values = values[idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :]]
    v2, f2 = marching_cubes_sparse(bricks, node_values.contiguous(), n)
    np.testing.assert_array_equal(v2.cpu().numpy(), ref_v)
    np.testing.assert_array_equal(f2.cpu().numpy().astype(np.int64), ref_f)


def test_missing_band_brick_loses_its_triangles_only():
    n, brick = 33, 8
    values = torch.from_numpy(_field(n)).to(DEVICE)
    mask = crossing_bricks(values, brick)
    first = tuple(torch.nonzero(mask)[0].tolist())
    mask[first] = False
    v, f = marching_cubes_bricks(values, mask, brick)
    ref_v, ref_f = marching_cubes_ref(values.cpu().numpy())
    assert 0 < f.shape[0] < ref_f.shape[0]
    # every produced triangle is a reference triangle
    ref_set = {tuple(r) for r in _sorted_triangles(ref_v, ref_f).tolist()}
    assert all(tuple(r) in ref_set for r in _sorted_triangles(v.cpu().numpy(), f.cpu().numpy()).tolist())


def test_empty_band_and_bad_inputs():
    values = torch.ones(9, 9, 9, device=DEVICE)
    v, f = marching_cubes_dense_bricks(values)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="int32"):
        marching_cubes_sparse(torch.zeros(1, 3), torch.zeros(1, 9, 9, 9), 9)
    with pytest.raises(ValueError, match="float32"):
        marching_cubes_sparse(torch.zeros(1, 3, dtype=torch.int32),
                              torch.zeros(1, 9, 9, 9, dtype=torch.float64), 9)
    with pytest.raises(ValueError, match="brick mask"):
        marching_cubes_bricks(values, torch.ones(2, 2, 2, dtype=torch.bool), 8)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [129, 257])
def test_cuda_narrow_band_equals_dense_triton(n):
    from triton_kernels.marching_cubes import marching_cubes_triton

    values = torch.from_numpy(_field(n)).cuda()
    v, f = marching_cubes_dense_bricks(values)
    dv, df = marching_cubes_triton(values)
    assert torch.equal(f, df)
    torch.testing.assert_close(v, dv, rtol=0, atol=1e-4)
