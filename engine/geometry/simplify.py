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
Every collapse removes exactly 2 faces, so the result has ``target`` or ``target - 1`` faces when the
budget is reachable. Rejected edges are retried in later passes (the heap is rebuilt from all live edges)
until a pass makes no collapse; then ``SimplifyReport.reached`` is False with the reason.

Limits: geometry only (attributes are dropped; re-bake them afterwards); serial, O(F log F); boundary
and non-manifold vertices never move, so a mesh with B boundary edges cannot go far below ~B faces.
Writing: our own implementation of the textbook algorithm (Garland & Heckbert 1997); the on-edge
projection follows the paper's description of its CuMesh modification, no code was taken from CuMesh.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.errors import ConfigError
from engine.geometry.mesh import TriMesh, clean_mesh, validate_mesh

MAX_TURN_COS = 0.5      # reject a collapse that turns a surviving face normal by more than 60 degrees
MIN_QUALITY = 0.01      # ... or leaves a face with quality below this (unless it was already worse)

_REASONS = {
    0: "",
    1: "no further collapse keeps the mesh manifold, unflipped and the fixed (boundary/non-manifold) "
       "vertices in place",
}


class Placement(enum.Enum):
    """Where an interior edge's survivor goes (see the module docstring)."""

    ON_EDGE = "on_edge"                    # paper 6.1: QEM optimum projected onto the edge, clamped
    BOUNDED_OPTIMAL = "bounded_optimal"    # QEM optimum when within one edge length of the midpoint


_MODE = {Placement.ON_EDGE: 0, Placement.BOUNDED_OPTIMAL: 1}


@dataclass(frozen=True)
class SimplifyReport:
    """What ``simplify_qem`` did; ``reached`` is False when the budget was not met, ``reason`` says why."""

    faces_in: int
    faces_out: int
    target: int
    reached: bool
    reason: str
    seconds: float


# ----------------------------------------------------------------------------------------------------
# Reference pieces in numpy (quadrics and placement), used by the tests to check the kernel's maths.

