"""Serial QEM pieces (numba, CPU) shared by the engine's CPU simplifier and the GPU edge collapse.

``engine.geometry.simplify`` (the CPU reference path, paper 6.1; its docstring states the algorithm) runs
its greedy heap loop on these functions, and ``qem_collapse.py`` checks its kernels against them and
builds ``collapse_passes_ref`` on them; kernels never import from ``engine/``, so they live here.

Maths (Garland & Heckbert 1997, with the paper's on-edge placement). Each face with unit normal n,
offset d = -n.v0 and area A adds A [n;d][n;d]^T to its three vertices; a quadric is stored as 10 float64s
(a00 a01 a02 a03 a11 a12 a13 a22 a23 a33). Collapsing edge (a, b) merges Q = Q_a + Q_b and places the
survivor (``_place``):
  * both endpoints free, ``Placement.ON_EDGE`` (mode 0): x_opt = solve(A, -b) projected onto the edge,
    t clamped to [0, 1]; the midpoint when |det A| <= 1e-10 ||A||_F^3;
  * ``Placement.BOUNDED_OPTIMAL`` (mode 1): x_opt itself when A is regular and x_opt lies within one edge
    length of the midpoint, else the ON_EDGE point;
  * one fixed endpoint: that endpoint; both fixed: not collapsible (cost -1).
The cost is max(E(placement), 0). A collapse is valid when the link condition holds (exactly two faces on
the edge, sharing exactly their two opposite vertices, no tetrahedral ear: ``_link_ok``) and no surviving
face around either endpoint turns by more than 60 degrees (cos <= ``MAX_TURN_COS``) or becomes a sliver
(quality 4 sqrt(3) area / sum(edge^2) below ``MIN_QUALITY`` and lower than before: ``_faces_ok``).

Guard levels (``_valid_placement``: the CPU simplifier's levels are ``engine.geometry.simplify_guards``'s
``GUARD_LEVELS``, whose first, ``STRICT_GUARDS``, the GPU passes apply too): the turn and quality checks
over the ring (the faces around a or b that survive), the fold guard (``_folds_ok``: no ring face newly
folds against an edge neighbour, their normals' dot below ``FOLD_COS`` and lower than before) and, where
the QEM point fails them, the cheapest passing one of a, b and their midpoint (``CHOICE_A``, ``CHOICE_B``,
``CHOICE_MID``) unless an endpoint is fixed or more than ``FALLBACK_MAX_RING`` faces would be left around
the survivor.

Layouts: positions float64 [V, 3]; faces int32/int64 [F, 3] (CCW); fixed bool [V]; quadrics float64
[V, 10] (``face_quadrics_ref``: the numpy reference, float64 [V, 4, 4]).
"""

from __future__ import annotations

import enum

import numpy as np
from numba import njit

MAX_TURN_COS = 0.5      # reject a collapse that turns a surviving face normal by more than 60 degrees
MIN_QUALITY = 0.01      # ... or leaves a face with quality below this (unless it was already worse)
FOLD_COS = -0.5         # a moved face may not newly fold against an edge neighbour beyond 120 degrees
NO_FOLD_GUARD = -2.0    # fold_cos that never rejects
FALLBACK_MAX_RING = 24  # a fallback placement may leave at most this many faces around the survivor
# The strict guard level (turn_cos, min_quality, fallback placements 0/1, fold_cos, fallback max ring): the
# CPU simplifier's first level (``engine.geometry.simplify_guards.GUARD_LEVELS[0]``) and the GPU passes'.
STRICT_GUARDS = np.array([MAX_TURN_COS, MIN_QUALITY, 1.0, FOLD_COS, FALLBACK_MAX_RING])
# Placement a valid collapse uses (``_valid_placement``; the GPU passes' per-half-edge ``choice``).
CHOICE_QEM, CHOICE_A, CHOICE_B, CHOICE_MID = 0, 1, 2, 3


class Placement(enum.Enum):
    """Where an interior edge's survivor goes (see the module docstring)."""

    ON_EDGE = "on_edge"                    # paper 6.1: QEM optimum projected onto the edge, clamped
    BOUNDED_OPTIMAL = "bounded_optimal"    # QEM optimum when within one edge length of the midpoint


_MODE = {Placement.ON_EDGE: 0, Placement.BOUNDED_OPTIMAL: 1}


