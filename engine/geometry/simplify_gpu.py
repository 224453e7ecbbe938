"""QEM edge-collapse simplification to an exact face budget on the GPU (paper 6.1), passes of parallel,
neighbourhood-disjoint collapses. Same maths, placement rules, fixed vertices, validity checks and report
as the serial reference ``engine.geometry.simplify.simplify_qem``; the passes apply its first guard level
(``qem_host.STRICT_GUARDS``: fallback placements at a, b or the midpoint where the QEM point fails, the
fold guard), so only a stalled mesh needs the relaxed levels; the kernels and the pass
(``CollapsePasses``: validated candidates, cost threshold, winner rounds, collapse, compaction) are in
``triton_kernels/qem_collapse.py``, whose docstring has the selection rule and layouts.

The loop here: a pass computes its winners (one host sync: their count n; on CUDA the pass's two
phases are replayed CUDA graphs from the second pass on, see ``CollapsePasses``); if n exceeds the collapses
still needed, ``(F - target + 1) // 2``, only the cheapest ``needed`` are applied, so the result has
``target`` or ``target - 1`` faces (every collapse removes exactly 2 faces, so the new face count is known
on the host). A pass with no winner means no valid candidate is left at the strict guards (the cheapest
valid candidate always wins): the passes have stalled, and the mesh -- small by then, a few thousand
faces -- is finished on the host by the reference's serial collapse through its relaxed guard levels
(``simplify.collapse_to_budget``; "Budget guarantee" in ``engine.geometry.simplify``), then uploaded
again. So the budget is kept exactly as on the CPU path: ``target`` or ``target - 1`` faces, or the same
one-line ConfigError naming the fewest faces reachable. (On the H100 the 512^3 bunny and bob stalled at
5592 and 5850 faces for a 5K budget before this finish existed.) Each pass removes ~10 % of the faces:
~35 passes from 1.6M faces to 20K (serial emulation of the kernels on the 512^3 bunny).

Writing: our own implementation (no code from CuMesh or other GPU simplifiers).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh, compact_vertices, first_of_groups, lexsort_rows
from engine.geometry.mesh import TriMesh, clean_mesh, validate_mesh
from engine.geometry.simplify import _MODE, Placement, SimplifyReport, collapse_to_budget
from engine.geometry.simplify_guards import budget_reason, unreachable_budget
from engine.geometry.simplify_topology import face_floor
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.qem_collapse import ROUNDS, CollapsePasses, fixed_vertices_device

MAX_PASSES = 1000      # safety cap (each pass collapses >= 1 edge, ~35 are typical); then the host finishes


def clean_device(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Device version of ``clean_mesh``: weld exactly coincident positions, drop faces with a repeated
    index, duplicate faces (same vertex set, first kept) and zero-area faces, compact the vertices.
    vertices float32 [V, 3], faces int32 [F, 3] -> the same, on the same device. Rows are grouped by
    stable 1-D sorts (radix sort on CUDA), not ``torch.unique(dim=0)`` (a comparison sort of rows)."""
    v = vertices + 0.0                                                    # -0.0 -> +0.0 (equal positions)
    order = lexsort_rows(v)
    first = first_of_groups(v[order])                                   # [V] bool, in sorted order
    welded = torch.empty(v.shape[0], dtype=torch.int64, device=v.device)
    welded[order] = torch.cumsum(first.to(torch.int64), 0) - 1           # vertex -> welded id
    uniq = v[order[first]]                                               # [V', 3], lexicographic order
    f = welded[faces.long()]                                             # [F, 3] int64
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    srt = torch.sort(f, dim=1).values
    order = lexsort_rows(srt)
    f = f[torch.sort(order[first_of_groups(srt[order])]).values]         # first of duplicates, in order
    p = uniq.to(torch.float64)
    cross = torch.linalg.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    f = f[torch.linalg.vector_norm(cross, dim=1) > 0.0]
    return compact_vertices(uniq, f)


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
            rounds: int, graphs: bool = True) -> tuple[torch.Tensor, bool, int, bool, str]:
    """Collapse passes in place on pos float64 [V, 3]; returns (faces int32 [F', 3], whether they stalled
    above the target, passes, whether CUDA graphs replayed the passes, why capture failed or "")."""
    state = CollapsePasses(pos, faces, fixed, mode, rounds, graphs=graphs)
    stalled, passes = False, 0
    while state.nf > target and passes < MAX_PASSES:
        passes += 1
        n = state.select()
        if n == 0:
            stalled = True
            break
        state.apply(n, (state.nf - target + 1) // 2)
    state.finish()
    return state.faces, stalled or state.nf > target, passes, state.graphs and passes >= 2, state.graph_error


def finish_on_host(pos: torch.Tensor, faces: torch.Tensor, fixed: torch.Tensor, target: int,
                   placement: Placement) -> tuple[torch.Tensor, int]:
    """The serial reference's guard levels on a stalled mesh: pos float64 [V, 3] (updated in place),
    faces int32 [F, 3], fixed bool [V] on the device. Returns (faces int32 [F', 3] on the device, the
    guard level that reached the target). Raises the reference's ConfigError when none does."""
    p = pos.cpu().numpy().copy()
    f = faces.cpu().numpy().astype(np.int32).copy()
    alive, level = collapse_to_budget(p, f, fixed.cpu().numpy(), target, placement)
    f = f[alive]
    if level < 0:
        raise unreachable_budget(target, f.shape[0], face_floor(f, p.shape[0]))
    pos.copy_(torch.from_numpy(p))
    return torch.from_numpy(f).to(faces.device), level


def simplify_qem_gpu(mesh: TriMesh | DeviceMesh, target_faces: int, placement: Placement = Placement.ON_EDGE,
                     rounds: int = ROUNDS, *, cuda_graphs: bool = True
                     ) -> tuple[TriMesh | DeviceMesh, SimplifyReport]:
    """Simplify ``mesh`` on the kernel device to ``target_faces`` or one fewer (when reachable).

    mesh: TriMesh (host; cleaned with ``clean_mesh`` like the reference, then uploaded) or DeviceMesh
        (float32 [V, 3] / int32 [F, 3] on ``kernel_device()``; cleaned on the device by ``clean_device``).
    target_faces: the face budget, >= 4. placement: ON_EDGE (paper) or BOUNDED_OPTIMAL.
    rounds: winner rounds per pass (>= 1). cuda_graphs: replay each pass's two phases as CUDA graphs
    (on CUDA; the same launches, the same result; off = eager launches, for benchmarks).
    Returns (geometry-only mesh of the input's type, ``meta["simplify_passes"]`` = passes run,
    ``meta["simplify_cuda_graphs"]`` = whether graphs replayed the passes, ``meta["simplify_stalled_at"]``
    = the face count where the passes stalled and the host's serial levels took over (0: they did not)
    and ``meta["simplify_host_s"]`` = the seconds of that host finish, and the
    SimplifyReport, whose ``reason`` says why the result has fewer faces than asked or which relaxed
    guard level the host finish needed). Raises ConfigError when no valid collapse sequence reaches the
    budget, like ``simplify_qem``.
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
                                   budget_reason(mesh.num_faces, mesh.num_faces, mesh.num_faces, target, 0),
                                   time.perf_counter() - t0)
    dev = kernel_device()
    if host:
        clean = clean_mesh(mesh)
        verts = torch.from_numpy(np.ascontiguousarray(clean.vertices)).to(dev)
        faces = torch.from_numpy(np.ascontiguousarray(clean.faces, dtype=np.int32)).to(dev)
    else:
        verts, faces = clean_device(mesh.vertices.to(dev), mesh.faces.to(dev))
    pos = verts.to(torch.float64).contiguous()
    n_clean = int(faces.shape[0])
    passes, graphed, graph_error, level, stalled_at, host_s = 0, False, "", 0, 0, 0.0
    if target < faces.shape[0]:
        fixed = fixed_vertices_device(faces, pos.shape[0])
        faces, stalled, passes, graphed, graph_error = _passes(pos, faces, fixed, target, _MODE[placement],
                                                               rounds, cuda_graphs)
        if stalled:
            stalled_at, t_host = int(faces.shape[0]), time.perf_counter()
            faces, level = finish_on_host(pos, faces, fixed, target, placement)
            host_s = time.perf_counter() - t_host
    v_out, f_out = compact_vertices(pos, faces)
    meta = dict(mesh.meta, simplify_passes=passes, simplify_cuda_graphs=graphed,
                simplify_graph_error=graph_error, simplify_stalled_at=stalled_at, simplify_host_s=host_s)
    out = TriMesh(v_out.cpu().numpy(), f_out.cpu().numpy(), meta=meta) if host else DeviceMesh(v_out, f_out,
                                                                                                 meta)
    faces_out = int(f_out.shape[0])
    return out, SimplifyReport(mesh.num_faces, faces_out, target, True,
                               budget_reason(mesh.num_faces, n_clean, faces_out, target, level),
                               time.perf_counter() - t0)
