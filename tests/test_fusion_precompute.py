"""The GPU fusion precompute (engine.texture.fusion_precompute) vs the CPU backproject.texel_geometry,
edge_mask and visibility. Small inputs in numba's CUDA simulator; the ``gpu`` test uses the whole asset,
the 10-view rig and a 1024^2 atlas on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path

from engine.errors import ConfigError, InputImageError, MeshError
from engine.geometry.mesh import TriMesh
from engine.texture.anisotropic import precompute_footprints
from engine.texture.backproject import edge_mask, texel_geometry, visibility
from engine.texture.fusion_precompute import (
    FusionPrecomputeConfig,
    mask_incidence,
    precompute_fusion,
    texel_geometry_gpu,
)
from engine.texture.render_conditions import render_views
from engine.texture.render_conditions_gpu import render_views_gpu
from engine.texture.views import camera_rig, normalize_to_sphere


def _spot_patch(n_faces: int | None) -> TriMesh:
    """Spot (own UV atlas) in the rig sphere; optionally the ``n_faces`` faces nearest the head top."""
    from engine.io.asset_load import load_mesh

    m = load_mesh(asset_path("spot"))
    m.vertices, _, _ = normalize_to_sphere(m.vertices)
    if n_faces is None:
        return m
    c = m.vertices[m.faces].mean(axis=1)
    top = m.vertices[np.argmax(m.vertices[:, 1])]
    return m.copy(faces=m.faces[np.argsort(np.linalg.norm(c - top, axis=1))[:n_faces]])


def assert_precompute_parity(mesh: TriMesh, cams, atlas: int, res: int, pixel_mask=None, renders=None):
    pre = precompute_fusion(mesh, cams, atlas, res, pixel_mask=pixel_mask, renders=renders)
    tg = texel_geometry(mesh, atlas)
    t = pre.texels
    assert np.array_equal(t.face_id.cpu().numpy(), tg.face_id)
    assert np.array_equal(t.valid.cpu().numpy(), tg.valid)
    np.testing.assert_allclose(t.scatter(t.position, channels=True).cpu().numpy(), tg.position, atol=1e-6)
    np.testing.assert_allclose(t.scatter(t.normal, channels=True).cpu().numpy(), tg.normal, atol=1e-5)
    packed = t.packed_index.cpu().numpy()
    assert (packed[tg.valid] == np.arange(tg.valid.sum())).all() and (packed[~tg.valid] == -1).all()
    renders = render_views(mesh, cams, res, normal_map=False)
    edges = edge_mask(renders)
    assert np.array_equal(pre.edges.cpu().numpy(), edges)
    assert np.array_equal(pre.view_mask.cpu().numpy(), renders.mask)
    for k, cam in enumerate(cams):
        px, _ = cam.world_to_pixel(tg.position[tg.valid], res)
        np.testing.assert_allclose(pre.pixel[k].cpu().numpy(), px, rtol=1e-6, atol=1e-4)
    fp = precompute_footprints(torch.from_numpy(tg.position), torch.from_numpy(tg.valid), list(cams), res)
    for name in ("step", "lod", "taps"):                               # the anisotropic slot, wired
        # CUDA contracts the finite differences into FMAs: on the H100, 262 of 10.3M step values of a whole
        # asset (ill-conditioned Jacobians) moved by up to 7.4e-4 px; every other value within 1e-5
        got = getattr(pre.footprint, name).cpu().numpy().astype(np.float64)
        ref = getattr(fp, name).cpu().numpy().astype(np.float64)
        off = ~np.isclose(got, ref, rtol=0.0, atol=1e-5)
        assert off.mean() <= 1e-4 and np.abs(got - ref).max() <= (1.0 if name == "taps" else 1e-2), name
    want = visibility(tg, cams, renders, edges=edges, pixel_mask=pixel_mask)
    got = pre.incidence_dense().cpu().numpy()
    assert np.abs(got - want).max() < 1e-5
    assert np.array_equal(t.scatter(pre.visible).cpu().numpy() & (want > 0), want > 0)
    return pre, want


def test_spot_patch_matches_cpu(shared_dir):
    mesh = _spot_patch(800)
    cams = [camera_rig()[i] for i in (0, 2, 8)]                         # front, right, top
    pre, want = assert_precompute_parity(mesh, cams, 128, 40)
    assert (want > 0).sum() > 200 and pre.edges.any()                  # not vacuous
    assert pre.pixel.shape == (3, pre.texels.count, 2) and pre.incidence.shape == (3, pre.texels.count)
    np.testing.assert_allclose(pre.priors.cpu().numpy(), [c.prior_weight for c in cams])
    # a pixel mask known only with the colours (e.g. generated alpha), applied afterwards, as the CPU
    pm = np.ones((3, 40, 40), bool)
    pm[:, :, :20] = False
    tg, renders = texel_geometry(mesh, 128), render_views(mesh, cams, 40, normal_map=False)
    masked = visibility(tg, cams, renders, edges=edge_mask(renders), pixel_mask=pm)
    assert 0 < (masked > 0).sum() < (want > 0).sum()
    late = pre.texels.scatter(mask_incidence(pre, torch.from_numpy(pm))).cpu().numpy()
    assert np.abs(late - masked).max() < 1e-5


def _quad(z: float, u0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.array([[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]], np.float32)
    uv = np.array([[u0, 1], [u0 + 0.5, 1], [u0 + 0.5, 0], [u0, 0]], np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int32), uv


def test_occlusion_incidence_and_reused_renders():
    (fv, ff, fuv), (bv, bf, buv) = _quad(0.3, 0.0), _quad(-0.3, 0.5)   # back quad hidden by the front
    mesh = TriMesh(np.concatenate([fv, bv]), np.concatenate([ff, bf + 4]), uvs=np.concatenate([fuv, buv]))
    cams = [camera_rig()[0], camera_rig()[4]]                          # front and rear
    renders = render_views_gpu(mesh, cams, 32)
    pm = np.ones((2, 32, 32), bool)
    pm[:, 16:] = False                                                 # lower half of each view
    pre, _ = assert_precompute_parity(mesh, cams, 32, 32, renders=renders)
    half, _ = assert_precompute_parity(mesh, cams, 32, 32, pixel_mask=pm, renders=renders)
    assert 0 < (half.incidence > 0).sum() < (pre.incidence > 0).sum()
    inc = pre.incidence_dense().cpu().numpy()
    valid = pre.texels.valid.cpu().numpy()
    left = valid & (np.arange(32) < 16)[None, :]
    interior = np.zeros((32, 32), bool)
    interior[4:-4, 4:12] = True
    assert (inc[0][left & interior] > 0.99).all()                      # front quad seen head-on
    assert (inc[0][valid & ~left] == 0).all()                          # back quad occluded
    assert (inc[1][valid] == 0).all()                                  # both face +Z: back-facing for rear
    seen = pre.texels.scatter(pre.seen).cpu().numpy()
    assert seen[left & interior].all() and not seen[valid & ~left].any()
    # min_incidence drops grazing texels
    side = render_views_gpu(mesh, [camera_rig()[1]], 16)
    tilted = precompute_fusion(mesh, [camera_rig()[1]], 32, 16, FusionPrecomputeConfig(min_incidence=0.75),
                               renders=side)
    assert (tilted.incidence == 0).all()                               # cos 45 deg = 0.707 < 0.75
    assert (precompute_fusion(mesh, [camera_rig()[1]], 32, 16, renders=side).incidence.max() > 0.7)
    assert precompute_fusion(mesh, cams, 32, 32, FusionPrecomputeConfig(footprints=False),
                             renders=renders).footprint is None


def test_bad_inputs():
    v, f, uv = _quad(0.0, 0.0)
    cams = camera_rig()[:1]
    with pytest.raises(MeshError):
        precompute_fusion(TriMesh(v, f), cams, 32, 32)                 # no UVs
    with pytest.raises(MeshError):
        texel_geometry_gpu(TriMesh(v, f, uvs=uv + 5.0), 32)            # UVs cover no texel
    with pytest.raises(MeshError):
        texel_geometry_gpu(TriMesh(v, f, uvs=np.full_like(uv, np.nan)), 32)
    mesh = TriMesh(v, f, uvs=uv)
    with pytest.raises(ConfigError):
        precompute_fusion(mesh, cams, 32, 64, renders=render_views_gpu(mesh, cams, 32))
    with pytest.raises(ConfigError):
        precompute_fusion(mesh, [], 32, 32)
    with pytest.raises(InputImageError):
        precompute_fusion(mesh, cams, 32, 32, pixel_mask=np.ones((2, 32, 32), bool))
    with pytest.raises(ConfigError):
        FusionPrecomputeConfig(depth_tolerance_px=float("nan"))
    with pytest.raises(ConfigError):
        FusionPrecomputeConfig(min_incidence=1.0)
    pre = precompute_fusion(mesh, cams, 32, 32)
    with pytest.raises(ConfigError):
        pre.texels.scatter(torch.zeros(pre.texels.count + 1))


@pytest.mark.gpu
def test_whole_asset_rig_cuda(shared_dir):
    pre, want = assert_precompute_parity(_spot_patch(None), camera_rig(), 1024, 512)
    # want is dense [K, S, S], texels outside the charts included: 0.149 of its (view, texel) pairs were
    # lit on the H100
    assert pre.incidence.is_cuda and (want > 0).mean() > 0.1
    assert pre.seen.float().mean() > 0.9
