"""QEM edge-collapse simplification to an exact face budget on the GPU (paper 6.1), passes of parallel,
neighbourhood-disjoint collapses. Same maths, placement rules, fixed vertices, validity checks and report
as the serial reference ``engine.geometry.simplify.simplify_qem``; the kernels are in
``triton_kernels/qem_collapse.py`` (their docstring has the selection rule and layouts).

One pass, on faces int32 [F, 3] (compacted, CCW) and float64 positions / quadrics of all V input vertices:
  1. cost and placement of every candidate edge (``edge_costs``), packed into int64 keys;
  2. vertex -> face CSR (bincount + cumsum + atomic fill);
  3. ``rounds`` winner rounds: an edge wins when it holds the minimum key on every face around both
     endpoints; winners are checked (link, 60-degree turn, sliver) and accepted ones lock their neighbourhood;
  4. host syncs: the candidate count (step 1) and the number of accepted collapses n. When n exceeds the
     collapses still needed, only the cheapest ``needed`` are applied, so the result has ``target`` or
     ``target - 1`` faces (every collapse removes exactly 2 faces); the new face count is then known on
     the host without a sync;
  5. apply (survivor moves, quadrics merge, removed vertex remapped), drop the 2 dead faces per collapse,
     compact with ``nonzero_static`` (size known, no sync).
When a pass accepts nothing, further rounds (one sync each) run until one collapse passes or every
candidate was rejected: then ``reached=False`` with the reference's reason. Costs of all edges are
recomputed each pass (the face array is compacted, so half-edge ids change; recomputing all is one
~1 us/100K-edge kernel, cheaper than tracking affected edges).

Writing: our own implementation (no code from CuMesh or other GPU simplifiers).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import TriMesh, clean_mesh, validate_mesh
from engine.geometry.simplify import _MODE, _REASONS, Placement, SimplifyReport
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.qem_collapse import (
    MAX_KEY,
    collapse,
    edge_costs,
    edge_keys,
    fixed_vertices_device,
    select_round,
    vertex_faces,
    vertex_quadrics,
)

ROUNDS = 4             # winner rounds per pass (later rounds fill the gaps between accepted collapses)
MAX_PASSES = 1000
MAX_EXTRA_ROUNDS = 256  # rounds (with a sync each) a pass may spend looking for one valid collapse


def clean_device(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Device version of ``clean_mesh``: weld exactly coincident positions, drop faces with a repeated
    index, duplicate faces (same vertex set, first kept) and zero-area faces, compact the vertices.
    vertices float32 [V, 3], faces int32 [F, 3] -> the same, on the same device."""
    uniq, inv = torch.unique(vertices, dim=0, return_inverse=True)      # welded, lexicographic order
    f = inv[faces.long()]                                                  # [F, 3] int64
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    srt = torch.sort(f, dim=1).values
    _, which = torch.unique(srt, dim=0, return_inverse=True)
    first = torch.full((int(which.max()) + 1 if which.numel() else 0,), f.shape[0], device=f.device,
                       dtype=torch.int64).scatter_reduce_(0, which, torch.arange(f.shape[0], device=f.device),
                                                          "amin")
    f = f[torch.sort(first).values]
    v = uniq.to(torch.float64)
    cross = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    f = f[torch.linalg.vector_norm(cross, dim=1) > 0.0]
    return _compact(uniq, f)


