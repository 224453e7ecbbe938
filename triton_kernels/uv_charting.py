"""Projection charting of a triangle mesh (numba, CPU): label smoothing, small-chart merging and chart
self-overlap counting, the three irregular loops of ``engine/geometry/uv_fast.py``.

Layouts. Faces are numbered 0..F-1; ``nbrs`` int64 [F, 3] holds the face across each edge
(v_j, v_{j+1}), -1 at a boundary (at an edge of 3+ faces the first face links to the second and the
others to the first). Charts are numbered 0..C-1; ``chart`` int64 [F].

``smooth_labels(labels, cost, nbrs, lam, sweeps)``
    Iterated conditional modes on the Potts energy
        E(l) = sum_f cost[f, l_f] + lam * #{edges (f, g): l_f != l_g}
    Gauss-Seidel sweeps in face order: each face takes the label of least local energy
    cost[f, l] + lam * #{g in nbrs(f): l_g != l} (ties: the current label, then the lowest label), until a
    sweep changes nothing or ``sweeps`` ran. E never increases. labels int64 [F] is updated in place and
    returned; cost float64 [F, L]. ~F L sweeps x 4 reads: ~1 ms per sweep at 20K faces, 6 labels.

``merge_small_charts(chart, nbrs, normal_sum, area, normals, live, small_area, min_cos)``
    Greedy merging of charts whose area is below ``small_area`` into a neighbour chart, smallest first
    (ties by id). normal_sum float64 [C, 3] = sum of area x unit normal of each chart's faces, area [C],
    normals float64 [F, 3] unit face normals, live bool [F] faces of non-zero area. A chart merges into the
    neighbour sharing most edges with it (ties: lower id) among those where every live face of the merged
    chart has n . m >= ``min_cos`` (m = merged normal_sum, normalised): it stays a valid projection chart.
    A chart grown past ``small_area`` stops merging. Returns compact chart ids int64 [F] (numbered by
    first face). Cost: each candidate test reads both charts' faces once.

``self_overlap_cells(uv, faces, face_start, face_order, cell)``
    Per chart, the cells of a square grid of pitch ``cell`` (lines at multiples of ``cell``) whose
    centre lies strictly inside two or more of the chart's faces (any orientation, zero-area faces
    skipped): int64 [C]. An orthographic chart with all faces facing the projection direction can only
    overlap itself globally (two layers over one spot); this finds it at the grid's resolution. uv float64
    [V, 2], faces int64 [F, 3], face_order int64 [F] faces grouped by chart, face_start int64 [C + 1].
    With texel coordinates and cell 1 the cell centres are the texel centres. Cost: one point-in-triangle
    test per cell of each face's box, a byte per cell of each chart's box.

``regrow_charts(uv, faces, chart, nbrs, flagged, cell)``
    Re-partitions each flagged chart (bool [C]) into overlap-free sub-charts: breadth-first growth over
    edge-adjacent faces of the chart from its first unassigned face (face order), a face joining only if
    none of its cell centres (grid of pitch ``cell``, lines at multiples of it) is already covered by the
    sub-chart being grown; rejected faces seed the next sub-charts. The first sub-chart keeps the chart's
    id, later ones get new ids after C. Returns compact chart ids int64 [F] (numbered by first face).

References: ``*_ref`` in plain Python/numpy (same results; the tests compare them).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numba import njit

from triton_kernels.errors import ConfigError

# --------------------------------------------------------------------------------------------------------
# References (plain Python / numpy).
# --------------------------------------------------------------------------------------------------------


def smooth_labels_ref(labels: np.ndarray, cost: np.ndarray, nbrs: np.ndarray, lam: float,
                      sweeps: int) -> np.ndarray:
    """Python loops: see the module docstring. Returns a new array."""
    lab = [int(x) for x in labels]
    for _ in range(sweeps):
        changed = False
        for f in range(len(lab)):
            near = [lab[g] for g in nbrs[f] if g >= 0]
            energy = [cost[f, m] + lam * sum(1 for x in near if x != m) for m in range(cost.shape[1])]
            best = min(range(len(energy)), key=lambda m: (energy[m], m != lab[f], m))
            if energy[best] < energy[lab[f]]:
                lab[f], changed = best, True
        if not changed:
            break
    return np.array(lab, np.int64)


def _compact(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 0.. in order of first appearance."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def merge_small_charts_ref(chart, nbrs, normal_sum, area, normals, live, small_area, min_cos) -> np.ndarray:
    """Python dictionaries and lists: see the module docstring."""
    nsum = {c: np.array(x, np.float64) for c, x in enumerate(normal_sum)}
    ar = {c: float(x) for c, x in enumerate(area)}
    owner = {c: c for c in range(len(area))}
    faces_of: dict[int, list[int]] = {c: [] for c in range(len(area))}
    for f, c in enumerate(chart):
        faces_of[int(c)].append(f)
    for c in sorted(range(len(area)), key=lambda k: (area[k], k)):
        if owner[c] != c or ar[c] >= small_area:
            continue
        shared: dict[int, int] = {}
        for f in faces_of[c]:
            for g in nbrs[f]:
                if g >= 0 and owner[int(chart[g])] != c:
                    shared[owner[int(chart[g])]] = shared.get(owner[int(chart[g])], 0) + 1
        for r in sorted(shared, key=lambda k: (-shared[k], k)):
            total = nsum[c] + nsum[r]
            norm = float(np.linalg.norm(total))
            union = [f for f in faces_of[c] + faces_of[r] if live[f]]
            if norm <= 0 or (union and float((normals[union] @ (total / norm)).min()) < min_cos):
                continue
            for part, o in owner.items():
                if o == c:
                    owner[part] = r
            faces_of[r] += faces_of.pop(c)
            nsum[r], ar[r] = total, ar[r] + ar[c]
            break
    return _compact(np.array([owner[int(c)] for c in chart], np.int64))


def self_overlap_cells_ref(uv, faces, face_start, face_order, cell) -> np.ndarray:
    """numpy: every cell centre of each chart's box tested against every face of the chart."""
    out = np.zeros(len(face_start) - 1, np.int64)
    for c in range(len(face_start) - 1):
        fs = faces[face_order[face_start[c]:face_start[c + 1]]]
        p = uv[fs]                                                          # [n, 3, 2]
        lo = np.floor(p.reshape(-1, 2).min(0) / cell) * cell
        hi = p.reshape(-1, 2).max(0)
        nx, ny = int((hi[0] - lo[0]) / cell) + 2, int((hi[1] - lo[1]) / cell) + 2
        gx, gy = np.meshgrid(lo[0] + (np.arange(nx) + 0.5) * cell, lo[1] + (np.arange(ny) + 0.5) * cell)
        q = np.stack([gx.ravel(), gy.ravel()], 1)                          # [N, 2]
        hits = np.zeros(len(q), np.int64)
        for a, b, d in p:
            area = (b[0] - a[0]) * (d[1] - a[1]) - (d[0] - a[0]) * (b[1] - a[1])
            if area == 0:
                continue
            s = 1.0 if area > 0 else -1.0
            w = [s * ((e1[0] - e0[0]) * (q[:, 1] - e0[1]) - (e1[1] - e0[1]) * (q[:, 0] - e0[0]))
                 for e0, e1 in ((a, b), (b, d), (d, a))]
            hits += (w[0] > 0) & (w[1] > 0) & (w[2] > 0)
        out[c] = int((hits >= 2).sum())
    return out


