"""Batched z-buffered orthographic rasteriser (numba-cuda): K views of one mesh in one launch set.

Maths (identical to ``rasterize_host.rasterize_ortho``, the reference). View k has an
orthonormal frame (r_k right, u_k image up, d_k towards the camera), a half extent h_k and a centre c_k
(0 for ``OrthoCamera``). A vertex p projects, in float64 and rounded to float32 like
``OrthoCamera.world_to_pixel``, to
  x = ((p - c).r / h + 1) / 2 * R,   y = (1 - (p - c).u / h) / 2 * R,   z = h - (p - c).d
Pixel (row i, col j) samples (j + 0.5, i + 0.5). Coverage uses float64 edge functions evaluated from the
lexicographically smaller endpoint with the top-left ownership rule; barycentrics b_i = E_i / |A|;
depth z = sum b_i z_i (affine in screen space: orthographic). Zero-area and non-finite triangles cover
nothing; ``cull_backfaces`` drops triangles whose pixel-frame signed area is positive (world CCW front
faces are clockwise in the y-down pixel frame).

Depth test. Each pixel holds one int64 ``key << 32 | face`` where ``key`` is the float32 depth's bit
pattern made order-preserving as a signed int32 (negative floats: flip the 31 low bits). One
``cuda.atomic.min`` per fragment keeps the nearest depth and, on equal float32 depths, the lowest face
index -- the reference's "first drawn wins". (The reference compares the float64 depth against the stored
float32 one, so the two can differ only where depths agree to float32 rounding: ~1e-7 relative.)

Work split. Pass 1 has one thread per (view, face): it projects, sets up and scans the clipped bounding
box when it has at most ``big_bbox_px`` pixels; otherwise it writes its tile count (16 x 16 tiles of the
box). Pass 2 has one thread per tile of the big triangles (found with one ``nonzero`` + cumsum, the only
host sync). The resolve pass has one thread per pixel: it unpacks the face and re-evaluates that face's
edge functions at the pixel centre for the barycentrics and depth, so pass 1 stores nothing but the key.

Binned visibility (``mark_visible_views``; used by hidden-face removal, which needs only "does face f
win a pixel of some view"). The views are cut into 32 x 32 tiles. A count pass (thread per (view, face))
adds 1 to each tile its clipped box touches; an exclusive cumsum gives each tile's offset; a fill pass
appends the face id to those tiles' lists (atomic cursor per tile; list order does not matter because the
packed min is order-independent). One block per tile then keeps the tile's z-buffer in shared memory
(8 KiB of packed int64 keys, same ``_setup``, coverage rule, depth and packing as above, so bit-identical
to ``zbuffer_views``; ``group`` lanes share a triangle and stride over its box clipped to the tile) and
ends with one pass over its 1024 pixels that flags each winning face in a uint8 [F] mask. No global
z-buffer is cleared, atomically min-ed or read back.

Layouts: vertices float32 [V, 3], faces int32 [F, 3], camera parameters float64 [K, 13] =
(r[3], u[3], d[3], h, c[3]); z-buffer int64 [K * R * R] (row-major per view); outputs face_id int32
[K, R, R] (-1 empty), bary float32 [K, R, R, 3] (zeros where empty), depth float32 [K, R, R] (inf empty).
Binned pass: counts int32 [K * T^2] and offsets/cursor int64 [K * T^2] (T = ceil(R / 32)), entries int32
[sum of counts of a batch of views], mask uint8 [F].

Limits: F < 2^31; R <= 16384. Memory: 8 bytes/pixel of z-buffer + 4 bytes per (view, face) tile count +
20 bytes/pixel of outputs (``want_bary=False``: 8). Callers batch views to bound it. The binned pass needs
20 bytes per (view, tile) and 4 bytes per (view, tile, face) entry, batched under ``MAX_BIN_ENTRIES``
(256 MiB); at 512 views x 1024 px x 36K faces: ~10 MB + ~100 MB (one batch).
Floor: one projected triangle setup per (view, face) (27 + ~40 float64 FLOPs), ~25 float64 FLOPs per
bounding-box pixel tested, one 8-byte atomic per covered fragment that passes the early depth read, and a
resolve pass that reads 8 B and writes 4 + 12 + 4 B per pixel. Binned pass: three setups per (view, face)
(count, fill, raster; the last per touched tile), ~20 float64 FLOPs per box pixel with the edge constants
hoisted, shared-memory atomics only, and ~12 B of global traffic per (view, tile, face) entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numba import float32, float64, int32, int64

from triton_kernels.errors import ConfigError, MeshError
from triton_kernels.numba_cuda import cuda_module, kernel_device, launch, simulated, view
from triton_kernels.rasterize_host import OrthoView, rasterize_ortho

cuda = cuda_module()

EMPTY = np.int64(0x7FFFFFFFFFFFFFFF)     # z-buffer clear value (no real fragment packs to it)
TILE = 16                                # side of the tiles that split big triangles
PX_PER_THREAD = 32                       # pixels per thread of the resolve passes
ITEMS_PER_THREAD = 8                     # (view, face) items per thread of the binning passes
BIG_BBOX_PX = 1024                       # bounding boxes above this many pixels go to the tile pass
BIN = 32                                 # side of the screen tiles of the binned visibility pass
BIN_PX = BIN * BIN                       # pixels of one tile's shared-memory z-buffer (8 KiB)
BIN_THREADS = 256                        # threads per tile block
BIN_GROUP = 8                            # lanes sharing one triangle in a tile block (power of 2 <= 32)
MAX_BIN_ENTRIES = 1 << 26                # (view, tile, face) entries per batch of views: 256 MiB

if simulated():
    def _float_bits(x):
        """float32 bit pattern as int32 (the simulator has no libdevice)."""
        return np.float32(x).view(np.int32)
else:
    from numba.cuda import libdevice

    _float_bits = libdevice.float_as_int


# --------------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------------

def rasterize_views_ref(vertices: np.ndarray, faces: np.ndarray, cameras: Sequence[OrthoView],
                        resolution: int, cull_backfaces: bool = False):
    """The CPU rasteriser per view: (face_id int32 [K, R, R], bary float32 [K, R, R, 3], depth [K, R, R])."""
    outs = [rasterize_ortho(vertices, faces, cam, resolution, cull_backfaces) for cam in cameras]
    return tuple(np.stack([o[i] for o in outs]) for i in range(3))


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------

@cuda.jit(device=True, inline=True)
def _project(verts, cams, k, i, res):
    """Pixel x, y and depth of vertex i in view k, rounded to float32 as the reference does."""
    px = float64(verts[i, 0]) - cams[k, 10]
    py = float64(verts[i, 1]) - cams[k, 11]
    pz = float64(verts[i, 2]) - cams[k, 12]
    h = cams[k, 9]
    a = px * cams[k, 0] + py * cams[k, 1] + pz * cams[k, 2]
    b = px * cams[k, 3] + py * cams[k, 4] + pz * cams[k, 5]
    c = px * cams[k, 6] + py * cams[k, 7] + pz * cams[k, 8]
    x = float64(float32((a / h + 1.0) * 0.5 * res))
    y = float64(float32((1.0 - b / h) * 0.5 * res))
    return x, y, float64(float32(h - c))


@cuda.jit(device=True, inline=True)
def _edge(ax, ay, bx, by, px, py):
    if bx < ax or (bx == ax and by < ay):
        return -((ax - bx) * (py - by) - (ay - by) * (px - bx))
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@cuda.jit(device=True, inline=True)
def _setup(verts, faces, cams, k, f, res, front_sign):
    """Projected triangle of face f in view k and its clipped bounding box. ok is False for zero-area,
    non-finite or culled triangles and for boxes outside the image."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0, z0 = _project(verts, cams, k, i0, res)
    x1, y1, z1 = _project(verts, cams, k, i1, res)
    x2, y2, z2 = _project(verts, cams, k, i2, res)
    area = _edge(x1, y1, x2, y2, x0, y0)
    ok = area != 0.0 and abs(area) < math.inf and not (front_sign != 0.0 and area * front_sign < 0.0)
    # clamp before rounding so huge coordinates cannot overflow the integer conversion
    lim = float64(res + 1)
    c_lo = max(int32(math.floor(min(max(min(x0, x1, x2), -1.0), lim) - 0.5)), 0)
    c_hi = min(int32(math.ceil(min(max(max(x0, x1, x2), -1.0), lim) - 0.5)), res - 1)
    r_lo = max(int32(math.floor(min(max(min(y0, y1, y2), -1.0), lim) - 0.5)), 0)
    r_hi = min(int32(math.ceil(min(max(max(y0, y1, y2), -1.0), lim) - 0.5)), res - 1)
    ok = ok and c_lo <= c_hi and r_lo <= r_hi
    if not ok:
        c_lo, c_hi, r_lo, r_hi = 0, -1, 0, -1
    return (x0, y0, z0, x1, y1, z1, x2, y2, z2, area, ok,
            int32(c_lo), int32(c_hi), int32(r_lo), int32(r_hi))


