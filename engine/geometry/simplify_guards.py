"""The QEM simplifier's collapse guards, their relaxation levels and its budget messages
(``engine.geometry.simplify``; its module docstring's "Budget guarantee" states the policy).

A collapse (a, b) -> p is valid at a guard level (turn_cos, min_quality, fallbacks, fold_cos, max ring)
when, over the faces around a or b that survive it (``_ring``, ``_guards_ok``):
  * none turns by more than acos(turn_cos), and none ends with quality 4 sqrt(3) area / sum(edge^2)
    below ``min_quality`` while it was better before (at the strict thresholds this is
    ``triton_kernels.qem_host._faces_ok``, which the GPU passes use);
  * none newly folds against an edge neighbour (``_folds_ok``, when fold_cos >= -1): the dot of their
    unit normals may not drop below fold_cos, or, where an input crease already is below it, not drop
    further. The turn limit bounds one collapse; over several collapses a face can turn over in steps
    of < 60 degrees and lie folded flat on its neighbours, its back showing.
With fallback placements, a collapse whose QEM placement fails may use the cheapest (by quadric energy) of
its two endpoints and its midpoint that passes (``_valid_placement``); an edge with a fixed endpoint always
goes to that endpoint. The greedy order stays the energy order: the simplifier puts such an edge back
into its heap at the fallback's (higher) energy and collapses it when it comes up again. A fallback is
refused where the survivor would be left with more than ``FALLBACK_MAX_RING`` faces around it: on flat
regions (singular quadrics, every energy 0) the endpoints win every tie and fans grew to ~50 faces a
vertex, which made every later check there slow (texcoordtest at 256^3 -> 5K faces: 44 s, 5 s with the
cap; 4.8 s before fallbacks existed; bunny and bob at 512^3 still reach 5K at the first level).

Why fallbacks from the first level (issue 14): with the QEM point only (``QEM_POINT_ONLY``, the rule
before), a cheap collapse whose optimum would fold a face was skipped outright; on dense marching-cubes
meshes the greedy order then leaves high-valence sliver fans behind and spends its budget on costlier
collapses elsewhere, until nothing is valid: the 512^3 bunny (1.6M faces) stalled at 5938 faces for a
5000 budget, at Chamfer 350e-5 / Hausdorff 46e-3 (MeshLab at 5000: 76 / 8.5). Falling back to the
endpoints or the midpoint of such edges reaches 5000 at Chamfer 49e-5 / Hausdorff 4.1e-3
(benchmarks/results/simplify_budget_cpu.md). Why the fold guard: with the fallback points and no fold
guard, one folded face showed its back on the 256^3 bunny at 5K faces (6 flipped-normal pixels over 24
views at 256 px, MeshLab 0) and 11 on trellis_T (161 px); with it, 0 on both.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.errors import ConfigError
from engine.geometry.simplify_topology import FaceFloor
from triton_kernels.qem_host import (
    MAX_TURN_COS,
    MIN_QUALITY,
    _energy,
    _normal_quality,
    _place,
    _tri_normal_quality,
)

FOLD_COS = -0.5         # a moved face may not newly fold against an edge neighbour beyond 120 degrees
NO_FOLD_GUARD = -2.0    # fold_cos that never rejects
FALLBACK_MAX_RING = 24  # a fallback placement may leave at most this many faces around the survivor
# Guard levels (turn_cos, min_quality, fallback placements 0/1, fold_cos, fallback max ring), tried in order
# while stalled.
GUARD_LEVELS = np.array([[MAX_TURN_COS, MIN_QUALITY, 1.0, FOLD_COS, FALLBACK_MAX_RING],
                         [0.0, 1e-3, 1.0, NO_FOLD_GUARD, np.inf],
                         [-0.5, 1e-5, 1.0, NO_FOLD_GUARD, np.inf]])
GUARD_NAMES = ("60-degree turn, quality 0.01, no new fold (endpoint or midpoint where the QEM point fails)",
               "faces may turn up to 90 degrees, quality floor 1e-3, folds allowed",
               "faces may turn up to 120 degrees, quality floor 1e-5, folds allowed")
# The rule before issue 14 and of the GPU passes' candidates: strict guards on the QEM point only.
QEM_POINT_ONLY = np.array([[MAX_TURN_COS, MIN_QUALITY, 0.0, NO_FOLD_GUARD, np.inf]])


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
    """No ring face newly folds against an edge neighbour (module docstring): after the collapse the
    dot of their normals may fall below ``fold_cos`` only where it was already that low. nrm[:m, 4:7]:
    the ring faces' moved normals. Neighbours across an edge at a or b are ring faces (the two faces
    beside a removed face become neighbours); across the outer edge, an unmoved face found through the
    corner lists (head, nxt, alive)."""
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
def _valid_placement(pos, qv, fixed, faces, fa, na, fb, nb, a, b, p, mode, level, head, nxt, alive, ring,
                     nrm):
    """Place collapse (a, b) into p[3] and check the guards of ``level`` (float64 [5]). fa[:na] / fb[:nb]:
    the faces around a / b; head, nxt, alive: the simplifier's corner lists; ring int64 [>= na + nb] and
    nrm float64 [>= na + nb, 7]: scratch. Returns -1.0 when no placement is valid, 0.0 when the QEM
    placement is, else the quadric energy of the alternative written into p (module docstring)."""
    m = _ring(pos, faces, fa, na, fb, nb, a, b, ring, nrm)
    _place(pos, qv, fixed, a, b, p, mode)
    if _guards_ok(pos, faces, a, b, p, level, head, nxt, alive, ring, nrm, m):
        return 0.0
    if level[2] <= 0.0 or fixed[a] or fixed[b] or m > level[4]:
        return -1.0
    q = qv[a] + qv[b]
    best = np.inf
    c = np.empty(3)
    for k in range(3):
        for j in range(3):
            c[j] = pos[a, j] if k == 0 else (pos[b, j] if k == 1 else 0.5 * (pos[a, j] + pos[b, j]))
        if _guards_ok(pos, faces, a, b, c, level, head, nxt, alive, ring, nrm, m):
            e = max(_energy(q, c[0], c[1], c[2]), 0.0)
            if e < best:
                best = e
                p[0], p[1], p[2] = c[0], c[1], c[2]
    return best if best < np.inf else -1.0


def budget_reason(faces_in: int, faces_clean: int, faces_out: int, target: int, level: int) -> str:
    """Why a simplification result has fewer faces than ``target``, and which relaxed guard level it
    needed ("" for an exact hit at the strict guards)."""
    bits = []
    if faces_in <= target:
        bits.append(f"the input has {faces_in} faces, within the budget: returned unchanged")
    elif faces_clean <= target:
        bits.append(f"{faces_clean} faces after welding and dropping degenerate/duplicate faces, "
                    "within the budget")
    elif faces_out == target - 1:
        bits.append("one face under the budget: every collapse removes 2 faces")
    if level > 0:
        bits.append(f"reached with relaxed guards: {GUARD_NAMES[level]}")
    return "; ".join(bits)


def unreachable_budget(target: int, faces_out: int, floor: FaceFloor) -> ConfigError:
    """The one-line error for a budget that no valid collapse sequence reaches."""
    need = max(faces_out, floor.faces)
    return ConfigError(f"face budget {target} (--faces) is below the fewest faces this mesh simplifies to "
                       f"without breaking it: {need} (its topology alone needs >= {floor.faces}: "
                       f"{floor.describe()})", f"use --faces {need} or more")