def _cells_inside(p: np.ndarray, cell: float) -> set[tuple[int, int]]:
    """Grid cells (row, col) whose centre lies strictly inside triangle p [3, 2]."""
    q = p / cell
    area = (q[1, 0] - q[0, 0]) * (q[2, 1] - q[0, 1]) - (q[2, 0] - q[0, 0]) * (q[1, 1] - q[0, 1])
    if area == 0:
        return set()
    lo, hi = np.floor(q.min(0) - 0.5).astype(int), np.ceil(q.max(0)).astype(int)
    xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1) + 0.5, np.arange(lo[1], hi[1] + 1) + 0.5)
    s = 1.0 if area > 0 else -1.0
    w = [s * ((q[(e + 1) % 3, 0] - q[e, 0]) * (ys - q[e, 1]) - (q[(e + 1) % 3, 1] - q[e, 1]) * (xs - q[e, 0]))
         for e in range(3)]
    inside = (w[0] > 0) & (w[1] > 0) & (w[2] > 0)
    return {(int(np.floor(y)), int(np.floor(x))) for x, y in zip(xs[inside], ys[inside])}


def regrow_charts_ref(uv, faces, chart, nbrs, flagged, cell) -> np.ndarray:
    """Python BFS over sets of covered cells: see the module docstring."""
    out = np.array(chart, np.int64)
    new_id = int(chart.max()) + 1
    for c in np.flatnonzero(flagged):
        todo = [int(f) for f in np.flatnonzero(chart == c)]
        done: set[int] = set()
        first = True
        for seed in todo:
            if seed in done:
                continue
            sub = c if first else new_id
            new_id += 0 if first else 1
            first = False
            covered: set[tuple[int, int]] = set()
            queue, queued = deque([seed]), {seed}
            while queue:
                f = queue.popleft()
                cells = _cells_inside(uv[faces[f]], cell)
                if cells & covered:
                    continue
                covered |= cells
                done.add(f)
                out[f] = sub
                for g in nbrs[f]:
                    if g >= 0 and chart[g] == c and int(g) not in done and int(g) not in queued:
                        queued.add(int(g))
                        queue.append(int(g))
    return _compact(out)


