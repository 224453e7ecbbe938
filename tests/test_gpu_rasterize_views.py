"""Batched GPU view rasteriser (triton_kernels.rasterize_views) vs the CPU rasterize_ortho, per view.

Runs in numba's CUDA simulator in CI (small meshes, 32 px); the ``gpu`` test repeats it at scale on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.rasterize import interpolate
from engine.texture.views import OrthoCamera, camera_rig
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_views import (
    camera_params,
    interpolate_gpu,
    rasterize_views_gpu,
    rasterize_views_ref,
    visible_faces_views,
    zbuffer_views,
    zbuffer_views_binned,
)


def _dev(v: np.ndarray, f: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    dev = kernel_device()
    return (torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(dev),
            torch.from_numpy(np.ascontiguousarray(f, np.int32)).to(dev))


def assert_parity(v: np.ndarray, f: np.ndarray, cams: list[OrthoCamera], res: int, **kw) -> np.ndarray:
    """GPU vs reference: face ids equal except at float32 depth ties, bary within 1e-5, depth equal."""
    cull = kw.get("cull_backfaces", False)
    fid, bary, depth = (t.cpu().numpy() for t in rasterize_views_gpu(*_dev(v, f), cams, res, **kw))
    rf, rb, rd = rasterize_views_ref(v, f, cams, res, cull)
    differ = fid != rf
    if differ.any():                                   # only where two faces tie in float32 depth
        np.testing.assert_allclose(depth[differ], rd[differ], rtol=1e-6, atol=1e-6)
    same = ~differ
    np.testing.assert_allclose(bary[same], rb[same], atol=1e-5)
    np.testing.assert_allclose(depth[same], rd[same], rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.isinf(depth), rf < 0)
    return fid


def test_icosphere_rig_views_match_reference():
    v, f = icosphere(2, 0.9)
    cams = camera_rig(6)[:2] + [OrthoCamera("oblique", (0.6, 0.0, 0.8), (0.0, 1.0, 0.0), 0.6, 1.0)]
    fid = assert_parity(v, f, cams, 32)
    assert (fid[0] >= 0).mean() > 0.5 and (fid[2] >= 0).all()        # the 0.6 view is filled (clipped)
    # back-face culling changes nothing on a closed convex mesh's front, and the kernel agrees with it
    assert_parity(v, f, cams[:1], 32, cull_backfaces=True)


def test_big_clipped_degenerate_and_empty():
    """Two big triangles hanging outside the image (tile pass forced by a small threshold), a
    zero-area and a repeated-vertex triangle, a tiny sliver, and a view that sees nothing."""
    v = np.array([[-3, -3, 0], [3, -3, 0], [3, 3, 0], [-3, 3, 0],              # plane far past the frame
                  [0, 0, 0.5], [0.2, 0.2, 0.5], [0.4, 0.4, 0.5],                 # collinear
                  [-0.5, 0.1, 0.3], [0.5, 0.1, 0.3], [0.0, 0.9, -0.2],           # tilted, crosses plane
                  [0.1, -0.5, 0.8], [0.1001, -0.5, 0.8], [0.1, 0.5, 0.8]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [7, 7, 8], [7, 8, 9], [10, 11, 12]], np.int32)
    cams = [OrthoCamera("front", (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), 1.0, 1.0),
            OrthoCamera("back", (0.0, 0.0, -1.0), (0.0, 1.0, 0.0), 1.0, 1.0)]
    fid = assert_parity(v, f, cams, 32, big_bbox_px=64)
    assert (fid >= 0).all() and not np.isin(fid, [2, 3]).any()
    assert np.array_equal(fid, assert_parity(v, f, cams, 32))             # threshold never changes it
    away = v + np.float32([10.0, 0.0, 0.0])
    fid_empty, bary, depth = rasterize_views_gpu(*_dev(away, f), cams[:1], 16)
    assert (fid_empty == -1).all() and torch.isinf(depth).all() and (bary == 0).all()


def test_real_asset_subset_and_interpolation():
    v, f = welded_positions(asset_path("bunny"))
    centroid = v[f].mean(axis=1)
    f = f[np.argsort(np.linalg.norm(centroid - v[np.argmax(v[:, 2])], axis=1))[:400]]   # a front patch
    used = v[np.unique(f)]
    v = ((v - (used.min(0) + used.max(0)) / 2) / np.abs(used - used.mean(0)).max() * 0.9).astype(np.float32)
    cams = [camera_rig(6)[0], camera_rig(6)[4]]
    fid = assert_parity(v, f, cams, 32)
    assert (fid >= 0).sum() > 100
    vt, ft = _dev(v, f)
    fid_t, bary_t, _ = rasterize_views_gpu(vt, ft, cams, 32)
    got = interpolate_gpu(vt, ft, fid_t, bary_t).cpu().numpy()            # world positions [K, R, R, 3]
    for k in range(2):
        want = interpolate(v, f, fid_t[k].cpu().numpy(), bary_t[k].cpu().numpy())
        np.testing.assert_allclose(got[k], want, atol=1e-6)
    scalar = interpolate_gpu(vt[:, 1], ft, fid_t, bary_t).cpu().numpy()   # [K, R, R]
    np.testing.assert_allclose(scalar, got[..., 1], atol=1e-6)


def _odd_scene() -> tuple[np.ndarray, np.ndarray, list[OrthoCamera]]:
    """Icosphere (80 faces) behind a tilted plane that hangs out of the frame, plus a zero-area face."""
    v, f = icosphere(1, 0.7)
    extra = np.array([[-3, -3, -0.9], [3, -3, -0.9], [0, 3, 0.95], [0, 0, 0.9], [0.1, 0.1, 0.9],
                      [0.2, 0.2, 0.9]], np.float32)
    faces = np.concatenate([f, np.array([[0, 1, 2], [3, 4, 5]]) + v.shape[0]]).astype(np.int32)
    cams = [OrthoCamera("front", (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), 1.0, 1.0),
            OrthoCamera("oblique", (0.6, 0.0, -0.8), (0.0, 1.0, 0.0), 0.8, 1.0)]
    return np.concatenate([v, extra]).astype(np.float32), faces, cams


def test_binned_zbuffer_is_bit_identical_and_marks_reference_faces():
    """Binned pass (tile lists + shared-memory z-buffer) vs the global-atomic z-buffer, bit for bit, at a
    size with partial tiles, with 8 lanes per triangle (the CUDA default) and with one lane per triangle
    and a batch per view; its visible set is the set of face ids of the CPU reference."""
    v, f, cams = _odd_scene()
    vt, ft = _dev(v, f)
    params = camera_params(cams)
    for cull, tuning in ((False, {"group": 8, "threads": 64}), (True, {"group": 1, "threads": 32,
                                                                      "max_entries": 1})):
        want = zbuffer_views(vt, ft, params, 36, cull)
        assert torch.equal(zbuffer_views_binned(vt, ft, params, 36, cull, **tuning), want)
        ref = np.unique(rasterize_views_ref(v, f, cams, 36, cull)[0])
        got = np.flatnonzero(visible_faces_views(vt, ft, cams, 36, cull).cpu().numpy())
        assert np.array_equal(got, ref[ref >= 0]) and f.shape[0] - 1 not in got     # zero-area never wins
    with pytest.raises(ConfigError, match="group"):
        visible_faces_views(vt, ft, cams, 40, group=3)


def test_bad_inputs_are_clear_errors():
    v, f = _dev(*icosphere(0))
    cams = camera_rig(6)[:1]
    with pytest.raises(MeshError, match="outside"):
        rasterize_views_gpu(v, f + 100, cams, 8)
    with pytest.raises(MeshError, match="NaN"):
        rasterize_views_gpu(v * float("nan"), f, cams, 8)
    with pytest.raises(MeshError, match="int32"):
        rasterize_views_gpu(v, f.long(), cams, 8)
    with pytest.raises(ConfigError, match="resolution"):
        rasterize_views_gpu(v, f, cams, 0)


@pytest.mark.gpu
def test_gpu_rig_at_scale_matches_reference():
    v, f = welded_positions(asset_path("bunny"))
    v = ((v - (v.min(0) + v.max(0)) / 2) / np.abs(v).max() * 0.9).astype(np.float32)
    assert_parity(v, f, camera_rig(10), 256)
    assert_parity(v, f, camera_rig(10)[:2], 512, cull_backfaces=True, big_bbox_px=16)
    vt, ft = _dev(v, f)
    params = camera_params(camera_rig(10))
    for cull in (False, True):
        want = zbuffer_views(vt, ft, params, 1000, cull)
        assert torch.equal(zbuffer_views_binned(vt, ft, params, 1000, cull), want)
