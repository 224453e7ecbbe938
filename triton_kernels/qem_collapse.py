"""Parallel QEM edge collapse (paper 6.1 on the GPU): numba-cuda kernels for quadrics, validated edge
candidates, their cost threshold and priority keys, the neighbourhood-disjoint winner rounds, the collapse
itself, and the one-time fixed-vertex (bow-tie) walk. ``CollapsePasses`` owns the device buffers of one
simplification and runs a pass as two fixed-argument phases (select ~25 launches, apply ~7) with one
host sync, replayed as two CUDA graphs after the first pass on CUDA; the loop over passes and the budget
live in ``engine.geometry.simplify_gpu``. The maths is the serial reference's (``qem_host.py``, the pieces
of the CPU simplifier ``engine.geometry.simplify``); ``collapse_passes_ref`` is the whole pass algorithm in
serial numba, built on the serial reference's own placement and validity functions: under the CUDA
simulator the kernels reproduce it exactly.

Maths
-----
Quadrics: each face with unit normal n, offset d = -n.v0 and area A adds A [n;d][n;d]^T to its three
vertices; 10 float64s per vertex (a00 a01 a02 a03 a11 a12 a13 a22 a23 a33), float64 atomics. Placement
and cost of an edge: ``_place_dev`` is the serial ``_place`` line by line (ON_EDGE = 0, BOUNDED_OPTIMAL =
1; one fixed endpoint -> that endpoint; both fixed -> not a candidate). Costs are clamped to >= +0.0 (a
rounding-negative energy or -0.0 would set the float32 sign bit, i.e. a negative key); NaN -> no candidate.

One pass (why it is built this way: see "History" below)
-------------------------------------------------------
1. Vertex -> face CSR of the current faces (bincount + cumsum + atomic fill).
2. ``candidate_kernel``, one thread per half-edge h = 3 f + k (faces[f, k] -> faces[f, (k+1) % 3]): the
   edge's a < b half-edge computes placement and cost and checks the collapse on the current mesh with
   the CPU simplifier's first guard level (``qem_host.STRICT_GUARDS`` = ``simplify_guards.GUARD_LEVELS[0]``,
   ``qem_host._valid_placement``): the link condition with the tetrahedral ear, then for the QEM point
   the 60-degree normal turn and sliver quality of the surviving ring faces and the fold guard
   (``_folds_ok``: no ring face's normal newly drops below ``FOLD_COS`` against a ring face sharing its
   outer vertices or the face across its outer edge, found through the CSR). Where the QEM point fails,
   unless an endpoint is fixed or more than ``FALLBACK_MAX_RING`` faces survive around the collapse,
   endpoint a, endpoint b and the midpoint are tried; the cheapest passing one by quadric energy (clamped
   >= +0.0; ties: that order) is kept and its energy is the cost, so the threshold and the keys order it
   where the CPU heap does (it pushes such an edge back at the fallback's energy). cost float32 [3F], -1
   where h is no valid candidate; choice int8 [3F]: CHOICE_QEM (0), CHOICE_A (1), CHOICE_B (2),
   CHOICE_MID (3). Validity reads the faces around a and b, which no other collapse of the pass moves
   (step 5), so it is decided once per pass, before selection. One exception, a known limit: the fold
   guard's face across a ring face's outer edge (w1, w2) has a third vertex two edges from a or b, which
   another winner of the same pass may move (its endpoints are only kept off the faces around a and b);
   that check then used the face's position at the start of the pass. The serial reference
   (``collapse_passes_ref``) is the same pass algorithm, so it shares this.
3. Threshold: a 4096-bin histogram of the candidates' float32 bits >> 19 (1/16 octave bins); only the
   cheapest ``ELIGIBLE_PERCENT`` % of the valid candidates (rounded up to a bin edge) compete this pass.
   This keeps the order close to the serial greedy one (collapse cheap edges first) while a pass still
   removes ~10 % of the faces.
4. Keys int64 [3F]: (cost bits >> 20) << 32 | perm(h) -- 1/8-octave cost buckets (non-negative float32
   bits order like the floats), ties broken by a 32-bit bijective hash of h so that equal-cost regions
   (flat marching-cubes patches) do not serialise along the face order; INT64_MAX = not competing.
5. ``ROUNDS`` winner rounds: vmin[v] = min key at v (atomicMin); fmin[f] = min over f's vertices; v2[v] =
   min fmin over the faces at v. Edge (a, b) wins iff v2[a] == v2[b] == key: it holds the minimum on
   every face around both endpoints, so no other winner has an endpoint on those faces and the
   collapses touch disjoint faces and vertices. Winners are valid by construction (step 2): each is
   appended to a compact list (atomic slot) and locks every vertex of every face around its endpoints;
   candidates touching a locked vertex leave the pass, later rounds fill the gaps.
6. Host sync: the number of winners n. If n exceeds the collapses still needed, the cheapest ``needed``
   keys are kept (topk, moved to the front of the winner list, count[0] = needed). Apply: the survivor
   (the fixed endpoint if any) moves to the placement its ``choice`` names (a fallback point, or the QEM
   point recomputed: same inputs, same result as step 2), takes the removed vertex's quadric; faces are
   remapped and the two faces of each collapsed edge die (exactly 2: link condition), so the new face
   count is known on the host; compaction (inclusive scan of alive, scatter, copy back) keeps face order.
   The alive count is read back at the next pass's sync (same transfer) and checked against it.
7. Launch shape: the pass kernels loop (grid-stride) over the input's capacity with the live counts in
   device memory (faces nfd[0], winners count[0]); no launch argument changes between passes, so each
   phase is captured once as a CUDA graph (its one host sync sits between the phases). The CSR counts
   come from an atomic degree kernel, not ``torch.bincount`` (which syncs to size its output).

Layouts
-------
positions float64 [V, 3]; quadrics float64 [V, 10]; faces int32 [F, 3] (CCW) in [2, F0, 3]: the current
faces a prefix of row 0, row 1 the compaction target; live count nfd int64 [1]; CSR offsets int32
[V + 1] and face ids int32 [3F]; cost float32 [3F] (read as int32 bits by the integer kernels); choice
int8 [3F]; keys int64 [3F]; winners: half-edge int32 / key int64 [F0 / 2 + 1]; vmin/v2 int64 [2, V];
vlock int8 [V]; vmap int32 [V] (removed -> survivor, -1); alive and its inclusive scan int32 [F0].

Limits and floor
----------------
F < 2^31 / 3 (half-edge ids in 32 bits); degree unbounded (checks iterate the CSR). A pass at F faces
reads the faces a few times per kernel (12 B/face) plus the CSR, keys (24 B/face) and vmin/v2, ~250 B/face
of traffic in all: ~0.15 ms at 1.6M faces on an H100 (3 TB/s); the validity checks (~100 face reads per
candidate, L1/L2-resident; the fold guard adds ~m^2 / 2 face tests and ~4 m normals over a ring of m
faces, and up to 4 such checks where the QEM point fails) are the arithmetic part. Passes shrink the
mesh by ~10 % each, so the sum over passes is ~10x the first pass. Eager, the ~40 launches of a pass
(numba-cuda dispatch from Python) dominated below ~200K faces: 37 passes x ~6.7 ms on the H100 for a
1.6M-face mesh (issue 10); graph replay leaves two graph launches and one sync per pass.

History
-------
The first version checked validity only for the winners of each round and had no eligibility
threshold: a winner that failed the checks left the round but stayed a candidate, and on marching-cubes
meshes the cheapest edge of many neighbourhoods is invalid (it would flip a face or leave a sliver). Those
edges won again every pass (~1,000 rejected winners a round on the 512^3 bunny) and shadowed their valid
neighbours, so passes shrank to a few collapses each. A serial emulation of that algorithm on the
1,615,188-face bunny: 549K faces after 10 passes, 392K after 100, 326K after 380 (1-35 collapses a pass),
268,646 at the 1000-pass cap -- the H100 run stopped at 268,176 and mislabelled the cap as "no further
collapse". The compaction (2 faces per collapse) was not at fault: the alive counts always matched.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit

from triton_kernels import qem_host as serial
from triton_kernels.errors import MeshError
from triton_kernels.numba_cuda import THREADS, cuda_module, launch, simulated, view
from triton_kernels.qem_host import (
    CHOICE_A,
    CHOICE_MID,
    CHOICE_QEM,
    FALLBACK_MAX_RING,
    FOLD_COS,
    MAX_TURN_COS,
    MIN_QUALITY,
    STRICT_GUARDS,
    face_quadrics_ref,
    placement_ref,
)

cuda = cuda_module()

MAX_KEY = np.int64(np.iinfo(np.int64).max)
ROUNDS = 4                 # winner rounds per pass (measured: the 4th adds < 1 % of a pass's collapses)
ELIGIBLE_PERCENT = 25      # cheapest share of the valid candidates that compete in a pass
HIST_SHIFT = 19            # threshold histogram bin = float32 bits >> 19 (1/16 octave; 4096 bins)
HIST_BINS = 4096
KEY_SHIFT = 20             # key bucket = float32 bits >> 20 (1/8 octave), then the hash of h
REFERENCES = (face_quadrics_ref, placement_ref)      # the numpy references the parity tests use
SIM_THREADS = 32           # threads per launch in the CUDA simulator (each is a Python thread)
PASS_BLOCKS = 4096         # grid cap of the pass kernels: 1M threads (~4 waves of 2048 on 132 SMs)


def _launch(kernel, items: int, *args) -> None:
    """Launch a grid-stride kernel over ``items``: one thread per item on the GPU; in the CUDA simulator
    one block of ``SIM_THREADS`` threads that loop (thread start-up, not the kernel, dominated there)."""
    if simulated():
        launch(kernel, min(items, SIM_THREADS), *args, threads=SIM_THREADS)
    else:
        launch(kernel, items, *args)


def _launch_cap(kernel, capacity: int, *args) -> None:
    """Launch a pass kernel over its ``capacity`` (it reads the live count from device memory): one thread
    per slot up to ``PASS_BLOCKS`` blocks, which then loop; the same grid every pass (graph-capturable)."""
    if simulated():
        launch(kernel, min(capacity, SIM_THREADS), *args, threads=SIM_THREADS)
    else:
        launch(kernel, min(capacity, PASS_BLOCKS * THREADS), *args)


# ------------------------------------------------------------------------------------------ device maths
@cuda.jit(device=True)
def _energy2(q, a, b, x, y, z):
    """[x;1]^T (Q_a + Q_b) [x;1], coefficients summed first (the serial reference's rounding)."""
    return ((q[a, 0] + q[b, 0]) * x * x + 2.0 * (q[a, 1] + q[b, 1]) * x * y
            + 2.0 * (q[a, 2] + q[b, 2]) * x * z
            + 2.0 * (q[a, 3] + q[b, 3]) * x + (q[a, 4] + q[b, 4]) * y * y
            + 2.0 * (q[a, 5] + q[b, 5]) * y * z
            + 2.0 * (q[a, 6] + q[b, 6]) * y + (q[a, 7] + q[b, 7]) * z * z + 2.0 * (q[a, 8] + q[b, 8]) * z
            + (q[a, 9] + q[b, 9]))


@cuda.jit(device=True)
def _place_dev(pos, q, fixed, a, b, mode, out):
    """Placement of collapse (a, b) into out[3] and its cost >= +0.0; -1 when both endpoints are fixed."""
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
    e = _energy2(q, a, b, out[0], out[1], out[2])
    if e != e:
        return -1.0                                  # NaN: never a candidate
    return e if e > 0.0 else 0.0                     # +0.0, never -0.0 (sign bit = negative key)


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
def _face_normal(pos, faces, f, out):
    """``_normal_quality`` of face f at the current positions into out[4]."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    _normal_quality(pos[i0, 0], pos[i0, 1], pos[i0, 2], pos[i1, 0], pos[i1, 1], pos[i1, 2],
                    pos[i2, 0], pos[i2, 1], pos[i2, 2], out)


@cuda.jit(device=True)
def _moved_normal(pos, faces, f, a, b, p, out):
    """``_normal_quality`` of face f with its corner a or b (if any) at p[3] into out[4]."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0, z0 = pos[i0, 0], pos[i0, 1], pos[i0, 2]
    x1, y1, z1 = pos[i1, 0], pos[i1, 1], pos[i1, 2]
    x2, y2, z2 = pos[i2, 0], pos[i2, 1], pos[i2, 2]
    if i0 == a or i0 == b:
        x0, y0, z0 = p[0], p[1], p[2]
    if i1 == a or i1 == b:
        x1, y1, z1 = p[0], p[1], p[2]
    if i2 == a or i2 == b:
        x2, y2, z2 = p[0], p[1], p[2]
    _normal_quality(x0, y0, z0, x1, y1, z1, x2, y2, z2, out)


@cuda.jit(device=True)
def _faces_ok(pos, faces, off, vf, v, a, b, p, n0, n1):
    """Flip / sliver check of the faces around v that survive collapse (a, b) -> p."""
    for i in range(off[v], off[v + 1]):
        f = vf[i]
        if _has(faces, f, a) and _has(faces, f, b):
            continue
        _face_normal(pos, faces, f, n0)
        _moved_normal(pos, faces, f, a, b, p, n1)
        if n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2] <= MAX_TURN_COS:
            return False
        if n1[3] < MIN_QUALITY and n1[3] < n0[3]:
            return False
    return True


