"""Unsigned distance band of a triangle soup and the exact Euclidean distance transform to it (numba-cuda).

The first two steps of the watertight conversion (``engine/geometry/watertight.py``, paper 5.1) on the
device. Lattice: ``n`` nodes per axis in grid index units, node ``(i, j, k)`` at flat id ``(i n + j) n + k``.

UDF band (``udf_band``)
-----------------------
``udf[p] = min_f |p - closest_f(p)|`` over the triangles ``f`` whose bounding box grown by ``radius`` holds
``p`` and with ``|p - closest_f(p)| < radius``; other nodes keep +inf. Closest points are Ericson's region
method in float64 (as ``closest_point_host.closest_on_triangle``, degenerate triangles included), stored
as float32 ``sqrt(d2)``. Work split: one thread per (triangle, x, y) COLUMN of the triangle's grown box,
looping over z; the column -> triangle map is a binary search in the exclusive scan of per-triangle column
counts (no per-item index array). Columns, not whole triangles, keep big triangles (a two-triangle plane)
from serialising on one thread. Concurrent writes use ``cuda.atomic.min`` on the float32 value
(distances are >= 0), guarded by a plain read so most losing candidates issue no atomic.
Cost: ``F (s + 2 r + 1)^3`` point-triangle tests (~300 at 512^3 for dense input: ~150 flop each in fp64),
writes <= 4 B per test; floor for a 1M-face mesh ~0.3 G tests, i.e. a few ms of fp64 on an H100.
Host syncs: one (the total column count, to size the launch).

Euclidean distance transform (``edt_to_mask``)
---------------------------------------------
``far[p] = min_{q in mask} |p - q|`` (exact, like ``scipy.ndimage.distance_transform_edt(~mask)``), by the
separable lower-envelope-of-parabolas algorithm (Felzenszwalb & Huttenlocher 2012, written here from the
paper): pass 1 along z gives the 1D squared distance per row, passes 2 and 3 take the lower envelope along
y and x. One thread per row (``n^2`` threads per pass, O(n) each). Squared distances are integers below
3 * 1024^2 < 2^24, so they are exact in float32; the envelope maths runs in float64, rows without a feature
stay +inf and are skipped. Per-thread local arrays of ``MAX_NODES = 1025`` entries bound ``n <= 1025``.
Bytes: each pass reads and writes the grid once: ~24 n^3 B in all (3.2 GB at 513^3, ~1 ms at 3 TB/s).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from triton_kernels.closest_point_host import udf_band_host
from triton_kernels.errors import MeshError
from triton_kernels.numba_cuda import cuda_module, kernel_device, launch, view

cuda = cuda_module()
MAX_NODES = 1025
_ENVELOPE = 1026          # MAX_NODES + 1 boundaries (a literal: numba-cuda wants constant shapes)


# --------------------------------------------------------------------------------------------------------
# References (plain numpy / scipy; the CPU watertight path uses the same maths through numba).
# --------------------------------------------------------------------------------------------------------

def udf_band_ref(verts: np.ndarray, faces: np.ndarray, n: int, radius: float) -> np.ndarray:
    """float32 [n, n, n] band UDF (inf outside), via the CPU kernel of the watertight conversion
    (``closest_point_host.udf_band_host``). verts float64 [V, 3] in grid index units, faces int [F, 3]."""
    out = np.full((n, n, n), np.inf, np.float32)
    udf_band_host(np.asarray(verts, np.float64), np.asarray(faces, np.int64), n, float(radius), out)
    return out


def edt_to_mask_ref(mask: np.ndarray) -> np.ndarray:
    """float32 [n, n, n] Euclidean distance (voxels) of every node to the nearest True node of ``mask``."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~mask).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Kernels.
# --------------------------------------------------------------------------------------------------------

@cuda.jit(device=True, inline=True)
def _seg_d2(px, py, pz, ax, ay, az, bx, by, bz):
    """Squared distance from p to segment ab (float64)."""
    dx, dy, dz = bx - ax, by - ay, bz - az
    den = dx * dx + dy * dy + dz * dz
    s = 0.0
    if den > 0.0:
        s = min(max(((px - ax) * dx + (py - ay) * dy + (pz - az) * dz) / den, 0.0), 1.0)
    qx, qy, qz = ax + s * dx - px, ay + s * dy - py, az + s * dz - pz
    return qx * qx + qy * qy + qz * qz


