"""GPU condition renders (engine.texture.render_conditions_gpu, triton_kernels.sample_texture) vs the CPU
render_views / shading_normals. Small inputs in numba's CUDA simulator; the ``gpu`` test runs the full
10-view rig on a whole asset on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh
from engine.geometry.tangents import compute_tangents
from engine.texture.render_conditions import render_views, smooth_normals
from engine.texture.render_conditions_gpu import TexturedDeviceMesh, render_views_gpu, smooth_normals_torch
from engine.texture.views import camera_rig, normalize_to_sphere
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.sample_texture import shade_pixels_gpu, shade_pixels_ref


def _bumpy_map(size: int = 32) -> np.ndarray:
    """A tangent-space normal map with strong, non-symmetric tilts (uint8 [size, size, 3])."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    ts = np.stack([0.5 * np.sin(2 * np.pi * 3 * xx), 0.4 * np.cos(2 * np.pi * 2 * yy), np.ones_like(xx)], -1)
    ts /= np.linalg.norm(ts, axis=-1, keepdims=True)
    return np.rint((ts + 1) / 2 * 255).astype(np.uint8)


def _spot(n_faces: int | None) -> TriMesh:
    """Spot in the rig sphere with MikkTSpace tangents and a bumpy normal map; optionally only the
    ``n_faces`` faces nearest the top of the head (keeps the simulator fast)."""
    from engine.io.asset_load import load_mesh

    m = load_mesh(asset_path("spot"))
    m.vertices, _, _ = normalize_to_sphere(m.vertices)
    if n_faces is not None:
        c = m.vertices[m.faces].mean(axis=1)
        top = m.vertices[np.argmax(m.vertices[:, 1])]
        m = m.copy(faces=m.faces[np.argsort(np.linalg.norm(c - top, axis=1))[:n_faces]])
    return m.copy(tangents=compute_tangents(m), normal_map=_bumpy_map())


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def assert_render_parity(mesh: TriMesh, cams, res: int, normal_map: bool = True) -> None:
    ref = render_views(mesh, cams, res, normal_map=normal_map)
    got = render_views_gpu(mesh, cams, res, normal_map=normal_map)
    fid = got.face_id.cpu().numpy()
    assert fid.shape == (len(cams), res, res) and got.normal.shape == (len(cams), res, res, 3)
    same = fid == ref.face_id
    depth = got.depth.cpu().numpy()
    # face ids differ only where two faces tie in float32 depth
    np.testing.assert_allclose(depth[~same], ref.depth[~same], rtol=1e-6, atol=1e-6)
    assert same.mean() > 0.995
    assert np.array_equal(got.mask.cpu().numpy(), ref.mask)
    hit = same & ref.mask
    np.testing.assert_allclose(got.position.cpu().numpy()[hit], ref.position[hit], atol=1e-6)
    assert _angles_deg(got.normal.cpu().numpy()[hit], ref.normal[hit]).max() < 0.1
    empty = ~ref.mask
    assert (got.normal.cpu().numpy()[empty] == 0).all() and (got.position.cpu().numpy()[empty] == 0).all()


def test_spot_patch_with_normal_map_matches_cpu(shared_dir):
    mesh = _spot(900)
    cams = [camera_rig()[i] for i in (0, 2, 8)]                         # front, right, top
    assert_render_parity(mesh, cams, 40)
    # the map matters (the parity above is not vacuous) and switching it off matches the CPU too
    on = render_views_gpu(mesh, cams[:1], 40).normal.numpy()
    off = render_views_gpu(mesh, cams[:1], 40, normal_map=False).normal.numpy()
    m = render_views(mesh, cams[:1], 40).mask
    assert _angles_deg(on[m], off[m]).mean() > 10.0
    assert_render_parity(mesh, cams[:1], 40, normal_map=False)


