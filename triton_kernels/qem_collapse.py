"""Parallel QEM edge collapse (paper 6.1 on the GPU): numba-cuda kernels for quadrics, edge costs, the
neighbourhood-disjoint winner selection, validity checks, the collapse itself, and the one-time
fixed-vertex (bow-tie) walk. The orchestration (passes, budget, compaction) lives in
``engine.geometry.simplify_gpu``; the maths is the serial reference's (``engine.geometry.simplify``).

Maths
-----
Quadrics: each face with unit normal n, offset d = -n.v0 and area A adds A [n;d][n;d]^T to its three
vertices; stored as 10 float64s per vertex (a00 a01 a02 a03 a11 a12 a13 a22 a23 a33), accumulated with
float64 atomics (float64 as in the reference; float32 accumulation was not measured). Placement and
cost of an edge: ``_place_dev`` is the serial ``_place`` line by line (ON_EDGE = 0, BOUNDED_OPTIMAL =
1; one fixed endpoint -> that endpoint; both fixed -> not a candidate, cost -1).

Layouts
-------
positions float64 [V, 3]; quadrics float64 [V, 10]; faces int32 [F, 3] (CCW); half-edge h = 3 f + k is
faces[f, k] -> faces[f, (k + 1) % 3]. An undirected candidate edge is the half-edge with a < b: on an
edge with a non-fixed endpoint the mesh is manifold and consistently oriented, so exactly one of its two
half-edges has a < b (edges in != 2 faces or inconsistently oriented fix both endpoints). Edge keys are
int64: (float32 bits of the cost) << 32 | h -- non-negative float32 bits order like the floats, so the
minimum key is the cheapest edge with ties broken by id. INT64_MAX = no candidate.
Vertex -> face adjacency: CSR (offsets int32 [V + 1], face ids int32 [3F]) filled by ``_csr_fill``.

Winner selection (one round; a pass runs a few rounds, then applies)
--------------------------------------------------------------------
vmin[v] = min key of the candidate edges at v (atomicMin); fmin[f] = min over f's vertices; v2[v] = min
fmin over the faces at v (atomicMin). Edge (a, b) wins iff v2[a] == v2[b] == key, i.e. it holds the
minimum on every face around both endpoints: two winners never share such a face, so their checks and
collapses touch disjoint faces and vertices. A winner is checked (link condition, 60-degree normal
turn, sliver quality -- the reference's rules) and leaves the candidates; an accepted one locks every
vertex of every face around its endpoints (vlock), and candidates touching a locked vertex leave the
pass, so later rounds pick only collapses whose faces are disjoint from it (and locked edges no longer
shadow their neighbours).

Limits and floor
----------------
F < 2^31 / 3 (half-edge ids in 32 bits); degree is unbounded (checks iterate the CSR). Per round the
kernels read the faces (12 B/face) and keys (24 B/face) and do atomics on 3 int64 per half-edge: the floor
of one pass at F faces is ~150 B/face of traffic, i.e. ~0.05 ms at 1M faces on an H100 (3 TB/s); launch
latency (~10 launches of ~5 us per round) dominates below ~200K faces.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from engine.geometry.simplify import MAX_TURN_COS, MIN_QUALITY, face_quadrics_ref, placement_ref
from triton_kernels.numba_cuda import cuda_module, launch, view

cuda = cuda_module()

MAX_KEY = np.int64(np.iinfo(np.int64).max)
REFERENCES = (face_quadrics_ref, placement_ref)      # the numpy references the parity tests use


# ------------------------------------------------------------------------------------------ device maths
@cuda.jit(device=True)
def _energy(q, v, x, y, z):
    """[x;1]^T Q [x;1] for the 10-float quadric q[v, :]."""
    return (q[v, 0] * x * x + 2.0 * q[v, 1] * x * y + 2.0 * q[v, 2] * x * z + 2.0 * q[v, 3] * x
            + q[v, 4] * y * y + 2.0 * q[v, 5] * y * z + 2.0 * q[v, 6] * y + q[v, 7] * z * z
            + 2.0 * q[v, 8] * z + q[v, 9])


@cuda.jit(device=True)
def _place_dev(pos, q, fixed, a, b, mode, out):
    """Placement of collapse (a, b) into out[3] and its cost; -1 when both endpoints are fixed."""
    if fixed[a] and fixed[b]:
        return -1.0
    if fixed[a] or fixed[b]:
        s = a if fixed[a] else b
        out[0] = pos[s, 0]
        out[1] = pos[s, 1]
        out[2] = pos[s, 2]
    else:
        a00 = q[a, 0] + q[b, 0]
        a01 = q[a, 1] + q[b, 1]
        a02 = q[a, 2] + q[b, 2]
        a11 = q[a, 4] + q[b, 4]
        a12 = q[a, 5] + q[b, 5]
        a22 = q[a, 7] + q[b, 7]
        c00 = a11 * a22 - a12 * a12
        c01 = a02 * a12 - a01 * a22
        c02 = a01 * a12 - a02 * a11
        det = a00 * c00 + a01 * c01 + a02 * c02
        norm = math.sqrt(a00 * a00 + a11 * a11 + a22 * a22 + 2.0 * (a01 * a01 + a02 * a02 + a12 * a12))
        ex = pos[b, 0] - pos[a, 0]
        ey = pos[b, 1] - pos[a, 1]
        ez = pos[b, 2] - pos[a, 2]
        t = 0.5
        done = False
        if abs(det) > 1e-10 * norm * norm * norm:
            c11 = a00 * a22 - a02 * a02
            c12 = a01 * a02 - a00 * a12
            c22 = a00 * a11 - a01 * a01
            bx = -(q[a, 3] + q[b, 3])
            by = -(q[a, 6] + q[b, 6])
            bz = -(q[a, 8] + q[b, 8])
            x = (c00 * bx + c01 * by + c02 * bz) / det
            y = (c01 * bx + c11 * by + c12 * bz) / det
            z = (c02 * bx + c12 * by + c22 * bz) / det
            ee = ex * ex + ey * ey + ez * ez
            if ee > 0.0:
                t = ((x - pos[a, 0]) * ex + (y - pos[a, 1]) * ey + (z - pos[a, 2]) * ez) / ee
                t = min(max(t, 0.0), 1.0)
            if mode == 1:
                mx = pos[a, 0] + 0.5 * ex - x
                my = pos[a, 1] + 0.5 * ey - y
                mz = pos[a, 2] + 0.5 * ez - z
                if mx * mx + my * my + mz * mz <= ee:
                    out[0] = x
                    out[1] = y
                    out[2] = z
                    done = True
        if not done:
            out[0] = pos[a, 0] + t * ex
            out[1] = pos[a, 1] + t * ey
            out[2] = pos[a, 2] + t * ez
    e = _energy(q, a, out[0], out[1], out[2]) + _energy(q, b, out[0], out[1], out[2])
    return max(e, 0.0)


@cuda.jit(device=True)
def _normal_quality(x0, y0, z0, x1, y1, z1, x2, y2, z2, out):
    """Unit normal into out[0:3] and quality 4 sqrt3 area / sum l^2 into out[3] (reference's rule)."""
    ux, uy, uz = x1 - x0, y1 - y0, z1 - z0
    wx, wy, wz = x2 - x0, y2 - y0, z2 - z0
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    dbl = math.sqrt(nx * nx + ny * ny + nz * nz)
    sx, sy, sz = x2 - x1, y2 - y1, z2 - z1
    ssum = ux * ux + uy * uy + uz * uz + wx * wx + wy * wy + wz * wz + sx * sx + sy * sy + sz * sz
    out[3] = 2.0 * math.sqrt(3.0) * dbl / ssum if ssum > 0.0 else 0.0
    inv = 1.0 / dbl if dbl > 0.0 else 0.0
    out[0] = nx * inv
    out[1] = ny * inv
    out[2] = nz * inv


@cuda.jit(device=True)
def _has(faces, f, v):
    return faces[f, 0] == v or faces[f, 1] == v or faces[f, 2] == v


@cuda.jit(device=True)
def _faces_ok(pos, faces, off, vf, v, a, b, p, n0, n1):
    """Flip / sliver check of the faces around v that survive collapse (a, b) -> p."""
    for i in range(off[v], off[v + 1]):
        f = vf[i]
        if _has(faces, f, a) and _has(faces, f, b):
            continue
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        _normal_quality(pos[i0, 0], pos[i0, 1], pos[i0, 2], pos[i1, 0], pos[i1, 1], pos[i1, 2],
                        pos[i2, 0], pos[i2, 1], pos[i2, 2], n0)
        x0, y0, z0 = pos[i0, 0], pos[i0, 1], pos[i0, 2]
        x1, y1, z1 = pos[i1, 0], pos[i1, 1], pos[i1, 2]
        x2, y2, z2 = pos[i2, 0], pos[i2, 1], pos[i2, 2]
        if i0 == a or i0 == b:
            x0, y0, z0 = p[0], p[1], p[2]
        if i1 == a or i1 == b:
            x1, y1, z1 = p[0], p[1], p[2]
        if i2 == a or i2 == b:
            x2, y2, z2 = p[0], p[1], p[2]
        _normal_quality(x0, y0, z0, x1, y1, z1, x2, y2, z2, n1)
        if n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2] <= MAX_TURN_COS:
            return False
        if n1[3] < MIN_QUALITY and n1[3] < n0[3]:
            return False
    return True


