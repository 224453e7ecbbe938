"""GPU hidden-face removal (engine.geometry.hidden_faces_gpu) vs the CPU ray reference.

Simulator in CI: tiny view sets (8 views at 32 px). The flood fill is checked for its invariant (see the
module docstring), not for the CPU BFS's order-dependent choice of seeds.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.hidden_faces import (
    NORMAL_AGREEMENT,
    _flood_fill,
    face_adjacency,
    find_visible_faces,
    ray_hit_counts,
    remove_hidden_faces,
)
from engine.geometry.hidden_faces_gpu import (
    edge_groups,
    find_visible_faces_gpu,
    flood_fill_gpu,
    remove_hidden_faces_device,
    remove_hidden_faces_gpu,
)
from engine.geometry.mesh import TriMesh, face_normals
from triton_kernels.numba_cuda import kernel_device


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


def test_views_match_rays_and_inner_shells_removed():
    mesh, n_outer = shells()
    vis, by_views = (t.cpu().numpy() for t in find_visible_faces_gpu(_device(mesh), 8, 32))
    assert np.array_equal(by_views, ray_hit_counts(mesh, 8, 32) > 0)
    assert not vis[n_outer:].any() and vis[:n_outer].all()
    out, rep = remove_hidden_faces_gpu(mesh, 8, 32)
    _, ref = remove_hidden_faces(mesh, 8, 32)
    assert (rep.faces_in, rep.faces_out, rep.visible_by_rays, rep.added_by_flood_fill) == \
        (ref.faces_in, ref.faces_out, ref.visible_by_rays, ref.added_by_flood_fill)
    assert out.num_faces == n_outer and out.num_vertices == 162


def test_real_asset_subset_matches_rays():
    v, f = welded_positions(asset_path("spot"))
    centroid = v[f].mean(axis=1)
    f = f[np.argsort(np.linalg.norm(centroid - centroid.mean(0), axis=1))[-300:]]   # outermost faces
    mesh = TriMesh(v, f)
    by_views = find_visible_faces_gpu(_device(mesh), 8, 32)[1].cpu().numpy()
    ref = ray_hit_counts(mesh, 8, 32) > 0
    assert ref.sum() > 30
    assert np.array_equal(by_views, ref)


def _reachable_through_seed(seed: np.ndarray, offsets: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """bool [F]: face reachable from its seed through faces carrying the same seed."""
    ok = np.zeros(seed.shape[0], bool)
    for s in np.unique(seed[seed >= 0]):
        queue, seen = deque([s]), {int(s)}
        while queue:
            g = queue.popleft()
            for h in nbrs[offsets[g]:offsets[g + 1]]:
                if seed[h] == s and int(h) not in seen:
                    seen.add(int(h))
                    queue.append(h)
        ok[list(seen)] = True
    return ok


def test_flood_fill_invariant_and_interior_never_promoted():
    v, f = icosphere(2)
    mesh = _merge((v, f), (v * 0.5, f))                                    # inner shell faces outwards
    n_outer = f.shape[0]
    rng = np.random.default_rng(0)
    by_rays = np.zeros(mesh.num_faces, bool)
    by_rays[rng.choice(n_outer, 6, replace=False)] = True                 # sparse "ray" hits
    dm = _device(mesh)
    vis, seed = (t.cpu().numpy() for t in flood_fill_gpu(torch.from_numpy(by_rays).to(dm.device),
                                                          dm.vertices, dm.faces))
    normals = face_normals(mesh.vertices, mesh.faces).astype(np.float64)
    promoted = vis & ~by_rays
    assert promoted.sum() > 50 and not vis[n_outer:].any()
    assert (seed[by_rays] == np.flatnonzero(by_rays)).all() and by_rays[seed[promoted]].all()
    assert ((normals[seed[promoted]] * normals[promoted]).sum(1) > NORMAL_AGREEMENT).all()
    offsets, nbrs = face_adjacency(mesh.faces)
    assert _reachable_through_seed(seed, offsets, nbrs)[vis].all()
    src = np.repeat(np.arange(mesh.num_faces), np.diff(offsets))           # fixed point: all levels ran,
    open_edge = vis[src] & ~vis[nbrs]                                      # no kept face could promote
    assert ((normals[seed[src[open_edge]]] * normals[nbrs[open_edge]]).sum(1) <= NORMAL_AGREEMENT).all()
    cpu = find_visible_faces(mesh, 6, 4)                                   # the reference's fill, coarse
    assert not cpu[n_outer:].any()
    # with every normal agreeing the fill is order-independent: exactly the seeds' components (the BFS's)
    one_seed = np.zeros(mesh.num_faces, bool)
    one_seed[n_outer + 7] = True
    all_in, _ = flood_fill_gpu(torch.from_numpy(one_seed).to(dm.device), dm.vertices, dm.faces, -2.0)
    assert np.array_equal(all_in.cpu().numpy(), _flood_fill(one_seed, normals, offsets, nbrs, -2.0))
    assert all_in.cpu().numpy().sum() == n_outer                            # one whole shell, many levels


def test_edge_groups_match_face_adjacency():
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5]], np.int32)   # edge (0, 1) has 3 faces
    start, owner, _ = (t.cpu().numpy() for t in edge_groups(torch.from_numpy(fan).to(kernel_device()), 6))
    pairs = {tuple(sorted((a, b))) for e in range(start.size - 1)
             for a in owner[start[e]:start[e + 1]] for b in owner[start[e]:start[e + 1]] if a != b}
    offsets, nbrs = face_adjacency(fan)
    want = {tuple(sorted((g, int(h)))) for g in range(4) for h in nbrs[offsets[g]:offsets[g + 1]]}
    assert pairs == want == {(0, 1), (0, 2), (1, 2), (0, 3)}


def test_odd_inputs():
    plane = TriMesh(np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32),
                    np.array([[0, 1, 2], [0, 2, 3]], np.int32),
                    normals=np.tile(np.float32([0, 0, 1]), (4, 1)))
    out, rep = remove_hidden_faces_gpu(plane, 4, 16)                      # open, seen from both sides
    assert rep.faces_out == 2 and out.normals is not None and out.normals.shape == (4, 3)
    flat = TriMesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float32), np.array([[0, 1, 2]], np.int32))
    same, rep = remove_hidden_faces_gpu(flat, 4, 8)
    assert same is flat and rep.faces_out == 1 and "no face" in rep.note
    dm_out, rep = remove_hidden_faces_device(_device(shells()[0]), 4, 16)
    assert isinstance(dm_out, DeviceMesh) and rep.faces_out == dm_out.num_faces < rep.faces_in
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