@cuda.jit(device=True)
def _ring_face(faces, off, vf, a, b, i):
    """Face i of the faces around a then around b (the CSR lists one after the other), -1 when it holds
    both a and b (a face the collapse removes): the ring is the faces >= 0."""
    na = off[a + 1] - off[a]
    f = vf[off[a] + i] if i < na else vf[off[b] + i - na]
    if _has(faces, f, a) and _has(faces, f, b):
        return -1
    return f


@cuda.jit(device=True)
def _outer_face(faces, off, vf, f, x, y):
    """The face other than f on edge (x, y) with the smallest id (the serial reference's first in face
    order; on a manifold edge the only one), or -1 on a boundary."""
    g = -1
    for i in range(off[x], off[x + 1]):
        e = vf[i]
        if e != f and _has(faces, e, y) and (g < 0 or e < g):
            g = e
    return g


@cuda.jit(device=True)
def _folds_ok(pos, faces, off, vf, a, b, p, n0, n1, n2, n3):
    """Fold guard of collapse (a, b) -> p (``qem_host._folds_ok`` at ``FOLD_COS``): no ring face f = (s,
    w1, w2) newly folds against a ring face holding w1 or w2 or the face across (w1, w2), i.e. their
    normals' dot may drop below FOLD_COS only where it was already lower. n0..n3: float64 [4] scratch."""
    nt = off[a + 1] - off[a] + off[b + 1] - off[b]
    for i in range(nt):
        f = _ring_face(faces, off, vf, a, b, i)
        if f < 0:
            continue
        k = 0
        while faces[f, k] != a and faces[f, k] != b:
            k += 1
        w1 = faces[f, (k + 1) % 3]
        w2 = faces[f, (k + 2) % 3]
        _face_normal(pos, faces, f, n0)
        _moved_normal(pos, faces, f, a, b, p, n1)
        for j in range(i + 1, nt):             # pairs once each (the test is symmetric in f and g)
            g = _ring_face(faces, off, vf, a, b, j)
            if g < 0 or not (_has(faces, g, w1) or _has(faces, g, w2)):
                continue
            _face_normal(pos, faces, g, n2)
            _moved_normal(pos, faces, g, a, b, p, n3)
            after = n1[0] * n3[0] + n1[1] * n3[1] + n1[2] * n3[2]
            if after < FOLD_COS and after < n0[0] * n2[0] + n0[1] * n2[1] + n0[2] * n2[2]:
                return False
        g = _outer_face(faces, off, vf, f, w1, w2)
        if g >= 0:
            _face_normal(pos, faces, g, n2)
            after = n1[0] * n2[0] + n1[1] * n2[1] + n1[2] * n2[2]
            if after < FOLD_COS and after < n0[0] * n2[0] + n0[1] * n2[1] + n0[2] * n2[2]:
                return False
    return True


