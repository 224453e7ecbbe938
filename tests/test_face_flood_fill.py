"""Normal-gated face flood fill (triton_kernels/face_flood_fill.py) in the CUDA simulator in CI: the edge
grouping equals the face adjacency, the fill keeps the documented invariants on two nested shells, and
equals the sequential references where the result cannot depend on the order."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from meshes import icosphere

from engine.geometry.hidden_faces import NORMAL_AGREEMENT, _flood_fill, face_adjacency
from engine.geometry.mesh import face_normals
from triton_kernels.face_flood_fill import edge_groups, face_flood_fill, face_flood_fill_ref
from triton_kernels.numba_cuda import kernel_device


def _nested_shells() -> tuple[np.ndarray, np.ndarray, int]:
    v, f = icosphere(2)
    return np.concatenate([v, v * 0.5]), np.concatenate([f, f + v.shape[0]]).astype(np.int32), f.shape[0]


def _fill(by_rays: np.ndarray, verts: np.ndarray, faces: np.ndarray, normals: np.ndarray,
          threshold: float) -> np.ndarray:
    dev = kernel_device()
    return face_flood_fill(torch.from_numpy(by_rays).to(dev), torch.from_numpy(faces).to(dev),
                           torch.from_numpy(normals).to(dev), verts.shape[0], threshold).cpu().numpy()


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


def test_fill_invariants_and_interior_never_promoted():
    verts, faces, n_outer = _nested_shells()                      # inner shell faces outwards
    normals = face_normals(verts, faces).astype(np.float32)
    by_rays = np.zeros(faces.shape[0], bool)
    by_rays[np.random.default_rng(0).choice(n_outer, 6, replace=False)] = True      # sparse "ray" hits
    seed = _fill(by_rays, verts, faces, normals, NORMAL_AGREEMENT)
    vis = seed >= 0
    promoted = vis & ~by_rays
    nrm = normals.astype(np.float64)
    assert promoted.sum() > 50 and not vis[n_outer:].any()
    assert (seed[by_rays] == np.flatnonzero(by_rays)).all() and by_rays[seed[promoted]].all()
    assert ((nrm[seed[promoted]] * nrm[promoted]).sum(1) > NORMAL_AGREEMENT).all()
    offsets, nbrs = face_adjacency(faces)
    assert _reachable_through_seed(seed, offsets, nbrs)[vis].all()
    src = np.repeat(np.arange(faces.shape[0]), np.diff(offsets))      # fixed point: all levels ran,
    open_edge = vis[src] & ~vis[nbrs]                                  # no kept face could promote
    assert ((nrm[seed[src[open_edge]]] * nrm[nbrs[open_edge]]).sum(1) <= NORMAL_AGREEMENT).all()
    ref = face_flood_fill_ref(by_rays, faces, normals, NORMAL_AGREEMENT)
    assert not (ref[n_outer:] >= 0).any() and (ref[by_rays] == np.flatnonzero(by_rays)).all()


def test_order_free_fill_equals_the_references():
    """With every normal agreeing the fill is order-independent: exactly the seed's shell, many levels."""
    verts, faces, n_outer = _nested_shells()
    normals = face_normals(verts, faces).astype(np.float32)
    one_seed = np.zeros(faces.shape[0], bool)
    one_seed[n_outer + 7] = True
    seed = _fill(one_seed, verts, faces, normals, -2.0)
    np.testing.assert_array_equal(seed, face_flood_fill_ref(one_seed, faces, normals, -2.0))
    offsets, nbrs = face_adjacency(faces)
    assert np.array_equal(seed >= 0, _flood_fill(one_seed, normals.astype(np.float64), offsets, nbrs, -2.0))
    assert (seed >= 0).sum() == n_outer


def test_edge_groups_match_face_adjacency():
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5]], np.int32)   # edge (0, 1) has 3 faces
    start, owner, _ = (t.cpu().numpy() for t in edge_groups(torch.from_numpy(fan).to(kernel_device()), 6))
    pairs = {tuple(sorted((a, b))) for e in range(start.size - 1)
             for a in owner[start[e]:start[e + 1]] for b in owner[start[e]:start[e + 1]] if a != b}
    offsets, nbrs = face_adjacency(fan)
    want = {tuple(sorted((g, int(h)))) for g in range(4) for h in nbrs[offsets[g]:offsets[g + 1]]}
    assert pairs == want == {(0, 1), (0, 2), (1, 2), (0, 3)}