# --------------------------------------------------------------------------------------------------------
# Kernels.
# --------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _smooth_labels(labels, cost, nbrs, lam, sweeps):
    nf, nl = cost.shape
    for _ in range(sweeps):
        changed = 0
        for f in range(nf):
            cur = labels[f]
            best_l, best_e = cur, np.inf
            for m in range(nl):
                e = cost[f, m]
                for j in range(3):
                    g = nbrs[f, j]
                    if g >= 0 and labels[g] != m:
                        e += lam
                if e < best_e or (e == best_e and m == cur):
                    best_l, best_e = m, e
            cur_e = cost[f, cur]
            for j in range(3):
                g = nbrs[f, j]
                if g >= 0 and labels[g] != cur:
                    cur_e += lam
            if best_l != cur and best_e < cur_e:
                labels[f] = best_l
                changed += 1
        if changed == 0:
            break
    return labels


@njit(cache=True, nogil=True)
def _find(owner, c):
    while owner[c] != c:
        c = owner[c]
    return c


@njit(cache=True, nogil=True)
def _cone_of(head, m, nxt, face_start, face_order, normals, live):
    """min n_f . m over the live faces of the charts linked from ``head``."""
    lo = 1.0
    part = head
    while part >= 0:
        for k in range(face_start[part], face_start[part + 1]):
            f = face_order[k]
            if live[f]:
                lo = min(lo, normals[f, 0] * m[0] + normals[f, 1] * m[1] + normals[f, 2] * m[2])
        part = nxt[part]
    return lo


@njit(cache=True, nogil=True)
def _unit(v):
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    return v / max(n, 1e-300), n


@njit(cache=True, nogil=True)
def _merge_small_charts(chart, nbrs, nsum, area, normals, live, face_start, face_order, order, small_area,
                        min_cos):
    nc = area.shape[0]
    owner = np.arange(nc)
    nxt = np.full(nc, -1, np.int64)                     # member lists: head = root, linked by nxt
    tail = np.arange(nc)
    shared = np.zeros(nc, np.int64)
    touched = np.empty(face_order.shape[0] * 3 + 1, np.int64)
    for c in order:
        if owner[c] != c or area[c] >= small_area:
            continue
        nt = 0
        part = c
        while part >= 0:
            for k in range(face_start[part], face_start[part + 1]):
                f = face_order[k]
                for j in range(3):
                    g = nbrs[f, j]
                    if g < 0:
                        continue
                    r = _find(owner, chart[g])
                    if r == c:
                        continue
                    if shared[r] == 0:
                        touched[nt] = r
                        nt += 1
                    shared[r] += 1
            part = nxt[part]
        while True:                                     # candidates by shared edges, then lower id
            best = -1
            for i in range(nt):
                r = touched[i]
                if shared[r] > 0 and (best < 0 or shared[r] > shared[best]
                                      or (shared[r] == shared[best] and r < best)):
                    best = r
            if best < 0:
                break
            shared[best] = 0
            m, norm = _unit(nsum[c] + nsum[best])
            if norm <= 0:
                continue
            bound = min(_cone_of(c, m, nxt, face_start, face_order, normals, live),
                        _cone_of(best, m, nxt, face_start, face_order, normals, live))
            if bound >= min_cos:
                owner[c] = best
                nxt[tail[best]] = c
                tail[best] = tail[c]
                nsum[best] += nsum[c]
                area[best] += area[c]
                break
        for i in range(nt):
            shared[touched[i]] = 0
    out = np.empty(chart.shape[0], np.int64)
    for f in range(chart.shape[0]):
        out[f] = _find(owner, chart[f])
    return out