# ----------------------------------------------------------------------------------------------------
# References in numpy (quadrics and placement), used by the tests to check the kernels' maths.

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
# Serial numba pieces. Quadrics are stored as 10 floats: a00 a01 a02 a03 a11 a12 a13 a22 a23 a33.

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
def _normal_quality(x0, y0, z0, x1, y1, z1, x2, y2, z2):
    """(unit normal x, y, z (0 when degenerate), quality 4 sqrt3 area / sum l^2) of a triangle."""
    ux, uy, uz = x1 - x0, y1 - y0, z1 - z0
    wx, wy, wz = x2 - x0, y2 - y0, z2 - z0
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    dbl = np.sqrt(nx * nx + ny * ny + nz * nz)
    sx, sy, sz = x2 - x1, y2 - y1, z2 - z1
    ssum = ux * ux + uy * uy + uz * uz + wx * wx + wy * wy + wz * wz + sx * sx + sy * sy + sz * sz
    quality = 2.0 * np.sqrt(3.0) * dbl / ssum if ssum > 0.0 else 0.0
    inv = 1.0 / dbl if dbl > 0.0 else 0.0
    return nx * inv, ny * inv, nz * inv, quality


@njit(cache=True)
def _tri_normal_quality(p0, p1, p2):
    return _normal_quality(p0[0], p0[1], p0[2], p1[0], p1[1], p1[2], p2[0], p2[1], p2[2])


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


# ----------------------------------------------------------------------------------------------------
# Guards of a guard level (the CPU simplifier's levels: ``engine.geometry.simplify_guards``; the GPU passes
# use ``STRICT_GUARDS``): turn and quality over the ring, the fold guard, the fallback placements.

@njit(cache=True)
def _at(pos, v, a, b, p):
    """Position (x, y, z) of vertex v once a and b sit at p."""
    if v == a or v == b:
        return p[0], p[1], p[2]
    return pos[v, 0], pos[v, 1], pos[v, 2]


@njit(cache=True)
def _moved_normal_quality(pos, faces, f, a, b, p):
    """``_normal_quality`` of face f with its corner a or b (if any) moved to p[3]."""
    x0, y0, z0 = _at(pos, faces[f, 0], a, b, p)
    x1, y1, z1 = _at(pos, faces[f, 1], a, b, p)
    x2, y2, z2 = _at(pos, faces[f, 2], a, b, p)
    return _normal_quality(x0, y0, z0, x1, y1, z1, x2, y2, z2)


@njit(cache=True)
def _holds(faces, f, v):
    return faces[f, 0] == v or faces[f, 1] == v or faces[f, 2] == v


@njit(cache=True)
def _ring(pos, faces, fa, na, fb, nb, a, b, ring, nrm):
    """The faces around a (fa[:na]) or b (fb[:nb]) that survive collapse (a, b) -- those holding both
    go -- into ring[:m], their unit normals and quality into nrm[:m, :4]; returns m. ring int64 and nrm
    float64 [., 7] must hold na + nb rows."""
    m = 0
    for i in range(na + nb):
        f = fa[i] if i < na else fb[i - na]
        if not (_holds(faces, f, a) and _holds(faces, f, b)):
            ring[m] = f
            nrm[m, 0], nrm[m, 1], nrm[m, 2], nrm[m, 3] = _tri_normal_quality(
                pos[faces[f, 0]], pos[faces[f, 1]], pos[faces[f, 2]])
            m += 1
    return m


@njit(cache=True)
def _outer_face(faces, head, nxt, alive, f, x, y):
    """An alive face other than f on edge (x, y), walking x's corner list; -1 on a boundary."""
    c = head[x]
    while c != -1:
        g = c // 3
        c = nxt[c]
        if g != f and alive[g] and _holds(faces, g, y):
            return g
    return -1


@njit(cache=True)
def _folds_ok(pos, faces, a, b, head, nxt, alive, fold_cos, ring, nrm, m):
    """No ring face newly folds against an edge neighbour: after the collapse the dot of their normals
    may fall below ``fold_cos`` only where it was already that low. nrm[:m, 4:7]: the ring faces' moved
    normals. Neighbours across an edge at a or b are ring faces (the two faces beside a removed face become
    neighbours); across the outer edge, an unmoved face found through the corner lists (head, nxt, alive)."""
    for i in range(m):
        f = ring[i]
        k = 0
        while faces[f, k] != a and faces[f, k] != b:
            k += 1
        w1, w2 = faces[f, (k + 1) % 3], faces[f, (k + 2) % 3]     # f = (s, w1, w2), outer edge (w1, w2)
        for j in range(i + 1, m):                           # ring neighbours: the faces sharing w1 or w2
            g = ring[j]
            if not (_holds(faces, g, w1) or _holds(faces, g, w2)):
                continue
            after = nrm[i, 4] * nrm[j, 4] + nrm[i, 5] * nrm[j, 5] + nrm[i, 6] * nrm[j, 6]
            before = nrm[i, 0] * nrm[j, 0] + nrm[i, 1] * nrm[j, 1] + nrm[i, 2] * nrm[j, 2]
            if after < fold_cos and after < before:
                return False
        g = _outer_face(faces, head, nxt, alive, f, w1, w2)
        if g < 0:
            continue
        gx, gy, gz, _ = _tri_normal_quality(pos[faces[g, 0]], pos[faces[g, 1]], pos[faces[g, 2]])
        after = nrm[i, 4] * gx + nrm[i, 5] * gy + nrm[i, 6] * gz
        if after < fold_cos and after < nrm[i, 0] * gx + nrm[i, 1] * gy + nrm[i, 2] * gz:
            return False
    return True