@cuda.jit(device=True)
def _around(faces, off, vf, v, w):
    """True when vertex w lies on a face around v."""
    for i in range(off[v], off[v + 1]):
        if _has(faces, vf[i], w):
            return True
    return False


@cuda.jit(device=True)
def _link_ok(faces, off, vf, a, b):
    """Link condition of (a, b): exactly 2 faces on the edge, the endpoints share exactly the two
    opposite vertices o0 != o1, and (a, o0, o1), (b, o0, o1) are not both faces (tetrahedral ear)."""
    shared = 0
    o0 = -1
    o1 = -1
    for i in range(off[a], off[a + 1]):
        f = vf[i]
        if _has(faces, f, b):
            for k in range(3):
                w = faces[f, k]
                if w != a and w != b:
                    if shared == 0:
                        o0 = w
                    else:
                        o1 = w
            shared += 1
    if shared != 2 or o0 == o1:
        return False
    for i in range(off[a], off[a + 1]):                      # any other common neighbour breaks the link
        f = vf[i]
        for k in range(3):
            w = faces[f, k]
            if w != a and w != b and w != o0 and w != o1 and _around(faces, off, vf, b, w):
                return False
    ear_a = False
    for i in range(off[a], off[a + 1]):
        if _has(faces, vf[i], o0) and _has(faces, vf[i], o1):
            ear_a = True
    if ear_a:
        for i in range(off[b], off[b + 1]):
            if _has(faces, vf[i], o0) and _has(faces, vf[i], o1):
                return False
    return True