@njit(cache=True, nogil=True)
def _chart_box(uv, faces, face_order, start, stop):
    """(x0, y0, x1, y1) of the uv of faces face_order[start:stop] (inf, inf, -inf, -inf when empty)."""
    x0, y0, x1, y1 = np.inf, np.inf, -np.inf, -np.inf
    for k in range(start, stop):
        for j in range(3):
            v = faces[face_order[k], j]
            x0, x1 = min(x0, uv[v, 0]), max(x1, uv[v, 0])
            y0, y1 = min(y0, uv[v, 1]), max(y1, uv[v, 1])
    return x0, y0, x1, y1


@njit(cache=True, nogil=True)
def _self_overlap_cells(uv, faces, face_start, face_order, cell):
    nc = face_start.shape[0] - 1
    out = np.zeros(nc, np.int64)
    for c in range(nc):
        x0, y0, x1, y1 = _chart_box(uv, faces, face_order, face_start[c], face_start[c + 1])
        if face_start[c + 1] == face_start[c]:
            continue
        x0, y0 = math.floor(x0 / cell) * cell, math.floor(y0 / cell) * cell
        nx, ny = int((x1 - x0) / cell) + 2, int((y1 - y0) / cell) + 2
        hits = np.zeros((ny, nx), np.uint8)
        for k in range(face_start[c], face_start[c + 1]):
            f = face_order[k]
            ax, ay = (uv[faces[f, 0], 0] - x0) / cell, (uv[faces[f, 0], 1] - y0) / cell
            bx, by = (uv[faces[f, 1], 0] - x0) / cell, (uv[faces[f, 1], 1] - y0) / cell
            dx, dy = (uv[faces[f, 2], 0] - x0) / cell, (uv[faces[f, 2], 1] - y0) / cell
            area = (bx - ax) * (dy - ay) - (dx - ax) * (by - ay)
            if area == 0.0:
                continue
            s = 1.0 if area > 0 else -1.0
            c0 = max(int(math.floor(min(ax, bx, dx) - 0.5)), 0)
            c1 = min(int(math.ceil(max(ax, bx, dx))), nx - 1)
            r0 = max(int(math.floor(min(ay, by, dy) - 0.5)), 0)
            r1 = min(int(math.ceil(max(ay, by, dy))), ny - 1)
            for r in range(r0, r1 + 1):
                py = r + 0.5
                for q in range(c0, c1 + 1):
                    px = q + 0.5
                    w0 = s * ((bx - ax) * (py - ay) - (by - ay) * (px - ax))
                    w1 = s * ((dx - bx) * (py - by) - (dy - by) * (px - bx))
                    w2 = s * ((ax - dx) * (py - dy) - (ay - dy) * (px - dx))
                    if w0 > 0 and w1 > 0 and w2 > 0 and hits[r, q] < 2:
                        hits[r, q] += 1
        n = 0
        for r in range(ny):
            for q in range(nx):
                if hits[r, q] >= 2:
                    n += 1
        out[c] = n
    return out