@njit(cache=True)
def _guards_ok(pos, faces, a, b, p, level, head, nxt, alive, ring, nrm, m):
    """The guards of ``level`` (float64 [5]) for collapse (a, b) -> p[3] over the ring (``_ring``):
    turn, quality, then (when level[3] >= -1) the fold guard."""
    for i in range(m):
        nx, ny, nz, quality = _moved_normal_quality(pos, faces, ring[i], a, b, p)
        if nrm[i, 0] * nx + nrm[i, 1] * ny + nrm[i, 2] * nz <= level[0]:
            return False
        if quality < level[1] and quality < nrm[i, 3]:
            return False
        nrm[i, 4], nrm[i, 5], nrm[i, 6] = nx, ny, nz
    return level[3] < -1.0 or _folds_ok(pos, faces, a, b, head, nxt, alive, level[3], ring, nrm, m)


@njit(cache=True)
def corner_lists(faces, nv):
    """Per vertex its corners in face order (corner c = 3 f + k): (head [V], nxt [3F] -> next corner of
    that vertex, tail [V]), -1 where none."""
    head = np.full(nv, -1, np.int64)
    tail = np.full(nv, -1, np.int64)
    nxt = np.full(3 * faces.shape[0], -1, np.int64)
    for c in range(3 * faces.shape[0]):
        v = faces[c // 3, c % 3]
        if head[v] == -1:
            head[v] = c
        else:
            nxt[tail[v]] = c
        tail[v] = c
    return head, nxt, tail


@njit(cache=True)
def _choice_point(pos, a, b, k, out):
    """Fallback point k of collapse (a, b) into out[3]: CHOICE_A = a, CHOICE_B = b, else the midpoint."""
    for j in range(3):
        if k == CHOICE_A:
            out[j] = pos[a, j]
        elif k == CHOICE_B:
            out[j] = pos[b, j]
        else:
            out[j] = 0.5 * (pos[a, j] + pos[b, j])


@njit(cache=True)
def _valid_placement(pos, qv, fixed, faces, fa, na, fb, nb, a, b, p, mode, level, head, nxt, alive, ring,
                     nrm):
    """Place collapse (a, b) into p[3] and check the guards of ``level`` (float64 [5]). fa[:na] / fb[:nb]:
    the faces around a / b; head, nxt, alive: the simplifier's corner lists; ring int64 [>= na + nb] and
    nrm float64 [>= na + nb, 7]: scratch. Returns (alt, choice): (0.0, CHOICE_QEM) when the QEM placement
    is valid; else, unless fallbacks are off (level[2] <= 0), an endpoint is fixed or more than level[4]
    faces would survive around the collapse, the cheapest by quadric energy (clamped >= 0; ties: the
    first of a, b, midpoint) of the fallback points that pass: (its energy, CHOICE_A / CHOICE_B /
    CHOICE_MID), written into p; (-1.0, -1) when no placement is valid."""
    m = _ring(pos, faces, fa, na, fb, nb, a, b, ring, nrm)
    _place(pos, qv, fixed, a, b, p, mode)
    if _guards_ok(pos, faces, a, b, p, level, head, nxt, alive, ring, nrm, m):
        return 0.0, CHOICE_QEM
    if level[2] <= 0.0 or fixed[a] or fixed[b] or m > level[4]:
        return -1.0, -1
    q = qv[a] + qv[b]
    best = np.inf
    choice = -1
    c = np.empty(3)
    for k in range(CHOICE_A, CHOICE_MID + 1):
        _choice_point(pos, a, b, k, c)
        if _guards_ok(pos, faces, a, b, c, level, head, nxt, alive, ring, nrm, m):
            e = max(_energy(q, c[0], c[1], c[2]), 0.0)
            if e < best:
                best = e
                choice = k
                p[0], p[1], p[2] = c[0], c[1], c[2]
    return (best, choice) if choice > 0 else (-1.0, -1)