def _compact(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop unreferenced vertices, keeping their order: (float32 [V', 3], int32 [F, 3])."""
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1).long()] = True
    remap = torch.cumsum(used.to(torch.int64), 0) - 1
    return vertices[used].to(torch.float32).contiguous(), remap[faces.long()].to(torch.int32).contiguous()


def _validate_device(mesh: DeviceMesh) -> None:
    if mesh.num_faces == 0:
        raise MeshError("mesh has no faces", "give a mesh with at least one triangle")
    if not bool(torch.isfinite(mesh.vertices).all()):
        raise MeshError("mesh has vertices with NaN/Inf positions",
                        "repair or re-export the mesh with finite coordinates")
    lo, hi = torch.aminmax(mesh.faces)
    if int(lo) < 0 or int(hi) >= mesh.num_vertices:
        raise MeshError(f"mesh has face indices outside [0, {mesh.num_vertices})",
                        "re-export the mesh; its index buffer is corrupt")


def _passes(pos: torch.Tensor, faces: torch.Tensor, fixed: torch.Tensor, target: int, mode: int,
            rounds: int) -> tuple[torch.Tensor, int, int]:
    """Collapse passes in place on pos float64 [V, 3]; returns (faces int32 [F', 3], reason code, passes)."""
    dev, nv = pos.device, pos.shape[0]
    q = vertex_quadrics(pos, faces)
    vmin = torch.empty(nv, dtype=torch.int64, device=dev)
    v2 = torch.empty_like(vmin)
    vmap = torch.empty(nv, dtype=torch.int32, device=dev)
    nf, code, passes = faces.shape[0], 0, 0
    while nf > target and passes < MAX_PASSES:
        passes += 1
        needed = (nf - target + 1) // 2                     # collapses to reach target or target - 1
        cost, place = edge_costs(pos, q, fixed, faces, mode)
        keys = edge_keys(cost)                               # [E] int64, candidates only
        off, vf = vertex_faces(faces, nv)
        vlock = torch.zeros(nv, dtype=torch.int8, device=dev)
        accepted = torch.full_like(keys, int(MAX_KEY))
        for _ in range(rounds):
            select_round(keys, faces, vmin, v2, vlock, off, vf, pos, place, accepted)
        n = int((accepted != MAX_KEY).sum())                 # the pass's host sync
        extra = 0
        while n == 0 and extra < MAX_EXTRA_ROUNDS and bool((keys != MAX_KEY).any()):
            select_round(keys, faces, vmin, v2, vlock, off, vf, pos, place, accepted)
            n = int((accepted != MAX_KEY).sum())
            extra += 1
        if n == 0:
            code = 1
            break
        if n > needed:                                       # budget: only the cheapest collapses
            sel = torch.topk(accepted, needed, largest=False, sorted=False).values
            n = needed
        else:
            sel = accepted[torch.nonzero_static(accepted != MAX_KEY, size=n).reshape(-1)]
        sel = sel & 0xFFFFFFFF                               # half-edge ids of the collapses
        vmap.fill_(-1)
        alive = collapse(sel.contiguous(), faces, fixed, place, pos, q, vmap)
        nf -= 2 * n
        faces = faces[torch.nonzero_static(alive, size=nf).reshape(-1)].contiguous()
    if nf > target and code == 0:
        code = 1
    return faces, code, passes


def simplify_qem_gpu(mesh: TriMesh | DeviceMesh, target_faces: int, placement: Placement = Placement.ON_EDGE,
                     rounds: int = ROUNDS) -> tuple[TriMesh | DeviceMesh, SimplifyReport]:
    """Simplify ``mesh`` on the kernel device to ``target_faces`` or one fewer (when reachable).

    mesh: TriMesh (host; cleaned with ``clean_mesh`` like the reference, then uploaded) or DeviceMesh
        (float32 [V, 3] / int32 [F, 3] on ``kernel_device()``; cleaned on the device by ``clean_device``).
    target_faces: the face budget, >= 4. placement: ON_EDGE (paper) or BOUNDED_OPTIMAL.
    rounds: winner rounds per pass (>= 1).
    Returns (geometry-only mesh of the input's type, ``meta["simplify_passes"]`` = passes run, and the
    SimplifyReport); ``reached=False`` with the reason
    when no further collapse keeps the mesh manifold, unflipped and the fixed vertices in place.
    """
    if int(target_faces) != target_faces or target_faces < 4:
        raise ConfigError(f"face budget {target_faces} is below 4", "use a face budget of 4 or more")
    if rounds < 1:
        raise ConfigError(f"{rounds} winner rounds per pass", "use at least 1 round")
    target = int(target_faces)
    t0 = time.perf_counter()
    host = isinstance(mesh, TriMesh)
    if host:
        validate_mesh(mesh)
    else:
        _validate_device(mesh)
    if target >= mesh.num_faces:
        out = mesh.copy() if host else DeviceMesh(mesh.vertices.clone(), mesh.faces.clone(), dict(mesh.meta))
        return out, SimplifyReport(mesh.num_faces, mesh.num_faces, target, True,
                                   "target >= input face count: mesh returned unchanged",
                                   time.perf_counter() - t0)
    dev = kernel_device()
    if host:
        clean = clean_mesh(mesh)
        verts = torch.from_numpy(np.ascontiguousarray(clean.vertices)).to(dev)
        faces = torch.from_numpy(np.ascontiguousarray(clean.faces, dtype=np.int32)).to(dev)
    else:
        verts, faces = clean_device(mesh.vertices.to(dev), mesh.faces.to(dev))
    pos = verts.to(torch.float64).contiguous()
    code = 0
    if target < faces.shape[0]:
        fixed = fixed_vertices_device(faces, pos.shape[0])
        faces, code, passes = _passes(pos, faces, fixed, target, _MODE[placement], rounds)
    else:
        passes = 0
    v_out, f_out = _compact(pos, faces)
    meta = dict(mesh.meta, simplify_passes=passes)
    out = TriMesh(v_out.cpu().numpy(), f_out.cpu().numpy(), meta=meta) if host else DeviceMesh(v_out, f_out,
                                                                                                 meta)
    return out, SimplifyReport(mesh.num_faces, int(f_out.shape[0]), target, code == 0,
                               _REASONS[code] if code else "", time.perf_counter() - t0)
