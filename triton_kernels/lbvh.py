"""Linear BVH on the GPU (numba-cuda): build, ray casting and exact closest-point queries (paper 6.2, 6.4).

Same algorithm, arithmetic and flat node layout as the host version ``engine.geometry.bvh`` (its docstring
is the specification; that module is this file's reference: ``build_bvh``, ``Bvh.ray_cast``,
``Bvh.closest_point``):

Build, four launches and one sort (N faces):
  1. ``_centroid_kernel``   c_f = (v0 + v1 + v2) / 3 in float64 (what numpy's mean computes), [N, 3].
     torch amin/amax give the centroid bounds lo, hi; scale = 1023 / max(hi - lo, 1e-30) (float64, on
     the device: no host round trip).
  2. ``_morton_kernel``     key_f = (morton30(clamp((c_f - lo) * scale, 0, 1023)) << 32) | f, int64.
     Keys are < 2^62, so signed int64 order is the unsigned order; ``torch.sort`` (CUB radix sort).
  3. ``_karras_kernel``     one thread per internal node i in [0, N-1): direction, range end by exponential
     + binary search, split at the first drop of the common-prefix length (Karras 2012); writes left,
     right and both children's parent.
  4. ``_fit_kernel``        one thread per leaf: writes its leaf box, then walks towards the root; at each
     internal node ``atomic.add(visits[node], 1)`` returns 0 for the first child to arrive (it stops)
     and 1 for the second, which fits the node from both children's boxes. ``threadfence`` orders every
     box write before the counter update, so the second arrival reads finished boxes. Min/max is exact, so
     boxes equal the host build's bit for bit; keys and hierarchy are equal by construction.

Layout (int32 node ids; identical to the host): internal nodes [0, N-1) (root 0), leaves [N-1, 2N-1)
(leaf N-1+k holds face leaf_face[k]); left/right int32 [N-1], parent int32 [2N-1] (-1 root),
aabb_lo/hi float32 [2N-1, 3], leaf_face int32 [N]. Scratch: centroids 24N B, keys 2 x 8N B (sort), visits
4N B. Tree depth <= 64, so 128-entry per-thread stacks cannot overflow.

Queries, one thread per query, stack traversal with the host's visiting order (near child on top):
  ray_cast      float64 slab test widened by 1e-9 relative, float64 Moller-Trumbore with barycentric
                edge tolerance 1e-10; hits need 0 < t <= t_max. Front faces (glTF CCW) have det > 0.
  closest_point float64 Ericson region test; queries visited in Morton order of the query points over
                the root box (sorted int64 keys, as the host sorts its codes), so a warp walks nearby
                leaves. Pruned by the best squared distance so far; max_distance limits it.
Float64 arithmetic keeps parity with the host: only FMA contraction (on by default in NVVM) can change a
last bit, so t, points and distances agree to ~1e-12 relative and face ids differ only on exact ties.
The H100 runs float64 at half its float32 rate, and the traversal is bound by memory latency anyway.

Floors (1M faces): the build moves ~N x (24 centroid + 16 keys x 2 (sort passes excluded) + 68 layout)
~ 0.12 GB, ~40 us at 3 TB/s; the sort and the latency of the log2(N)-deep walks dominate. A query reads
~2 x depth nodes of 24 B + a few triangles: ~1-2 kB of mostly cached data.
"""

from __future__ import annotations

import math

import numba
import torch

from triton_kernels.numba_cuda import cuda_module, launch, simulated, view

cuda = cuda_module()

STACK = 128
EDGE_EPS = 1e-10
BOX_EPS = 1e-9
MISS_DIR = 1e300


# ----------------------------------------------------------------------------------------------------
# Build kernels
# ----------------------------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _centroid_kernel(vertices, faces, out, n):
    """vertices float32 [V, 3], faces int32 [N, 3] -> out float64 [N, 3] centroids."""
    f = cuda.grid(1)
    if f < n:
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        for a in range(3):
            s = numba.float64(vertices[i0, a]) + numba.float64(vertices[i1, a])
            out[f, a] = (s + numba.float64(vertices[i2, a])) / 3.0


@cuda.jit(device=True)
def _expand_bits(x):
    """Spread the low 10 bits of int64 x so that two zero bits follow each bit."""
    x = (x * 0x00010001) & 0xFF0000FF
    x = (x * 0x00000101) & 0x0F00F00F
    x = (x * 0x00000011) & 0xC30C30C3
    x = (x * 0x00000005) & 0x49249249
    return x