@cuda.jit(device=True, inline=True)
def _tri_d2(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Squared distance from p to triangle abc: Ericson's region method (Real-Time Collision Detection 5.1.5,
    as closest_point_host.closest_on_triangle), with the closest edge for zero-area triangles."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    wa, wb, wc = 1.0, 0.0, 0.0
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    if d1 <= 0.0 and d2 <= 0.0:
        wa = 1.0
    elif d3 >= 0.0 and d4 <= d3:
        wa, wb = 0.0, 1.0
    elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        v = d1 / (d1 - d3)
        wa, wb = 1.0 - v, v
    elif d6 >= 0.0 and d5 <= d6:
        wa, wc = 0.0, 1.0
    elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        w = d2 / (d2 - d6)
        wa, wc = 1.0 - w, w
    elif va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        wa, wb, wc = 0.0, 1.0 - w, w
    elif va + vb + vc > 0.0:
        den = va + vb + vc
        wb, wc = vb / den, vc / den
        wa = 1.0 - wb - wc
    else:
        return min(_seg_d2(px, py, pz, ax, ay, az, bx, by, bz), _seg_d2(px, py, pz, bx, by, bz, cx, cy, cz),
                   _seg_d2(px, py, pz, cx, cy, cz, ax, ay, az))
    dx = wa * ax + wb * bx + wc * cx - px
    dy = wa * ay + wb * by + wc * cy - py
    dz = wa * az + wb * bz + wc * cz - pz
    return dx * dx + dy * dy + dz * dz


@cuda.jit(cache=True)
def _udf_columns_kernel(verts, faces, boxes, col_start, num_faces, total, n, radius, out):
    # verts f64 [V, 3]; faces i32 [F, 3]; boxes i32 [F, 6] (lo xyz, hi xyz, inclusive);
    # col_start i64 [F + 1] exclusive scan of column counts; out f32 [n^3] flat.
    item = cuda.grid(1)
    if item >= total:
        return
    lo, hi = 0, num_faces
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if col_start[mid] <= item:
            lo = mid
        else:
            hi = mid
    f = lo
    local = item - col_start[f]
    ny = boxes[f, 4] - boxes[f, 1] + 1
    i = boxes[f, 0] + local // ny
    j = boxes[f, 1] + local % ny
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    r2 = radius * radius
    for k in range(boxes[f, 2], boxes[f, 5] + 1):
        d2 = _tri_d2(numba.float64(i), numba.float64(j), numba.float64(k),
                     verts[a, 0], verts[a, 1], verts[a, 2], verts[b, 0], verts[b, 1], verts[b, 2],
                     verts[c, 0], verts[c, 1], verts[c, 2])
        if d2 < r2:
            d = numba.float32(math.sqrt(d2))
            idx = (i * n + j) * n + k
            if d < out[idx]:
                cuda.atomic.min(out, idx, d)


@cuda.jit(cache=True)
def _edt_rows_kernel(mask, n, g):
    # Pass 1, one thread per (x, y) row along z: g = squared 1D distance to the nearest mask node, or inf.
    row = cuda.grid(1)
    if row >= n * n:
        return
    base = row * n
    inf = numba.float32(math.inf)
    last = -1
    for k in range(n):
        if mask[base + k] != 0:
            last = k
        g[base + k] = numba.float32((k - last) * (k - last)) if last >= 0 else inf
    last = -1
    for k in range(n - 1, -1, -1):
        if mask[base + k] != 0:
            last = k
        if last >= 0:
            d = numba.float32((last - k) * (last - k))
            if d < g[base + k]:
                g[base + k] = d


