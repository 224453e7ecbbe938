"""Per-texel tangent-space normal baking (numba-cuda): steps 2-5 of the GPU normal baker
(``engine/geometry/normal_bake_gpu.py``, paper 6.4), one thread per texel of the low mesh's UV G-buffer.

Maths, per covered texel t (face f, barycentrics b, both from the UV rasteriser):
  * p, n, t, w = float32 barycentric interpolation of the low mesh's positions, normals and tangents
    (xyz + handedness w), widened to float64;
  * shading frame: N = n / |n|, T = normalise(t - (t . N) N), B = sign(w) N x T; rejected (status 2,
    neutral (0, 0, 1)) when |n| <= 1e-6, |T| <= 1e-6 or the face is flagged unreliable (``face_bad``);
  * the closest point of the dense mesh to p within sqrt(max_d2) (``triton_kernels.lbvh`` walk); none:
    status 3, neutral; else the dense smooth normal there h = sum_k float32(w_k) n_k (float64 blend,
    barycentrics rounded to float32 first), normalised, and the texel stores (h.T, h.B, h.N), status 1.
Status per texel: 0 empty (no face), 1 baked, 2 unreliable UV / frame, 3 beyond the distance limit.

Layouts (all contiguous on ``kernel_device()``): face_id int32 [S, S] (-1 empty), bary float32 [S, S, 3];
low mesh positions / normals float32 [V, 3], tangents float32 [V, 4], faces int32 [F, 3], face_bad uint8
[F]; dense positions float32 [Vd, 3], faces int32 [Fd, 3], smooth normals float32 [Vd, 3] and its LBVH
(``lbvh.build_lbvh`` layout: left, right, aabb_lo, aabb_hi, leaf_face). Outputs image float32 [S*S, 3]
(uncovered texels untouched: zero) and status int8 [S*S].

Work split: a 256-thread block is a 16 x 16 texel tile, so a warp's closest-point queries are neighbours on
the surface. Cost: S^2 threads, each ~100 B of attribute reads plus one O(log Fd) BVH walk; at 2048^2 the
walk dominates (~4 M walks). Limits: S <= 16384 (texel ids int32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numba
import numpy as np
import torch

from triton_kernels.lbvh import closest_point_device
from triton_kernels.numba_cuda import cuda_module, launch, view

cuda = cuda_module()

TILE = 16
EMPTY, BAKED, REJECTED_UV, REJECTED_DISTANCE = 0, 1, 2, 3
_TREE_KEYS = ("leaf_face", "left", "right", "aabb_lo", "aabb_hi")


# --------------------------------------------------------------------------------------------------------
# Reference (numpy, brute-force closest point: small inputs only).
# --------------------------------------------------------------------------------------------------------

def _segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s [F], d2 [F]) of the closest point a + s (b - a) of each segment to p."""
    ab = b - a
    ll = (ab * ab).sum(1)
    s = np.clip(((p - a) * ab).sum(1) / np.where(ll > 0, ll, 1.0), 0.0, 1.0) * (ll > 0)
    q = a + s[:, None] * ab - p
    return s, (q * q).sum(1)


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(d2 [F], barycentrics float64 [F, 3]) of the closest point of every triangle abc (float64 [F, 3]
    each) to p (float64 [1, 3]): the interior projection when inside, else the best edge point."""
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
    d20, d21 = (ap * ab).sum(1), (ap * ac).sum(1)
    den = d00 * d11 - d01 * d01
    safe = np.where(den > 0, den, 1.0)
    v, w = (d11 * d20 - d01 * d21) / safe, (d00 * d21 - d01 * d20) / safe
    cands = []
    inside = (den > 0) & (v >= 0) & (w >= 0) & (v + w <= 1)
    q = a + v[:, None] * ab + w[:, None] * ac - p
    bary = np.stack([1 - v - w, v, w], 1)
    cands.append((np.where(inside, (q * q).sum(1), np.inf), bary))
    for (i, j), (x, y) in zip(((0, 1), (1, 2), (2, 0)), ((a, b), (b, c), (c, a))):
        s, d2 = _segment(p, x, y)
        wts = np.zeros((a.shape[0], 3))
        wts[:, i], wts[:, j] = 1 - s, s
        cands.append((d2, wts))
    d2 = np.stack([c[0] for c in cands])                                          # [4, F]
    pick = np.argmin(d2, axis=0)
    return d2[pick, np.arange(a.shape[0])], np.stack([c[1] for c in cands])[pick, np.arange(a.shape[0])]


def bake_texels_ref(face_id, bary, low_v, low_n, low_t, low_f, face_bad, dense_v, dense_f, dense_n,
                    max_d2: float) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of ``bake_texels`` (numpy arrays, layouts of the module docstring): (image float32
    [S*S, 3], status int8 [S*S])."""
    fid = np.asarray(face_id).reshape(-1)
    bar = np.asarray(bary, np.float32).reshape(-1, 3)
    image = np.zeros((fid.size, 3), np.float32)
    status = np.zeros(fid.size, np.int8)
    dv = np.asarray(dense_v, np.float64)
    da, db, dc = (dv[np.asarray(dense_f)[:, k]] for k in range(3))
    for t in np.flatnonzero(fid >= 0):
        tri = low_f[fid[t]]

        def lerp(attr):
            return (attr[tri[0]] * bar[t, 0] + attr[tri[1]] * bar[t, 1] + attr[tri[2]] * bar[t, 2])

        p, n, tan = lerp(low_v).astype(np.float64), lerp(low_n).astype(np.float64), lerp(low_t)
        nlen = math.sqrt(n @ n)
        tv = tan[:3].astype(np.float64)
        if nlen > 1e-6 and face_bad[fid[t]] == 0:
            n = n / nlen
            tv = tv - (tv @ n) * n
        if not (nlen > 1e-6 and face_bad[fid[t]] == 0 and math.sqrt(tv @ tv) > 1e-6):
            status[t], image[t] = REJECTED_UV, (0.0, 0.0, 1.0)
            continue
        tv = tv / math.sqrt(tv @ tv)
        bv = (-1.0 if tan[3] < 0 else 1.0) * np.cross(n, tv)
        d2, wts = _closest_on_triangles(p[None], da, db, dc)
        hf = int(np.argmin(d2))
        if d2[hf] > max_d2:
            status[t], image[t] = REJECTED_DISTANCE, (0.0, 0.0, 1.0)
            continue
        w = wts[hf].astype(np.float32).astype(np.float64)
        h = (w[:, None] * np.asarray(dense_n, np.float64)[np.asarray(dense_f)[hf]]).sum(0)
        h = h / max(math.sqrt(h @ h), 1e-300)
        status[t], image[t] = BAKED, (h @ tv, h @ bv, h @ n)
    return image, status