@cuda.jit(cache=True)
def _morton_kernel(points, lo, scale, keys, n):
    """points float64 [N, 3], lo / scale float64 [3] -> keys int64 [N] = (morton30 << 32) | index."""
    i = cuda.grid(1)
    if i < n:
        code = numba.int64(0)
        for a in range(3):
            q = (points[i, a] - lo[a]) * scale[a]
            q = min(max(q, 0.0), 1023.0)
            code |= _expand_bits(numba.int64(q)) << (2 - a)
        keys[i] = (code << 32) | numba.int64(i)


if simulated():
    @cuda.jit(device=True)
    def _clz64(x):
        """Leading zeros of a 64-bit x >= 0 (the simulator's clz formats 32 bits only)."""
        return 64 - int(x).bit_length()
else:
    @cuda.jit(device=True)
    def _clz64(x):
        return cuda.clz(x)


@cuda.jit(device=True)
def _delta(keys, i, j, n):
    """Common-prefix length of sorted keys i and j (64 when equal); -1 when j is out of range."""
    if j < 0 or j >= n:
        return -1
    return _clz64(keys[i] ^ keys[j])


@cuda.jit(cache=True)
def _karras_kernel(keys, left, right, parent, n):
    """keys int64 [n] sorted unique; one thread per internal node i < n - 1."""
    i = cuda.grid(1)
    if i >= n - 1:
        return
    d = 1 if _delta(keys, i, i + 1, n) > _delta(keys, i, i - 1, n) else -1
    dmin = _delta(keys, i, i - d, n)
    lmax = 2
    while _delta(keys, i, i + lmax * d, n) > dmin:
        lmax *= 2
    ln = 0
    t = lmax // 2
    while t >= 1:
        if _delta(keys, i, i + (ln + t) * d, n) > dmin:
            ln += t
        t //= 2
    j = i + ln * d
    dnode = _delta(keys, i, j, n)
    s = 0
    div = 2
    while True:
        t = (ln + div - 1) // div
        if _delta(keys, i, i + (s + t) * d, n) > dnode:
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


@cuda.jit(cache=True)
def _fit_kernel(vertices, faces, leaf_face, left, right, parent, lo, hi, visits, n):
    """One thread per leaf k: leaf box, then bottom-up; the second child to arrive fits the parent."""
    k = cuda.grid(1)
    if k >= n:
        return
    node = n - 1 + k
    f = leaf_face[k]
    for a in range(3):
        x0 = vertices[faces[f, 0], a]
        x1 = vertices[faces[f, 1], a]
        x2 = vertices[faces[f, 2], a]
        lo[node, a] = min(x0, min(x1, x2))
        hi[node, a] = max(x0, max(x1, x2))
    cuda.threadfence()
    node = parent[node]
    while node >= 0:
        if cuda.atomic.add(visits, node, 1) == 0:
            return
        lc = left[node]
        rc = right[node]
        for a in range(3):
            lo[node, a] = min(lo[lc, a], lo[rc, a])
            hi[node, a] = max(hi[lc, a], hi[rc, a])
        cuda.threadfence()
        node = parent[node]


# ----------------------------------------------------------------------------------------------------
# Query device functions and kernels
# ----------------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _ray_box(lo, hi, node, ox, oy, oz, ix, iy, iz, t_best):
    """Entry distance of the ray into the node's box, or inf when it misses within (0, t_best]."""
    tn = 0.0
    tf = t_best
    for a in range(3):
        o = ox if a == 0 else (oy if a == 1 else oz)
        inv = ix if a == 0 else (iy if a == 1 else iz)
        t0 = (numba.float64(lo[node, a]) - o) * inv
        t1 = (numba.float64(hi[node, a]) - o) * inv
        if t0 > t1:
            t0, t1 = t1, t0
        tn = max(tn, t0)
        tf = min(tf, t1 * (1.0 + BOX_EPS) + BOX_EPS * abs(o) * abs(inv))
    return tn if tn <= tf else math.inf