@cuda.jit(device=True)
def _point_ok(pos, faces, off, vf, a, b, p, n0, n1, n2, n3):
    """The strict guards (``qem_host.STRICT_GUARDS``) for collapse (a, b) -> p: turn and quality of the
    faces around a and around b, then the fold guard."""
    return (_faces_ok(pos, faces, off, vf, a, a, b, p, n0, n1)
            and _faces_ok(pos, faces, off, vf, b, a, b, p, n0, n1)
            and _folds_ok(pos, faces, off, vf, a, b, p, n0, n1, n2, n3))


_choice_point = cuda.jit(device=True)(serial._choice_point.py_func)   # the host's fallback points


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
@cuda.jit(device=True)
def _perm32(h):
    """Bijection of [0, 2^32): odd multiply mod 2^32, then xor-shift (a tie-break hash of the half-edge)."""
    x = (h * 2654435761) & 0xFFFFFFFF
    return x ^ (x >> 16)


@cuda.jit(device=True)
def _face_quadric_one(pos, faces, fq, nf, f):
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    ux, uy, uz = pos[i1, 0] - pos[i0, 0], pos[i1, 1] - pos[i0, 1], pos[i1, 2] - pos[i0, 2]
    wx, wy, wz = pos[i2, 0] - pos[i0, 0], pos[i2, 1] - pos[i0, 1], pos[i2, 2] - pos[i0, 2]
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    dbl = math.sqrt(nx * nx + ny * ny + nz * nz)
    if dbl <= 1e-300:
        for j in range(10):
            fq[f, j] = 0.0
        return
    nx, ny, nz = nx / dbl, ny / dbl, nz / dbl
    d = -(nx * pos[i0, 0] + ny * pos[i0, 1] + nz * pos[i0, 2])
    w = 0.5 * dbl
    fq[f, 0], fq[f, 1], fq[f, 2], fq[f, 3] = w * nx * nx, w * nx * ny, w * nx * nz, w * nx * d
    fq[f, 4], fq[f, 5], fq[f, 6] = w * ny * ny, w * ny * nz, w * ny * d
    fq[f, 7], fq[f, 8], fq[f, 9] = w * nz * nz, w * nz * d, w * d * d


@cuda.jit(cache=True)
def face_quadrics_kernel(pos, faces, fq, nf):
    """One thread per face: its area-weighted plane quadric fq[f] (zero for a degenerate face)."""
    for f in range(cuda.grid(1), nf, cuda.gridsize(1)):  # grid-stride (_launch)
        _face_quadric_one(pos, faces, fq, nf, f)