# --------------------------------------------------------------------------------------------------------
# Kernel.
# --------------------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _lerp32(attr, i0, i1, i2, b0, b1, b2, a):
    """float32 barycentric interpolation of component a (the host's float32 ``interpolate``)."""
    return attr[i0, a] * b0 + attr[i1, a] * b1 + attr[i2, a] * b2


@cuda.jit(cache=True)
def _texel_kernel(face_id, bary, low_v, low_n, low_t, low_f, face_bad, d_verts, d_faces, d_normals,
                  leaf_face, left, right, lo, hi, max_d2, size, tiles_x, image, status, n_items):
    """face_id int32 [S*S], bary float32 [S*S, 3] -> image float32 [S*S, 3] (tangent-space normal of
    covered texels), status int8 [S*S]. Thread i handles texel (r, c) of 16 x 16 tile i // 256."""
    i = cuda.grid(1)
    if i >= n_items:
        return
    tile = i // (TILE * TILE)
    r = (tile // tiles_x) * TILE + (i % (TILE * TILE)) // TILE
    c = (tile % tiles_x) * TILE + i % TILE
    if r >= size or c >= size:
        return
    t = r * size + c
    f = face_id[t]
    if f < 0:
        status[t] = EMPTY
        return
    i0, i1, i2 = low_f[f, 0], low_f[f, 1], low_f[f, 2]
    b0, b1, b2 = bary[t, 0], bary[t, 1], bary[t, 2]
    px = numba.float64(_lerp32(low_v, i0, i1, i2, b0, b1, b2, 0))
    py = numba.float64(_lerp32(low_v, i0, i1, i2, b0, b1, b2, 1))
    pz = numba.float64(_lerp32(low_v, i0, i1, i2, b0, b1, b2, 2))
    nx = numba.float64(_lerp32(low_n, i0, i1, i2, b0, b1, b2, 0))
    ny = numba.float64(_lerp32(low_n, i0, i1, i2, b0, b1, b2, 1))
    nz = numba.float64(_lerp32(low_n, i0, i1, i2, b0, b1, b2, 2))
    tx = numba.float64(_lerp32(low_t, i0, i1, i2, b0, b1, b2, 0))
    ty = numba.float64(_lerp32(low_t, i0, i1, i2, b0, b1, b2, 1))
    tz = numba.float64(_lerp32(low_t, i0, i1, i2, b0, b1, b2, 2))
    tw = _lerp32(low_t, i0, i1, i2, b0, b1, b2, 3)
    # shading frame (tangents.shading_frame): N = n / |n|, T = Gram-Schmidt(t, N), B = sign(w) N x T
    nlen = math.sqrt(nx * nx + ny * ny + nz * nz)
    ok = nlen > 1e-6 and face_bad[f] == 0
    if ok:
        nx, ny, nz = nx / nlen, ny / nlen, nz / nlen
        dot = tx * nx + ty * ny + tz * nz
        tx, ty, tz = tx - dot * nx, ty - dot * ny, tz - dot * nz
        tlen = math.sqrt(tx * tx + ty * ty + tz * tz)
        ok = tlen > 1e-6
    if not ok:
        status[t] = REJECTED_UV
        image[t, 0] = 0.0
        image[t, 1] = 0.0
        image[t, 2] = 1.0
        return
    tx, ty, tz = tx / tlen, ty / tlen, tz / tlen
    w = -1.0 if tw < 0.0 else 1.0
    bx, by, bz = w * (ny * tz - nz * ty), w * (nz * tx - nx * tz), w * (nx * ty - ny * tx)
    hf, d2, w0, w1, w2 = closest_point_device(d_verts, d_faces, leaf_face, left, right, lo, hi,
                                              px, py, pz, max_d2)
    if hf < 0:
        status[t] = REJECTED_DISTANCE
        image[t, 0] = 0.0
        image[t, 1] = 0.0
        image[t, 2] = 1.0
        return
    # the host stores the barycentrics as float32 before blending the dense normals in float64
    w0 = numba.float64(numba.float32(w0))
    w1 = numba.float64(numba.float32(w1))
    w2 = numba.float64(numba.float32(w2))
    j0, j1, j2 = d_faces[hf, 0], d_faces[hf, 1], d_faces[hf, 2]
    hx = w0 * d_normals[j0, 0] + w1 * d_normals[j1, 0] + w2 * d_normals[j2, 0]
    hy = w0 * d_normals[j0, 1] + w1 * d_normals[j1, 1] + w2 * d_normals[j2, 1]
    hz = w0 * d_normals[j0, 2] + w1 * d_normals[j1, 2] + w2 * d_normals[j2, 2]
    hlen = max(math.sqrt(hx * hx + hy * hy + hz * hz), 1e-300)
    hx, hy, hz = hx / hlen, hy / hlen, hz / hlen
    status[t] = BAKED
    image[t, 0] = hx * tx + hy * ty + hz * tz
    image[t, 1] = hx * bx + hy * by + hz * bz
    image[t, 2] = hx * nx + hy * ny + hz * nz


# --------------------------------------------------------------------------------------------------------
# Launcher.
# --------------------------------------------------------------------------------------------------------

def _need(name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple[int | None, ...],
          device: torch.device) -> None:
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok or t.dtype != dtype or not t.is_contiguous() or t.device != device:
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must be contiguous {dtype} [{want}] on {device}, got {t.dtype} "
                         f"{tuple(t.shape)} on {t.device}")