@cuda.jit(cache=True)
def _ray_kernel(vertices, faces, leaf_face, left, right, lo, hi, origins, dirs, t_max, cull,
                out_face, out_t, out_bary, n_rays):
    """origins, dirs float64 [R, 3] (dirs unit); writes out_face int32 [R], out_t float32 [R],
    out_bary float32 [R, 3] (pre-filled with miss values)."""
    r = cuda.grid(1)
    if r >= n_rays:
        return
    n = leaf_face.shape[0]
    stack = cuda.local.array(STACK, numba.int32)
    ox, oy, oz = origins[r, 0], origins[r, 1], origins[r, 2]
    dx, dy, dz = dirs[r, 0], dirs[r, 1], dirs[r, 2]
    ix = 1.0 / dx if dx != 0.0 else MISS_DIR
    iy = 1.0 / dy if dy != 0.0 else MISS_DIR
    iz = 1.0 / dz if dz != 0.0 else MISS_DIR
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
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            ax, ay, az = numba.float64(vertices[i0, 0]), numba.float64(vertices[i0, 1]), \
                numba.float64(vertices[i0, 2])
            e1x = numba.float64(vertices[i1, 0]) - ax
            e1y = numba.float64(vertices[i1, 1]) - ay
            e1z = numba.float64(vertices[i1, 2]) - az
            e2x = numba.float64(vertices[i2, 0]) - ax
            e2y = numba.float64(vertices[i2, 1]) - ay
            e2z = numba.float64(vertices[i2, 2]) - az
            px = dy * e2z - dz * e2y
            py = dz * e2x - dx * e2z
            pz = dx * e2y - dy * e2x
            det = e1x * px + e1y * py + e1z * pz
            if det == 0.0 or (cull and det < 0.0):
                continue
            idet = 1.0 / det
            tx, ty, tz = ox - ax, oy - ay, oz - az
            u = (tx * px + ty * py + tz * pz) * idet
            if u < -EDGE_EPS or u > 1.0 + EDGE_EPS:
                continue
            qx = ty * e1z - tz * e1y
            qy = tz * e1x - tx * e1z
            qz = tx * e1y - ty * e1x
            v = (dx * qx + dy * qy + dz * qz) * idet
            if v < -EDGE_EPS or u + v > 1.0 + EDGE_EPS:
                continue
            t = (e2x * qx + e2y * qy + e2z * qz) * idet
            if t > 0.0 and (t < best_t or (best_f < 0 and t <= best_t)):
                best_t = t
                best_f = f
                best_u = u
                best_v = v
            continue
        lc = left[node]
        rc = right[node]
        tl = _ray_box(lo, hi, lc, ox, oy, oz, ix, iy, iz, best_t)
        tr = _ray_box(lo, hi, rc, ox, oy, oz, ix, iy, iz, best_t)
        if tl < tr:
            lc, rc, tl, tr = rc, lc, tr, tl
        if tl != math.inf:            # farther child first, nearer on top
            stack[sp] = lc
            sp += 1
        if tr != math.inf:
            stack[sp] = rc
            sp += 1
    if best_f >= 0:
        out_face[r] = best_f
        out_t[r] = best_t
        out_bary[r, 0] = 1.0 - best_u - best_v
        out_bary[r, 1] = best_u
        out_bary[r, 2] = best_v


@cuda.jit(device=True)
def _seg_closest(px, py, pz, ax, ay, az, bx, by, bz):
    """Closest point on segment a-b: returns (s in [0, 1], squared distance)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    ll = abx * abx + aby * aby + abz * abz
    s = 0.0
    if ll > 0.0:
        s = min(max(((px - ax) * abx + (py - ay) * aby + (pz - az) * abz) / ll, 0.0), 1.0)
    dx, dy, dz = ax + s * abx - px, ay + s * aby - py, az + s * abz - pz
    return s, dx * dx + dy * dy + dz * dz


@cuda.jit(device=True)
def closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Ericson's Voronoi-region method (float64); barycentric (wa, wb, wc) of the closest point."""
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
    s0, q0 = _seg_closest(px, py, pz, ax, ay, az, bx, by, bz)     # zero-area triangle: best edge
    s1, q1 = _seg_closest(px, py, pz, bx, by, bz, cx, cy, cz)
    s2, q2 = _seg_closest(px, py, pz, cx, cy, cz, ax, ay, az)
    if q0 <= q1 and q0 <= q2:
        return 1.0 - s0, s0, 0.0
    if q1 <= q2:
        return 0.0, 1.0 - s1, s1
    return s2, 0.0, 1.0 - s2