# ---------------------------------------------------------------------------------------------- kernels
@cuda.jit
def quadrics_kernel(pos, faces, q, nf):
    """One thread per face: atomically add its area-weighted plane quadric to its three vertices."""
    f = cuda.grid(1)
    if f >= nf:
        return
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    ux, uy, uz = pos[i1, 0] - pos[i0, 0], pos[i1, 1] - pos[i0, 1], pos[i1, 2] - pos[i0, 2]
    wx, wy, wz = pos[i2, 0] - pos[i0, 0], pos[i2, 1] - pos[i0, 1], pos[i2, 2] - pos[i0, 2]
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    dbl = math.sqrt(nx * nx + ny * ny + nz * nz)
    if dbl <= 1e-300:
        return
    nx, ny, nz = nx / dbl, ny / dbl, nz / dbl
    d = -(nx * pos[i0, 0] + ny * pos[i0, 1] + nz * pos[i0, 2])
    w = 0.5 * dbl
    for c in range(3):
        v = faces[f, c]
        cuda.atomic.add(q, (v, 0), w * nx * nx)
        cuda.atomic.add(q, (v, 1), w * nx * ny)
        cuda.atomic.add(q, (v, 2), w * nx * nz)
        cuda.atomic.add(q, (v, 3), w * nx * d)
        cuda.atomic.add(q, (v, 4), w * ny * ny)
        cuda.atomic.add(q, (v, 5), w * ny * nz)
        cuda.atomic.add(q, (v, 6), w * ny * d)
        cuda.atomic.add(q, (v, 7), w * nz * nz)
        cuda.atomic.add(q, (v, 8), w * nz * d)
        cuda.atomic.add(q, (v, 9), w * d * d)