@cuda.jit(device=True, inline=True)
def _coverage_setup(x0, y0, x1, y1, x2, y2, area):
    """Sign, inverse |area| and top-left ownership of the three edges (edge i is opposite vertex i)."""
    s = 1.0 if area > 0.0 else -1.0
    inv = 1.0 / abs(area)
    o0 = (s * (y2 - y1) > 0.0) or (y2 == y1 and s * (x2 - x1) < 0.0)
    o1 = (s * (y0 - y2) > 0.0) or (y0 == y2 and s * (x0 - x2) < 0.0)
    o2 = (s * (y1 - y0) > 0.0) or (y1 == y0 and s * (x1 - x0) < 0.0)
    return s, inv, o0, o1, o2


@cuda.jit(device=True, inline=True)
def _edge_consts(ax, ay, bx, by, s):
    """``s * _edge(a, b, p)`` as g * (dx * (py - oy) - dy * (px - ox)): origin o = the lexicographically
    smaller endpoint, (dx, dy) towards the other, g = -s when swapped. Same operations, same bits."""
    if bx < ax or (bx == ax and by < ay):
        return bx, by, ax - bx, ay - by, -s
    return ax, ay, bx - ax, by - ay, s


@cuda.jit(device=True, inline=True)
def _fragment(x0, y0, z0, x1, y1, z1, x2, y2, z2, s, inv, o0, o1, o2, f, r, c):
    """Packed ``key << 32 | f`` of face f at pixel (r, c), or EMPTY where the pixel centre is not covered."""
    px = c + 0.5
    py = r + 0.5
    e0 = s * _edge(x1, y1, x2, y2, px, py)
    if e0 < 0.0 or (e0 == 0.0 and not o0):
        return EMPTY
    e1 = s * _edge(x2, y2, x0, y0, px, py)
    if e1 < 0.0 or (e1 == 0.0 and not o1):
        return EMPTY
    e2 = s * _edge(x0, y0, x1, y1, px, py)
    if e2 < 0.0 or (e2 == 0.0 and not o2):
        return EMPTY
    z = (e0 * inv) * z0 + (e1 * inv) * z1 + (e2 * inv) * z2
    key = int32(_float_bits(float32(z)))
    if key < 0:
        key = key ^ int32(0x7FFFFFFF)
    return (int64(key) << 32) | int64(f)