@cuda.jit(cache=True)
def _edt_envelope_kernel(src, dst, n, stride, outer_stride, inner_stride, finish):
    # One thread per line along an axis with node stride ``stride``; the line's first node is
    # (line // n) * outer_stride + (line % n) * inner_stride. dst = lower envelope of the parabolas
    # (q - v)^2 + src[v] over the finite src; with finish, dst = sqrt of it (the distance).
    line = cuda.grid(1)
    if line >= n * n:
        return
    base = (line // n) * outer_stride + (line % n) * inner_stride
    f = cuda.local.array(MAX_NODES, numba.float64)
    v = cuda.local.array(MAX_NODES, numba.int32)
    z = cuda.local.array(_ENVELOPE, numba.float64)
    for q in range(n):
        f[q] = src[base + q * stride]
    top = -1
    for q in range(n):
        if f[q] == math.inf:
            continue
        s = -math.inf
        while top >= 0:
            p = v[top]
            s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
            if s <= z[top]:
                top -= 1
            else:
                break
        top += 1
        v[top] = q
        z[top] = s if top > 0 else -math.inf
        z[top + 1] = math.inf
    k = 0
    for q in range(n):
        if top < 0:
            out = math.inf
        else:
            while z[k + 1] < q:
                k += 1
            out = (q - v[k]) * (q - v[k]) + f[v[k]]
        if finish:
            dst[base + q * stride] = numba.float32(math.sqrt(out))
        else:
            dst[base + q * stride] = numba.float32(out)


# --------------------------------------------------------------------------------------------------------
# Launchers.
# --------------------------------------------------------------------------------------------------------

def _face_boxes(verts: torch.Tensor, faces: torch.Tensor, n: int, radius: float) -> torch.Tensor:
    """int32 [F, 6] inclusive node boxes (lo xyz, hi xyz) of the triangles grown by ``radius``, clamped to
    the grid; same floor/ceil rule as the CPU reference."""
    tri = verts[faces.long()]                                      # [F, 3, 3] float64
    lo = torch.floor(tri.min(dim=1).values - radius).clamp_(min=0)
    hi = torch.ceil(tri.max(dim=1).values + radius).clamp_(max=n - 1)
    return torch.cat([lo, hi], dim=1).to(torch.int32)


def udf_band(verts: torch.Tensor, faces: torch.Tensor, n: int, radius: float) -> torch.Tensor:
    """Exact unsigned distance within ``radius`` of the triangles, +inf elsewhere.

    verts: float64 [V, 3] positions in grid index units; faces: int32 [F, 3]; both on kernel_device().
    n: nodes per axis (<= MAX_NODES); radius: band radius in voxels (> 0).
    Returns float32 [n, n, n] on the same device, equal to ``udf_band_ref`` (fp64 maths; FMA contraction on
    the GPU may move a value by an ulp).
    """
    dev = kernel_device()
    if verts.dtype != torch.float64 or verts.dim() != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must be float64 [V, 3], got {verts.dtype} {tuple(verts.shape)}")
    if faces.dtype != torch.int32 or faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be int32 [F, 3], got {faces.dtype} {tuple(faces.shape)}")
    if verts.device != dev or faces.device != dev:
        raise ValueError(f"verts and faces must be on {dev}")
    if not 2 <= n <= MAX_NODES or not radius > 0:
        raise ValueError(f"need 2 <= n <= {MAX_NODES} and radius > 0, got n={n}, radius={radius}")
    out = torch.full((n * n * n,), math.inf, dtype=torch.float32, device=dev)
    num_faces = int(faces.shape[0])
    if num_faces == 0:
        return out.view(n, n, n)
    boxes = _face_boxes(verts, faces, n, float(radius))           # [F, 6]
    cols = ((boxes[:, 3] - boxes[:, 0] + 1).clamp(min=0) * (boxes[:, 4] - boxes[:, 1] + 1).clamp(min=0))
    col_start = torch.zeros(num_faces + 1, dtype=torch.int64, device=dev)
    torch.cumsum(cols.to(torch.int64), 0, out=col_start[1:])
    total = int(col_start[-1])                                     # host sync (launch size)
    launch(_udf_columns_kernel, total, view(verts.contiguous()), view(faces.contiguous()),
           view(boxes.contiguous()), view(col_start), num_faces, total, n, float(radius), view(out))
    return out.view(n, n, n)


def edt_to_mask(mask: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance (voxels) of every node to the nearest True node of ``mask``.

    mask: bool [n, n, n] on kernel_device(), n <= MAX_NODES, at least one True node (else MeshError: scipy
    has no defined answer either). Returns float32 [n, n, n], equal to ``edt_to_mask_ref``.
    """
    if mask.dtype != torch.bool or mask.dim() != 3 or len(set(mask.shape)) != 1:
        raise ValueError(f"mask must be a cubic bool [n, n, n] tensor, got {mask.dtype} {tuple(mask.shape)}")
    if mask.device != kernel_device():
        raise ValueError(f"mask must be on {kernel_device()}")
    n = int(mask.shape[0])
    if n > MAX_NODES:
        raise ValueError(f"distance transform supports n <= {MAX_NODES} nodes per axis, got {n}")
    if not bool(mask.any()):
        raise MeshError("empty surface band: no grid node lies within the band of the surface",
                        "use the default band (0.87 voxel) or a finer resolution")
    g = torch.empty(n * n * n, dtype=torch.float32, device=mask.device)
    h = torch.empty_like(g)
    rows = n * n
    launch(_edt_rows_kernel, rows, view(mask.contiguous().view(torch.uint8).reshape(-1)), n, view(g))
    launch(_edt_envelope_kernel, rows, view(g), view(h), n, n, n * n, 1, False)      # along y
    launch(_edt_envelope_kernel, rows, view(h), view(g), n, n * n, n, 1, True)       # along x
    return g.view(n, n, n)