@cuda.jit(device=True)
def _box_d2(lo, hi, node, px, py, pz):
    dx = max(max(numba.float64(lo[node, 0]) - px, 0.0), px - numba.float64(hi[node, 0]))
    dy = max(max(numba.float64(lo[node, 1]) - py, 0.0), py - numba.float64(hi[node, 1]))
    dz = max(max(numba.float64(lo[node, 2]) - pz, 0.0), pz - numba.float64(hi[node, 2]))
    return dx * dx + dy * dy + dz * dz


@cuda.jit(device=True)
def closest_point_device(vertices, faces, leaf_face, left, right, lo, hi, px, py, pz, max_d2):
    """Closest surface point to (px, py, pz) (float64) among faces within sqrt(max_d2).

    Returns (face id or -1, squared distance, w0, w1, w2) with (w0, w1, w2) the barycentric weights of the
    face's vertices (float64). Shared by ``_closest_kernel`` and the GPU normal baker."""
    n = leaf_face.shape[0]
    stack = cuda.local.array(STACK, numba.int32)
    stack_d = cuda.local.array(STACK, numba.float64)
    best = max_d2
    best_f = -1
    bw0 = 0.0
    bw1 = 0.0
    bw2 = 0.0
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
            ax, ay, az = numba.float64(vertices[i0, 0]), numba.float64(vertices[i0, 1]), \
                numba.float64(vertices[i0, 2])
            bx, by, bz = numba.float64(vertices[i1, 0]), numba.float64(vertices[i1, 1]), \
                numba.float64(vertices[i1, 2])
            cx, cy, cz = numba.float64(vertices[i2, 0]), numba.float64(vertices[i2, 1]), \
                numba.float64(vertices[i2, 2])
            w0, w1, w2 = closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz)
            qx = w0 * ax + w1 * bx + w2 * cx - px
            qy = w0 * ay + w1 * by + w2 * cy - py
            qz = w0 * az + w1 * bz + w2 * cz - pz
            d2 = qx * qx + qy * qy + qz * qz
            if d2 < best or (best_f < 0 and d2 <= best):
                best = d2
                best_f = f
                bw0 = w0
                bw1 = w1
                bw2 = w2
            continue
        lc = left[node]
        rc = right[node]
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
    return best_f, best, bw0, bw1, bw2


@cuda.jit(cache=True)
def _closest_kernel(vertices, faces, leaf_face, left, right, lo, hi, points, order, max_d2,
                    out_face, out_point, out_bary, out_dist, n_pts):
    """points float64 [P, 3]; thread k answers query order[k] (int64, Morton order)."""
    k = cuda.grid(1)
    if k >= n_pts:
        return
    r = order[k]
    f, d2, w0, w1, w2 = closest_point_device(vertices, faces, leaf_face, left, right, lo, hi,
                                             points[r, 0], points[r, 1], points[r, 2], max_d2)
    if f >= 0:
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        for a in range(3):
            out_point[r, a] = w0 * numba.float64(vertices[i0, a]) + w1 * numba.float64(vertices[i1, a]) \
                + w2 * numba.float64(vertices[i2, a])
        out_face[r] = f
        out_bary[r, 0] = w0
        out_bary[r, 1] = w1
        out_bary[r, 2] = w2
        out_dist[r] = math.sqrt(d2)


# ----------------------------------------------------------------------------------------------------
# Launchers (tensors on kernel_device(); validation is the caller's: engine.geometry.bvh_gpu)
# ----------------------------------------------------------------------------------------------------