@cuda.jit
def edge_cost_kernel(pos, q, fixed, faces, mode, cost, place, nh):
    """One thread per half-edge: cost (float32, -1 = not a candidate) and placement [3] of its edge."""
    h = cuda.grid(1)
    if h >= nh:
        return
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    out = cuda.local.array(3, numba.float64)
    c = -1.0
    if a < b:
        c = _place_dev(pos, q, fixed, a, b, mode, out)
        place[h, 0] = out[0]
        place[h, 1] = out[1]
        place[h, 2] = out[2]
    cost[h] = c


@cuda.jit
def vertex_min_kernel(keys, faces, vlock, vmin, nh):
    """One thread per candidate edge (key's low 32 bits = half-edge h): vmin[a], vmin[b] = atomicMin(key)."""
    i = cuda.grid(1)
    if i >= nh:
        return
    key = keys[i]
    if key == MAX_KEY:
        return
    h = key & 0xFFFFFFFF
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    if vlock[a] != 0 or vlock[b] != 0:          # touches an accepted collapse's faces: out of this pass
        keys[i] = MAX_KEY
        return
    cuda.atomic.min(vmin, a, key)
    cuda.atomic.min(vmin, b, key)


@cuda.jit
def face_min_kernel(faces, vmin, v2, nf):
    """One thread per face: m = min vmin over its vertices; v2[v] = atomicMin(m)."""
    f = cuda.grid(1)
    if f >= nf:
        return
    m = min(vmin[faces[f, 0]], min(vmin[faces[f, 1]], vmin[faces[f, 2]]))
    if m == MAX_KEY:
        return
    for c in range(3):
        cuda.atomic.min(v2, faces[f, c], m)


@cuda.jit
def select_kernel(keys, faces, v2, off, vf, pos, place, vlock, accepted, nh):
    """One thread per candidate edge i: a winner (v2[a] == v2[b] == key) leaves the round's candidates
    (keys[i] = MAX); if the collapse passes the link / flip / sliver checks, accepted[i] = key and it locks
    every vertex of every face around its endpoints (vlock = 1)."""
    i = cuda.grid(1)
    if i >= nh:
        return
    key = keys[i]
    if key == MAX_KEY:
        return
    h = key & 0xFFFFFFFF
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    if v2[a] != key or v2[b] != key:
        return
    keys[i] = MAX_KEY
    if not _link_ok(faces, off, vf, a, b):
        return
    p = cuda.local.array(3, numba.float64)
    p[0] = place[h, 0]
    p[1] = place[h, 1]
    p[2] = place[h, 2]
    n0 = cuda.local.array(4, numba.float64)
    n1 = cuda.local.array(4, numba.float64)
    if not (_faces_ok(pos, faces, off, vf, a, a, b, p, n0, n1)
            and _faces_ok(pos, faces, off, vf, b, a, b, p, n0, n1)):
        return
    accepted[i] = key
    for j in range(off[a], off[a + 1]):
        for c in range(3):
            vlock[faces[vf[j], c]] = 1
    for j in range(off[b], off[b + 1]):
        for c in range(3):
            vlock[faces[vf[j], c]] = 1


