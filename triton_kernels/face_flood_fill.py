"""Normal-gated flood fill over edge-adjacent faces (numba-cuda): step 2 of the GPU hidden-face removal
(``engine/geometry/hidden_faces_gpu.py``, paper 6.2).

Maths. Faces are adjacent when they share an undirected edge. Starting from the seed faces (``by_rays``,
each its own seed), a breadth-first search promotes a not-yet-reached face g next to a reached face h of
seed s when the unit normals agree: ``n_s . n_g > threshold`` (float64 dot of float32 normals); g then
carries seed s. Result: seed int32 [F], the promoting seed face (f itself for a seed, -1 if never reached).

Layouts. faces int32 [F, 3]; normals float32 [F, 3] (unit, zero for degenerate faces: never promoted at
a positive threshold); by_rays bool [F]. The adjacency is ``edge_groups``: the faces of each shared edge
contiguous in ``owner`` (CSR ``start``), and per face the group of each of its three edges.

Parallel fill. Level 0 is one grid launch over all seeds; the remaining levels run in a single block that
loops until a level promotes nothing (barriers between levels, frontier sizes in shared memory): two
launches, no host round trip. A face is claimed with an atomic compare-and-swap of its seed and appended
(face, seed) to the next frontier (int32 [2, F, 2], the halves alternate). Like the sequential BFS this is
order-dependent where a face is reachable from two fronts (it takes whichever claims first), so
``face_flood_fill_ref`` is an exact oracle only when that cannot change the reached set (e.g. every normal
agreeing); otherwise the invariants hold: every reached face's seed agrees with it and reaches it through
faces of the same seed, and no reached face could promote an unreached neighbour (fixed point).

Cost: F-sized torch passes for the adjacency (one sort of 3F keys, one host sync in ``nonzero``), then
each reached face scans its <= 3 edge groups once: ~50 B per face. Limits: F < 2^31, V^2 < 2^63.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from numba import float64, int32

from triton_kernels.numba_cuda import cuda_module, launch, simulated, view

cuda = cuda_module()

FILL_THREADS = 512                       # the one block of the fill's level loop (<= 128 registers)


def face_flood_fill_ref(by_rays: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                        threshold: float) -> np.ndarray:
    """Sequential BFS (seeds in face order, neighbours in edge order): seed int32 [F]."""
    f = np.asarray(faces, np.int64)
    edges = np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=-1).reshape(-1, 2), axis=1)      # [3F, 2]
    _, group = np.unique(edges, axis=0, return_inverse=True)
    members: dict[int, list[int]] = {}
    for slot, g in enumerate(group.reshape(-1)):
        members.setdefault(int(g), []).append(slot // 3)
    nrm = np.asarray(normals, np.float32).astype(np.float64)
    seed = np.where(by_rays, np.arange(f.shape[0]), -1).astype(np.int32)
    queue = deque(np.flatnonzero(by_rays).tolist())
    while queue:
        h = queue.popleft()
        for j in range(3):
            for g in members[int(group.reshape(-1)[3 * h + j])]:
                if seed[g] < 0 and float(nrm[seed[h]] @ nrm[g]) > threshold:
                    seed[g] = seed[h]
                    queue.append(g)
    return seed


def edge_groups(faces: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Faces grouped by undirected edge: (start int64 [E + 1], owner int32 [sum], face_edges int32 [F, 3])
    for the E edges with at least two face slots; ``owner[start[e]:start[e + 1]]`` share edge e and
    ``face_edges[f, j]`` is the group of f's edge (v_j, v_{j+1}), -1 where no other face shares it."""
    a = faces.reshape(-1).long()
    b = faces[:, [1, 2, 0]].reshape(-1).long()
    keys = torch.minimum(a, b) * num_vertices + torch.maximum(a, b)                # [3F]
    keys, order = torch.sort(keys, stable=True)
    owner = (order // 3).to(torch.int32)
    new = torch.ones_like(keys, dtype=torch.bool)
    new[1:] = keys[1:] != keys[:-1]
    starts = torch.nonzero(new).reshape(-1)                                       # [E_all]
    ends = torch.cat([starts[1:], starts.new_tensor([keys.numel()])])
    shared = (ends - starts) >= 2
    keep = torch.repeat_interleave(shared, ends - starts)                         # members of shared edges
    lengths = (ends - starts)[shared]
    start = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=faces.device)
    start[1:] = torch.cumsum(lengths, 0)
    group = torch.where(shared, torch.cumsum(shared, 0) - 1, -1)                 # [E_all] shared index
    face_edges = torch.empty_like(keys, dtype=torch.int32)
    face_edges[order] = group[torch.cumsum(new, 0) - 1].to(torch.int32)           # by sorted slot
    return start, owner[keep].contiguous(), face_edges.reshape(-1, 3)