@cuda.jit(device=True)
def _vertex_quadric_one(fq, off, corner, q, nv, v):
    for j in range(10):
        acc = 0.0
        for i in range(off[v], off[v + 1]):
            acc += fq[corner[i] // 3, j]
        q[v, j] = acc


@cuda.jit(cache=True)
def vertex_quadric_sum_kernel(fq, off, corner, q, nv):
    """One thread per vertex: q[v] = the sum of its faces' quadrics in face order (``corner``: the face
    corners grouped by vertex, each group in corner order), so every run adds in the same order."""
    for v in range(cuda.grid(1), nv, cuda.gridsize(1)):  # grid-stride (_launch)
        _vertex_quadric_one(fq, off, corner, q, nv, v)


@cuda.jit(device=True)
def _edge_cost_one(pos, q, fixed, faces, mode, cost, place, nh, h):
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


@cuda.jit(cache=True)
def edge_cost_kernel(pos, q, fixed, faces, mode, cost, place, nh):
    """One thread per half-edge: cost (float32, -1 = not a candidate) and placement [3] of its edge,
    without the validity checks (the placement maths alone, for the parity tests)."""
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch)
        _edge_cost_one(pos, q, fixed, faces, mode, cost, place, nh, h)


@cuda.jit(device=True)
def _candidate_one(pos, q, fixed, faces, off, vf, mode, cost, choice, nh, h):
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    c = -1.0
    ch = CHOICE_QEM
    if a < b:
        p = cuda.local.array(3, numba.float64)
        c = _place_dev(pos, q, fixed, a, b, mode, p)
        if c >= 0.0:
            n0 = cuda.local.array(4, numba.float64)
            n1 = cuda.local.array(4, numba.float64)
            n2 = cuda.local.array(4, numba.float64)
            n3 = cuda.local.array(4, numba.float64)
            if not _link_ok(faces, off, vf, a, b):
                c = -1.0
            elif not _point_ok(pos, faces, off, vf, a, b, p, n0, n1, n2, n3):
                c = -1.0                                  # the QEM point fails: the fallback points
                ring = off[a + 1] - off[a] + off[b + 1] - off[b] - 4      # link ok: 2 faces removed
                if not (fixed[a] or fixed[b]) and ring <= FALLBACK_MAX_RING:
                    best = math.inf
                    for kk in range(CHOICE_A, CHOICE_MID + 1):
                        _choice_point(pos, a, b, kk, p)
                        if _point_ok(pos, faces, off, vf, a, b, p, n0, n1, n2, n3):
                            e = _energy2(q, a, b, p[0], p[1], p[2])
                            if e == e:                    # NaN: never
                                e = e if e > 0.0 else 0.0     # +0.0, never -0.0 (sign bit)
                                if e < best:              # ties: the first of a, b, midpoint
                                    best = e
                                    ch = kk
                    if ch != CHOICE_QEM:
                        c = best
    cost[h] = c
    choice[h] = ch


# Pass kernels: grid-stride over the pass's capacity (3 F0 half-edges, F0 faces, F0 / 2 + 1 winners) with
# the live counts read from device memory (nfd[0] = current faces, count[0] = winners), so a pass launches
# the same grid with the same arguments every time and can be captured once in a CUDA graph.
@cuda.jit(cache=True)
def candidate_kernel(pos, q, fixed, faces, nfd, off, vf, mode, cost, choice):
    """One thread per half-edge h < 3 nfd[0]: cost (float32) of its edge if h is the edge's a < b
    half-edge, not both endpoints are fixed, the link condition holds and the QEM point or a fallback
    point passes the strict guards (turn, quality, fold) now; else -1. choice (int8): the placement
    (CHOICE_QEM, or CHOICE_A / CHOICE_B / CHOICE_MID whose energy is then the cost)."""
    nh = 3 * nfd[0]
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _candidate_one(pos, q, fixed, faces, off, vf, mode, cost, choice, nh, h)


@cuda.jit(device=True)
def _cost_histogram_one(bits, hist, nh, h):
    x = bits[h]
    if x >= 0:
        cuda.atomic.add(hist, x >> HIST_SHIFT, 1)


@cuda.jit(cache=True)
def cost_histogram_kernel(bits, nfd, hist):
    """One thread per half-edge: hist[bits >> HIST_SHIFT] += 1 for candidates (non-negative bits)."""
    nh = 3 * nfd[0]
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _cost_histogram_one(bits, hist, nh, h)


@cuda.jit(device=True)
def _keys_one(bits, bmax, keys, nh, h):
    x = bits[h]
    if x < 0 or (x >> HIST_SHIFT) > bmax[0]:
        keys[h] = MAX_KEY
    else:
        keys[h] = (numba.int64(x >> KEY_SHIFT) << 32) | _perm32(numba.int64(h))


@cuda.jit(cache=True)
def keys_kernel(bits, nfd, bmax, keys):
    """One thread per half-edge: priority key of an eligible candidate (bin <= bmax[0]), else INT64_MAX."""
    nh = 3 * nfd[0]
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _keys_one(bits, bmax, keys, nh, h)


@cuda.jit(device=True)
def _vertex_min_one(keys, faces, vlock, vmin, nh, h):
    key = keys[h]
    if key == MAX_KEY:
        return
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    if vlock[a] != 0 or vlock[b] != 0:          # touches an accepted collapse's faces: out of this pass
        keys[h] = MAX_KEY
        return
    cuda.atomic.min(vmin, a, key)
    cuda.atomic.min(vmin, b, key)


@cuda.jit(cache=True)
def vertex_min_kernel(keys, faces, nfd, vlock, vmin):
    """One thread per half-edge with a key: vmin[a], vmin[b] = atomicMin(key); a key touching a locked
    vertex leaves the pass instead."""
    nh = 3 * nfd[0]
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _vertex_min_one(keys, faces, vlock, vmin, nh, h)


@cuda.jit(device=True)
def _face_min_one(faces, vmin, v2, nf, f):
    m = min(vmin[faces[f, 0]], min(vmin[faces[f, 1]], vmin[faces[f, 2]]))
    if m == MAX_KEY:
        return
    for c in range(3):
        cuda.atomic.min(v2, faces[f, c], m)