def face_quadrics_ref(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex area-weighted plane quadrics, float64 [V, 4, 4] (numpy reference of the kernel's)."""
    v = vertices.astype(np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    dbl_area = np.linalg.norm(n, axis=1)
    n = n / np.maximum(dbl_area, 1e-300)[:, None]
    p = np.concatenate([n, -(n * v[faces[:, 0]]).sum(1, keepdims=True)], axis=1)  # [F, 4]
    k = 0.5 * dbl_area[:, None, None] * p[:, :, None] * p[:, None, :]            # [F, 4, 4]
    q = np.zeros((v.shape[0], 4, 4))
    for i in range(3):
        np.add.at(q, faces[:, i], k)
    return q


def placement_ref(q: np.ndarray, v0: np.ndarray, v1: np.ndarray,
                  placement: Placement = Placement.ON_EDGE) -> tuple[np.ndarray, float]:
    """Placement of an interior edge's survivor from the merged quadric q [4, 4] and the endpoints
    v0, v1 [3] (float64): (position [3], cost E(position))."""
    a, b = q[:3, :3], q[:3, 3]
    e = v1 - v0
    if abs(np.linalg.det(a)) <= 1e-10 * np.linalg.norm(a) ** 3:
        p = v0 + 0.5 * e
    else:
        x = np.linalg.solve(a, -b)
        t = float(np.clip(np.dot(x - v0, e) / max(np.dot(e, e), 1e-300), 0.0, 1.0))
        p = v0 + t * e
        if placement is Placement.BOUNDED_OPTIMAL and np.linalg.norm(x - (v0 + 0.5 * e)) <= np.linalg.norm(e):
            p = x
    h = np.append(p, 1.0)
    return p, max(float(h @ q @ h), 0.0)


# ----------------------------------------------------------------------------------------------------
# Kernel (numba, serial). Quadrics are stored as 10 floats: a00 a01 a02 a03 a11 a12 a13 a22 a23 a33.

@njit(cache=True)
def _quadrics(pos, faces):
    q = np.zeros((pos.shape[0], 10))
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        ux, uy, uz = pos[i1, 0] - pos[i0, 0], pos[i1, 1] - pos[i0, 1], pos[i1, 2] - pos[i0, 2]
        wx, wy, wz = pos[i2, 0] - pos[i0, 0], pos[i2, 1] - pos[i0, 1], pos[i2, 2] - pos[i0, 2]
        nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
        dbl = np.sqrt(nx * nx + ny * ny + nz * nz)
        if dbl <= 1e-300:
            continue
        nx, ny, nz = nx / dbl, ny / dbl, nz / dbl
        d = -(nx * pos[i0, 0] + ny * pos[i0, 1] + nz * pos[i0, 2])
        w = 0.5 * dbl
        k = (nx * nx, nx * ny, nx * nz, nx * d, ny * ny, ny * nz, ny * d, nz * nz, nz * d, d * d)
        for c in range(3):
            vi = faces[f, c]
            for j in range(10):
                q[vi, j] += w * k[j]
    return q


@njit(cache=True)
def _energy(q, x, y, z):
    return (q[0] * x * x + 2 * q[1] * x * y + 2 * q[2] * x * z + 2 * q[3] * x + q[4] * y * y
            + 2 * q[5] * y * z + 2 * q[6] * y + q[7] * z * z + 2 * q[8] * z + q[9])


@njit(cache=True)
def _place(pos, qv, fixed, a, b, out, mode):
    """Placement (written into out[3]) and cost of collapsing edge (a, b); -1 cost if not collapsible.
    mode: 0 = Placement.ON_EDGE, 1 = Placement.BOUNDED_OPTIMAL."""
    q = qv[a] + qv[b]
    if fixed[a] and fixed[b]:
        return -1.0
    if fixed[a] or fixed[b]:
        s = a if fixed[a] else b
        out[0], out[1], out[2] = pos[s, 0], pos[s, 1], pos[s, 2]
    else:
        a00, a01, a02, a11, a12, a22 = q[0], q[1], q[2], q[4], q[5], q[7]
        c00 = a11 * a22 - a12 * a12
        c01 = a02 * a12 - a01 * a22
        c02 = a01 * a12 - a02 * a11
        det = a00 * c00 + a01 * c01 + a02 * c02
        norm = np.sqrt(a00 * a00 + a11 * a11 + a22 * a22 + 2 * (a01 * a01 + a02 * a02 + a12 * a12))
        ex, ey, ez = pos[b, 0] - pos[a, 0], pos[b, 1] - pos[a, 1], pos[b, 2] - pos[a, 2]
        t = 0.5
        if abs(det) > 1e-10 * norm * norm * norm:
            c11 = a00 * a22 - a02 * a02
            c12 = a01 * a02 - a00 * a12
            c22 = a00 * a11 - a01 * a01
            bx, by, bz = -q[3], -q[6], -q[8]                       # solve A x = -b by the adjugate
            x = (c00 * bx + c01 * by + c02 * bz) / det
            y = (c01 * bx + c11 * by + c12 * bz) / det
            z = (c02 * bx + c12 * by + c22 * bz) / det
            ee = ex * ex + ey * ey + ez * ez
            if ee > 0.0:
                t = ((x - pos[a, 0]) * ex + (y - pos[a, 1]) * ey + (z - pos[a, 2]) * ez) / ee
                t = min(max(t, 0.0), 1.0)
            if mode == 1:
                mx, my, mz = pos[a, 0] + 0.5 * ex - x, pos[a, 1] + 0.5 * ey - y, pos[a, 2] + 0.5 * ez - z
                if mx * mx + my * my + mz * mz <= ee:
                    out[0], out[1], out[2] = x, y, z
                    return max(_energy(q, x, y, z), 0.0)
        out[0], out[1], out[2] = pos[a, 0] + t * ex, pos[a, 1] + t * ey, pos[a, 2] + t * ez
    return max(_energy(q, out[0], out[1], out[2]), 0.0)


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
def _tri_normal_quality(p0, p1, p2):
    ux, uy, uz = p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]
    wx, wy, wz = p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    dbl = np.sqrt(nx * nx + ny * ny + nz * nz)
    sx, sy, sz = p2[0] - p1[0], p2[1] - p1[1], p2[2] - p1[2]
    ssum = ux * ux + uy * uy + uz * uz + wx * wx + wy * wy + wz * wz + sx * sx + sy * sy + sz * sz
    quality = 2.0 * np.sqrt(3.0) * dbl / ssum if ssum > 0.0 else 0.0    # 4 sqrt3 area / sum l^2
    inv = 1.0 / dbl if dbl > 0.0 else 0.0
    return nx * inv, ny * inv, nz * inv, quality


@njit(cache=True)
def _faces_ok(pos, faces, flist, nf, a, b, p):
    """Flip / sliver check of the faces in flist[:nf] around a (or b) that survive collapse (a, b) -> p."""
    q0 = np.empty(3)
    q1 = np.empty(3)
    q2 = np.empty(3)
    for i in range(nf):
        f = flist[i]
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        has_a = i0 == a or i1 == a or i2 == a
        has_b = i0 == b or i1 == b or i2 == b
        if has_a and has_b:
            continue                                        # removed by the collapse
        on0, on1, on2 = pos[i0], pos[i1], pos[i2]
        n0x, n0y, n0z, qual0 = _tri_normal_quality(on0, on1, on2)
        for k in range(3):
            q0[k], q1[k], q2[k] = on0[k], on1[k], on2[k]
        if i0 == a or i0 == b:
            q0[:] = p
        if i1 == a or i1 == b:
            q1[:] = p
        if i2 == a or i2 == b:
            q2[:] = p
        n1x, n1y, n1z, qual1 = _tri_normal_quality(q0, q1, q2)
        if n0x * n1x + n0y * n1y + n0z * n1z <= MAX_TURN_COS:
            return False
        if qual1 < MIN_QUALITY and qual1 < qual0:
            return False
    return True


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
def _link_ok(faces, fa, na, fb, nb, a, b, mark, mark2, stamp):
    """Link condition of edge (a, b): exactly 2 faces on it, sharing exactly their 2 opposite vertices."""
    for i in range(na):
        for k in range(3):
            mark[faces[fa[i], k]] = stamp
    shared = 0
    common = 0
    o0 = -1
    o1 = -1
    for i in range(nb):
        f = fb[i]
        has_a = faces[f, 0] == a or faces[f, 1] == a or faces[f, 2] == a
        for k in range(3):
            w = faces[f, k]
            if w == a or w == b:
                continue
            if has_a:
                if shared == 0:
                    o0 = w
                else:
                    o1 = w
            if mark[w] == stamp and mark2[w] != stamp:
                mark2[w] = stamp
                common += 1
        if has_a:
            shared += 1
    if shared != 2 or common != 2 or o0 == o1:
        return False
    # tetrahedral ear: faces (a, o0, o1) and (b, o0, o1) both exist -> collapse would duplicate a face
    ear_a = False
    for i in range(na):
        f = fa[i]
        if (faces[f, 0] == o0 or faces[f, 1] == o0 or faces[f, 2] == o0) and \
                (faces[f, 0] == o1 or faces[f, 1] == o1 or faces[f, 2] == o1):
            ear_a = True
    if ear_a:
        for i in range(nb):
            f = fb[i]
            if (faces[f, 0] == o0 or faces[f, 1] == o0 or faces[f, 2] == o0) and \
                    (faces[f, 0] == o1 or faces[f, 1] == o1 or faces[f, 2] == o1):
                return False
    return True


@njit(cache=True)
def _grow(hc, hi, size):
    hc2 = np.empty(2 * hc.shape[0])
    hi2 = np.empty((2 * hc.shape[0], 4), dtype=np.int32)
    hc2[:size] = hc[:size]
    hi2[:size] = hi[:size]
    return hc2, hi2


@njit(cache=True)
def _simplify_kernel(pos, faces, fixed, target, max_passes, mode):
    """Greedy QEM collapse, in place on pos (float64 [V, 3]) and faces (int32 [F, 3]).

    fixed: bool [V], vertices that never move. Returns (alive bool [F], reason code: 0 reached, 1 stuck).
    """
    nv, nf = pos.shape[0], faces.shape[0]
    qv = _quadrics(pos, faces)
    alive = np.ones(nf, dtype=np.bool_)
    head = np.full(nv, -1, dtype=np.int64)
    tail = np.full(nv, -1, dtype=np.int64)
    nxt = np.full(3 * nf, -1, dtype=np.int64)             # corner c = 3 f + k -> next corner of that vertex
    for c in range(3 * nf):
        v = faces[c // 3, c % 3]
        if head[v] == -1:
            head[v] = c
        else:
            nxt[tail[v]] = c
        tail[v] = c
    dead = np.zeros(nv, dtype=np.bool_)
    ver = np.zeros(nv, dtype=np.int32)
    mark = np.zeros(nv, dtype=np.int64)
    mark2 = np.zeros(nv, dtype=np.int64)
    stamp = 0
    fa = np.empty(64, dtype=np.int64)
    fb = np.empty(64, dtype=np.int64)
    hc = np.empty(3 * nf + 16)
    hi = np.empty((3 * nf + 16, 4), dtype=np.int32)
    top = np.empty(4, dtype=np.int64)
    p = np.empty(3)
    n_alive = nf
    for _ in range(max_passes):
        if n_alive <= target:
            break
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
            _place(pos, qv, fixed, a, b, p, mode)
            if not (_faces_ok(pos, faces, fa, na, a, b, p) and _faces_ok(pos, faces, fb, nb, a, b, p)):
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
    return alive, 0 if n_alive <= target else 1


@njit(cache=True)
def _nonmanifold_fans(faces, nv):
    """bool [V]: vertices whose faces form more than one edge-connected fan (bow-ties)."""
    deg = np.zeros(nv + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            deg[faces[f, k] + 1] += 1
    start = np.cumsum(deg)
    fill = start[:-1].copy()
    vf = np.empty(3 * faces.shape[0], dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            v = faces[f, k]
            vf[fill[v]] = f
            fill[v] += 1
    bad = np.zeros(nv, dtype=np.bool_)
    seen = np.zeros(faces.shape[0], dtype=np.bool_)
    for v in range(nv):
        lo, hi = start[v], start[v + 1]
        if hi - lo < 2:
            continue
        seen[vf[lo]] = True
        reached, changed = 1, True
        while changed:
            changed = False
            for i in range(lo, hi):
                g = vf[i]
                if seen[g]:
                    continue
                for j in range(lo, hi):
                    h = vf[j]
                    if not seen[h]:
                        continue
                    shared = 0
                    for k in range(3):
                        w = faces[g, k]
                        if w != v and (faces[h, 0] == w or faces[h, 1] == w or faces[h, 2] == w):
                            shared += 1
                    if shared > 0:
                        seen[g] = True
                        reached += 1
                        changed = True
                        break
        bad[v] = reached != hi - lo
        for i in range(lo, hi):
            seen[vf[i]] = False
    return bad


# ----------------------------------------------------------------------------------------------------
# Public launcher.

def fixed_vertices(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """bool [V]: vertices that must not move -- on a boundary edge (1 face), a non-manifold edge (> 2
    faces), an inconsistently oriented edge (both faces traverse it the same way) or a bow-tie vertex."""
    f = np.asarray(faces, dtype=np.int64)
    d = np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2)   # [3F, 2] directed edges
    lo, hi = d.min(axis=1), d.max(axis=1)
    keys, inv, counts = np.unique(lo * num_vertices + hi, return_inverse=True, return_counts=True)
    forward = np.bincount(inv.reshape(-1), weights=(d[:, 0] < d[:, 1]), minlength=keys.size)
    bad = (counts != 2) | (forward != 1)
    fixed = np.zeros(num_vertices, dtype=bool)
    fixed[keys[bad] // num_vertices] = True
    fixed[keys[bad] % num_vertices] = True
    return fixed | _nonmanifold_fans(f.astype(np.int32), num_vertices)


def simplify_qem(mesh: TriMesh, target_faces: int,
                 placement: Placement = Placement.ON_EDGE) -> tuple[TriMesh, SimplifyReport]:
    """Simplify ``mesh`` to at most ``target_faces`` faces (``target_faces`` or one fewer when reachable).

    mesh: TriMesh, float32 [V, 3] positions, int32 [F, 3] CCW faces. Coincident positions are welded and
        degenerate/duplicate faces dropped first (``clean_mesh``); attributes are not carried.
    target_faces: the face budget, >= 4.
    placement: interior-edge placement rule; the paper's ON_EDGE by default.
    Returns (compacted geometry-only TriMesh, SimplifyReport). When the budget cannot be met without
    breaking manifoldness, flipping faces or moving fixed (boundary / non-manifold) vertices, the best
    reachable mesh is returned with ``reached=False`` and the reason -- the caller must report it.
    When ``target_faces`` >= the input's face count the input is returned unchanged (a copy).
    """
    validate_mesh(mesh)
    if int(target_faces) != target_faces or target_faces < 4:
        raise ConfigError(f"face budget {target_faces} is below 4", "use a face budget of 4 or more")
    target = int(target_faces)
    t0 = time.perf_counter()
    if target >= mesh.num_faces:
        return mesh.copy(), SimplifyReport(mesh.num_faces, mesh.num_faces, target, True,
                                           "target >= input face count: mesh returned unchanged",
                                           time.perf_counter() - t0)
    clean = clean_mesh(mesh)
    pos = clean.vertices.astype(np.float64)
    faces = clean.faces.copy()
    if target < clean.num_faces:
        fixed = fixed_vertices(faces, clean.num_vertices)
        alive, code = _simplify_kernel(pos, faces, fixed, target, 100, _MODE[placement])
        faces = faces[alive]
    else:
        code = 0
    used, remap = np.unique(faces, return_inverse=True)
    out = TriMesh(pos[used].astype(np.float32), remap.reshape(-1, 3).astype(np.int32), meta=dict(mesh.meta))
    reason = _REASONS[code] if code else ""
    return out, SimplifyReport(mesh.num_faces, out.num_faces, target, code == 0, reason,
                               time.perf_counter() - t0)
