"""Triangle BVH on the host: LBVH build, ray casting and exact closest-point queries (paper 6.2, 6.4).

Build (Karras 2012, "Maximizing parallelism in the construction of BVHs, octrees and k-d trees"):
  1. Face centroids are quantised to a 1024^3 grid over the centroid bounds and interleaved into 30-bit
     Morton codes. Each code is widened to a unique 64-bit key ``(code << 32) | face_index`` so equal codes
     still give a strict order (Karras section 4's tie-break).
  2. Faces are sorted by key. For N faces the tree has N - 1 internal nodes and N leaves; every internal
     node i is found independently from the sorted keys (direction of its range from the longer common
     prefix with its neighbours, range end by exponential + binary search, split where the common prefix
     length first drops), so step 2 is a parallel loop (one GPU thread per internal node later).
  3. Boxes are fitted bottom-up: each leaf walks to the root through ``parent``; a node is finished by the
     second child that reaches it (a visit counter, an atomic increment on the GPU). Every node is
     therefore processed once: O(N) total work.

Flat node layout (identical for the later CuPy / numba-cuda port; node ids are int32):
  node ids [0, N-1)       internal nodes, node 0 is the root (when N == 1 the single leaf is node 0).
  node ids [N-1, 2N-1)    leaves, leaf ``N-1+k`` holds face ``leaf_face[k]`` (k-th face in Morton order).
  left, right   int32 [N-1]      child node ids of each internal node.
  parent        int32 [2N-1]     parent node id, -1 for the root.
  aabb_lo/hi    float32 [2N-1, 3] node boxes (exact min/max of float32 vertex coordinates).
  leaf_face     int32 [N]        face id of each leaf.
  Memory: 2N * (4 + 24) + (N - 1) * 8 + 4N bytes, about 68 bytes per face.
Tree depth is at most 64 (each level lengthens the 64-bit common key prefix by >= 1 bit), so traversal
stacks of 128 entries cannot overflow.

Queries (one query per ``prange`` iteration; one GPU thread per query later):
  ray_cast       stack traversal, near child first, slab test in float64 widened by 1e-9 relative;
                 Moller-Trumbore ray/triangle test in float64. Barycentric edge tolerance 1e-10 so a ray
                 through a shared edge hits at least one of the two faces ("watertight enough"; not the
                 exact Woop 2013 test). Hits need 0 < t <= t_max; t is in units of the unit direction.
  closest_point  stack traversal ordered by squared point-box distance, pruned by the best distance so
                 far; exact point/triangle closest point by Ericson's Voronoi-region method
                 (Real-Time Collision Detection, 5.1.5), float64 (``closest_on_triangle``, in
                 ``triton_kernels/closest_point_host.py`` so the watertight UDF kernels share it).

Convention: glTF (CCW front faces), so a ray sees the front of a face when dot(face normal, dir) < 0,
i.e. when the Moller-Trumbore determinant ``e1 . (dir x e2)`` is positive. ``cull_backfaces`` drops
hits with determinant <= 0.

References: ``ray_cast_ref`` and ``closest_point_ref`` are brute force over all faces in numpy (the closest
point reference projects onto the plane and falls back to the three edge segments, a different method
from Ericson's regions on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from engine.errors import AssetGenError, MeshError
from engine.geometry.mesh import TriMesh, validate_mesh
from triton_kernels.closest_point_host import closest_on_triangle as closest_on_triangle  # re-exported

_STACK = 128
_EDGE_EPS = 1e-10
_BOX_EPS = 1e-9


@dataclass
class RayHits:
    """face_id int32 [R] (-1 = miss); t float32 [R] (inf on miss); bary float32 [R, 3] weights of the
    face's v0, v1, v2 (zeros on miss)."""

    face_id: np.ndarray
    t: np.ndarray
    bary: np.ndarray


@dataclass
class ClosestHits:
    """face_id int32 [P] (-1 when nothing within max_distance); point float32 [P, 3] (NaN on miss);
    bary float32 [P, 3] weights of v0, v1, v2 (zeros on miss); distance float32 [P] (inf on miss)."""

    face_id: np.ndarray
    point: np.ndarray
    bary: np.ndarray
    distance: np.ndarray


