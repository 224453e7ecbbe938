"""QEM edge-collapse simplification to an exact face budget: the CPU reference path (paper 6.1).

Maths (Garland & Heckbert 1997, with the paper's on-edge placement)
-------------------------------------------------------------------
Every face with unit normal n and offset d = -n.v0 contributes the plane quadric K = area * p p^T,
p = [n; d], to each of its three vertices: Q_v = sum K, a symmetric 4x4 stored as 10 float64s. The
squared-distance energy of a point x is E(x) = [x;1]^T Q [x;1] = x^T A x + 2 b.x + c with A the upper
3x3 block, b the upper-right column and c the corner.

Collapsing edge (v0, v1) merges Q = Q_v0 + Q_v1 and places the survivor at
  * interior-interior edge, ``Placement.ON_EDGE`` (the paper's, default): x_opt = solve(A, -b), projected
    onto the segment v(t) = (1-t) v0 + t v1, t = <x_opt - v0, v1 - v0> / |v1 - v0|^2 clamped to [0, 1];
    the midpoint (t = 1/2) when A is singular (|det A| <= 1e-10 * ||A||_F^3, e.g. a flat or cylindrical
    neighbourhood);
  * interior-interior edge, ``Placement.BOUNDED_OPTIMAL`` (our variant, measured better on real scans --
    see benchmarks/results/geometry_simplify_cpu.md): x_opt itself when A is regular and x_opt lies within
    one edge length of the edge midpoint (displacement stays bounded), else the ON_EDGE point;
  * edge with one fixed endpoint (boundary, non-manifold or inconsistently oriented neighbourhood): the
    fixed endpoint, which keeps its position;
  * edge with two fixed endpoints: never collapsed (boundary loops stay exactly as given; the paper's
    "keep boundary vertices fixed" option).
The cost is E(placement) -- the same placement function serves ranking and collapsing.

Algorithm: serial greedy. A binary min-heap of (cost, a, b, version_a, version_b) with lazy
invalidation: a collapse bumps the survivor's version and pushes its new edges; stale entries are
skipped when popped. A popped collapse is rejected when it would
  * break the link condition: the endpoints must share exactly the two opposite vertices of the two
    faces on the edge (an edge in != 2 faces is never collapsed), and the two opposite vertices must
    not both form a face with each endpoint (a tetrahedral ear would duplicate a face);
  * turn any surviving face around either endpoint by more than 60 degrees, or make it degenerate or a
    sliver: quality 4 sqrt(3) area / sum(edge^2) below 0.01 and lower than before. (A 90-degree limit left
    25-70 back-facing pixels over 24 views of 256 px on the bunny at 5K faces; 60 degrees left 0, with the
    same Chamfer distance.)
Every collapse removes exactly 2 faces, so the result has ``target`` or ``target - 1`` faces.
Rejected edges are retried in later passes (the heap is rebuilt from all live edges) until a pass makes
no collapse.

Budget guarantee (``--faces N`` never yields more than N faces). A collapse whose QEM point fails the
guards above may use the cheapest of its endpoints and midpoint that passes (``simplify_guards``: this
fallback is what keeps dense marching-cubes meshes from stalling: the 512^3 bunny and bob stopped at
5938 and 6212 faces for a 5000 budget without it, and far from MeshLab's quality); a fallback may not leave
more than 24 faces around the survivor (flat regions grew slow fans otherwise). A third strict guard
comes with it: no face may newly fold against an edge neighbour (their normals more than 120 degrees
apart), since the per-collapse turn limit alone lets a face turn over in steps (the fallback points made
that happen: a face folded flat showed its back on the 256^3 bunny and trellis_T at 5K faces). When the
passes still stall above the budget, the guards are relaxed, only then, level by level
(``GUARD_LEVELS``):
  1. faces may turn by up to 90 degrees, quality floor 1e-3, folds allowed;
  2. up to 120 degrees, quality floor 1e-5 (never a degenerate face).
The link condition and the fixed vertices are never relaxed: they keep the surface manifold, its
topology and its boundary loops. When every level stalls above the budget, ``simplify_qem`` raises a
one-line ``ConfigError`` before anything is written: it names the fewest faces reached, the ``--faces``
to use, and the floor the mesh's topology puts under any collapse (``simplify_topology.face_floor``: 4
faces for a closed sphere-like part, 14 for a torus, B - 2 for a disk bounded by B fixed edges, ...).
``SimplifyReport.reason`` says why a result has fewer faces than asked (input already within the
budget, cleaning dropped faces, the 2-faces-per-collapse parity) and which relaxed level was needed.
The GPU path (``simplify_gpu``) keeps the same guarantee; its parallel passes apply the first level
(fallback points, fold guard; ``qem_host.STRICT_GUARDS``), and when they stall above the budget, this
module's serial loop finishes the mesh on the host with all of the levels above (``collapse_to_budget``).

Limits: geometry only (attributes are dropped; re-bake them afterwards); serial, O(F log F); boundary
and non-manifold vertices never move, so a mesh with B boundary edges cannot go below ~B faces.
Code: the serial pieces the GPU collapse shares (quadrics, placement, link and flip checks, their numpy
references, ``Placement``) live in ``triton_kernels/qem_host.py`` (kernels never import from ``engine/``)
and are re-exported here; this module keeps the greedy heap loop and the launcher.
Writing: our own implementation of the textbook algorithm (Garland & Heckbert 1997); the on-edge
projection follows the paper's description of its CuMesh modification, no code was taken from CuMesh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.errors import ConfigError
from engine.geometry.mesh import TriMesh, clean_mesh, validate_mesh
from engine.geometry.simplify_guards import GUARD_LEVELS as GUARD_LEVELS  # re-exported
from engine.geometry.simplify_guards import budget_reason, unreachable_budget
from engine.geometry.simplify_topology import face_floor
from engine.geometry.simplify_topology import fixed_vertices as fixed_vertices  # re-exported
from triton_kernels.qem_host import _MODE as _MODE  # re-exported with the serial pieces below
from triton_kernels.qem_host import MAX_TURN_COS as MAX_TURN_COS
from triton_kernels.qem_host import MIN_QUALITY as MIN_QUALITY
from triton_kernels.qem_host import Placement as Placement
from triton_kernels.qem_host import _link_ok, _place, _quadrics, _valid_placement, corner_lists
from triton_kernels.qem_host import face_quadrics_ref as face_quadrics_ref
from triton_kernels.qem_host import placement_ref as placement_ref

MAX_PASSES = 100       # heap rebuilds per guard level (a pass with no collapse ends the level first)


@dataclass(frozen=True)
class SimplifyReport:
    """What ``simplify_qem`` did. ``reached`` is True for every returned result (an unreachable budget
    raises ConfigError); ``reason`` says why ``faces_out < target`` or which relaxed guards were needed."""

    faces_in: int
    faces_out: int
    target: int
    reached: bool
    reason: str
    seconds: float


# ----------------------------------------------------------------------------------------------------
# Kernel (numba, serial). Quadrics are stored as 10 floats: a00 a01 a02 a03 a11 a12 a13 a22 a23 a33.

@njit(cache=True)
def _gather(v, head, nxt, tail, alive, buf):
    """Alive faces around v into buf (unlinking dead corners); returns the count (may exceed buf.size)."""
    n = 0
    prev = -1
    c = head[v]
    while c != -1:
        nc = nxt[c]
        if alive[c // 3]:
            if n < buf.shape[0]:
                buf[n] = c // 3
            n += 1
            prev = c
        else:
            if prev == -1:
                head[v] = nc
            else:
                nxt[prev] = nc
        c = nc
    tail[v] = prev
    return n


@njit(cache=True)
def _heap_push(hc, hi, size, cost, a, b, sa, sb):
    j = size
    hc[j] = cost
    hi[j, 0], hi[j, 1], hi[j, 2], hi[j, 3] = a, b, sa, sb
    while j > 0:
        parent = (j - 1) >> 1
        if hc[parent] <= hc[j]:
            break
        hc[parent], hc[j] = hc[j], hc[parent]
        for k in range(4):
            hi[parent, k], hi[j, k] = hi[j, k], hi[parent, k]
        j = parent
    return size + 1


@njit(cache=True)
def _heap_pop(hc, hi, size, top):
    """Remove the minimum; its (a, b, sa, sb) go to top[4]. Returns (cost, new size)."""
    cost = hc[0]
    for k in range(4):
        top[k] = hi[0, k]
    size -= 1
    hc[0] = hc[size]
    for k in range(4):
        hi[0, k] = hi[size, k]
    j = 0
    while True:
        left = 2 * j + 1
        if left >= size:
            break
        m = left
        if left + 1 < size and hc[left + 1] < hc[left]:
            m = left + 1
        if hc[j] <= hc[m]:
            break
        hc[m], hc[j] = hc[j], hc[m]
        for k in range(4):
            hi[m, k], hi[j, k] = hi[j, k], hi[m, k]
        j = m
    return cost, size


@njit(cache=True)
def _grow(hc, hi, size):
    hc2 = np.empty(2 * hc.shape[0])
    hi2 = np.empty((2 * hc.shape[0], 4), dtype=np.int32)
    hc2[:size] = hc[:size]
    hi2[:size] = hi[:size]
    return hc2, hi2


@njit(cache=True)
def _simplify_kernel(pos, faces, fixed, target, max_passes, mode, levels):
    """Greedy QEM collapse, in place on pos (float64 [V, 3]) and faces (int32 [F, 3]).

    fixed: bool [V], vertices that never move. levels: float64 [L, 5] guard levels
    (``simplify_guards.GUARD_LEVELS``), tried in order, each until its passes stall. Returns (alive bool [F],
    the level that reached the target, or -1 when every level stalled above it).
    """
    nv, nf = pos.shape[0], faces.shape[0]
    qv = _quadrics(pos, faces)
    alive = np.ones(nf, dtype=np.bool_)
    head, nxt, tail = corner_lists(faces, nv)
    dead = np.zeros(nv, dtype=np.bool_)
    ver = np.zeros(nv, dtype=np.int32)
    mark = np.zeros(nv, dtype=np.int64)
    mark2 = np.zeros(nv, dtype=np.int64)
    stamp = 0
    fa = np.empty(64, dtype=np.int64)
    fb = np.empty(64, dtype=np.int64)
    ring = np.empty(128, dtype=np.int64)                  # fold-guard scratch (simplify_guards._ring)
    nrm = np.empty((128, 7))
    hc = np.empty(3 * nf + 16)
    hi = np.empty((3 * nf + 16, 4), dtype=np.int32)
    top = np.empty(4, dtype=np.int64)
    p = np.empty(3)
    n_alive = nf
    for level in range(levels.shape[0]):
        for _ in range(max_passes):
            if n_alive <= target:
                return alive, level
            size = 0
            for f in range(nf):
                if not alive[f]:
                    continue
                for k in range(3):
                    a, b = faces[f, k], faces[f, (k + 1) % 3]
                    if a < b:
                        cost = _place(pos, qv, fixed, a, b, p, mode)
                        if cost >= 0.0:
                            size = _heap_push(hc, hi, size, cost, a, b, ver[a], ver[b])
            collapses = 0
            while size > 0 and n_alive > target:
                cost, size = _heap_pop(hc, hi, size, top)
                a, b = top[0], top[1]
                if dead[a] or dead[b] or ver[a] != top[2] or ver[b] != top[3]:
                    continue                                     # stale entry
                na = _gather(a, head, nxt, tail, alive, fa)
                if na > fa.shape[0]:
                    fa = np.empty(2 * na, dtype=np.int64)
                    na = _gather(a, head, nxt, tail, alive, fa)
                nb = _gather(b, head, nxt, tail, alive, fb)
                if nb > fb.shape[0]:
                    fb = np.empty(2 * nb, dtype=np.int64)
                    nb = _gather(b, head, nxt, tail, alive, fb)
                stamp += 1
                if not _link_ok(faces, fa, na, fb, nb, a, b, mark, mark2, stamp):
                    continue
                if na + nb > ring.shape[0]:
                    ring = np.empty(2 * (na + nb), dtype=np.int64)
                    nrm = np.empty((2 * (na + nb), 7))
                alt, _ = _valid_placement(pos, qv, fixed, faces, fa, na, fb, nb, a, b, p, mode,
                                          levels[level], head, nxt, alive, ring, nrm)
                if alt < 0.0:
                    continue
                if alt > cost * (1.0 + 1e-9) + 1e-300:          # a costlier fallback point: back in order
                    size = _heap_push(hc, hi, size, alt, a, b, ver[a], ver[b])
                    continue
                s, u = (b, a) if fixed[b] else (a, b)            # survivor s, removed u
                fu, nu = (fa, na) if u == a else (fb, nb)
                for i in range(nu):
                    f = fu[i]
                    if faces[f, 0] == s or faces[f, 1] == s or faces[f, 2] == s:
                        alive[f] = False
                        n_alive -= 1
                    else:
                        for k in range(3):
                            if faces[f, k] == u:
                                faces[f, k] = s
                if head[u] != -1:                                 # splice u's corner list onto s's
                    if head[s] == -1:
                        head[s] = head[u]
                    else:
                        nxt[tail[s]] = head[u]
                    tail[s] = tail[u]
                head[u] = -1
                dead[u] = True
                qv[s] += qv[u]
                pos[s, 0], pos[s, 1], pos[s, 2] = p[0], p[1], p[2]
                ver[s] += 1
                ver[u] += 1
                collapses += 1
                ns = _gather(s, head, nxt, tail, alive, fa)
                if ns > fa.shape[0]:
                    fa = np.empty(2 * ns, dtype=np.int64)
                    ns = _gather(s, head, nxt, tail, alive, fa)
                while size + 2 * ns + 2 > hc.shape[0]:
                    hc, hi = _grow(hc, hi, size)
                stamp += 1
                for i in range(ns):
                    for k in range(3):
                        w = faces[fa[i], k]
                        if w != s and mark[w] != stamp:
                            mark[w] = stamp
                            cost = _place(pos, qv, fixed, s, w, p, mode)
                            if cost >= 0.0:
                                size = _heap_push(hc, hi, size, cost, s, w, ver[s], ver[w])
            if collapses == 0:
                break
        if n_alive <= target:
            return alive, level
    return alive, -1


# ----------------------------------------------------------------------------------------------------
# Public launcher.

def collapse_to_budget(pos: np.ndarray, faces: np.ndarray, fixed: np.ndarray, target: int,
                       placement: Placement, first_level: int = 0) -> tuple[np.ndarray, int]:
    """Run the serial collapse in place on pos float64 [V, 3] / faces int32 [F, 3] (fixed bool [V]),
    guard levels ``first_level`` onwards. Returns (alive bool [F], level that reached the target or -1)."""
    alive, level = _simplify_kernel(pos, faces, fixed, target, MAX_PASSES, _MODE[placement],
                                    GUARD_LEVELS[first_level:])
    return alive, (level + first_level if level >= 0 else -1)


def simplify_qem(mesh: TriMesh, target_faces: int,
                 placement: Placement = Placement.ON_EDGE) -> tuple[TriMesh, SimplifyReport]:
    """Simplify ``mesh`` to ``target_faces`` faces or one fewer; never more (see "Budget guarantee").

    mesh: TriMesh, float32 [V, 3] positions, int32 [F, 3] CCW faces. Coincident positions are welded and
        degenerate/duplicate faces dropped first (``clean_mesh``); attributes are not carried.
    target_faces: the face budget, >= 4.
    placement: interior-edge placement rule; the paper's ON_EDGE by default.
    Returns (compacted geometry-only TriMesh, SimplifyReport; its ``reason`` says why the result has
    fewer faces than asked or needed relaxed guards). When ``target_faces`` >= the input's face count the
    input is returned unchanged (a copy). Raises ConfigError when no valid collapse sequence reaches the
    budget (it names the fewest faces reached).
    """
    validate_mesh(mesh)
    if int(target_faces) != target_faces or target_faces < 4:
        raise ConfigError(f"face budget {target_faces} is below 4", "use a face budget of 4 or more")
    target = int(target_faces)
    t0 = time.perf_counter()
    if target >= mesh.num_faces:
        return mesh.copy(), SimplifyReport(mesh.num_faces, mesh.num_faces, target, True,
                                           budget_reason(mesh.num_faces, mesh.num_faces, mesh.num_faces,
                                                         target, 0),
                                           time.perf_counter() - t0)
    clean = clean_mesh(mesh)
    pos = clean.vertices.astype(np.float64)
    faces = clean.faces.copy()
    level = 0
    if target < clean.num_faces:
        alive, level = collapse_to_budget(pos, faces, fixed_vertices(faces, clean.num_vertices), target,
                                          placement)
        faces = faces[alive]
        if level < 0:
            raise unreachable_budget(target, faces.shape[0], face_floor(faces, clean.num_vertices))
    used, remap = np.unique(faces, return_inverse=True)
    out = TriMesh(pos[used].astype(np.float32), remap.reshape(-1, 3).astype(np.int32), meta=dict(mesh.meta))
    reason = budget_reason(mesh.num_faces, clean.num_faces, out.num_faces, target, level)
    return out, SimplifyReport(mesh.num_faces, out.num_faces, target, True, reason, time.perf_counter() - t0)