@cuda.jit(cache=True)
def face_min_kernel(faces, nfd, vmin, v2):
    """One thread per face: m = min vmin over its vertices; v2[v] = atomicMin(m)."""
    nf = nfd[0]
    for f in range(cuda.grid(1), nf, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _face_min_one(faces, vmin, v2, nf, f)


@cuda.jit(device=True)
def _select_one(keys, faces, v2, off, vf, vlock, count, win_h, win_key, nh, h):
    key = keys[h]
    if key == MAX_KEY:
        return
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    if v2[a] != key or v2[b] != key:
        return
    keys[h] = MAX_KEY
    slot = cuda.atomic.add(count, 0, 1)
    win_h[slot] = h
    win_key[slot] = key
    for j in range(off[a], off[a + 1]):
        for c in range(3):
            vlock[faces[vf[j], c]] = 1
    for j in range(off[b], off[b + 1]):
        for c in range(3):
            vlock[faces[vf[j], c]] = 1


@cuda.jit(cache=True)
def select_kernel(keys, faces, nfd, v2, off, vf, vlock, count, win_h, win_key):
    """One thread per half-edge with a key: a winner (v2[a] == v2[b] == key) leaves the candidates, is
    appended to (win_h, win_key) at slot atomicAdd(count[0]) and locks every vertex of every face around
    its endpoints (vlock = 1)."""
    nh = 3 * nfd[0]
    for h in range(cuda.grid(1), nh, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _select_one(keys, faces, v2, off, vf, vlock, count, win_h, win_key, nh, h)


@cuda.jit(device=True)
def _apply_one(sel, faces, fixed, pos, q, mode, choice, vmap, n, i):
    h = sel[i]
    f = h // 3
    k = h - 3 * f
    a = faces[f, k]
    b = faces[f, (k + 1) % 3]
    p = cuda.local.array(3, numba.float64)
    if choice[h] == CHOICE_QEM:
        _place_dev(pos, q, fixed, a, b, mode, p)
    else:
        _choice_point(pos, a, b, choice[h], p)
    s, u = (b, a) if fixed[b] else (a, b)
    for c in range(3):
        pos[s, c] = p[c]
    for j in range(10):
        q[s, j] += q[u, j]
    vmap[u] = s


@cuda.jit(cache=True)
def apply_kernel(sel, count, faces, fixed, pos, q, mode, choice, vmap):
    """One thread per selected half-edge h = sel[i], i < count[0]: survivor s (the fixed endpoint if any)
    moves to the placement choice[h] chose (the QEM point recomputed from the unchanged endpoints, or a
    fallback point), takes the removed vertex's quadric, vmap[u] = s."""
    n = count[0]
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _apply_one(sel, faces, fixed, pos, q, mode, choice, vmap, n, i)


@cuda.jit(device=True)
def _remap_one(faces, vmap, alive, nf, f):
    for c in range(3):
        v = faces[f, c]
        if vmap[v] >= 0:
            faces[f, c] = vmap[v]
    alive[f] = faces[f, 0] != faces[f, 1] and faces[f, 1] != faces[f, 2] and faces[f, 0] != faces[f, 2]


@cuda.jit(cache=True)
def remap_kernel(faces, nfd, vmap, alive, cap):
    """One thread per face slot f < cap: live faces (f < nfd[0]) map removed vertices to survivors and
    die (alive 0) when they lost a distinct corner; slots past the live faces get alive 0."""
    nf = nfd[0]
    for f in range(cuda.grid(1), cap, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        if f < nf:
            _remap_one(faces, vmap, alive, nf, f)
        else:
            alive[f] = 0


@cuda.jit(cache=True)
def compact_kernel(faces, nfd, alive, scan, out):
    """One thread per live face: a surviving face f goes to row scan[f] - 1 of out (inclusive prefix sum of
    alive: face order is kept)."""
    for f in range(cuda.grid(1), nfd[0], cuda.gridsize(1)):  # grid-stride (_launch_cap)
        if alive[f] != 0:
            r = scan[f] - 1
            out[r, 0] = faces[f, 0]
            out[r, 1] = faces[f, 1]
            out[r, 2] = faces[f, 2]


@cuda.jit(cache=True)
def copy_rows_kernel(src, scan, dst, cap):
    """dst[:n] = src[:n] for the n = scan[cap - 1] compacted faces."""
    n = scan[cap - 1]
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        dst[r, 0] = src[r, 0]
        dst[r, 1] = src[r, 1]
        dst[r, 2] = src[r, 2]


@cuda.jit(cache=True)
def degree_kernel(faces, nfd, deg):
    """One thread per corner of the live faces: deg[v] += 1 (deg zeroed before; the CSR's counts)."""
    nc = 3 * nfd[0]
    for c in range(cuda.grid(1), nc, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        f = c // 3
        cuda.atomic.add(deg, faces[f, c - 3 * f], 1)


@cuda.jit(device=True)
def _csr_fill_one(faces, cursor, vf, nc, c):
    f = c // 3
    slot = cuda.atomic.add(cursor, faces[f, c - 3 * f], 1)
    vf[slot] = f


@cuda.jit(cache=True)
def csr_fill_kernel(faces, nfd, cursor, vf):
    """One thread per corner: vf[cursor[v]++] = face (cursor starts at the CSR offsets)."""
    nc = 3 * nfd[0]
    for c in range(cuda.grid(1), nc, cuda.gridsize(1)):  # grid-stride (_launch_cap)
        _csr_fill_one(faces, cursor, vf, nc, c)


@cuda.jit(device=True)
def _fan_count_one(start, opp, fans_ok, degree, nv, v):
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


@cuda.jit(cache=True)
def fan_count_kernel(start, opp, fans_ok, degree, nv):
    """One thread per vertex with only good edges: walk its fan through opposite half-edges from corner
    start[v]; fans_ok[v] = 1 when the walk visits all degree[v] corners (one fan), else 0 (bow-tie)."""
    for v in range(cuda.grid(1), nv, cuda.gridsize(1)):  # grid-stride (_launch)
        _fan_count_one(start, opp, fans_ok, degree, nv, v)


# --------------------------------------------------------------------------------------------- reference
@njit(cache=True)
def _csr_ref(faces, nv):
    off = np.zeros(nv + 1, np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            off[faces[f, k] + 1] += 1
    off = np.cumsum(off)
    cur = off[:-1].copy()
    vf = np.empty(3 * faces.shape[0], np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            vf[cur[faces[f, k]]] = f
            cur[faces[f, k]] += 1
    return off, vf


def candidates_ref(pos, q, fixed, faces, mode: int, level: np.ndarray = STRICT_GUARDS):
    """(cost float32 [3F], choice int8 [3F], off, vf): the cost of each valid candidate half-edge, else
    -1, and its placement (CHOICE_QEM / _A / _B / _MID; 0 where no candidate), with the CPU simplifier's
    own placement (``_place``), link condition (``_link_ok``) and guard level (``_valid_placement`` at
    ``level`` float64 [5], the strict one by default: a fallback's energy is the cost); also the CSR
    (off, vf)."""
    return _candidates_ref(pos, q, fixed, faces, mode, np.asarray(level, np.float64))


@njit(cache=True)
def _candidates_ref(pos, q, fixed, faces, mode, level):
    nv, nh = pos.shape[0], 3 * faces.shape[0]
    off, vf = _csr_ref(faces, nv)
    head, nxt, _ = serial.corner_lists(faces, nv)       # in face order: the outer face is the smallest id,
    alive = np.ones(faces.shape[0], np.bool_)           # as the kernels' _outer_face
    cost = np.full(nh, -1.0, np.float32)
    choice = np.zeros(nh, np.int8)
    mark = np.zeros(nv, np.int64)
    mark2 = np.zeros(nv, np.int64)
    ring = np.empty(0, np.int64)
    nrm = np.empty((0, 7))
    p = np.empty(3)
    for h in range(nh):
        f, k = h // 3, h % 3
        a, b = faces[f, k], faces[f, (k + 1) % 3]
        if a >= b:
            continue
        c = serial._place(pos, q, fixed, a, b, p, mode)
        if not c >= 0.0:
            continue
        fa, fb = vf[off[a]:off[a + 1]], vf[off[b]:off[b + 1]]
        if not serial._link_ok(faces, fa, fa.size, fb, fb.size, a, b, mark, mark2, h + 1):
            continue
        if ring.size < fa.size + fb.size:
            ring, nrm = np.empty(2 * (fa.size + fb.size), np.int64), np.empty((2 * (fa.size + fb.size), 7))
        alt, ch = serial._valid_placement(pos, q, fixed, faces, fa, fa.size, fb, fb.size, a, b, p, mode,
                                          level, head, nxt, alive, ring, nrm)
        if ch < 0:
            continue
        c = c if ch == CHOICE_QEM else alt
        cost[h] = c if c > 0.0 else 0.0
        choice[h] = ch
    return cost, choice, off, vf


@njit(cache=True)
def select_ref(cost, faces, off, vf, nv, rounds, eligible_percent):
    """Winners (half-edge ids, keys) of one pass: threshold, keys and rounds as the kernels do them."""
    bits = cost.view(np.int32)
    nh = bits.shape[0]
    hist = np.zeros(HIST_BINS, np.int64)
    for h in range(nh):
        if bits[h] >= 0:
            hist[bits[h] >> HIST_SHIFT] += 1
    cdf = np.cumsum(hist)
    bmax = np.searchsorted(cdf, max(1, (cdf[-1] * eligible_percent + 99) // 100))
    keys = np.full(nh, MAX_KEY)
    for h in range(nh):
        if bits[h] >= 0 and (bits[h] >> HIST_SHIFT) <= bmax:
            x = (h * 2654435761) & 0xFFFFFFFF
            keys[h] = (np.int64(bits[h] >> KEY_SHIFT) << 32) | (x ^ (x >> 16))
    vlock = np.zeros(nv, np.bool_)
    win_h = []
    win_key = []
    for _ in range(rounds):
        vmin = np.full(nv, MAX_KEY)
        v2 = np.full(nv, MAX_KEY)
        for h in range(nh):
            a, b = faces[h // 3, h % 3], faces[h // 3, (h % 3 + 1) % 3]
            if keys[h] != MAX_KEY and (vlock[a] or vlock[b]):
                keys[h] = MAX_KEY
            if keys[h] != MAX_KEY:
                vmin[a] = min(vmin[a], keys[h])
                vmin[b] = min(vmin[b], keys[h])
        for f in range(faces.shape[0]):
            m = min(vmin[faces[f, 0]], min(vmin[faces[f, 1]], vmin[faces[f, 2]]))
            for c in range(3):
                v2[faces[f, c]] = min(v2[faces[f, c]], m)
        first = len(win_h)
        for h in range(nh):
            a, b = faces[h // 3, h % 3], faces[h // 3, (h % 3 + 1) % 3]
            if keys[h] != MAX_KEY and v2[a] == keys[h] and v2[b] == keys[h]:
                win_h.append(h)
                win_key.append(keys[h])
                keys[h] = MAX_KEY
        for i in range(first, len(win_h)):
            for v in (faces[win_h[i] // 3, win_h[i] % 3], faces[win_h[i] // 3, (win_h[i] % 3 + 1) % 3]):
                for j in range(off[v], off[v + 1]):
                    for c in range(3):
                        vlock[faces[vf[j], c]] = True
    return np.array(win_h, np.int64), np.array(win_key, np.int64)


@njit(cache=True)
def _apply_ref(sel, faces, fixed, pos, q, mode, choice):
    vmap = np.full(pos.shape[0], -1, np.int64)
    p = np.empty(3)
    for h in sel:
        a, b = faces[h // 3, h % 3], faces[h // 3, (h % 3 + 1) % 3]
        if choice[h] == CHOICE_QEM:
            serial._place(pos, q, fixed, a, b, p, mode)
        else:
            serial._choice_point(pos, a, b, choice[h], p)
        s, u = (b, a) if fixed[b] else (a, b)
        pos[s] = p
        q[s] += q[u]
        vmap[u] = s
    alive = np.ones(faces.shape[0], np.bool_)
    for f in range(faces.shape[0]):
        for c in range(3):
            if vmap[faces[f, c]] >= 0:
                faces[f, c] = vmap[faces[f, c]]
        alive[f] = faces[f, 0] != faces[f, 1] and faces[f, 1] != faces[f, 2] and faces[f, 0] != faces[f, 2]
    return alive


def collapse_passes_ref(pos: np.ndarray, faces: np.ndarray, fixed: np.ndarray, target: int, mode: int,
                        rounds: int = ROUNDS, max_passes: int = 1000) -> tuple[np.ndarray, np.ndarray, int]:
    """Serial numba reference of the whole pass loop (``CollapsePasses`` + ``simplify_gpu._passes``):
    (positions float64 [V, 3], faces int32 [F', 3], passes). Inputs are not modified."""
    pos, faces = pos.astype(np.float64), faces.astype(np.int32)
    q = serial._quadrics(pos, faces)
    passes = 0
    while faces.shape[0] > target and passes < max_passes:
        passes += 1
        needed = (faces.shape[0] - target + 1) // 2
        cost, choice, off, vf = candidates_ref(pos, q, fixed, faces, mode)
        win_h, win_key = select_ref(cost, faces, off, vf, pos.shape[0], rounds, ELIGIBLE_PERCENT)
        if win_h.size == 0:
            break
        sel = win_h[np.argsort(win_key)[:needed]]
        faces = faces[_apply_ref(sel, faces, fixed, pos, q, mode, choice)]
    return pos, faces, passes


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
    """Per-vertex quadrics float64 [V, 10] of positions float64 [V, 3] and faces int32 [F, 3]: each face's
    quadric, then each vertex's sum over its faces in face order. Deterministic: float64 atomic adds (the
    kernel before 2026-12-08) summed in a different order on every run, so the same mesh simplified to a
    different result each time on the H100 (CUDA-graph replay vs eager launches differed)."""
    _check(pos, "positions", torch.float64, 3, pos.device)
    _check(faces, "faces", torch.int32, 3, pos.device)
    nv, nf = pos.shape[0], faces.shape[0]
    fq = torch.empty(nf, 10, dtype=torch.float64, device=pos.device)
    q = torch.zeros(nv, 10, dtype=torch.float64, device=pos.device)
    if nf == 0:
        return q
    _launch(face_quadrics_kernel, nf, view(pos), view(faces), view(fq), nf)
    corners = faces.reshape(-1).long()
    corner = torch.argsort(corners, stable=True)                            # grouped by vertex, in order
    off = torch.zeros(nv + 1, dtype=torch.int64, device=pos.device)
    torch.cumsum(torch.bincount(corners, minlength=nv), 0, out=off[1:])
    _launch(vertex_quadric_sum_kernel, nv, view(fq), view(off), view(corner), view(q), nv)
    return q


def edge_costs(pos, q, fixed, faces, mode: int):
    """(cost float32 [3F], placement float64 [3F, 3]) per half-edge, without validity checks; cost -1
    where h is not a candidate (b < a, or both endpoints fixed). mode 0 = ON_EDGE, 1 = BOUNDED_OPTIMAL."""
    _check(pos, "positions", torch.float64, 3, pos.device)
    _check(q, "quadrics", torch.float64, 10, pos.device)
    _check(fixed, "fixed", torch.bool, None, pos.device)
    _check(faces, "faces", torch.int32, 3, pos.device)
    nh = 3 * faces.shape[0]
    cost = torch.empty(nh, dtype=torch.float32, device=pos.device)
    place = torch.empty(nh, 3, dtype=torch.float64, device=pos.device)
    _launch(edge_cost_kernel, nh, view(pos), view(q), view(fixed), view(faces), int(mode), view(cost),
           view(place), nh)
    return cost, place


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
    _launch(fan_count_kernel, nv, view(start), view(opp), view(fans_ok), view(degree), nv)
    return fixed | ((fans_ok == 0) & (degree > 0))


class CollapsePasses:
    """Device state of one simplification: positions and quadrics (modified in place), the current faces
    and every per-pass buffer, allocated once at the input size with their kernel views made once (a
    view costs ~10 us of host time).

    A pass is two phases with fixed launch arguments (the live counts stay on the device): ``select``
    (CSR, candidates, threshold, keys, winner rounds; ~25 launches) and ``apply`` (collapse, remap,
    order-keeping compaction; ~7 launches). With ``graphs=True`` (CUDA only) each phase runs eagerly in
    the first pass (numba compiles there), is captured into a CUDA graph in the second and replayed after:
    two graph launches and the one host sync (the winner count) per pass instead of ~40 numba/torch
    launches. A capture that fails falls back to eager launches (``graph_error`` says why).

    pos: float64 [V, 3]; faces: int32 [F, 3]; fixed: bool [V], all contiguous on the kernel device;
    mode: 0 = ON_EDGE, 1 = BOUNDED_OPTIMAL; rounds >= 1 winner rounds per pass."""

    def __init__(self, pos: torch.Tensor, faces: torch.Tensor, fixed: torch.Tensor, mode: int, rounds: int,
                 graphs: bool = False):
        dev = pos.device
        _check(pos, "positions", torch.float64, 3, dev)
        _check(faces, "faces", torch.int32, 3, dev)
        _check(fixed, "fixed", torch.bool, None, dev)
        if fixed.shape[0] != pos.shape[0] or 3 * faces.shape[0] >= 2**31:
            raise ValueError(f"fixed must be [V] = [{pos.shape[0]}] and 3F < 2^31; got {tuple(fixed.shape)}, "
                             f"F = {faces.shape[0]}")
        nv, f0 = pos.shape[0], faces.shape[0]
        self.nf, self.f0, self.mode, self.rounds = f0, f0, int(mode), int(rounds)
        self.graphs = bool(graphs) and dev.type == "cuda" and not simulated()
        self.graph_error = ""
        self._graph: dict[str, torch.cuda.CUDAGraph] = {}
        self._eager_runs = {"select": 0, "apply": 0}
        self.pos, self.fixed = pos, fixed
        self.q = vertex_quadrics(pos, faces)
        self.faces2 = torch.empty(2, f0, 3, dtype=torch.int32, device=dev)    # current, compaction target
        self.faces2[0].copy_(faces)
        self.nfd = torch.tensor([f0], dtype=torch.int64, device=dev)           # live face count
        self.deg = torch.empty(nv, dtype=torch.int32, device=dev)
        self.off = torch.zeros(nv + 1, dtype=torch.int32, device=dev)
        self.cursor = torch.empty(nv, dtype=torch.int32, device=dev)
        self.vf = torch.empty(3 * f0, dtype=torch.int32, device=dev)
        self.cost = torch.empty(3 * f0, dtype=torch.float32, device=dev)
        self.choice = torch.zeros(3 * f0, dtype=torch.int8, device=dev)    # placement of each candidate
        self.hist = torch.empty(HIST_BINS, dtype=torch.int32, device=dev)
        self.bmax = torch.empty(1, dtype=torch.int64, device=dev)
        self.keys = torch.empty(3 * f0, dtype=torch.int64, device=dev)
        self.vmin2 = torch.empty(2, nv, dtype=torch.int64, device=dev)       # vmin, v2
        self.vlock = torch.empty(nv, dtype=torch.int8, device=dev)
        self.count = torch.tensor([0, f0], dtype=torch.int64, device=dev)    # winners, alive faces
        self.win_h = torch.empty(f0 // 2 + 1, dtype=torch.int32, device=dev)
        self.win_key = torch.empty(f0 // 2 + 1, dtype=torch.int64, device=dev)
        self.vmap = torch.empty(nv, dtype=torch.int32, device=dev)
        self.alive = torch.empty(f0, dtype=torch.int32, device=dev)
        self.scan = torch.empty(f0, dtype=torch.int32, device=dev)
        self.v = {name: view(getattr(self, name)) for name in (
            "pos", "fixed", "q", "nfd", "deg", "off", "cursor", "vf", "cost", "choice", "hist", "bmax",
            "keys", "vlock", "count", "win_h", "win_key", "vmap", "alive", "scan")}
        self.v["bits"] = view(self.cost.view(torch.int32))
        self.v["faces"], self.v["out"] = view(self.faces2[0]), view(self.faces2[1])
        self.v["vmin"], self.v["v2"] = view(self.vmin2[0]), view(self.vmin2[1])

    @property
    def faces(self) -> torch.Tensor:
        """The current faces int32 [F', 3] (a view into the face buffer)."""
        return self.faces2[0, :self.nf]

    def select(self) -> int:
        """Steps 1-5 of a pass (module docstring) and its one host sync: returns the number of winners.
        Raises MeshError when the previous compaction's alive count (read in the same transfer) broke the
        2-faces-per-collapse invariant."""
        self._run("select", self._select_launches)
        n, alive = self.count.tolist()                                        # the pass's host sync
        self._check_alive(alive)
        return n

    def _select_launches(self) -> None:
        v, nh = self.v, 3 * self.f0
        self.deg.zero_()
        _launch_cap(degree_kernel, nh, v["faces"], v["nfd"], v["deg"])
        torch.cumsum(self.deg, 0, dtype=torch.int32, out=self.off[1:])
        self.cursor.copy_(self.off[:-1])
        _launch_cap(csr_fill_kernel, nh, v["faces"], v["nfd"], v["cursor"], v["vf"])
        _launch_cap(candidate_kernel, nh, v["pos"], v["q"], v["fixed"], v["faces"], v["nfd"], v["off"],
                    v["vf"], self.mode, v["cost"], v["choice"])
        self.hist.zero_()
        _launch_cap(cost_histogram_kernel, nh, v["bits"], v["nfd"], v["hist"])
        cdf = torch.cumsum(self.hist, 0)                                      # [HIST_BINS] int64
        kth = torch.clamp((cdf[-1:] * ELIGIBLE_PERCENT + 99) // 100, min=1)
        torch.searchsorted(cdf, kth, out=self.bmax)
        _launch_cap(keys_kernel, nh, v["bits"], v["nfd"], v["bmax"], v["keys"])
        self.vlock.zero_()
        self.count[:1].zero_()                  # no host scalar copy: the phase is captured in a graph
        for _ in range(self.rounds):
            self.vmin2.fill_(int(MAX_KEY))
            _launch_cap(vertex_min_kernel, nh, v["keys"], v["faces"], v["nfd"], v["vlock"], v["vmin"])
            _launch_cap(face_min_kernel, self.f0, v["faces"], v["nfd"], v["vmin"], v["v2"])
            _launch_cap(select_kernel, nh, v["keys"], v["faces"], v["nfd"], v["v2"], v["off"], v["vf"],
                        v["vlock"], v["count"], v["win_h"], v["win_key"])

    def finish(self) -> None:
        """Check the last compaction (one sync)."""
        self._check_alive(int(self.count[1]))

    def _check_alive(self, alive: int) -> None:
        if alive != self.nf:
            raise MeshError(f"GPU edge collapse left {alive} faces where {self.nf} were expected "
                            "(internal invariant: 2 faces per collapse)",
                            "simplify this mesh with the CPU simplify_qem and report the input")

    def apply(self, n: int, keep: int) -> int:
        """Collapse the ``keep`` cheapest of the ``n`` winners (all when keep >= n); returns the new face
        count (2 faces die per collapse) and compacts the faces, keeping their order."""
        if keep < n:                        # the last pass: its cheapest winners first, count[0] = keep
            idx = torch.topk(self.win_key[:n], keep, largest=False, sorted=False).indices
            self.win_h[:keep] = self.win_h[idx]
            self.count[0] = keep
        else:
            keep = n
        self._run("apply", self._apply_launches)
        self.nf -= 2 * keep
        return self.nf

    def _apply_launches(self) -> None:
        v, f0 = self.v, self.f0
        self.vmap.fill_(-1)
        _launch_cap(apply_kernel, f0 // 2 + 1, v["win_h"], v["count"], v["faces"], v["fixed"], v["pos"],
                    v["q"], self.mode, v["choice"], v["vmap"])
        _launch_cap(remap_kernel, f0, v["faces"], v["nfd"], v["vmap"], v["alive"], f0)
        torch.cumsum(self.alive, 0, dtype=torch.int32, out=self.scan)
        _launch_cap(compact_kernel, f0, v["faces"], v["nfd"], v["alive"], v["scan"], v["out"])
        _launch_cap(copy_rows_kernel, f0, v["out"], v["scan"], v["faces"], f0)
        self.nfd.copy_(self.scan[-1:])                                        # checked at the next sync
        self.count[1:].copy_(self.scan[-1:])

    def _run(self, phase: str, launches) -> None:
        """Run a phase's launches: eagerly, or (graphs on, after one eager run that compiled the kernels)
        by replaying its CUDA graph, captured on first need."""
        graph = self._graph.get(phase)
        if graph is None and self.graphs and self._eager_runs[phase] > 0:
            graph = self._capture(launches)
            if graph is not None:
                self._graph[phase] = graph
        if graph is None:
            launches()
            self._eager_runs[phase] += 1
        else:
            graph.replay()

    def _capture(self, launches) -> torch.cuda.CUDAGraph | None:
        """CUDA graph of ``launches`` (numba launches go to torch's capture stream), or None (and
        ``graphs`` off, ``graph_error`` set) when capture fails; capturing runs nothing."""
        from numba.cuda.cudadrv.driver import CudaAPIError

        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                launches()
        except (RuntimeError, CudaAPIError) as exc:
            self.graphs, self.graph_error = False, f"{type(exc).__name__}: {exc}"
            torch.cuda.synchronize()
            return None
        return graph
