"""Per-texel normal baking kernel (triton_kernels/normal_bake_texels.py) against its brute-force numpy
reference on a small plane pair, in the CUDA simulator in CI: all four texel statuses, same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triton_kernels.lbvh import build_lbvh
from triton_kernels.normal_bake_texels import (
    BAKED,
    EMPTY,
    REJECTED_DISTANCE,
    REJECTED_UV,
    bake_texels,
    bake_texels_ref,
)
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_uv import rasterize_uv_gpu


def _grid(n: int, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [(n+1)^2, 2] lattice points, int32 [2 n^2, 3] CCW triangles) over [lo, hi]^2."""
    t = np.linspace(lo, hi, n + 1, dtype=np.float32)
    xy = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).reshape(-1)
    quads = np.stack([a, a + n + 1, a + n + 2, a + 1], 1)
    return xy, np.ascontiguousarray(np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]), np.int32)


def _case():
    rng = np.random.default_rng(5)
    uv, low_f = _grid(4, 0.05, 0.8)                                # part of the atlas stays empty
    low_v = np.concatenate([uv, np.zeros((uv.shape[0], 1), np.float32)], 1)
    low_n = np.tile(np.float32([0, 0, 1]), (uv.shape[0], 1)) + rng.normal(0, 0.1, (uv.shape[0], 3))
    low_t = np.tile(np.float32([1, 0, 0, 1]), (uv.shape[0], 1))
    low_t[::3, 3] = -1.0                                           # mirrored handedness on some vertices
    face_bad = np.zeros(low_f.shape[0], np.uint8)
    face_bad[3] = 1
    xy, dense_f = _grid(9, -0.1, 1.0)
    z = 0.08 * np.sin(6.0 * xy[:, 0]) * np.cos(5.0 * xy[:, 1])     # bumps beyond the distance limit
    dense_v = np.concatenate([xy, z[:, None]], 1).astype(np.float32)
    dense_n = rng.normal(0, 1, dense_v.shape) + np.float32([0, 0, 3])
    dense_n = (dense_n / np.linalg.norm(dense_n, axis=1, keepdims=True)).astype(np.float32)
    return uv, (low_v, low_n.astype(np.float32), low_t, low_f, face_bad, dense_v, dense_f, dense_n)


def test_texels_match_reference():
    dev = kernel_device()
    uv, arrays = _case()
    low_v, low_n, low_t, low_f, face_bad, dense_v, dense_f, dense_n = (torch.from_numpy(a).to(dev)
                                                                       for a in arrays)
    face_id, bary = rasterize_uv_gpu(torch.from_numpy(uv).to(dev), low_f, 24)
    tree = build_lbvh(dense_v, dense_f)
    max_d2 = 0.05 ** 2
    image, status = bake_texels(face_id, bary, low_v, low_n, low_t, low_f, face_bad, dense_v, dense_f,
                                dense_n, tree, max_d2)
    ref_img, ref_status = bake_texels_ref(face_id.cpu().numpy(), bary.cpu().numpy(), *arrays, max_d2)
    status, image = status.cpu().numpy(), image.cpu().numpy()
    assert {EMPTY, BAKED, REJECTED_UV, REJECTED_DISTANCE} <= set(ref_status.tolist())
    np.testing.assert_array_equal(status, ref_status)
    np.testing.assert_allclose(image, ref_img, rtol=0, atol=1e-5)


def test_bad_inputs_are_refused():
    dev = kernel_device()
    uv, arrays = _case()
    t = [torch.from_numpy(a).to(dev) for a in arrays]
    face_id, bary = rasterize_uv_gpu(torch.from_numpy(uv).to(dev), t[3], 16)
    tree = build_lbvh(t[5], t[6])
    with pytest.raises(ValueError, match="low_t"):
        bake_texels(face_id, bary, t[0], t[1], t[2][:, :3].contiguous(), *t[3:], tree, 0.01)
    with pytest.raises(ValueError, match="tree lacks"):
        bake_texels(face_id, bary, *t, {"left": tree["left"]}, 0.01)