@njit(cache=True, nogil=True)
def _stamp_face(uv, tri, x0, y0, cell, grid, stamp, write):
    """Cells of ``grid`` whose centre is strictly inside triangle ``tri``: with write False, True if one
    already holds ``stamp``; with write True, set them to ``stamp``."""
    ax, ay = (uv[tri[0], 0] - x0) / cell, (uv[tri[0], 1] - y0) / cell
    bx, by = (uv[tri[1], 0] - x0) / cell, (uv[tri[1], 1] - y0) / cell
    dx, dy = (uv[tri[2], 0] - x0) / cell, (uv[tri[2], 1] - y0) / cell
    area = (bx - ax) * (dy - ay) - (dx - ax) * (by - ay)
    if area == 0.0:
        return False
    s = 1.0 if area > 0 else -1.0
    ny, nx = grid.shape
    c0, c1 = max(int(math.floor(min(ax, bx, dx) - 0.5)), 0), min(int(math.ceil(max(ax, bx, dx))), nx - 1)
    r0, r1 = max(int(math.floor(min(ay, by, dy) - 0.5)), 0), min(int(math.ceil(max(ay, by, dy))), ny - 1)
    for r in range(r0, r1 + 1):
        py = r + 0.5
        for q in range(c0, c1 + 1):
            px = q + 0.5
            if (s * ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) > 0
                    and s * ((dx - bx) * (py - by) - (dy - by) * (px - bx)) > 0
                    and s * ((ax - dx) * (py - dy) - (ay - dy) * (px - dx)) > 0):
                if write:
                    grid[r, q] = stamp
                elif grid[r, q] == stamp:
                    return True
    return False


@njit(cache=True, nogil=True)
def _regrow_charts(uv, faces, chart, nbrs, flagged, face_start, face_order, cell):
    out = chart.copy()
    state = np.zeros(chart.shape[0], np.int64)          # 0 open, 1 queued or rejected this growth, 2 done
    queue = np.empty(chart.shape[0], np.int64)
    new_id = face_start.shape[0] - 1
    for c in range(face_start.shape[0] - 1):
        if not flagged[c] or face_start[c + 1] == face_start[c]:
            continue
        x0, y0, x1, y1 = _chart_box(uv, faces, face_order, face_start[c], face_start[c + 1])
        x0, y0 = math.floor(x0 / cell) * cell, math.floor(y0 / cell) * cell
        grid = np.zeros((int((y1 - y0) / cell) + 2, int((x1 - x0) / cell) + 2), np.int64)
        stamp = 0
        for k in range(face_start[c], face_start[c + 1]):
            seed = face_order[k]
            if state[seed] == 2:
                continue
            for kk in range(face_start[c], face_start[c + 1]):      # reopen this chart's rejected faces
                if state[face_order[kk]] == 1:
                    state[face_order[kk]] = 0
            stamp += 1
            sub = c if stamp == 1 else new_id
            if stamp > 1:
                new_id += 1
            head, n = 0, 1
            queue[0] = seed
            state[seed] = 1
            while head < n:
                f = queue[head]
                head += 1
                if _stamp_face(uv, faces[f], x0, y0, cell, grid, stamp, False):
                    continue
                _stamp_face(uv, faces[f], x0, y0, cell, grid, stamp, True)
                state[f] = 2
                out[f] = sub
                for j in range(3):
                    g = nbrs[f, j]
                    if g >= 0 and chart[g] == c and state[g] == 0:
                        state[g] = 1
                        queue[n] = g
                        n += 1
    return out


# --------------------------------------------------------------------------------------------------------
# Launchers.
# --------------------------------------------------------------------------------------------------------


def _check_nbrs(nbrs: np.ndarray, faces: int) -> np.ndarray:
    nbrs = np.ascontiguousarray(nbrs, np.int64)
    if nbrs.shape != (faces, 3):
        raise ConfigError(f"face neighbours have shape {nbrs.shape}",
                          f"give int [{faces}, 3], -1 at boundaries")
    return nbrs


def smooth_labels(labels: np.ndarray, cost: np.ndarray, nbrs: np.ndarray, lam: float,
                  sweeps: int = 16) -> np.ndarray:
    """ICM smoothing of face labels (module docstring): returns labels int64 [F] (a new array)."""
    cost = np.ascontiguousarray(cost, np.float64)
    if cost.ndim != 2 or cost.shape[0] != len(labels):
        raise ConfigError(f"label cost has shape {cost.shape} for {len(labels)} faces", "give float [F, L]")
    labels = np.array(labels, np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= cost.shape[1]):
        raise ConfigError("face labels out of range", f"give labels in [0, {cost.shape[1]})")
    return _smooth_labels(labels, cost, _check_nbrs(nbrs, len(labels)), float(lam), int(sweeps))