def morton_keys(points: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """points float64 [N, 3], lo / scale float64 [3] (same device) -> int64 [N] keys (code << 32) | i."""
    n = points.shape[0]
    keys = torch.empty(n, dtype=torch.int64, device=points.device)
    launch(_morton_kernel, n, view(points), view(lo), view(scale), view(keys), n)
    return keys


def _grid_frame(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, scale) float64 [3] mapping points' bounds onto the 1024^3 Morton grid."""
    lo = points.amin(dim=0)
    scale = 1023.0 / torch.clamp_min(points.amax(dim=0) - lo, 1e-30)
    return lo.contiguous(), scale.contiguous()


def build_lbvh(vertices: torch.Tensor, faces: torch.Tensor) -> dict[str, torch.Tensor]:
    """LBVH arrays of a mesh: vertices float32 [V, 3], faces int32 [N, 3] (N >= 1, indices valid),
    contiguous on kernel_device(). Returns left, right, parent, aabb_lo, aabb_hi, leaf_face (layout above)."""
    dev = vertices.device
    n = faces.shape[0]
    centroids = torch.empty((n, 3), dtype=torch.float64, device=dev)      # [N, 3]
    launch(_centroid_kernel, n, view(vertices), view(faces), view(centroids), n)
    keys = morton_keys(centroids, *_grid_frame(centroids))
    del centroids
    keys = torch.sort(keys).values.contiguous()                             # unique, so order is strict
    leaf_face = (keys & 0xFFFFFFFF).to(torch.int32)
    left = torch.zeros(max(n - 1, 0), dtype=torch.int32, device=dev)
    right = torch.zeros(max(n - 1, 0), dtype=torch.int32, device=dev)
    parent = torch.full((2 * n - 1,), -1, dtype=torch.int32, device=dev)
    launch(_karras_kernel, n - 1, view(keys), view(left), view(right), view(parent), n)
    del keys
    lo = torch.empty((2 * n - 1, 3), dtype=torch.float32, device=dev)
    hi = torch.empty((2 * n - 1, 3), dtype=torch.float32, device=dev)
    visits = torch.zeros(max(n - 1, 1), dtype=torch.int32, device=dev)
    launch(_fit_kernel, n, view(vertices), view(faces), view(leaf_face), view(left), view(right),
           view(parent), view(lo), view(hi), view(visits), n)
    return {"left": left, "right": right, "parent": parent, "aabb_lo": lo, "aabb_hi": hi,
            "leaf_face": leaf_face}


def ray_cast_lbvh(tree: dict[str, torch.Tensor], vertices: torch.Tensor, faces: torch.Tensor,
                  origins: torch.Tensor, dirs: torch.Tensor, t_max: float, cull: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """origins, dirs float64 [R, 3] (dirs unit) -> (face int32 [R], t float32 [R], bary float32 [R, 3])."""
    r_count = origins.shape[0]
    dev = origins.device
    face = torch.full((r_count,), -1, dtype=torch.int32, device=dev)
    t = torch.full((r_count,), math.inf, dtype=torch.float32, device=dev)
    bary = torch.zeros((r_count, 3), dtype=torch.float32, device=dev)
    launch(_ray_kernel, r_count, view(vertices), view(faces), view(tree["leaf_face"]), view(tree["left"]),
           view(tree["right"]), view(tree["aabb_lo"]), view(tree["aabb_hi"]), view(origins), view(dirs),
           float(t_max), bool(cull), view(face), view(t), view(bary), r_count)
    return face, t, bary


def query_order(tree: dict[str, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """int64 [P]: query indices sorted by the Morton code of points float64 [P, 3] over the root box."""
    lo = tree["aabb_lo"][0].to(torch.float64)
    scale = 1023.0 / torch.clamp_min(tree["aabb_hi"][0].to(torch.float64) - lo, 1e-30)
    keys = torch.sort(morton_keys(points, lo.contiguous(), scale.contiguous())).values
    return (keys & 0xFFFFFFFF).contiguous()


def closest_point_lbvh(tree: dict[str, torch.Tensor], vertices: torch.Tensor, faces: torch.Tensor,
                       points: torch.Tensor, max_distance: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """points float64 [P, 3] -> (face int32 [P], point float32 [P, 3], bary float32 [P, 3],
    distance float32 [P]); misses: -1, NaN, 0, inf."""
    n_pts = points.shape[0]
    dev = points.device
    face = torch.full((n_pts,), -1, dtype=torch.int32, device=dev)
    point = torch.full((n_pts, 3), math.nan, dtype=torch.float32, device=dev)
    bary = torch.zeros((n_pts, 3), dtype=torch.float32, device=dev)
    dist = torch.full((n_pts,), math.inf, dtype=torch.float32, device=dev)
    if n_pts:
        order = query_order(tree, points)
        launch(_closest_kernel, n_pts, view(vertices), view(faces), view(tree["leaf_face"]),
               view(tree["left"]), view(tree["right"]), view(tree["aabb_lo"]), view(tree["aabb_hi"]),
               view(points), view(order), float(max_distance) ** 2, view(face), view(point), view(bary),
               view(dist), n_pts)
    return face, point, bary, dist
