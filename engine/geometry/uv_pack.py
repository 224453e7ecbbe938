"""One fast packing pass of UV charts into a square atlas: conservative chart rasters + first-fit bitmap.

Input: charts already parameterised, in one common unit (world units from the charting pass), ``chart``
id per face, every UV vertex used by faces of one chart only. Output: texel coordinates in the
``resolution``^2 atlas. Charts are only rotated (a multiple of 15 deg, then 0 or 90 deg at packing) and
translated: shape and relative scale are kept, so stretch is unchanged.

Method:
  1. Orientation: each chart turned by the angle in {0, 15, .., 75} deg of least bounding-box area.
  2. At scale ``s`` (texels per unit) each chart is rasterised conservatively (every texel whose square
     touches a triangle, 1e-3 texel of slack), dilated by ``padding`` (square), and kept as one column
     span per row (concavities inside a row filled).
  3. Charts, largest box first, go to the first row-major position (then the lower of the 0 / 90 deg
     orientations) where all their spans are free in the occupancy bitmap, stored per row as run lengths
     (free run from x, or minus the occupied run) plus each row's longest free run, so a candidate costs
     O(rows) and misses skip whole runs. Both charts' dilated footprints are disjoint, so any two
     footprints are >= 2 x ``padding`` texels apart (xatlas's gutter: measured 4 empty texels at padding 2)
     and every dilated footprint lies inside the atlas.
  4. Scale: ``_ROUND`` candidates whose chart area fills 50-70 % of the atlas are packed (in parallel
     through ``map_fn``); the largest that fits wins; none fits: the round shrinks. No randomness, ties
     broken by index: deterministic.

Cost: ~0.1-0.25 s per packing of ~800 charts at 1024^2 on one core of the shared 2-core CPU (numba).
Limits: no backfill inside a row span's concavity; a chart wider than the atlas shrinks all charts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ANGLES = np.deg2rad(np.arange(0.0, 90.0, 15.0))
_FILL_GUESS = 0.62          # chart area / atlas area when only one candidate is packed
_FILL_LO, _FILL_HI = 0.50, 0.70   # candidate fills of one round (chart area / atlas area)
_ROUND = 8                  # candidate scales per round
_ROTATIONS = 2              # orientations tried per chart (0 and 90 deg)
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
def _chart_rows(tri, ext, scale, pad, rot, lo, hi, mask):
    """Raster one chart (faces' coordinates ``tri`` [n, 3, 2] in chart units) in orientation ``rot``
    (0: as is, 1: +90 deg); fills per row of the padded box the column span [lo, hi) of the footprint
    dilated by ``pad`` (row spans, concavities inside a row filled; lo == hi: empty). Returns the padded
    box (width, height)."""
    w0, h0 = ext[0] * scale, ext[1] * scale
    ww, hh = (w0, h0) if rot == 0 else (h0, w0)
    off = pad + 1                                  # + 1: the raster's slack may touch the row before
    bw, bh = int(np.floor(ww + _SLACK)) + 1 + 2 * off, int(np.floor(hh + _SLACK)) + 1 + 2 * off
    mask[:bh, :bw] = False
    p = np.empty((3, 2))
    for k in range(tri.shape[0]):
        for j in range(3):
            x, y = tri[k, j, 0] * scale, tri[k, j, 1] * scale
            if rot == 1:
                x, y = h0 - y, x
            p[j, 0], p[j, 1] = x + off, y + off
        _raster_conservative(p, mask[:bh, :bw])
    for r in range(bh):
        lo[r], hi[r] = bw, 0
    for r in range(bh):
        a, b = bw, -1
        for c in range(bw):
            if mask[r, c]:
                a = min(a, c)
                b = c
        if b >= 0:
            for d in range(max(r - pad, 0), min(r + pad + 1, bh)):
                lo[d] = min(lo[d], max(a - pad, 0))
                hi[d] = max(hi[d], min(b + pad + 1, bw))
    return bw, bh


@njit(cache=True, nogil=True)
def _first_fit(free, row_max, lo, hi, bw, bh, y_stop):
    """First (row-major) position (x, y) with y < y_stop where every row span is free; (-1, -1) if none.
    ``free[r, x]``: length of the free run starting at x, or minus the length of the occupied run;
    ``row_max[r]``: the longest free run of row r (rows that cannot hold a span are skipped)."""
    size = free.shape[0]
    rows = np.argsort(lo[:bh] - hi[:bh], kind="mergesort")      # widest span first: fails fastest
    for y in range(0, min(size - bh + 1, y_stop)):
        room = True
        for i in rows:
            if hi[i] - lo[i] > row_max[y + i]:
                room = False
                break
        if not room:
            continue
        x = 0
        while x <= size - bw:
            skip = 0
            for i in rows:
                if hi[i] <= lo[i]:
                    break
                v = free[y + i, x + lo[i]]
                if v < hi[i] - lo[i]:
                    skip = -v if v < 0 else v + 1
                    break
            if skip == 0:
                return x, y
            x += skip
    return -1, -1


@njit(cache=True, nogil=True)
def _occupy(free, y, x0, x1):
    """Mark row y's columns [x0, x1) occupied, re-derive the run lengths they change; returns the row's
    longest free run."""
    row = free[y]
    n = row.shape[0]
    for j in range(x1 - 1, -1, -1):
        nxt = row[j + 1] if j + 1 < n else 0
        occupied = (x0 <= j < x1) or row[j] < 0
        new = (min(nxt, 0) - 1) if occupied else (max(nxt, 0) + 1)
        if j < x0 and new == row[j]:
            break
        row[j] = new
    best, j = 0, 0
    while j < n:                                           # longest free run, run by run
        best = max(best, row[j])
        j += abs(row[j])
    return best


@njit(cache=True, nogil=True)
def _pack_kernel(local, faces, face_start, face_order, ext, order, scale, size, pad, rots):
    """First-fit packing of all charts at ``scale`` (largest first; per chart the lower of its two
    orientations' first fits). Returns (placement int64 [C, 3] = (x, y, rot), 1 if all fit else 0)."""
    nc = face_start.shape[0] - 1
    free = np.empty((size, size), np.int64)
    row_max = np.full(size, size, np.int64)
    for r in range(size):
        for c in range(size):
            free[r, c] = size - c
    place = np.zeros((nc, 3), np.int64)
    maxdim = int(np.ceil(max(ext[:, 0].max(), ext[:, 1].max()) * scale + 2 * _SLACK)) + 4 + 2 * pad
    if maxdim > size:
        return place, 0
    mask = np.zeros((maxdim, maxdim), np.bool_)
    lo = np.zeros((2, maxdim), np.int64)
    hi = np.zeros((2, maxdim), np.int64)
    for c in order:
        n = face_start[c + 1] - face_start[c]
        tri = np.empty((n, 3, 2))
        for k in range(n):
            for j in range(3):
                v = faces[face_order[face_start[c] + k], j]
                tri[k, j, 0], tri[k, j, 1] = local[v, 0], local[v, 1]
        best_x, best_y, best_r, best_h = -1, size, 0, 0
        for rot in range(rots):
            bw, bh = _chart_rows(tri, ext[c], scale, pad, rot, lo[rot], hi[rot], mask)
            x, y = _first_fit(free, row_max, lo[rot], hi[rot], bw, bh, best_y)
            if x >= 0 and y < best_y:
                best_x, best_y, best_r, best_h = x, y, rot, bh
        if best_x < 0:
            return place, 0
        for i in range(best_h):
            if hi[best_r, i] > lo[best_r, i]:
                y = best_y + i
                row_max[y] = _occupy(free, y, best_x + lo[best_r, i], best_x + hi[best_r, i])
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
    h0 = ext[c, 1] * scale
    x, y = np.where(rot, h0 - y, x), np.where(rot, x, y)
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


def pack_at(prepared: tuple, scale: float, resolution: int, padding: int) -> np.ndarray | None:
    """One packing at ``scale`` texels per unit: placement int64 [C, 3] (x, y, rot), None if it overflows.
    Top level and picklable, so candidate scales can be packed in worker processes."""
    local, faces, face_start, face_order, ext, order, _ = prepared
    place, ok = _pack_kernel(local, faces, face_start, face_order, ext, order, float(scale),
                             int(resolution), int(padding), _ROTATIONS)
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
