"""One fast packing pass of UV charts into a square atlas: conservative chart rasters + first-fit bitmap.

Input: charts already parameterised, in one common unit (world units from the charting pass), ``chart``
id per face, every UV vertex used by faces of one chart only. Output: texel coordinates in the
``resolution``^2 atlas. Charts are only rotated (a multiple of 15 deg, then 0 or 90 deg at packing) and
translated: shape and relative scale are kept, so stretch is unchanged.

Method:
  1. Orientation: each chart turned by the angle in {0, 15, .., 75} deg of least bounding-box area.
  2. At scale ``s`` (texels per unit) each chart is rasterised conservatively (every texel whose square
     touches a triangle, 1e-3 texel of slack), dilated by ``padding`` (square), and kept as one column
     span per row (concavities inside a row filled). The raster works per triangle and row: the texels a
     triangle touches in a row are those meeting its part inside the row's slab (exact, O(rows) per
     triangle); the same pass over columns gives the +90 deg orientation, (x, y) -> (H - y, x) with H an
     integer (``_turn_height``), whose texel grid is the unturned one transposed.
  3. Charts, largest box first, go to the first row-major position (then the lower of the allowed 0 / 90
     deg orientations) where all their spans are free in the occupancy bitmap, stored per row as run
     lengths (free run from x, or minus the occupied run), each row's longest free run and the longest
     free run starting in each ``_BLOCK``-column block. A y whose rows cannot hold the spans is skipped
     (with every y putting a too-wide span on the same full row); along a row the candidate x leaps to the
     next x where the failing span fits, blocks without room skipped unread. Both charts' dilated
     footprints are disjoint, so any two footprints are >= 2 x ``padding`` texels apart (xatlas's gutter:
     measured 4 empty texels at padding 2) and every dilated footprint lies inside the atlas.
  4. Scale (``pack_charts``): ``_ROUND`` candidates whose chart area fills 50-70 % of the atlas are packed
     (in parallel through ``map_fn``); the largest that fits wins; none fits: the round shrinks. No
     randomness, ties broken by index: deterministic.

Cost (2-core CPU, one core, numba): one packing of 662 charts at 1024^2 ~0.15 s, of 40-150 charts
0.01-0.03 s (was 0.3 s and 0.04-0.06 s with a per-texel raster and run-by-run scans).
Limits: no backfill inside a row span's concavity; a chart wider than the atlas shrinks all charts.
References: ``_raster_conservative`` (per texel) for the spans, ``first_fit_ref`` (brute force) for the
first fit, ``occupancy_runs`` for the occupancy tables (tests/test_uv_pack_kernels.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ANGLES = np.deg2rad(np.arange(0.0, 90.0, 15.0))
_FILL_GUESS = 0.62          # chart area / atlas area when only one candidate is packed
_FILL_LO, _FILL_HI = 0.50, 0.70   # candidate fills of one round (chart area / atlas area)
_ROUND = 8                  # candidate scales per round
_BLOCK = 32                 # occupancy columns per block of the per-row longest-free-run index
_SLACK = 1e-3               # texels added around each triangle by the conservative raster


@njit(cache=True, nogil=True)
def _orient(xy, faces, face_start, face_order, angles):
    """Per chart: the angle of least bounding-box area, applied, and the box moved to the origin.
    Returns local coordinates float64 [V, 2] (unused vertices 0) and extents float64 [C, 2]."""
    nc = face_start.shape[0] - 1
    out = np.zeros_like(xy)
    ext = np.zeros((nc, 2))
    seen = np.zeros(xy.shape[0], np.bool_)
    for c in range(nc):
        best, best_a = np.inf, 0.0
        for a in angles:
            ca, sa = np.cos(a), np.sin(a)
            x0, x1, y0, y1 = np.inf, -np.inf, np.inf, -np.inf
            for k in range(face_start[c], face_start[c + 1]):
                for j in range(3):
                    v = faces[face_order[k], j]
                    x = ca * xy[v, 0] - sa * xy[v, 1]
                    y = sa * xy[v, 0] + ca * xy[v, 1]
                    x0, x1, y0, y1 = min(x0, x), max(x1, x), min(y0, y), max(y1, y)
            if (x1 - x0) * (y1 - y0) < best * (1.0 - 1e-9):
                best, best_a = (x1 - x0) * (y1 - y0), a
        ca, sa = np.cos(best_a), np.sin(best_a)
        x0, y0, x1, y1 = np.inf, np.inf, -np.inf, -np.inf
        for k in range(face_start[c], face_start[c + 1]):
            for j in range(3):
                v = faces[face_order[k], j]
                if not seen[v]:
                    seen[v] = True
                    out[v, 0] = ca * xy[v, 0] - sa * xy[v, 1]
                    out[v, 1] = sa * xy[v, 0] + ca * xy[v, 1]
                x0, x1 = min(x0, out[v, 0]), max(x1, out[v, 0])
                y0, y1 = min(y0, out[v, 1]), max(y1, out[v, 1])
        for k in range(face_start[c], face_start[c + 1]):
            for j in range(3):
                v = faces[face_order[k], j]
                if seen[v]:
                    seen[v] = False
                    out[v, 0] -= x0
                    out[v, 1] -= y0
        ext[c, 0], ext[c, 1] = x1 - x0, y1 - y0
    return out, ext


@njit(cache=True, nogil=True)
def _raster_conservative(p, mask):
    """Mark the texels of ``mask`` [H, W] whose unit square touches triangle p [3, 2] (texel units)."""
    area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
    sign = 1.0 if area >= 0 else -1.0
    c0 = max(int(np.floor(min(p[0, 0], p[1, 0], p[2, 0]) - _SLACK)), 0)
    c1 = min(int(np.floor(max(p[0, 0], p[1, 0], p[2, 0]) + _SLACK)), mask.shape[1] - 1)
    r0 = max(int(np.floor(min(p[0, 1], p[1, 1], p[2, 1]) - _SLACK)), 0)
    r1 = min(int(np.floor(max(p[0, 1], p[1, 1], p[2, 1]) + _SLACK)), mask.shape[0] - 1)
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            inside = True
            for e in range(3):                       # separating axis: each edge's outward normal
                ax, ay = p[e, 0], p[e, 1]
                bx, by = p[(e + 1) % 3, 0], p[(e + 1) % 3, 1]
                nx, ny = sign * (by - ay), -sign * (bx - ax)   # points out of the triangle
                # the box corner deepest inside (most negative along n) must be outside for a separation
                qx = c - _SLACK if nx > 0 else c + 1 + _SLACK
                qy = r - _SLACK if ny > 0 else r + 1 + _SLACK
                if nx * (qx - ax) + ny * (qy - ay) > 0:
                    inside = False
                    break
            if inside:
                mask[r, c] = True


@njit(cache=True, nogil=True)
def _slab_ranges(p, a, n_slabs, n_cells, lo, hi):
    """Conservative raster of triangle p [3, 2] (texel units) along axis ``a`` (0: rows are slabs of y,
    1: columns are slabs of x): for each slab k (unit wide) that the triangle touches, widen [lo[k], hi[k])
    to the cells (unit squares, ``_SLACK`` of slack) whose square touches the triangle. Exact: a square
    meets the triangle iff its span across the slab meets the triangle's part inside the slab."""
    b = 1 - a
    v_min = min(p[0, b], p[1, b], p[2, b])
    v_max = max(p[0, b], p[1, b], p[2, b])
    k0 = max(int(np.floor(v_min - _SLACK)), 0)
    k1 = min(int(np.floor(v_max + _SLACK)), n_slabs - 1)
    for k in range(k0, k1 + 1):
        s0, s1 = k - _SLACK, k + 1 + _SLACK
        u0, u1 = np.inf, -np.inf
        for j in range(3):
            pv, pu = p[j, b], p[j, a]
            if s0 <= pv <= s1:
                u0, u1 = min(u0, pu), max(u1, pu)
            qv, qu = p[(j + 1) % 3, b], p[(j + 1) % 3, a]
            for sv in (s0, s1):
                if (pv - sv) * (qv - sv) < 0:                 # the edge crosses the slab's border
                    u = pu + (sv - pv) * (qu - pu) / (qv - pv)
                    u0, u1 = min(u0, u), max(u1, u)
        if u0 > u1:
            continue
        c0 = max(int(np.ceil(u0 - 1 - _SLACK)), 0)
        c1 = min(int(np.floor(u1 + _SLACK)), n_cells - 1)
        if c0 <= c1:
            lo[k] = min(lo[k], c0)
            hi[k] = max(hi[k], c1 + 1)