@cuda.jit(device=True)
def _scan(x0, y0, z0, x1, y1, z1, x2, y2, z2, area, k, f, res, c_lo, c_hi, r_lo, r_hi, zbuf):
    """Depth-test every covered pixel centre of the box [r_lo, r_hi] x [c_lo, c_hi] (top-left rule)."""
    s, inv, o0, o1, o2 = _coverage_setup(x0, y0, x1, y1, x2, y2, area)
    base = int64(k) * res * res
    for r in range(r_lo, r_hi + 1):
        for c in range(c_lo, c_hi + 1):
            packed = _fragment(x0, y0, z0, x1, y1, z1, x2, y2, z2, s, inv, o0, o1, o2, f, r, c)
            idx = base + int64(r) * res + c
            if packed < zbuf[idx]:
                cuda.atomic.min(zbuf, idx, packed)


@cuda.jit(cache=True)
def _raster_small(verts, faces, cams, res, front_sign, big_px, zbuf, ntiles, n_faces, n_items):
    """Pass 1: thread t = (view k, face f) = (t // F, t % F)."""
    t = cuda.grid(1)
    if t >= n_items:
        return
    k = t // n_faces
    f = t - k * n_faces
    x0, y0, z0, x1, y1, z1, x2, y2, z2, area, ok, c_lo, c_hi, r_lo, r_hi = _setup(
        verts, faces, cams, k, f, res, front_sign)
    ntiles[t] = 0
    if not ok:
        return
    w = c_hi - c_lo + 1
    h = r_hi - r_lo + 1
    if int64(w) * h > big_px:
        ntiles[t] = ((w + TILE - 1) // TILE) * ((h + TILE - 1) // TILE)
        return
    _scan(x0, y0, z0, x1, y1, z1, x2, y2, z2, area, k, f, res, c_lo, c_hi, r_lo, r_hi, zbuf)


@cuda.jit(cache=True)
def _raster_tiles(verts, faces, cams, res, front_sign, big_item, tile_end, zbuf, n_faces, n_big, n_tiles):
    """Pass 2: one thread per 16 x 16 tile of a big triangle's box; ``tile_end`` is the inclusive cumsum
    of the big items' tile counts, searched for the item owning tile j."""
    j = cuda.grid(1)
    if j >= n_tiles:
        return
    lo = 0
    hi = n_big - 1
    while lo < hi:                                   # first b with tile_end[b] > j
        mid = (lo + hi) // 2
        if tile_end[mid] > j:
            hi = mid
        else:
            lo = mid + 1
    local = j - (tile_end[lo - 1] if lo > 0 else 0)
    t = big_item[lo]
    k = t // n_faces
    f = t - k * n_faces
    x0, y0, z0, x1, y1, z1, x2, y2, z2, area, ok, c_lo, c_hi, r_lo, r_hi = _setup(
        verts, faces, cams, k, f, res, front_sign)
    tiles_x = (c_hi - c_lo + TILE) // TILE
    ty = int32(local // tiles_x)
    tx = int32(local - ty * tiles_x)
    c0 = c_lo + tx * TILE
    r0 = r_lo + ty * TILE
    _scan(x0, y0, z0, x1, y1, z1, x2, y2, z2, area, k, f, res, c0, min(c0 + TILE - 1, c_hi), r0,
          min(r0 + TILE - 1, r_hi), zbuf)


@cuda.jit(cache=True)
def _resolve(verts, faces, cams, res, zbuf, face_id, bary, depth, want_bary, n_px):
    """Grid-stride over pixels: unpack the winning face, re-evaluate its barycentrics and depth."""
    for i in range(cuda.grid(1), n_px, cuda.gridsize(1)):
        _resolve_pixel(verts, faces, cams, res, zbuf, face_id, bary, depth, want_bary, i)


@cuda.jit(device=True)
def _resolve_pixel(verts, faces, cams, res, zbuf, face_id, bary, depth, want_bary, i):
    packed = zbuf[i]
    if packed == EMPTY:
        face_id[i] = -1
        depth[i] = math.inf
        return
    f = int32(packed & 0xFFFFFFFF)
    face_id[i] = f
    per_view = int64(res) * res
    k = i // per_view
    rem = i - k * per_view
    r = rem // res
    c = rem - r * res
    x0, y0, z0 = _project(verts, cams, k, faces[f, 0], res)
    x1, y1, z1 = _project(verts, cams, k, faces[f, 1], res)
    x2, y2, z2 = _project(verts, cams, k, faces[f, 2], res)
    area = _edge(x1, y1, x2, y2, x0, y0)
    s = 1.0 if area > 0.0 else -1.0
    inv = 1.0 / abs(area)
    px = c + 0.5
    py = r + 0.5
    b0 = s * _edge(x1, y1, x2, y2, px, py) * inv
    b1 = s * _edge(x2, y2, x0, y0, px, py) * inv
    b2 = s * _edge(x0, y0, x1, y1, px, py) * inv
    depth[i] = float32(b0 * z0 + b1 * z1 + b2 * z2)
    if want_bary:
        bary[3 * i] = float32(b0)
        bary[3 * i + 1] = float32(b1)
        bary[3 * i + 2] = float32(b2)


@cuda.jit(cache=True)
def _mark_visible(zbuf, visible, n_px):
    """Grid-stride over pixels: flag the winning face (visible uint8 [F]); idempotent, so no atomics."""
    for i in range(cuda.grid(1), n_px, cuda.gridsize(1)):
        packed = zbuf[i]
        if packed != EMPTY:
            f = int32(packed & 0xFFFFFFFF)
            if visible[f] == 0:
                visible[f] = 1


# Binned visibility: per-(view, 32 x 32 tile) triangle lists, a shared-memory z-buffer per tile, mark only.

@cuda.jit(device=True, inline=True)
def _tile_box(verts, faces, cams, t, v0, res, front_sign, n_faces):
    """Item t = (view v0 + t // F, face t % F): (view, face, ok, clipped box in tiles)."""
    k = v0 + t // n_faces
    f = t - (t // n_faces) * n_faces
    _, _, _, _, _, _, _, _, _, _, ok, c_lo, c_hi, r_lo, r_hi = _setup(
        verts, faces, cams, k, f, res, front_sign)
    return k, f, ok, c_lo // BIN, c_hi // BIN, r_lo // BIN, r_hi // BIN


@cuda.jit(cache=True)
def _bin_count(verts, faces, cams, res, front_sign, tiles, counts, v0, n_faces, n_items):
    """Grid-stride over items (view, face): +1 to the count of every tile its clipped box touches."""
    for t in range(cuda.grid(1), n_items, cuda.gridsize(1)):
        k, f, ok, tx0, tx1, ty0, ty1 = _tile_box(verts, faces, cams, t, v0, res, front_sign, n_faces)
        if ok:
            base = int64(k) * tiles * tiles
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    cuda.atomic.add(counts, base + ty * tiles + tx, int32(1))


@cuda.jit(cache=True)
def _bin_fill(verts, faces, cams, res, front_sign, tiles, cursor, entries, entry_base, v0, n_faces,
              n_items):
    """Grid-stride over items (view v0 + t // F, face): append the face to the list of every tile it
    touches (``cursor`` starts at each tile's exclusive offset; list order is irrelevant to the result:
    the packed depth test is order-independent)."""
    for t in range(cuda.grid(1), n_items, cuda.gridsize(1)):
        k, f, ok, tx0, tx1, ty0, ty1 = _tile_box(verts, faces, cams, t, v0, res, front_sign, n_faces)
        if ok:
            base = int64(k) * tiles * tiles
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    pos = cuda.atomic.add(cursor, base + ty * tiles + tx, int64(1))
                    entries[pos - entry_base] = f


@cuda.jit(cache=True)
def _bin_raster(verts, faces, cams, res, front_sign, tiles, offsets, counts, entries, entry_base, bin0,
                group, visible, zbuf_out, write_zbuf):
    """Block b = tile bin0 + b: z-buffer the tile's triangles in shared memory (``group`` lanes share a
    triangle and stride over its box clipped to the tile), then flag each pixel's winning face in
    ``visible`` (uint8 [F]) and, when ``write_zbuf``, store the packed keys in ``zbuf_out``."""
    zb = cuda.shared.array(BIN_PX, int64)
    b = bin0 + cuda.blockIdx.x
    n = counts[b]
    if n == 0:
        return                                          # whole block: nothing to draw or mark
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for i in range(tid, BIN_PX, nt):
        zb[i] = EMPTY
    cuda.syncthreads()
    per_view = tiles * tiles
    k = b // per_view
    ty = (b - k * per_view) // tiles
    c0 = (b - k * per_view - ty * tiles) * BIN
    r0 = ty * BIN
    lo = offsets[b] - entry_base
    lane = tid % group
    for i in range(tid // group, n, nt // group):
        f = entries[lo + i]
        x0, y0, z0, x1, y1, z1, x2, y2, z2, area, ok, c_lo, c_hi, r_lo, r_hi = _setup(
            verts, faces, cams, k, f, res, front_sign)
        s, inv, o0, o1, o2 = _coverage_setup(x0, y0, x1, y1, x2, y2, area)
        ax0, ay0, dx0, dy0, g0 = _edge_consts(x1, y1, x2, y2, s)
        ax1, ay1, dx1, dy1, g1 = _edge_consts(x2, y2, x0, y0, s)
        ax2, ay2, dx2, dy2, g2 = _edge_consts(x0, y0, x1, y1, s)
        c_lo = max(c_lo, c0)
        r_lo = max(r_lo, r0)
        w = min(c_hi, c0 + BIN - 1) - c_lo + 1
        n_px = w * (min(r_hi, r0 + BIN - 1) - r_lo + 1)
        for p in range(lane, n_px, group):                # the body is _fragment with hoisted constants
            dr = p // w
            r = r_lo + dr
            c = c_lo + p - dr * w
            py = r + 0.5
            px = c + 0.5
            e0 = g0 * (dx0 * (py - ay0) - dy0 * (px - ax0))
            if e0 < 0.0 or (e0 == 0.0 and not o0):
                continue
            e1 = g1 * (dx1 * (py - ay1) - dy1 * (px - ax1))
            if e1 < 0.0 or (e1 == 0.0 and not o1):
                continue
            e2 = g2 * (dx2 * (py - ay2) - dy2 * (px - ax2))
            if e2 < 0.0 or (e2 == 0.0 and not o2):
                continue
            z = (e0 * inv) * z0 + (e1 * inv) * z1 + (e2 * inv) * z2
            key = int32(_float_bits(float32(z)))
            if key < 0:
                key = key ^ int32(0x7FFFFFFF)
            packed = (int64(key) << 32) | int64(f)
            local = (r - r0) * BIN + (c - c0)
            if packed < zb[local]:
                cuda.atomic.min(zb, local, packed)
    cuda.syncthreads()
    for i in range(tid, BIN_PX, nt):
        packed = zb[i]
        if packed != EMPTY:
            f = int32(packed & 0xFFFFFFFF)
            if visible[f] == 0:
                visible[f] = 1
            if write_zbuf:
                zbuf_out[int64(k) * res * res + int64(r0 + i // BIN) * res + c0 + i % BIN] = packed


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------

def _stride_threads(n_px: int, per_thread: int = PX_PER_THREAD) -> int:
    """Threads for the grid-stride passes: ``per_thread`` items each (coalesced: thread i reads items
    i, i + T, i + 2T, ...), which also keeps the CPU simulator's thread count low."""
    return (n_px + per_thread - 1) // per_thread


def camera_params(cameras: Sequence[OrthoView], device: torch.device | None = None) -> torch.Tensor:
    """float64 [K, 13] (r, u, d, half_extent, centre = 0) of ``OrthoView`` cameras, on ``device``."""
    rows = []
    for cam in cameras:
        r, u, d = cam.basis()
        rows.append(np.concatenate([r, u, d, [float(cam.half_extent)], np.zeros(3)]))
    params = np.asarray(rows, np.float64).reshape(-1, 13)
    return torch.from_numpy(params).to(device or kernel_device())


def _check_inputs(vertices: torch.Tensor, faces: torch.Tensor, cams: torch.Tensor, resolution: int) -> int:
    dev = kernel_device()
    if vertices.dtype != torch.float32 or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshError(f"vertices must be float32 [V, 3], got {vertices.dtype} {tuple(vertices.shape)}",
                        "pass DeviceMesh.vertices")
    if faces.dtype != torch.int32 or faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshError(f"faces must be int32 [F, 3], got {faces.dtype} {tuple(faces.shape)}",
                        "pass DeviceMesh.faces")
    if cams.dtype != torch.float64 or cams.ndim != 2 or cams.shape[1] != 13:
        raise ConfigError(f"camera parameters must be float64 [K, 13], got {cams.dtype} "
                          f"{tuple(cams.shape)}", "build them with camera_params(cameras)")
    for name, t in (("vertices", vertices), ("faces", faces), ("cameras", cams)):
        if t.device != dev:
            raise ConfigError(f"{name} on {t.device}, kernels run on {dev}", "move the tensors to "
                              "triton_kernels.numba_cuda.kernel_device()")
    if int(resolution) != resolution or not 1 <= resolution <= 16384:
        raise ConfigError(f"view resolution {resolution} out of range", "use an integer in [1, 16384]")
    if faces.shape[0] >= 2**31 - 1:
        raise MeshError(f"{faces.shape[0]} faces exceed the rasteriser's int32 face ids", "split the mesh")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise MeshError(f"face indices outside [0, {vertices.shape[0]})", "re-export the mesh")
    if not bool(torch.isfinite(vertices).all()):
        raise MeshError("vertices have NaN/Inf positions", "repair the mesh")
    return int(resolution)


def zbuffer_views(vertices: torch.Tensor, faces: torch.Tensor, cams: torch.Tensor, resolution: int,
                  cull_backfaces: bool = False, *, big_bbox_px: int = BIG_BBOX_PX) -> torch.Tensor:
    """Packed z-buffer int64 [K * R * R] of the K views (inputs already checked; see module docstring)."""
    res = int(resolution)
    n_views, n_faces = cams.shape[0], faces.shape[0]
    zbuf = torch.full((n_views * res * res,), int(EMPTY), dtype=torch.int64, device=vertices.device)
    n_items = n_views * n_faces
    if n_items == 0:
        return zbuf
    front_sign = -1.0 if cull_backfaces else 0.0
    ntiles = torch.empty(n_items, dtype=torch.int32, device=vertices.device)
    args = (view(vertices), view(faces), view(cams), res, front_sign)
    launch(_raster_small, n_items, *args, int(big_bbox_px), view(zbuf), view(ntiles), n_faces, n_items)
    big_item = torch.nonzero(ntiles).reshape(-1)                                  # [B] int64 (host sync)
    if big_item.numel():
        tile_end = torch.cumsum(ntiles[big_item].to(torch.int64), 0)             # [B] inclusive
        n_tiles = int(tile_end[-1])
        launch(_raster_tiles, n_tiles, *args, view(big_item), view(tile_end), view(zbuf), n_faces,
               big_item.numel(), n_tiles)
    return zbuf


def _view_chunks(ends: np.ndarray, n_faces: int, max_entries: int) -> list[tuple[int, int]]:
    """Consecutive view ranges [v0, v1) whose bin entries (``ends``: inclusive cumsum per view) stay
    under ``max_entries`` (a single view may exceed it) and whose (view, face) threads fit in int32."""
    chunks, v0, n_views = [], 0, ends.shape[0]
    max_views = max(1, (2**31 - 1) // max(n_faces, 1))
    while v0 < n_views:
        base = int(ends[v0 - 1]) if v0 else 0
        v1 = int(np.searchsorted(ends, base + max_entries, side="right"))
        v1 = min(max(v1, v0 + 1), v0 + max_views)
        chunks.append((v0, v1))
        v0 = v1
    return chunks


def mark_visible_views(vertices: torch.Tensor, faces: torch.Tensor, cams: torch.Tensor, resolution: int,
                       visible: torch.Tensor, cull_backfaces: bool = False, *,
                       max_entries: int = MAX_BIN_ENTRIES, group: int | None = None,
                       threads: int | None = None, zbuf_out: torch.Tensor | None = None) -> None:
    """Binned visibility (inputs already checked): set ``visible`` (uint8 [F]) to 1 for every face that
    wins a pixel of one of the K views, without a global z-buffer.

    Passes: count the (view, 32 x 32 tile, face) overlaps of the clipped bounding boxes (one atomic per
    overlap into int32 [K * T^2]); exclusive cumsum; one host read of the K per-view totals to split the
    views into batches of at most ``max_entries`` entries; per batch, append each face to its tiles'
    lists (int32 entries) and run one block per tile (``_bin_raster``). ``group`` lanes (a power of two
    <= 32 dividing ``threads``) share a triangle; ``group``, ``threads`` and ``max_entries`` tune speed
    and memory only (defaults: BIN_GROUP x BIN_THREADS on CUDA; 1 x 32 in the CPU simulator, where every
    thread is a Python thread and redundant per-lane triangle setups cost seconds). ``zbuf_out`` (int64
    [K * R * R], filled with EMPTY) receives the packed z-buffer, bit-identical to ``zbuffer_views``.
    """
    if group is None:
        group = 1 if simulated() else BIN_GROUP
    if threads is None:
        threads = 32 if simulated() else BIN_THREADS
    if group < 1 or group > 32 or group & (group - 1) or threads % group or threads > 1024:
        raise ConfigError(f"bin group {group} / threads {threads} invalid",
                          "use a power of two <= 32 for group that divides threads <= 1024")
    res = int(resolution)
    n_views, n_faces = cams.shape[0], faces.shape[0]
    if n_views * n_faces == 0:
        return
    dev = vertices.device
    tiles = (res + BIN - 1) // BIN
    per_view = tiles * tiles
    args = (view(vertices), view(faces), view(cams), res, -1.0 if cull_backfaces else 0.0, tiles)
    counts = torch.zeros(n_views * per_view, dtype=torch.int32, device=dev)      # [K * T^2]
    step = max(1, (2**31 - 1) // n_faces)                                         # int32 thread ids
    for v0 in range(0, n_views, step):
        items = (min(v0 + step, n_views) - v0) * n_faces
        launch(_bin_count, _stride_threads(items, ITEMS_PER_THREAD), *args, view(counts), v0, n_faces,
               items)
    ends = torch.cumsum(counts, 0, dtype=torch.int64)                             # [K * T^2] inclusive
    offsets = ends - counts                                                        # exclusive
    cursor = offsets.clone()
    view_ends = ends.view(n_views, per_view)[:, -1].cpu().numpy()                 # [K] (host sync)
    write = zbuf_out is not None
    zout = zbuf_out if write else torch.empty(1, dtype=torch.int64, device=dev)
    for v0, v1 in _view_chunks(view_ends, n_faces, int(max_entries)):
        base = int(view_ends[v0 - 1]) if v0 else 0
        n_entries = int(view_ends[v1 - 1]) - base
        if n_entries == 0:
            continue
        entries = torch.empty(n_entries, dtype=torch.int32, device=dev)          # face ids by tile
        items = (v1 - v0) * n_faces
        launch(_bin_fill, _stride_threads(items, ITEMS_PER_THREAD), *args, view(cursor), view(entries),
               base, v0, n_faces, items)
        launch(_bin_raster, (v1 - v0) * per_view * threads, *args, view(offsets), view(counts),
               view(entries), base, v0 * per_view, group, view(visible), view(zout), write, threads=threads)
        del entries


def visible_faces_views(vertices: torch.Tensor, faces: torch.Tensor,
                        cameras: Sequence[OrthoView] | torch.Tensor, resolution: int,
                        cull_backfaces: bool = False, **tuning) -> torch.Tensor:
    """bool [F] on the kernel device: faces owning at least one pixel of the K views, i.e. the face ids
    present in ``rasterize_views_gpu``'s output (same depth test and tie rule), by ``mark_visible_views``.

    vertices float32 [V, 3]; faces int32 [F, 3]; cameras: K ``OrthoView`` cameras or float64 [K, 13] params.
    ``tuning``: ``max_entries``, ``group``, ``threads`` of ``mark_visible_views`` (speed/memory only).
    """
    cams = cameras if isinstance(cameras, torch.Tensor) else camera_params(cameras)
    res = _check_inputs(vertices, faces, cams, resolution)
    visible = torch.zeros(faces.shape[0], dtype=torch.uint8, device=vertices.device)
    mark_visible_views(vertices, faces, cams, res, visible, cull_backfaces, **tuning)
    return visible.bool()


def zbuffer_views_binned(vertices: torch.Tensor, faces: torch.Tensor, cams: torch.Tensor, resolution: int,
                         cull_backfaces: bool = False, **tuning) -> torch.Tensor:
    """Packed z-buffer int64 [K * R * R] written by the binned pass (inputs already checked); equal to
    ``zbuffer_views``. For tests and callers that need the keys; visibility alone needs no z-buffer."""
    res = int(resolution)
    zbuf = torch.full((cams.shape[0] * res * res,), int(EMPTY), dtype=torch.int64, device=vertices.device)
    visible = torch.zeros(faces.shape[0], dtype=torch.uint8, device=vertices.device)
    mark_visible_views(vertices, faces, cams, res, visible, cull_backfaces, zbuf_out=zbuf, **tuning)
    return zbuf


def rasterize_views_gpu(vertices: torch.Tensor, faces: torch.Tensor,
                        cameras: Sequence[OrthoView] | torch.Tensor, resolution: int,
                        cull_backfaces: bool = False, want_bary: bool = True, *,
                        big_bbox_px: int = BIG_BBOX_PX
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Z-buffered orthographic rasterisation of one mesh in K views, on ``kernel_device()``.

    vertices: float32 [V, 3] world (glTF, CCW front faces); faces: int32 [F, 3]; both on the kernel device.
    cameras:  K ``OrthoView`` cameras (``OrthoCamera``), or their float64 [K, 13] ``camera_params``.
    Returns (face_id int32 [K, R, R] (-1 empty), bary float32 [K, R, R, 3] or None when ``want_bary`` is
    False, depth float32 [K, R, R] (inf empty)), pixel conventions of ``OrthoCamera``; per view equal to
    ``rasterize_ortho`` up to float32 depth ties (see module docstring). ``big_bbox_px``: bounding-box
    size above which a triangle is split into 16 x 16 tiles (tuning only; the result does not change).
    """
    cams = cameras if isinstance(cameras, torch.Tensor) else camera_params(cameras)
    res = _check_inputs(vertices, faces, cams, resolution)
    zbuf = zbuffer_views(vertices, faces, cams, res, cull_backfaces, big_bbox_px=big_bbox_px)
    n_views, dev = cams.shape[0], vertices.device
    face_id = torch.empty((n_views, res, res), dtype=torch.int32, device=dev)
    depth = torch.empty((n_views, res, res), dtype=torch.float32, device=dev)
    bary = torch.zeros((n_views, res, res, 3) if want_bary else (1,), dtype=torch.float32, device=dev)
    n_px = zbuf.shape[0]
    launch(_resolve, _stride_threads(n_px), view(vertices), view(faces), view(cams), res, view(zbuf),
           view(face_id.view(-1)), view(bary.view(-1)), view(depth.view(-1)), bool(want_bary), n_px)
    return face_id, (bary if want_bary else None), depth


def mark_visible_faces(zbuf: torch.Tensor, visible: torch.Tensor) -> None:
    """Set ``visible`` (uint8 [F], kernel device) to 1 for every face that wins a pixel of ``zbuf``."""
    if zbuf.dtype != torch.int64 or visible.dtype != torch.uint8:
        raise ConfigError("mark_visible_faces takes an int64 z-buffer and a uint8 face mask",
                          "pass zbuffer_views() output and a torch.uint8 tensor")
    launch(_mark_visible, _stride_threads(zbuf.shape[0]), view(zbuf), view(visible), zbuf.shape[0])


def interpolate_gpu(attr: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor,
                    bary: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of a per-vertex attribute on the device (reference:
    ``rasterize_host.interpolate``).

    attr: [V, C] or [V]; faces int32 [F, 3]; face_id int32 [..., H, W]; bary float32 [..., H, W, 3].
    Returns float32 [..., H, W, C] (or [..., H, W]) with zeros where face_id == -1.
    """
    if bary.shape != face_id.shape + (3,):
        raise ConfigError(f"bary shape {tuple(bary.shape)} does not match face_id {tuple(face_id.shape)}",
                          "pass the outputs of one rasterize call")
    squeeze = attr.ndim == 1
    a = attr.reshape(attr.shape[0], -1).to(torch.float32)                        # [V, C]
    hit = face_id >= 0
    tri = faces[face_id.clamp(min=0).long()].long()                              # [..., 3]
    out = (a[tri[..., 0]] * bary[..., 0:1] + a[tri[..., 1]] * bary[..., 1:2]
           + a[tri[..., 2]] * bary[..., 2:3])                                    # [..., C]
    out = torch.where(hit[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out[..., 0] if squeeze else out
