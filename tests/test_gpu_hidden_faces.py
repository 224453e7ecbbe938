"""GPU hidden-face removal (engine.geometry.hidden_faces_gpu) vs the CPU reference: the rasterised views
equal the reference's view rays; with the flood fill (the default) inner shells go; the escape rays (the
reference's own code, answered by the GPU BVH) give the same faces and report as the reference's; the
escape check (step 3) runs on the host after the GPU passes and keeps what the reference keeps.

Simulator in CI: tiny view sets (8 views at 32 px) and tiny escape tests (24 faces, 4 directions: the
simulated BVH answers ~650 rays/s). On the GPU (marker ``gpu``): the paper's setting, and the test shapes
and a real asset against the reference face for face.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import box_with_hole, hollow_sphere_with_window, icosphere, mouth, welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.hidden_faces import (
    HiddenFaceMethod,
    find_visible_faces,
    ray_hit_counts,
    remove_hidden_faces,
)
from engine.geometry.hidden_faces_gpu import (
    find_visible_faces_gpu,
    remove_hidden_faces_device,
    remove_hidden_faces_gpu,
    views_visible_gpu,
)
from engine.geometry.mesh import TriMesh
from triton_kernels.numba_cuda import kernel_device

ESCAPE = HiddenFaceMethod.ESCAPE_RAYS


def _cube(half: float) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)], np.float32)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    return v, f


def _merge(*parts: tuple[np.ndarray, np.ndarray]) -> TriMesh:
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += v.shape[0]
    return TriMesh(np.concatenate(verts), np.concatenate(faces).astype(np.int32))


def _device(mesh: TriMesh) -> DeviceMesh:
    return DeviceMesh.from_trimesh(mesh, kernel_device())


def shells() -> tuple[TriMesh, int]:
    """Icosphere (320 faces) around an inner shell (its copy scaled 0.8, reversed) and a cube."""
    v, f = icosphere(2)
    return _merge((v, f), (v * 0.8, f[:, ::-1]), _cube(0.3)), f.shape[0]


def cube_in_cube() -> tuple[TriMesh, int]:
    """A closed cube (12 faces) around a small one (12 faces, hidden) -> (mesh, F_outer)."""
    return _merge(_cube(1.0), _cube(0.3)), 12


def test_views_match_rays():
    mesh, n_outer = shells()
    by_views = views_visible_gpu(_device(mesh), 8, 32).cpu().numpy()
    assert np.array_equal(by_views, ray_hit_counts(mesh, 8, 32) > 0)
    assert by_views[:n_outer].any() and not by_views[n_outer:].any()


def test_flood_fill_removes_inner_shells_like_the_reference():
    mesh, n_outer = shells()
    vis = find_visible_faces_gpu(_device(mesh), 8, 32)[0].cpu().numpy()
    assert not vis[n_outer:].any() and vis[:n_outer].all()
    out, rep = remove_hidden_faces_gpu(mesh, 8, 32)
    _, ref = remove_hidden_faces(mesh, 8, 32)
    assert (rep.faces_in, rep.faces_out, rep.visible_by_rays, rep.added) == \
        (ref.faces_in, ref.faces_out, ref.visible_by_rays, ref.added)
    assert out.num_faces == n_outer and out.num_vertices == 162


def test_escape_rays_match_the_reference():
    mesh, n_outer = cube_in_cube()
    found = find_visible_faces_gpu(_device(mesh), 1, 4, ESCAPE, directions=4)
    vis, by_views = (t.cpu().numpy() for t in found)
    assert by_views.sum() < n_outer                                      # 16 view rays miss outer faces
    np.testing.assert_array_equal(vis, find_visible_faces(mesh, 1, 4, ESCAPE, directions=4))
    assert vis[:n_outer].all() and not vis[n_outer:].any()
    out, rep = remove_hidden_faces_gpu(mesh, 1, 4, ESCAPE, directions=4)
    _, ref = remove_hidden_faces(mesh, 1, 4, ESCAPE, directions=4)
    assert (rep.faces_in, rep.faces_out, rep.visible_by_rays, rep.added) == \
        (ref.faces_in, ref.faces_out, ref.visible_by_rays, ref.added)
    assert rep.added > 0 and out.num_faces == n_outer and out.num_vertices == 8


def test_escape_check_runs_on_the_host_after_the_gpu_passes():
    mesh, n_outer = cube_in_cube()
    paper = find_visible_faces_gpu(_device(mesh), 1, 4, verify=False)[0].cpu().numpy()
    assert not paper[:n_outer].all()                                     # 16 view rays + the fill miss some
    vis = find_visible_faces_gpu(_device(mesh), 1, 4)[0].cpu().numpy()  # the check is on by default
    np.testing.assert_array_equal(vis, find_visible_faces(mesh, 1, 4))
    assert vis[:n_outer].all() and not vis[n_outer:].any()
    out, rep = remove_hidden_faces_gpu(mesh, 1, 4)
    _, ref = remove_hidden_faces(mesh, 1, 4)
    assert rep.verified == ref.verified > 0 and out.num_faces == n_outer


def test_real_asset_subset_matches_rays():
    v, f = welded_positions(asset_path("spot"))
    centroid = v[f].mean(axis=1)
    f = f[np.argsort(np.linalg.norm(centroid - centroid.mean(0), axis=1))[-300:]]   # outermost faces
    mesh = TriMesh(v, f)
    by_views = views_visible_gpu(_device(mesh), 8, 32).cpu().numpy()
    ref = ray_hit_counts(mesh, 8, 32) > 0
    assert ref.sum() > 30
    assert np.array_equal(by_views, ref)


def test_odd_inputs():
    plane = TriMesh(np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32),
                    np.array([[0, 1, 2], [0, 2, 3]], np.int32),
                    normals=np.tile(np.float32([0, 0, 1]), (4, 1)))
    out, rep = remove_hidden_faces_gpu(plane, 4, 16)                      # open, seen from both sides
    assert rep.faces_out == 2 and out.normals is not None and out.normals.shape == (4, 3)
    flat = TriMesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float32), np.array([[0, 1, 2]], np.int32))
    same, rep = remove_hidden_faces_gpu(flat, 4, 8)
    assert same is flat and rep.faces_out == 1 and "no face" in rep.note
    for mesh, method in ((shells()[0], HiddenFaceMethod.FLOOD_FILL), (cube_in_cube()[0], ESCAPE)):
        dm_out, rep = remove_hidden_faces_device(_device(mesh), 4, 16, method, directions=4)
        assert isinstance(dm_out, DeviceMesh) and rep.faces_out == dm_out.num_faces < rep.faces_in
        assert rep.method is method
    with pytest.raises(MeshError, match="no faces"):
        remove_hidden_faces_gpu(TriMesh(np.zeros((3, 3), np.float32), np.zeros((0, 3), np.int32)), 4, 8)
    with pytest.raises(MeshError, match="NaN"):
        dev = kernel_device()
        remove_hidden_faces_gpu(DeviceMesh(torch.full((3, 3), float("nan"), device=dev),
                                           torch.tensor([[0, 1, 2]], device=dev)), 4, 8)
    with pytest.raises(ConfigError, match="view"):
        remove_hidden_faces_gpu(plane, 0, 8)


@pytest.mark.gpu
def test_gpu_paper_setting_matches_rays_on_nested_spheres():
    v, f = icosphere(4)
    mesh = _merge((v, f), (v * 0.8, f[:, ::-1]))
    vis, by_views = (t.cpu().numpy() for t in find_visible_faces_gpu(_device(mesh), 64, 256))
    assert np.array_equal(by_views, ray_hit_counts(mesh, 64, 256) > 0)
    assert vis[:f.shape[0]].all() and not vis[f.shape[0]:].any()
    out, rep = remove_hidden_faces_gpu(mesh, 512, 1024)
    assert rep.faces_out == f.shape[0]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["box_with_hole", "mouth", "hollow_sphere_with_window", "suzanne"])
def test_gpu_escape_rays_equal_the_reference(name, shared_dir):
    if name == "suzanne":
        from engine.io.asset_load import load_mesh

        mesh, truth = load_mesh(asset_path("suzanne")), None
    else:
        mesh, truth = {"box_with_hole": box_with_hole, "mouth": mouth,
                       "hollow_sphere_with_window": hollow_sphere_with_window}[name]()
    views, px = (64, 256) if truth is None else (12, 32)
    vis = find_visible_faces_gpu(_device(mesh), views, px, ESCAPE)[0].cpu().numpy()
    np.testing.assert_array_equal(vis, find_visible_faces(mesh, views, px, ESCAPE))
    if truth is not None:
        np.testing.assert_array_equal(vis, truth)
        paper = find_visible_faces_gpu(_device(mesh), 512, 1024, ESCAPE)[0].cpu().numpy()
        np.testing.assert_array_equal(paper, truth)