@njit(cache=True, nogil=True)
def _dilate(lo, hi, n, width, pad, out_lo, out_hi):
    """Spans [lo, hi) of n rows dilated by ``pad`` (square) into out_lo / out_hi (empty: width, 0)."""
    for r in range(n):
        out_lo[r], out_hi[r] = width, 0
    for r in range(n):
        if hi[r] > lo[r]:
            for d in range(max(r - pad, 0), min(r + pad + 1, n)):
                out_lo[d] = min(out_lo[d], max(lo[r] - pad, 0))
                out_hi[d] = max(out_hi[d], min(hi[r] + pad, width))


@njit(cache=True, nogil=True)
def _chart_rows(tri, ext, scale, pad, lo, hi, work):
    """Conservative raster of one chart (faces' coordinates ``tri`` [n, 3, 2] in chart units) in both
    orientations: rot 0 (as is) and rot 1 (+90 deg: (x, y) -> (H - y, x), H = ``_turn_height``). Fills
    per row of each padded box the column span [lo[rot], hi[rot]) of the footprint dilated by ``pad``
    (row spans, concavities inside a row filled; lo >= hi: empty). Rot 1's rows are rot 0's columns
    (flipped), so one pass over the triangles serves both. ``work``: int64 [4, maxdim] scratch. Returns
    the rot 0 box (width, height); rot 1's is (height, width)."""
    off = pad + 1                                  # + 1: the raster's slack may touch the row before
    bw = int(np.floor(ext[0] * scale + _SLACK)) + 1 + 2 * off
    bh = int(np.floor(ext[1] * scale + _SLACK)) + 1 + 2 * off
    row_lo, row_hi, col_lo, col_hi = work[0], work[1], work[2], work[3]
    row_lo[:bh], row_hi[:bh], col_lo[:bw], col_hi[:bw] = bw, 0, bh, 0
    p = np.empty((3, 2))
    for k in range(tri.shape[0]):
        for j in range(3):
            p[j, 0], p[j, 1] = tri[k, j, 0] * scale + off, tri[k, j, 1] * scale + off
        _slab_ranges(p, 0, bh, bw, row_lo, row_hi)      # rows: x-spans
        _slab_ranges(p, 1, bw, bh, col_lo, col_hi)      # columns: y-spans
    _dilate(row_lo, row_hi, bh, bw, pad, lo[0], hi[0])
    for c in range(bw):                                  # rot 1 row c = rot 0 column c, x' = bh - 1 - y
        if col_hi[c] > col_lo[c]:
            col_lo[c], col_hi[c] = bh - col_hi[c], bh - col_lo[c]
    _dilate(col_lo, col_hi, bw, bh, pad, lo[1], hi[1])
    return bw, bh