def bake_texels(face_id: torch.Tensor, bary: torch.Tensor, low_v: torch.Tensor, low_n: torch.Tensor,
                low_t: torch.Tensor, low_f: torch.Tensor, face_bad: torch.Tensor, dense_v: torch.Tensor,
                dense_f: torch.Tensor, dense_n: torch.Tensor, tree: Mapping[str, torch.Tensor],
                max_d2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(image float32 [S*S, 3], status int8 [S*S]) of the covered texels (module docstring for layouts);
    ``tree`` is the dense mesh's LBVH (``lbvh.build_lbvh`` keys). No host sync."""
    dev = face_id.device
    size = face_id.shape[0] if face_id.ndim == 2 else -1
    n_low, n_dense = low_v.shape[0], dense_v.shape[0]
    for name, t, dtype, shape in (
            ("face_id", face_id, torch.int32, (size, size)), ("bary", bary, torch.float32, (size, size, 3)),
            ("low_v", low_v, torch.float32, (None, 3)), ("low_n", low_n, torch.float32, (n_low, 3)),
            ("low_t", low_t, torch.float32, (n_low, 4)), ("low_f", low_f, torch.int32, (None, 3)),
            ("face_bad", face_bad, torch.uint8, (low_f.shape[0],)),
            ("dense_v", dense_v, torch.float32, (None, 3)), ("dense_f", dense_f, torch.int32, (None, 3)),
            ("dense_n", dense_n, torch.float32, (n_dense, 3))):
        _need(name, t, dtype, shape, dev)
    missing = [k for k in _TREE_KEYS if k not in tree]
    if missing:
        raise ValueError(f"tree lacks {', '.join(missing)}; pass lbvh.build_lbvh's arrays")
    image = torch.zeros((size * size, 3), dtype=torch.float32, device=dev)
    status = torch.zeros(size * size, dtype=torch.int8, device=dev)
    tiles_x = (size + TILE - 1) // TILE
    items = tiles_x * tiles_x * TILE * TILE
    launch(_texel_kernel, items, view(face_id.view(-1)), view(bary.view(-1, 3)), view(low_v), view(low_n),
           view(low_t), view(low_f), view(face_bad), view(dense_v), view(dense_f), view(dense_n),
           *(view(tree[k]) for k in _TREE_KEYS), float(max_d2), size, tiles_x, view(image), view(status),
           items)
    return image, status
