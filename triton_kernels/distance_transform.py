"""Exact Euclidean distance transform of a 2D mask on the host (numba, CPU): deterministic.

``edt(mask)`` = for every True pixel the distance (pixel units, float64) from its centre to the nearest
False pixel's centre, 0 on False pixels -- ``scipy.ndimage.distance_transform_edt(mask)`` (the reference,
``edt_ref``), bit for bit: both take the square root of the exact integer squared distance.

Why not OpenCV's ``distanceTransform(DIST_MASK_PRECISE)`` (the shape prior's EDT until 2026-12-07): its
float32 results vary from call to call by up to ~2e-6 px once several threads run it (seen on this
project's 2-core CPU after torch had started its thread pool), so the weight-free shape was not a function
of the picture. Here every line is transformed on its own, so the result does not depend on how lines are
shared among threads.

Method (Felzenszwalb & Huttenlocher 2012, "Distance transforms of sampled functions"): the squared EDT
separates into a 1D pass along rows (of a 0 / infinity line: the squared distance to the row's nearest
False pixel, two sweeps) and a 1D pass along columns over the first pass's result (the lower envelope of
parabolas (q - v)^2 + f(v)); the columns are transposed to rows so both passes read memory in order. Squared distances are integers below 2^53, so float64 holds them exactly; "infinity" is
``_FAR`` (larger than any squared distance of a 2^13-pixel image). A mask without a False pixel gives
``_FAR`` distances' square roots, as scipy gives its own large values: callers check for that first.
Cost: O(H W) per pass; ``workers`` threads take interleaved lines (the kernels run without the GIL).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FAR = 1e20


@njit(cache=True, nogil=True)
def _envelope(f, out, v, z):
    """out[q] = min_p (q - p)^2 + f[p] over the line f [n] (float64); v int64 [n], z float64 [n + 1]
    scratch."""
    n = f.shape[0]
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d = q - v[k]
        out[q] = d * d + f[v[k]]


@njit(cache=True, nogil=True)
def _first_pass(mask, sq, start, step):
    """sq[r, :] = squared distance along row r to its nearest False pixel (_FAR if none), rows start,
    start + step, ...: two sweeps per row (the 1D transform of a 0 / infinity line)."""
    h, w = mask.shape
    for r in range(start, h, step):
        last = -1
        for c in range(w):
            if not mask[r, c]:
                last = c
            sq[r, c] = _FAR if last < 0 else float((c - last) * (c - last))
        last = -1
        for c in range(w - 1, -1, -1):
            if not mask[r, c]:
                last = c
            elif last >= 0:
                d = float((last - c) * (last - c))
                if d < sq[r, c]:
                    sq[r, c] = d


@njit(cache=True, nogil=True)
def _second_pass(sq, dist, start, step):
    """dist[r, :] = sqrt(lower envelope of sq[r, :]) for rows start, start + step, ... (``sq`` is the
    first pass's result transposed, so these rows are the image's columns)."""
    h, w = sq.shape
    out = np.empty(w)
    v = np.empty(w, np.int64)
    z = np.empty(w + 1)
    for r in range(start, h, step):
        _envelope(sq[r], out, v, z)
        for c in range(w):
            dist[r, c] = np.sqrt(out[c])


def edt(mask: np.ndarray, workers: int = 1) -> np.ndarray:
    """Exact EDT of bool ``mask`` [H, W] (module docstring): float64 [H, W]. ``workers`` threads share
    the lines (same result for any count)."""
    m = np.ascontiguousarray(mask, np.bool_)
    if m.ndim != 2:
        raise ValueError(f"edt takes a 2D mask, got shape {m.shape}")
    sq = np.empty(m.shape)
    pool = None
    if workers > 1 and min(m.shape) >= 64:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers)
    try:
        _run(pool, workers, _first_pass, m, sq)            # along rows (contiguous)
        sq_t = np.ascontiguousarray(sq.T)                   # the columns, contiguous
        dist_t = np.empty(sq_t.shape)
        _run(pool, workers, _second_pass, sq_t, dist_t)
    finally:
        if pool is not None:
            pool.shutdown()
    return np.ascontiguousarray(dist_t.T)


def _run(pool, workers: int, kernel, src, dst) -> None:
    if pool is None:
        kernel(src, dst, 0, 1)
    else:
        list(pool.map(lambda i: kernel(src, dst, i, workers), range(workers)))


def edt_ref(mask: np.ndarray) -> np.ndarray:
    """scipy's exact EDT (the reference)."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(np.asarray(mask, bool))