@cuda.jit
def apply_kernel(sel, faces, fixed, place, pos, q, vmap, n):
    """One thread per selected half-edge: survivor s (the fixed endpoint if any) moves to the placement,
    takes the removed vertex's quadric, vmap[u] = s."""
    i = cuda.grid(1)
    if i >= n:
        return
    h = sel[i]
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    s, u = (b, a) if fixed[b] else (a, b)
    for c in range(3):
        pos[s, c] = place[h, c]
    for j in range(10):
        q[s, j] += q[u, j]
    vmap[u] = s


@cuda.jit
def remap_kernel(faces, vmap, alive, nf):
    """One thread per face: removed vertices -> survivors; a face that lost a distinct corner dies."""
    f = cuda.grid(1)
    if f >= nf:
        return
    for c in range(3):
        v = faces[f, c]
        if vmap[v] >= 0:
            faces[f, c] = vmap[v]
    alive[f] = faces[f, 0] != faces[f, 1] and faces[f, 1] != faces[f, 2] and faces[f, 0] != faces[f, 2]


@cuda.jit
def csr_fill_kernel(faces, cursor, vf, nc):
    """One thread per corner: vf[cursor[v]++] = face (cursor starts at the CSR offsets)."""
    c = cuda.grid(1)
    if c >= nc:
        return
    f = c // 3
    slot = cuda.atomic.add(cursor, faces[f, c - 3 * f], 1)
    vf[slot] = f


@cuda.jit
def fan_count_kernel(start, opp, fans_ok, degree, nv):
    """One thread per vertex with only good edges: walk its fan through opposite half-edges from corner
    start[v]; fans_ok[v] = 1 when the walk visits all degree[v] corners (one fan), else 0 (bow-tie)."""
    v = cuda.grid(1)
    if v >= nv:
        return
    c0 = start[v]
    if c0 < 0 or fans_ok[v] == 0:
        return
    c = c0
    steps = 0
    while steps <= degree[v]:
        steps += 1
        f = c // 3
        c = opp[3 * f + (c - 3 * f + 2) % 3]      # incoming half-edge's twin is v's corner in the next face
        if c < 0 or c == c0:
            break
    fans_ok[v] = 1 if (c == c0 and steps == degree[v]) else 0


# --------------------------------------------------------------------------------------------- launchers
def _check(t, name: str, dtype, cols: int | None, device) -> None:
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if cols is not None and (t.ndim != 2 or t.shape[1] != cols):
        raise ValueError(f"{name} must have shape [N, {cols}], got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (the kernel device)")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def vertex_quadrics(pos, faces):
    """Per-vertex quadrics float64 [V, 10] of positions float64 [V, 3] and faces int32 [F, 3]."""
    _check(pos, "positions", torch.float64, 3, pos.device)
    _check(faces, "faces", torch.int32, 3, pos.device)
    q = torch.zeros(pos.shape[0], 10, dtype=torch.float64, device=pos.device)
    launch(quadrics_kernel, faces.shape[0], view(pos), view(faces), view(q), faces.shape[0])
    return q


def edge_costs(pos, q, fixed, faces, mode: int):
    """(cost float32 [3F], placement float64 [3F, 3]) per half-edge; cost -1 where h is not a candidate
    (b < a, or both endpoints fixed). mode 0 = ON_EDGE, 1 = BOUNDED_OPTIMAL."""
    _check(pos, "positions", torch.float64, 3, pos.device)
    _check(q, "quadrics", torch.float64, 10, pos.device)
    _check(fixed, "fixed", torch.bool, None, pos.device)
    _check(faces, "faces", torch.int32, 3, pos.device)
    nh = 3 * faces.shape[0]
    cost = torch.empty(nh, dtype=torch.float32, device=pos.device)
    place = torch.empty(nh, 3, dtype=torch.float64, device=pos.device)
    launch(edge_cost_kernel, nh, view(pos), view(q), view(fixed), view(faces), int(mode), view(cost),
           view(place), nh)
    return cost, place