def test_shade_kernel_repeat_wrap_and_mirrored_tangents():
    """One quad with UVs far outside [0, 1] (REPEAT), negative handedness and a non-square map."""
    v = np.array([[-0.5, -0.5, 0.2], [0.5, -0.5, 0.2], [0.5, 0.5, 0.2], [-0.5, 0.5, 0.2]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    uvs = np.array([[-1.3, 2.1], [0.4, 2.1], [0.4, 0.7], [-1.3, 0.7]], np.float32)
    tangents = np.array([[1, 0, 0, -1]] * 4, np.float32)
    normals = np.tile(np.float32([[0.1, 0.0, 1.0]]), (4, 1))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    nmap = _bumpy_map(24)[:, :17]
    mesh = TriMesh(v, f, normals=normals, uvs=uvs, tangents=tangents, normal_map=nmap)
    cams = camera_rig()[:1]
    ref = render_views(mesh, cams, 24)
    dev = kernel_device()
    args = [torch.from_numpy(a).to(dev) for a in (v, f, normals, uvs, tangents, nmap)]
    got = render_views_gpu(TexturedDeviceMesh(*args), cams, 24)
    assert np.array_equal(got.face_id.numpy(), ref.face_id)
    m = ref.mask[0]
    assert _angles_deg(got.normal.numpy()[0][m], ref.normal[0][m]).max() < 0.1
    # the kernel against its own reference on the raw raster
    pos, nrm = shade_pixels_gpu(got.face_id, got.bary, *args)
    rpos, rnrm = shade_pixels_ref(got.face_id.numpy(), got.bary.numpy(), v, f, normals, uvs, tangents, nmap)
    np.testing.assert_allclose(pos.numpy(), rpos, atol=1e-6)
    assert _angles_deg(nrm.numpy()[0][m], rnrm[0][m]).max() < 0.1


def test_smooth_normals_weld_seams(shared_dir):
    from engine.io.asset_load import load_mesh

    m = load_mesh(asset_path("spot"))
    bare = TriMesh(m.vertices, m.faces, uvs=m.uvs)                       # split at UV seams, no normals
    dev = kernel_device()
    got = smooth_normals_torch(torch.from_numpy(bare.vertices).to(dev), torch.from_numpy(bare.faces).to(dev))
    ref = smooth_normals(bare)
    assert _angles_deg(got.cpu().numpy(), ref).max() < 0.05          # CPU face normals are float32
    assert bare.num_vertices > np.unique(bare.vertices, axis=0).shape[0]    # seams exist and were welded


def test_bad_inputs():
    v = torch.zeros((3, 3), device=kernel_device())
    f = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=kernel_device())
    n = torch.zeros((3, 3), device=kernel_device())
    with pytest.raises(MeshError):
        TexturedDeviceMesh(v, f, n, uvs=torch.zeros((2, 2), device=kernel_device()))
    with pytest.raises(MeshError):
        TexturedDeviceMesh(v, f, n, normal_map=torch.zeros((4, 4, 3), device=kernel_device()))  # not uint8
    with pytest.raises(ConfigError):
        render_views_gpu(TexturedDeviceMesh(v, f, n), [], 16)
    with pytest.raises(ConfigError):
        render_views_gpu(TexturedDeviceMesh(v, f, n), camera_rig()[:1], 0)
    with pytest.raises(MeshError):
        bad = v.clone()
        bad[0, 0] = float("nan")
        render_views_gpu(TexturedDeviceMesh(bad, f, n), camera_rig()[:1], 16)
    with pytest.raises(ConfigError):
        shade_pixels_gpu(torch.zeros((2, 2), dtype=torch.int64), torch.zeros((2, 2, 3)), v, f, n)


@pytest.mark.gpu
def test_full_rig_whole_asset_cuda(shared_dir):
    mesh = _spot(None)
    assert_render_parity(mesh, camera_rig(), 256)
    r = render_views_gpu(mesh, camera_rig(), 1024)
    assert r.position.is_cuda and r.normal.shape == (10, 1024, 1024, 3) and r.mask.float().mean() > 0.1