@cuda.jit(device=True)
def _expand(h, s, start, owner, face_edges, seed, normals, threshold, front, out, counter, slot):
    """Promote the unclaimed faces sharing an edge with face h (seed s) whose normal agrees with n_s;
    claim each with a CAS of its seed and append (face, seed) at ``front[out + 2 * counter[slot]]``."""
    for j in range(3):
        e = face_edges[3 * h + j]
        if e < 0:
            continue
        for a in range(start[e], start[e + 1]):
            g = owner[a]
            if seed[g] >= 0:
                continue
            dot = (float64(normals[s, 0]) * normals[g, 0] + float64(normals[s, 1]) * normals[g, 1]
                   + float64(normals[s, 2]) * normals[g, 2])
            if dot > threshold and cuda.atomic.cas(seed, g, int32(-1), int32(s)) == -1:
                pos = cuda.atomic.add(counter, slot, int32(1))
                front[out + 2 * pos] = g
                front[out + 2 * pos + 1] = s


@cuda.jit(cache=True)
def _fill_from_seeds(by_rays, start, owner, face_edges, seed, normals, threshold, front, counter, n_faces):
    """Level 0, thread h: expand every ray-visible face (its own seed) into the first frontier."""
    h = cuda.grid(1)
    if h >= n_faces or by_rays[h] == 0:
        return
    _expand(h, h, start, owner, face_edges, seed, normals, threshold, front, 0, counter, 0)


@cuda.jit(cache=True)
def _fill_levels(start, owner, face_edges, seed, normals, threshold, front, counter, n_faces):
    """One block: breadth-first levels until a level promotes nothing. Frontiers alternate between the
    halves of ``front`` (int32 [2, F, 2] of (face, seed)); sizes live in shared memory, so the whole
    fill is one launch with no host round trip."""
    size = cuda.shared.array(2, int32)                  # [current level, next level]
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    if tid == 0:
        size[0] = counter[0]
        size[1] = 0
    cuda.syncthreads()
    level = 0
    while True:
        n = size[0]                                     # read by every thread before the first barrier
        if n == 0:
            break
        cur = (level % 2) * 2 * n_faces
        for i in range(tid, n, nt):
            _expand(front[cur + 2 * i], front[cur + 2 * i + 1], start, owner, face_edges, seed, normals,
                    threshold, front, 2 * n_faces - cur, size, 1)
        cuda.syncthreads()
        if tid == 0:
            size[0] = size[1]
            size[1] = 0
        cuda.syncthreads()
        level += 1


def face_flood_fill(by_rays: torch.Tensor, faces: torch.Tensor, normals: torch.Tensor, num_vertices: int,
                    threshold: float) -> torch.Tensor:
    """seed int32 [F] of the fill from ``by_rays`` (module docstring). by_rays bool [F], faces int32
    [F, 3] with ids in [0, num_vertices), normals float32 [F, 3], all on one device (``kernel_device()``).
    Two launches, no host sync after the adjacency."""
    f_count = faces.shape[0]
    if faces.dtype != torch.int32 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be int32 [F, 3], got {faces.dtype} {tuple(faces.shape)}")
    if by_rays.dtype != torch.bool or by_rays.shape != (f_count,):
        raise ValueError(f"by_rays must be bool [{f_count}], got {by_rays.dtype} {tuple(by_rays.shape)}")
    if normals.dtype != torch.float32 or normals.shape != (f_count, 3):
        raise ValueError(f"normals must be float32 [{f_count}, 3], got {normals.dtype} "
                         f"{tuple(normals.shape)}")
    if not by_rays.device == faces.device == normals.device:
        raise ValueError(f"by_rays, faces, normals on {by_rays.device}, {faces.device}, {normals.device}")
    dev = faces.device
    seed = torch.where(by_rays, torch.arange(f_count, dtype=torch.int32, device=dev),
                       torch.full((), -1, dtype=torch.int32, device=dev)).contiguous()
    start, owner, face_edges = edge_groups(faces, num_vertices)
    normals = normals.contiguous()
    front = torch.empty(4 * f_count, dtype=torch.int32, device=dev)               # [2, F, 2] frontiers
    counter = torch.zeros(1, dtype=torch.int32, device=dev)
    graph = (view(start), view(owner), view(face_edges.reshape(-1)), view(seed), view(normals),
             float(threshold), view(front), view(counter))
    rays_u8 = by_rays.to(torch.uint8).contiguous()
    launch(_fill_from_seeds, f_count, view(rays_u8), *graph, f_count)
    threads = 32 if simulated() else FILL_THREADS      # simulator: each thread is a Python thread
    launch(_fill_levels, threads, *graph, f_count, threads=threads)
    return seed