def edge_keys(cost):
    """Keys int64 [E] of the candidate edges (cost >= 0): cost float32 bits << 32 | half-edge id, in
    half-edge order. One host sync (the candidate count)."""
    ids = torch.nonzero(cost >= 0).reshape(-1)                               # [E] half-edge ids
    return (cost[ids].view(torch.int32).to(torch.int64) << 32) | ids


def vertex_faces(faces, num_vertices: int):
    """Vertex -> face CSR: (offsets int32 [V + 1], face ids int32 [3F]); order within a vertex is
    arbitrary (atomic fill)."""
    corners = faces.reshape(-1)
    off = torch.zeros(num_vertices + 1, dtype=torch.int32, device=faces.device)
    off[1:] = torch.cumsum(torch.bincount(corners, minlength=num_vertices), 0)
    cursor = off[:-1].clone()
    vf = torch.empty(corners.shape[0], dtype=torch.int32, device=faces.device)
    launch(csr_fill_kernel, corners.shape[0], view(faces), view(cursor), view(vf), corners.shape[0])
    return off, vf


def fixed_vertices_device(faces, num_vertices: int):
    """bool [V] on faces' device, the same set as ``engine.geometry.simplify.fixed_vertices``: endpoints
    of edges that are not in exactly one face per direction (boundary, non-manifold, inconsistent), and
    bow-tie vertices (more than one fan, found by walking each fan through opposite half-edges)."""
    f = faces.to(torch.int64)
    a = f.reshape(-1)
    b = f[:, [1, 2, 0]].reshape(-1)
    nv = num_vertices
    sorted_keys, order = torch.sort(a * nv + b)
    rev = b * nv + a
    count = lambda k: (torch.searchsorted(sorted_keys, k, right=True)  # noqa: E731
                       - torch.searchsorted(sorted_keys, k))
    rev_at = torch.searchsorted(sorted_keys, rev).clamp(max=a.shape[0] - 1)
    n_rev = count(rev)
    bad = (count(a * nv + b) != 1) | (n_rev != 1)
    fixed = torch.zeros(nv, dtype=torch.bool, device=faces.device)
    fixed[a[bad]] = True
    fixed[b[bad]] = True
    opp = torch.where(n_rev == 1, order[rev_at], torch.full_like(a, -1))
    degree = torch.bincount(a, minlength=nv)
    start = torch.full((nv,), -1, dtype=torch.int64, device=faces.device)
    start.scatter_(0, a, torch.arange(a.shape[0], device=faces.device))
    fans_ok = (~fixed).to(torch.int32)
    launch(fan_count_kernel, nv, view(start), view(opp), view(fans_ok), view(degree), nv)
    return fixed | ((fans_ok == 0) & (degree > 0))


def select_round(keys, faces, vmin, v2, vlock, off, vf, pos, place, accepted) -> None:
    """One winner round over the candidate keys int64 [E] (see the module docstring); updates keys, vlock
    (int8 [V]) and accepted (int64 [E], MAX = not accepted) in place."""
    nh, nf = keys.shape[0], faces.shape[0]
    vmin.fill_(int(MAX_KEY))
    v2.fill_(int(MAX_KEY))
    launch(vertex_min_kernel, nh, view(keys), view(faces), view(vlock), view(vmin), nh)
    launch(face_min_kernel, nf, view(faces), view(vmin), view(v2), nf)
    launch(select_kernel, nh, view(keys), view(faces), view(v2), view(off), view(vf), view(pos), view(place),
           view(vlock), view(accepted), nh)


def collapse(sel, faces, fixed, place, pos, q, vmap):
    """Apply the selected, mutually disjoint collapses (half-edge ids int64 [n]) in place; returns the
    bool [F] mask of surviving faces (exactly 2 faces die per collapse)."""
    n, nf = sel.shape[0], faces.shape[0]
    launch(apply_kernel, n, view(sel), view(faces), view(fixed), view(place), view(pos), view(q), view(vmap),
           n)
    alive = torch.empty(nf, dtype=torch.bool, device=faces.device)
    launch(remap_kernel, nf, view(faces), view(vmap), view(alive), nf)
    return alive