def _turn_height(ext_y: np.ndarray, scale: float) -> np.ndarray:
    """H of the +90 deg turn (x, y) -> (H - y, x) in texels: an integer >= the chart's height, so the turned
    chart's texel grid is the unturned one's, transposed and flipped."""
    return np.floor(ext_y * scale + _SLACK) + 1


def first_fit_ref(occupied: np.ndarray, lo: np.ndarray, hi: np.ndarray, bh: int, bw: int,
                  y_stop: int) -> tuple[int, int]:
    """Reference of ``_first_fit``: the first row-major (x, y), y < y_stop, where the row spans [lo[i], hi[i])
    (i < bh; lo >= hi: empty row) of a bw-wide footprint all fall on free texels of ``occupied`` bool
    [S, S]; (-1, -1) if none. Brute force."""
    size = occupied.shape[0]
    for y in range(min(size - bh + 1, y_stop)):
        for x in range(size - bw + 1):
            if all(not occupied[y + i, x + lo[i]:x + hi[i]].any() for i in range(bh) if hi[i] > lo[i]):
                return x, y
    return -1, -1


def occupancy_runs(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The packer's occupancy tables of bool [S, S] ``occupied``: (free int32 [S, S] = free run from x or
    minus the occupied run, bmax int32 [S, ceil(S / _BLOCK)] longest free run starting in each block,
    row_max int64 [S])."""
    size = occupied.shape[0]
    free = np.zeros(occupied.shape, np.int32)
    for r in range(size):
        for x in range(size - 1, -1, -1):
            nxt = free[r, x + 1] if x + 1 < size else 0
            free[r, x] = (min(nxt, 0) - 1) if occupied[r, x] else (max(nxt, 0) + 1)
    nb = (size + _BLOCK - 1) // _BLOCK
    pad = np.zeros((size, nb * _BLOCK), np.int32)
    pad[:, :size] = free
    bmax = np.maximum(pad.reshape(size, nb, _BLOCK).max(axis=2), 0).astype(np.int32)
    return free, bmax, bmax.max(axis=1).astype(np.int64)


@njit(cache=True, nogil=True)
def _walk(row, p, end, w):
    """First position in [p, end) whose free run is >= w, runs walked from p; else -(stop) - 1, where stop
    >= end is the first run start the walk reached (no position in [p, stop) fits)."""
    while p < end:
        v = row[p]
        if v >= w:
            return p
        p += v if v > 0 else -v
    return -p - 1


@njit(cache=True, nogil=True)
def _next_fit(row, bmax, p, w):
    """First position >= p of one occupancy row whose free run is >= w, or -1. ``bmax[b]``: the longest
    free run starting in block b (``_BLOCK`` columns), so blocks without one are skipped unread."""
    n, nb = row.shape[0], bmax.shape[0]
    while p < n:
        b = p // _BLOCK
        if p == b * _BLOCK:                                 # at a block start: skip blocks that cannot fit
            while b < nb and bmax[b] < w:
                b += 1
            if b >= nb:
                return -1
            p = b * _BLOCK
        q = _walk(row, p, min((b + 1) * _BLOCK, n), w)
        if q >= 0:
            return q
        p = -q - 1
    return -1


@njit(cache=True, nogil=True)
def _first_fit(free, bmax, row_max, lo, hi, bw, bh, y_stop):
    """First (row-major) position (x, y) with y < y_stop where every row span is free; (-1, -1) if none.
    ``free[r, x]``: length of the free run starting at x, or minus the length of the occupied run;
    ``bmax[r, b]``: the longest free run starting in block b of row r; ``row_max[r]``: the longest of row r.
    Rows that cannot hold a span are skipped (and so is every y that puts a too-wide span on them); along a
    row the candidate x leaps to the next x where the failing span fits (the other spans re-checked)."""
    size = free.shape[0]
    width = hi[:bh] - lo[:bh]
    rows = np.argsort(-width, kind="mergesort")          # widest span first: fails fastest
    y_end = min(size - bh + 1, y_stop)
    y = 0
    while y < y_end:
        bad = -1
        for i in rows:
            if width[i] > row_max[y + i]:
                bad = y + i
                break
        if bad >= 0:                                      # next y whose span on row ``bad`` is narrow enough
            y += 1
            while y < y_end and y <= bad and width[bad - y] > row_max[bad]:
                y += 1
            continue
        x = 0
        while x <= size - bw:
            moved = False
            for i in rows:
                if width[i] <= 0:
                    break
                p = x + lo[i]
                if free[y + i, p] < width[i]:
                    q = _next_fit(free[y + i], bmax[y + i], p, width[i])
                    x = size if q < 0 else q - lo[i]
                    moved = True
                    break
            if not moved:
                return x, y
        y += 1
    return -1, -1


@njit(cache=True, nogil=True)
def _occupy(free, bmax, y, x0, x1):
    """Mark row y's columns [x0, x1) occupied, re-derive the run lengths and block maxima they change;
    returns the row's longest free run."""
    row = free[y]
    n = row.shape[0]
    j0 = 0
    for j in range(x1 - 1, -1, -1):
        nxt = row[j + 1] if j + 1 < n else 0
        occupied = (x0 <= j < x1) or row[j] < 0
        new = (min(nxt, 0) - 1) if occupied else (max(nxt, 0) + 1)
        if j < x0 and new == row[j]:
            j0 = j + 1
            break
        row[j] = new
    for b in range(j0 // _BLOCK, (x1 - 1) // _BLOCK + 1):
        best, p, end = 0, b * _BLOCK, min((b + 1) * _BLOCK, n)
        while p < end:                                    # block maximum, run by run
            best = max(best, row[p])
            p += abs(row[p])
        bmax[y, b] = best
    return bmax[y].max()


@njit(cache=True, nogil=True)
def _pack_kernel(local, faces, face_start, face_order, ext, order, scale, size, pad, allowed):
    """First-fit packing of all charts at ``scale`` (largest first; per chart the lower of its allowed
    orientations' first fits, ``allowed`` bool [C, 2]). Returns (placement int64 [C, 3] = (x, y, rot), 1 if
    all fit else 0)."""
    nc = face_start.shape[0] - 1
    nb = (size + _BLOCK - 1) // _BLOCK
    free = np.empty((size, size), np.int32)
    bmax = np.empty((size, nb), np.int32)
    row_max = np.full(size, size, np.int64)
    for r in range(size):
        for c in range(size):
            free[r, c] = size - c
        for b in range(nb):
            bmax[r, b] = size - b * _BLOCK
    place = np.zeros((nc, 3), np.int64)
    maxdim = int(np.ceil(max(ext[:, 0].max(), ext[:, 1].max()) * scale + 2 * _SLACK)) + 4 + 2 * pad
    if maxdim > size:
        return place, 0
    work = np.empty((4, maxdim), np.int64)
    lo = np.zeros((2, maxdim), np.int64)
    hi = np.zeros((2, maxdim), np.int64)
    for c in order:
        n = face_start[c + 1] - face_start[c]
        tri = np.empty((n, 3, 2))
        for k in range(n):
            for j in range(3):
                v = faces[face_order[face_start[c] + k], j]
                tri[k, j, 0], tri[k, j, 1] = local[v, 0], local[v, 1]
        bw, bh = _chart_rows(tri, ext[c], scale, pad, lo, hi, work)
        best_x, best_y, best_r, best_h = -1, size, 0, 0
        for rot in range(2):
            if not allowed[c, rot]:
                continue
            w, h = (bw, bh) if rot == 0 else (bh, bw)
            x, y = _first_fit(free, bmax, row_max, lo[rot], hi[rot], w, h, best_y)
            if x >= 0 and y < best_y:
                best_x, best_y, best_r, best_h = x, y, rot, h
        if best_x < 0:
            return place, 0
        for i in range(best_h):
            if hi[best_r, i] > lo[best_r, i]:
                y = best_y + i
                row_max[y] = _occupy(free, bmax, y, best_x + lo[best_r, i], best_x + hi[best_r, i])
        place[c, 0], place[c, 1], place[c, 2] = best_x, best_y, best_r
    return place, 1


def _chart_layout(faces: np.ndarray, chart: np.ndarray):
    """(face_order int64 [F] faces grouped by chart, face_start int64 [C + 1])."""
    face_order = np.argsort(chart, kind="stable").astype(np.int64)
    counts = np.bincount(chart, minlength=int(chart.max()) + 1)
    return face_order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _place(local, faces, face_order, face_start, ext, place, scale, pad) -> np.ndarray:
    """Texel coordinates float64 [V, 2] of every vertex from the chart placements."""
    vchart = np.full(len(local), -1, np.int64)
    fc = np.repeat(np.arange(len(face_start) - 1), np.diff(face_start))   # chart of face_order[k]
    vchart[faces[face_order].reshape(-1)] = np.repeat(fc, 3)
    live = vchart >= 0
    c = vchart[live]
    x, y = local[live, 0] * scale, local[live, 1] * scale
    rot = place[c, 2] == 1
    x, y = np.where(rot, _turn_height(ext[c, 1], scale) - y, x), np.where(rot, x, y)
    out = np.zeros_like(local)
    out[live, 0] = x + pad + 1 + place[c, 0]
    out[live, 1] = y + pad + 1 + place[c, 1]
    return out


def prepare_charts(uv: np.ndarray, faces: np.ndarray, chart: np.ndarray) -> tuple:
    """Orient and order the charts once: (local coords, faces, face_start, face_order, extents, order,
    chart area in input units^2), the arguments of ``pack_at`` before the scale."""
    faces = np.ascontiguousarray(faces, np.int64)
    chart = np.ascontiguousarray(chart, np.int64)
    face_order, face_start = _chart_layout(faces, chart)
    local, ext = _orient(np.ascontiguousarray(uv, np.float64), faces, face_start, face_order, _ANGLES)
    order = np.lexsort((np.arange(len(ext)), -np.maximum(ext[:, 0], ext[:, 1]),
                        -ext[:, 0] * ext[:, 1])).astype(np.int64)
    e1, e2 = local[faces[:, 1]] - local[faces[:, 0]], local[faces[:, 2]] - local[faces[:, 0]]
    area = float(np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() / 2)
    return local, faces, face_start, face_order, ext, order, area


def pack_at(prepared: tuple, scale: float, resolution: int, padding: int,
            allowed: np.ndarray | None = None) -> np.ndarray | None:
    """One packing at ``scale`` texels per unit: placement int64 [C, 3] (x, y, rot), None if it overflows.
    ``allowed``: bool [C, 2], the orientations (0, +90 deg) each chart may take (default: both). Top level
    and picklable, so candidate scales can be packed in worker processes."""
    local, faces, face_start, face_order, ext, order, _ = prepared
    if allowed is None:
        allowed = np.ones((len(ext), 2), np.bool_)
    if np.shape(allowed) != (len(ext), 2) or not np.asarray(allowed).any(axis=1).all():
        raise ValueError(f"allowed orientations must be bool [{len(ext)}, 2] with one per chart at least")
    place, ok = _pack_kernel(local, faces, face_start, face_order, ext, order, float(scale),
                             int(resolution), int(padding), np.ascontiguousarray(allowed, np.bool_))
    return place if ok else None


def candidate_scales(prepared: tuple, resolution: int, count: int) -> np.ndarray:
    """``count`` scales whose chart area fills _FILL_LO.._FILL_HI of the atlas (geometric steps)."""
    fills = np.geomspace(_FILL_LO, _FILL_HI, max(count, 1)) if count > 1 else np.array([_FILL_GUESS])
    return resolution * np.sqrt(fills / max(prepared[6], 1e-30))


def texel_coords(prepared: tuple, place: np.ndarray, scale: float, padding: int) -> np.ndarray:
    """Texel coordinates float64 [V, 2] of every vertex for a placement from ``pack_at``."""
    local, faces, face_start, face_order, ext, _, _ = prepared
    return _place(local, faces, face_order, face_start, ext, place, scale, int(padding))


def pack_charts(uv: np.ndarray, faces: np.ndarray, chart: np.ndarray, resolution: int, padding: int,
                map_fn=map) -> tuple[np.ndarray, float]:
    """Pack UV charts into one ``resolution``^2 atlas (see module docstring).

    uv: float64 [V, 2] chart coordinates in one common unit; faces: int [F, 3] into uv; chart: int [F]
    chart id per face in [0, C), every vertex used by one chart only; map_fn: a ``map`` over candidate
    scales (a process pool's map packs them in parallel; each round tries ``_ROUND`` scales). Returns
    (texel coordinates float64 [V, 2] in [0, resolution], texels per input unit). The largest fitting scale
    of the tried ones wins. Raises ValueError when nothing fits even at 1e-6 of the first guess.
    """
    prepared = prepare_charts(uv, faces, chart)
    scales = candidate_scales(prepared, resolution, _ROUND)
    for _ in range(64):
        places = list(map_fn(pack_at, [prepared] * len(scales), scales, [resolution] * len(scales),
                             [padding] * len(scales)))
        fit = [i for i, p in enumerate(places) if p is not None]
        if fit:
            i = max(fit, key=lambda k: scales[k])
            return texel_coords(prepared, places[i], float(scales[i]), padding), float(scales[i])
        scales = scales * (scales.min() / scales.max()) * 0.9
        if scales.max() < 1e-6:
            break
    raise ValueError("UV charts do not fit one atlas")