def chart_layout(chart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(face_order int64 [F] faces grouped by chart, face_start int64 [C + 1])."""
    chart = np.asarray(chart, np.int64)
    order = np.argsort(chart, kind="stable").astype(np.int64)
    counts = np.bincount(chart, minlength=int(chart.max(initial=-1)) + 1)
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def merge_small_charts(chart: np.ndarray, nbrs: np.ndarray, normal_sum: np.ndarray, area: np.ndarray,
                       normals: np.ndarray, live: np.ndarray, small_area: float,
                       min_cos: float) -> np.ndarray:
    """Greedy small-chart merging (module docstring): new compact chart ids int64 [F]."""
    chart = np.ascontiguousarray(chart, np.int64)
    nc = int(chart.max(initial=-1)) + 1
    if np.shape(normal_sum) != (nc, 3) or np.shape(area) != (nc,):
        raise ConfigError(f"chart tables do not match {nc} charts", "give normal_sum [C, 3] and area [C]")
    if np.shape(normals) != (len(chart), 3) or np.shape(live) != (len(chart),):
        raise ConfigError("face normals / live mask do not match the faces", "give float [F, 3] and bool [F]")
    face_order, face_start = chart_layout(chart)
    area = np.array(area, np.float64)
    order = np.lexsort((np.arange(nc), area)).astype(np.int64)
    out = _merge_small_charts(chart, _check_nbrs(nbrs, len(chart)), np.array(normal_sum, np.float64), area,
                              np.ascontiguousarray(normals, np.float64), np.ascontiguousarray(live, np.bool_),
                              face_start, face_order, order, float(small_area), float(min_cos))
    return _compact(out)


def self_overlap_cells(uv: np.ndarray, faces: np.ndarray, chart: np.ndarray, cell: float,
                       map_fn=map, parts: int = 1) -> np.ndarray:
    """Cells of pitch ``cell`` covered twice within each chart (module docstring): int64 [C].

    ``parts`` > 1 splits the charts into that many runs of about equal face counts, each run through
    ``map_fn`` (e.g. a thread pool's ``map``: the kernel runs without the GIL); charts are independent,
    so the counts are the same for any split."""
    if not cell > 0:
        raise ConfigError(f"overlap grid cell {cell} must be > 0", "use about one texel in chart units")
    face_order, face_start = chart_layout(chart)
    uv, faces = np.ascontiguousarray(uv, np.float64), np.ascontiguousarray(faces, np.int64)
    nc = len(face_start) - 1
    cuts = np.unique(np.searchsorted(face_start, np.linspace(0, face_start[-1], max(int(parts), 1) + 1)
                                     .round().astype(np.int64)).clip(0, nc))
    cuts[0], cuts[-1] = 0, nc
    runs = [face_start[a:b + 1] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    if len(runs) <= 1:
        return _self_overlap_cells(uv, faces, face_start, face_order, float(cell))
    out = list(map_fn(lambda run: _self_overlap_cells(uv, faces, run, face_order, float(cell)), runs))
    return np.concatenate(out)


def regrow_charts(uv: np.ndarray, faces: np.ndarray, chart: np.ndarray, nbrs: np.ndarray, flagged: np.ndarray,
                  cell: float) -> np.ndarray:
    """Overlap-free re-partition of the flagged charts (module docstring): compact chart ids int64 [F]."""
    chart = np.ascontiguousarray(chart, np.int64)
    face_order, face_start = chart_layout(chart)
    if not cell > 0 or np.shape(flagged) != (len(face_start) - 1,):
        raise ConfigError(f"regrow needs cell > 0 (got {cell}) and one flag per chart",
                          "give cell ~ one texel in chart units and bool [C]")
    out = _regrow_charts(np.ascontiguousarray(uv, np.float64), np.ascontiguousarray(faces, np.int64), chart,
                         _check_nbrs(nbrs, len(chart)), np.ascontiguousarray(flagged, np.bool_), face_start,
                         face_order, float(cell))
    return _compact(out)
