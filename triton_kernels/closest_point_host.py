"""Exact closest point on a triangle and the band UDF built on it (numba, CPU).

``closest_on_triangle`` (Ericson's region method in float64; a zero-area triangle that slips through the
region tests takes the closest of its three edges) serves the engine's CPU BVH queries
(``engine.geometry.bvh``). ``udf_band_host`` is step 1 of the CPU watertight conversion
(``engine.geometry.watertight``, paper 5.1) and the reference of ``udf_band.py``: per triangle, the nodes of
its bounding box grown by ``radius`` get min(exact distance) where it is below ``radius``. Kernels never
import from ``engine/``, so the code lives here and the engine imports it.

Layouts: points and triangle corners are float64 scalars; verts float64 [V, 3] in grid index units, faces
int64 [F, 3], out float32 [n, n, n] pre-filled with inf (written in place).
Floor: ~60 float64 FLOPs per (triangle, node of its grown box); serial over triangles.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, inline="always")
def _seg_closest(px, py, pz, ax, ay, az, bx, by, bz):
    """Closest point on segment a-b: returns (s in [0, 1], squared distance)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    ll = abx * abx + aby * aby + abz * abz
    s = 0.0
    if ll > 0.0:
        s = min(max(((px - ax) * abx + (py - ay) * aby + (pz - az) * abz) / ll, 0.0), 1.0)
    dx, dy, dz = ax + s * abx - px, ay + s * aby - py, az + s * abz - pz
    return s, dx * dx + dy * dy + dz * dz


@njit(cache=True)
def closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Ericson's region method; returns barycentric (wa, wb, wc) of the closest point (float64)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        return 1.0, 0.0, 0.0
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:
        return 0.0, 1.0, 0.0
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        v = d1 / (d1 - d3)
        return 1.0 - v, v, 0.0
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:
        return 0.0, 0.0, 1.0
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        w = d2 / (d2 - d6)
        return 1.0 - w, 0.0, w
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return 0.0, 1.0 - w, w
    den = va + vb + vc
    if den > 0.0:
        v = vb / den
        w = vc / den
        return 1.0 - v - w, v, w
    # Degenerate (zero-area) triangle that slipped through the region tests: best of the three edges.
    s0, q0 = _seg_closest(px, py, pz, ax, ay, az, bx, by, bz)
    s1, q1 = _seg_closest(px, py, pz, bx, by, bz, cx, cy, cz)
    s2, q2 = _seg_closest(px, py, pz, cx, cy, cz, ax, ay, az)
    if q0 <= q1 and q0 <= q2:
        return 1.0 - s0, s0, 0.0
    if q1 <= q2:
        return 0.0, 1.0 - s1, s1
    return s2, 0.0, 1.0 - s2


@njit(cache=True, inline="always")
def _closest_sq(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Squared distance from p to triangle abc, via ``closest_on_triangle``."""
    wa, wb, wc = closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz)
    dx = wa * ax + wb * bx + wc * cx - px
    dy = wa * ay + wb * by + wc * cy - py
    dz = wa * az + wb * bz + wc * cz - pz
    return dx * dx + dy * dy + dz * dz


@njit(cache=True)
def udf_band_host(verts, faces, n, radius, out):
    """Min over triangles of the exact distance, nodes within ``radius`` of a triangle's bbox.
    verts float64 [V, 3] index units, faces int64 [F, 3], out float32 [n, n, n] pre-filled with inf."""
    r2 = radius * radius
    for f in range(faces.shape[0]):
        a, b, c = verts[faces[f, 0]], verts[faces[f, 1]], verts[faces[f, 2]]
        lo = [0, 0, 0]
        hi = [0, 0, 0]
        for k in range(3):
            lo[k] = max(0, int(math.floor(min(a[k], b[k], c[k]) - radius)))
            hi[k] = min(n - 1, int(math.ceil(max(a[k], b[k], c[k]) + radius)))
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                for k in range(lo[2], hi[2] + 1):
                    d2 = _closest_sq(i, j, k, a[0], a[1], a[2], b[0], b[1], b[2], c[0], c[1], c[2])
                    if d2 < r2 and d2 < out[i, j, k] * out[i, j, k]:
                        out[i, j, k] = math.sqrt(d2)