# ----------------------------------------------------------------------------------------------------
# References (brute force, numpy)
# ----------------------------------------------------------------------------------------------------

def ray_cast_ref(vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, directions: np.ndarray,
                 t_max: float = np.inf, cull_backfaces: bool = False) -> RayHits:
    """Brute-force nearest hit of every ray against every face (O(R F) memory in chunks; tests only).

    vertices float32 [V, 3], faces int32 [F, 3], origins [R, 3], directions [R, 3] (normalised here).
    """
    v = vertices.astype(np.float64)
    v0, v1, v2 = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0                                                # [F, 3]
    o = origins.astype(np.float64)
    d = directions.astype(np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    r_count = o.shape[0]
    face_id = np.full(r_count, -1, np.int32)
    t_out = np.full(r_count, np.inf, np.float32)
    bary = np.zeros((r_count, 3), np.float32)
    chunk = max(1, 2_000_000 // max(1, faces.shape[0]))
    for s in range(0, r_count, chunk):
        oc, dc = o[s:s + chunk, None, :], d[s:s + chunk, None, :]               # [r, 1, 3]
        p = np.cross(dc, e2[None])                                          # [r, F, 3]
        det = np.einsum("rfk,fk->rf", p, e1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(det != 0, 1.0 / det, 0.0)
            tv = oc - v0[None]
            u = np.einsum("rfk,rfk->rf", tv, p) * inv
            q = np.cross(tv, e1[None])
            w = np.einsum("rfk,rk->rf", q, dc[:, 0]) * inv
            t = np.einsum("rfk,fk->rf", q, e2[None][0]) * inv
        ok = (det > 0) if cull_backfaces else (det != 0)
        ok &= (u >= -_EDGE_EPS) & (w >= -_EDGE_EPS) & (u + w <= 1 + _EDGE_EPS) & (t > 0) & (t <= t_max)
        t = np.where(ok, t, np.inf)
        best = np.argmin(t, axis=1)
        rows = np.arange(best.shape[0])
        hit = np.isfinite(t[rows, best])
        idx = np.nonzero(hit)[0]
        face_id[s + idx] = best[idx]
        t_out[s + idx] = t[idx, best[idx]]
        bu, bw = u[idx, best[idx]], w[idx, best[idx]]
        bary[s + idx] = np.stack([1 - bu - bw, bu, bw], axis=1)
    return RayHits(face_id, t_out, bary)


def _closest_on_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point on segments a-b to p (broadcast [..., 3]); returns (point, parameter s in [0, 1])."""
    ab = b - a
    s = np.clip(np.einsum("...k,...k->...", p - a, ab) / np.maximum(np.einsum("...k,...k->...", ab, ab),
                                                                    1e-300), 0.0, 1.0)
    return a + s[..., None] * ab, s


def closest_point_ref(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                      max_distance: float = np.inf) -> ClosestHits:
    """Brute-force closest surface point of every point against every face (tests only).

    Plane projection when it falls inside the triangle, else the closest of the three edge segments.
    """
    v = vertices.astype(np.float64)
    v0, v1, v2 = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]              # [F, 3]
    pts = points.astype(np.float64)
    n_pts = pts.shape[0]
    out = ClosestHits(np.full(n_pts, -1, np.int32), np.full((n_pts, 3), np.nan, np.float32),
                      np.zeros((n_pts, 3), np.float32), np.full(n_pts, np.inf, np.float32))
    chunk = max(1, 1_000_000 // max(1, faces.shape[0]))
    e1, e2 = v1 - v0, v2 - v0
    d00, d01, d11 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    denom = d00 * d11 - d01 * d01
    for s in range(0, n_pts, chunk):
        p = pts[s:s + chunk, None, :]                                         # [p, 1, 3]
        w = p - v0[None]
        d20, d21 = (w * e1).sum(-1), (w * e2).sum(-1)                         # [p, F]
        safe = np.where(denom > 0, denom, 1.0)
        bv = np.where(denom > 0, (d11 * d20 - d01 * d21) / safe, -1.0)
        bw = np.where(denom > 0, (d00 * d21 - d01 * d20) / safe, -1.0)
        inside = (bv >= 0) & (bw >= 0) & (bv + bw <= 1) & (denom > 0)
        bu = 1 - bv - bw
        cand = [(v0 + 0 * p + bv[..., None] * e1 + bw[..., None] * e2, np.stack([bu, bv, bw], -1))]
        for a, b, ia, ib in ((v0, v1, 0, 1), (v1, v2, 1, 2), (v2, v0, 2, 0)):
            q, t = _closest_on_segments(p, a[None], b[None])
            bc = np.zeros(q.shape)
            bc[..., ia], bc[..., ib] = 1 - t, t
            cand.append((q, bc))
        dist = [np.where(inside, np.linalg.norm(cand[0][0] - p, axis=-1), np.inf)]
        dist += [np.linalg.norm(c[0] - p, axis=-1) for c in cand[1:]]
        dist = np.stack(dist)                                                 # [4, p, F]
        which = np.argmin(dist, axis=0)                                       # [p, F]
        dmin = np.take_along_axis(dist, which[None], 0)[0]
        best = np.argmin(dmin, axis=1)                                        # [p]
        rows = np.arange(best.shape[0])
        dbest = dmin[rows, best]
        ok = dbest <= max_distance
        wsel = which[rows, best]
        pt = np.stack([c[0][rows, best] for c in cand])[wsel, rows]
        bc = np.stack([c[1][rows, best] for c in cand])[wsel, rows]
        idx = np.nonzero(ok)[0]
        out.face_id[s + idx] = best[idx]
        out.point[s + idx] = pt[idx]
        out.bary[s + idx] = bc[idx]
        out.distance[s + idx] = dbest[idx]
    return out


# ----------------------------------------------------------------------------------------------------
# Build kernels (numba CPU)
# ----------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _expand_bits(x: np.uint64) -> np.uint64:
    """Spread the low 10 bits of x so that two zero bits follow each bit."""
    x = (x * np.uint64(0x00010001)) & np.uint64(0xFF0000FF)
    x = (x * np.uint64(0x00000101)) & np.uint64(0x0F00F00F)
    x = (x * np.uint64(0x00000011)) & np.uint64(0xC30C30C3)
    x = (x * np.uint64(0x00000005)) & np.uint64(0x49249249)
    return x


@njit(parallel=True, cache=True)
def _morton_keys(points: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """points float64 [N, 3] -> uint64 [N] keys (30-bit Morton code << 32) | index."""
    n = points.shape[0]
    keys = np.empty(n, np.uint64)
    for i in prange(n):
        code = np.uint64(0)
        for k in range(3):
            q = (points[i, k] - lo[k]) * scale[k]
            q = min(max(q, 0.0), 1023.0)
            code |= _expand_bits(np.uint64(int(q))) << np.uint64(2 - k)
        keys[i] = (code << np.uint64(32)) | np.uint64(i)
    return keys


@njit(cache=True, inline="always")
def _clz64(x: np.uint64) -> int:
    if x == 0:
        return 64
    n = 0
    for shift in (32, 16, 8, 4, 2, 1):
        if (x >> np.uint64(64 - shift)) == 0:
            n += shift
            x = x << np.uint64(shift)
    return n


@njit(cache=True, inline="always")
def _delta(keys: np.ndarray, i: int, j: int) -> int:
    """Length of the common prefix of keys i and j; -1 when j is out of range."""
    if j < 0 or j >= keys.shape[0]:
        return -1
    return _clz64(keys[i] ^ keys[j])


@njit(parallel=True, cache=True)
def _karras_hierarchy(keys: np.ndarray, left: np.ndarray, right: np.ndarray, parent: np.ndarray) -> None:
    """Fill child / parent links of the N - 1 internal nodes from sorted unique keys [N]."""
    n = keys.shape[0]
    for i in prange(n - 1):
        d = 1 if _delta(keys, i, i + 1) > _delta(keys, i, i - 1) else -1
        dmin = _delta(keys, i, i - d)
        lmax = 2
        while _delta(keys, i, i + lmax * d) > dmin:
            lmax *= 2
        ln = 0
        t = lmax // 2
        while t >= 1:
            if _delta(keys, i, i + (ln + t) * d) > dmin:
                ln += t
            t //= 2
        j = i + ln * d
        dnode = _delta(keys, i, j)
        s = 0
        div = 2
        while True:
            t = (ln + div - 1) // div
            if _delta(keys, i, i + (s + t) * d) > dnode:
                s += t
            if t <= 1:
                break
            div *= 2
        gamma = i + s * d + min(d, 0)
        lc = gamma + n - 1 if min(i, j) == gamma else gamma
        rc = gamma + n if max(i, j) == gamma + 1 else gamma + 1
        left[i] = lc
        right[i] = rc
        parent[lc] = i
        parent[rc] = i


@njit(cache=True)
def _fit_boxes(vertices: np.ndarray, faces: np.ndarray, leaf_face: np.ndarray, left: np.ndarray,
               right: np.ndarray, parent: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Leaf boxes, then bottom-up internal boxes; the second child to arrive finishes a node."""
    n = leaf_face.shape[0]
    for k in range(n):
        node = n - 1 + k
        f = leaf_face[k]
        for a in range(3):
            x0 = vertices[faces[f, 0], a]
            x1 = vertices[faces[f, 1], a]
            x2 = vertices[faces[f, 2], a]
            lo[node, a] = min(x0, min(x1, x2))
            hi[node, a] = max(x0, max(x1, x2))
    visits = np.zeros(max(n - 1, 1), np.int32)
    for k in range(n):
        node = parent[n - 1 + k]
        while node >= 0:
            visits[node] += 1
            if visits[node] < 2:
                break
            lc, rc = left[node], right[node]
            for a in range(3):
                lo[node, a] = min(lo[lc, a], lo[rc, a])
                hi[node, a] = max(hi[lc, a], hi[rc, a])
            node = parent[node]


# ----------------------------------------------------------------------------------------------------
# Query kernels (numba CPU, prange over chunks of queries; one stack per chunk)
# ----------------------------------------------------------------------------------------------------

_CHUNK = 256
_F64 = np.float64


@njit(cache=True, inline="always")
def _ray_box(lo: np.ndarray, hi: np.ndarray, node: int, o: np.ndarray, inv: np.ndarray,
             t_best: float) -> float:
    """Entry distance of the ray into the node's box, or inf when it misses within (0, t_best]."""
    tn = 0.0
    tf = t_best
    for a in range(3):
        t0 = (lo[node, a] - o[a]) * inv[a]
        t1 = (hi[node, a] - o[a]) * inv[a]
        if t0 > t1:
            t0, t1 = t1, t0
        tn = max(tn, t0)
        tf = min(tf, t1 * (1.0 + _BOX_EPS) + _BOX_EPS * abs(o[a]) * abs(inv[a]))
    return tn if tn <= tf else np.inf


@njit(cache=True, inline="always")
def _tri_hit(vertices, faces, f, o, d, cull):
    """Moller-Trumbore in float64, barycentric edge tolerance ``_EDGE_EPS``: (t, u, v) of ray o + t d on
    face f, t = -1.0 when it misses (or, with ``cull``, meets the back side)."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    # float64 before subtracting (float() keeps float32 in numba): float32 edge vectors round differently
    # in the two faces of an edge and open cracks far wider than _EDGE_EPS (a ray through a shared edge
    # then hit neither face)
    ax, ay, az = _F64(vertices[i0, 0]), _F64(vertices[i0, 1]), _F64(vertices[i0, 2])
    e1x, e1y, e1z = _F64(vertices[i1, 0]) - ax, _F64(vertices[i1, 1]) - ay, _F64(vertices[i1, 2]) - az
    e2x, e2y, e2z = _F64(vertices[i2, 0]) - ax, _F64(vertices[i2, 1]) - ay, _F64(vertices[i2, 2]) - az
    px = d[1] * e2z - d[2] * e2y
    py = d[2] * e2x - d[0] * e2z
    pz = d[0] * e2y - d[1] * e2x
    det = e1x * px + e1y * py + e1z * pz
    if det == 0.0 or (cull and det < 0.0):
        return -1.0, 0.0, 0.0
    idet = 1.0 / det
    tx, ty, tz = o[0] - ax, o[1] - ay, o[2] - az
    u = (tx * px + ty * py + tz * pz) * idet
    if u < -_EDGE_EPS or u > 1.0 + _EDGE_EPS:
        return -1.0, 0.0, 0.0
    qx = ty * e1z - tz * e1y
    qy = tz * e1x - tx * e1z
    qz = tx * e1y - ty * e1x
    v = (d[0] * qx + d[1] * qy + d[2] * qz) * idet
    if v < -_EDGE_EPS or u + v > 1.0 + _EDGE_EPS:
        return -1.0, 0.0, 0.0
    return (e2x * qx + e2y * qy + e2z * qz) * idet, u, v


@njit(cache=True, inline="always")
def trace_ray(vertices, faces, leaf_face, left, right, lo, hi, o, d, inv, stack, t_max, cull, any_hit):
    """One ray through the BVH: (t, face, u, v) of the nearest hit in (0, t_max] (with ``any_hit`` the
    first one found), face -1 when none. o, d, inv float64 [3] (inv = 1 / d), stack int32 [_STACK]."""
    n = leaf_face.shape[0]
    best_t = t_max
    best_f = -1
    best_u = 0.0
    best_v = 0.0
    stack[0] = 0
    sp = 1
    while sp > 0:
        sp -= 1
        node = stack[sp]
        if node >= n - 1:
            f = leaf_face[node - (n - 1)]
            t, u, v = _tri_hit(vertices, faces, f, o, d, cull)
            if t > 0.0 and (t < best_t or (best_f < 0 and t <= best_t)):
                best_t, best_f, best_u, best_v = t, f, u, v
                if any_hit:
                    break
            continue
        lc, rc = left[node], right[node]
        tl = _ray_box(lo, hi, lc, o, inv, best_t)
        tr = _ray_box(lo, hi, rc, o, inv, best_t)
        if tl < tr:
            lc, rc, tl, tr = rc, lc, tr, tl
        if tl != np.inf:            # farther child first, nearer on top
            stack[sp] = lc
            sp += 1
        if tr != np.inf:
            stack[sp] = rc
            sp += 1
    return best_t, best_f, best_u, best_v


@njit(parallel=True, cache=True)
def _ray_kernel(vertices, faces, leaf_face, left, right, lo, hi, origins, dirs, t_max, cull, any_hit,
                out_face, out_t, out_bary):
    """origins, dirs float64 [R, 3] (dirs unit); writes out_face int32 [R], out_t float32 [R],
    out_bary float32 [R, 3] (pre-filled with miss values). With any_hit a ray stops at its first hit."""
    n_rays = origins.shape[0]
    for c in prange((n_rays + _CHUNK - 1) // _CHUNK):
        stack = np.empty(_STACK, np.int32)
        o = np.empty(3)
        d = np.empty(3)
        inv = np.empty(3)
        for r in range(c * _CHUNK, min(n_rays, (c + 1) * _CHUNK)):
            for a in range(3):
                o[a] = origins[r, a]
                d[a] = dirs[r, a]
                inv[a] = 1.0 / d[a] if d[a] != 0.0 else 1e300
            best_t, best_f, best_u, best_v = trace_ray(vertices, faces, leaf_face, left, right, lo, hi, o, d,
                                                       inv, stack, t_max, cull, any_hit)
            if best_f >= 0:
                out_face[r] = best_f
                out_t[r] = best_t
                out_bary[r, 0] = 1.0 - best_u - best_v
                out_bary[r, 1] = best_u
                out_bary[r, 2] = best_v


@njit(cache=True, inline="always")
def _box_d2(lo: np.ndarray, hi: np.ndarray, node: int, px: float, py: float, pz: float) -> float:
    dx = max(lo[node, 0] - px, 0.0, px - hi[node, 0])
    dy = max(lo[node, 1] - py, 0.0, py - hi[node, 1])
    dz = max(lo[node, 2] - pz, 0.0, pz - hi[node, 2])
    return dx * dx + dy * dy + dz * dz


@njit(parallel=True, cache=True)
def _closest_kernel(vertices, faces, leaf_face, left, right, lo, hi, points, order, max_d2,
                    out_face, out_point, out_bary, out_dist):
    """points float64 [P, 3] visited in ``order`` int64 [P] (Morton order for cache locality)."""
    n = leaf_face.shape[0]
    n_pts = points.shape[0]
    for c in prange((n_pts + _CHUNK - 1) // _CHUNK):
        stack = np.empty(_STACK, np.int32)
        stack_d = np.empty(_STACK)
        for k in range(c * _CHUNK, min(n_pts, (c + 1) * _CHUNK)):
            r = order[k]
            px, py, pz = points[r, 0], points[r, 1], points[r, 2]
            best = max_d2
            best_f = -1
            bw0 = bw1 = bw2 = 0.0
            stack[0] = 0
            stack_d[0] = 0.0
            sp = 1
            while sp > 0:
                sp -= 1
                node = stack[sp]
                if stack_d[sp] > best:
                    continue
                if node >= n - 1:
                    f = leaf_face[node - (n - 1)]
                    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
                    ax, ay, az = vertices[i0, 0], vertices[i0, 1], vertices[i0, 2]
                    bx, by, bz = vertices[i1, 0], vertices[i1, 1], vertices[i1, 2]
                    cx, cy, cz = vertices[i2, 0], vertices[i2, 1], vertices[i2, 2]
                    w0, w1, w2 = closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz)
                    qx = w0 * ax + w1 * bx + w2 * cx - px
                    qy = w0 * ay + w1 * by + w2 * cy - py
                    qz = w0 * az + w1 * bz + w2 * cz - pz
                    d2 = qx * qx + qy * qy + qz * qz
                    if d2 < best or (best_f < 0 and d2 <= best):
                        best, best_f, bw0, bw1, bw2 = d2, f, w0, w1, w2
                    continue
                lc, rc = left[node], right[node]
                dl = _box_d2(lo, hi, lc, px, py, pz)
                dr = _box_d2(lo, hi, rc, px, py, pz)
                if dl < dr:
                    lc, rc, dl, dr = rc, lc, dr, dl
                if dl <= best:
                    stack[sp] = lc
                    stack_d[sp] = dl
                    sp += 1
                if dr <= best:
                    stack[sp] = rc
                    stack_d[sp] = dr
                    sp += 1
            if best_f >= 0:
                i0, i1, i2 = faces[best_f, 0], faces[best_f, 1], faces[best_f, 2]
                for a in range(3):
                    out_point[r, a] = bw0 * vertices[i0, a] + bw1 * vertices[i1, a] + bw2 * vertices[i2, a]
                out_face[r] = best_f
                out_bary[r, 0] = bw0
                out_bary[r, 1] = bw1
                out_bary[r, 2] = bw2
                out_dist[r] = np.sqrt(best)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------

def _query_array(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise AssetGenError(f"BVH query '{name}' has shape {arr.shape}, expected [N, 3]",
                            f"pass {name} as an [N, 3] float array")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise AssetGenError(f"BVH query '{name}' contains NaN/Inf", f"pass finite {name}")
    return arr


@dataclass
class Bvh:
    """A linear BVH over a triangle mesh; see the module docstring for the flat node layout.

    vertices float32 [V, 3], faces int32 [F, 3]: the mesh it was built on (glTF convention).
    left, right int32 [F-1]; parent int32 [2F-1]; aabb_lo, aabb_hi float32 [2F-1, 3]; leaf_face int32 [F].
    """

    vertices: np.ndarray
    faces: np.ndarray
    left: np.ndarray
    right: np.ndarray
    parent: np.ndarray
    aabb_lo: np.ndarray
    aabb_hi: np.ndarray
    leaf_face: np.ndarray

    def ray_cast(self, origins: np.ndarray, directions: np.ndarray, t_max: float = np.inf,
                 cull_backfaces: bool = False, any_hit: bool = False) -> RayHits:
        """Nearest hit per ray. origins [R, 3], directions [R, 3] (any non-zero length; normalised here,
        so ``t`` is a distance in mesh units). Hits satisfy 0 < t <= t_max. With ``cull_backfaces`` only
        front faces (dot(face normal, direction) < 0, CCW winding) are hit. With ``any_hit`` a ray stops at
        the first face it meets (an occlusion query: ``face_id >= 0`` is exact, the face need not be the
        nearest); rays that hit cost a fraction of a nearest-hit query."""
        o = _query_array(origins, "origins")
        d = _query_array(directions, "directions")
        if o.shape != d.shape:
            raise AssetGenError(f"{o.shape[0]} ray origins but {d.shape[0]} directions",
                                "pass one direction per origin")
        length = np.linalg.norm(d, axis=1, keepdims=True)
        if (length <= 0).any():
            raise AssetGenError("a ray direction has zero length", "pass non-zero directions")
        if not t_max > 0:
            raise AssetGenError(f"t_max={t_max} must be > 0", "pass a positive t_max (or inf)")
        d = d / length
        r_count = o.shape[0]
        hits = RayHits(np.full(r_count, -1, np.int32), np.full(r_count, np.inf, np.float32),
                       np.zeros((r_count, 3), np.float32))
        if r_count:
            _ray_kernel(self.vertices, self.faces, self.leaf_face, self.left, self.right, self.aabb_lo,
                        self.aabb_hi, o, d, float(t_max), bool(cull_backfaces), bool(any_hit), hits.face_id,
                        hits.t, hits.bary)
        return hits

    def closest_point(self, points: np.ndarray, max_distance: float = np.inf) -> ClosestHits:
        """Exact closest surface point per query point [P, 3]; faces farther than ``max_distance``
        (mesh units) are ignored, and queries with none nearer get face_id -1."""
        p = _query_array(points, "points")
        if not max_distance >= 0:
            raise AssetGenError(f"max_distance={max_distance} must be >= 0", "pass a distance >= 0 (or inf)")
        n_pts = p.shape[0]
        out = ClosestHits(np.full(n_pts, -1, np.int32), np.full((n_pts, 3), np.nan, np.float32),
                          np.zeros((n_pts, 3), np.float32), np.full(n_pts, np.inf, np.float32))
        if n_pts:
            lo = self.aabb_lo[0].astype(np.float64)
            scale = 1023.0 / np.maximum(self.aabb_hi[0].astype(np.float64) - lo, 1e-30)
            order = np.argsort(_morton_keys(p, lo, scale) >> np.uint64(32), kind="stable")
            max_d2 = float(max_distance) ** 2
            _closest_kernel(self.vertices, self.faces, self.leaf_face, self.left, self.right, self.aabb_lo,
                            self.aabb_hi, p, order, max_d2, out.face_id, out.point, out.bary, out.distance)
        return out


def build_bvh(vertices: np.ndarray, faces: np.ndarray) -> Bvh:
    """Build an LBVH over a triangle mesh. vertices float32 [V, 3] (finite), faces int32 [F, 3] with
    F >= 1 and indices in [0, V). Raises MeshError otherwise. Degenerate faces are allowed."""
    verts = np.ascontiguousarray(vertices, dtype=np.float32)
    tris = np.ascontiguousarray(faces, dtype=np.int32)
    if verts.ndim != 2 or verts.shape[1] != 3 or tris.ndim != 2 or tris.shape[1] != 3:
        raise MeshError(f"BVH input has vertices {verts.shape} and faces {tris.shape}",
                        "pass vertices [V, 3] and faces [F, 3]")
    validate_mesh(TriMesh(verts, tris), "mesh for the BVH")
    n = tris.shape[0]
    centroids = verts[tris].astype(np.float64).mean(axis=1)                 # [F, 3]
    lo = centroids.min(axis=0)
    scale = 1023.0 / np.maximum(centroids.max(axis=0) - lo, 1e-30)
    keys = _morton_keys(centroids, lo, scale)
    order = np.argsort(keys)
    keys = keys[order]
    leaf_face = (keys & np.uint64(0xFFFFFFFF)).astype(np.int32)
    left = np.zeros(max(n - 1, 0), np.int32)
    right = np.zeros(max(n - 1, 0), np.int32)
    parent = np.full(2 * n - 1, -1, np.int32)
    if n > 1:
        _karras_hierarchy(keys, left, right, parent)
    lo_box = np.empty((2 * n - 1, 3), np.float32)
    hi_box = np.empty((2 * n - 1, 3), np.float32)
    _fit_boxes(verts, tris, leaf_face, left, right, parent, lo_box, hi_box)
    return Bvh(verts, tris, left, right, parent, lo_box, hi_box, leaf_face)
