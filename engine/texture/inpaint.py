"""Geometry-aware completion of unobserved texels (paper 7.4, "Inpainting", after MVPaint) and gutter
dilation.

``inpaint_3d``: known texels are sources, valid unknown texels are targets. First a UV-ring stage
propagates colour from known to unknown texels across the atlas: ring r (up to ``uv_rings`` = 16) fills
every unknown valid texel that has a known 8-neighbour in the atlas lying closer than ``uv_gate`` = 3
texel widths on the surface (3D distance), with the mean of those neighbours -- thin gaps inside a chart
(edge-masked or grazing texels) continue their surroundings, never across a chart border, because
neighbours in other charts are far away in 3D. On the H100 oracle runs (benchmarks/texture/oracle.py,
2048^2 atlas, 1024 px views; benchmarks/results/texture_h100.md) adding it lifted the duck from 43.56 to
45.94 dB and the fox from 36.78 to 37.54 dB.
The texels left (regions no view saw) go to the 3D stage: Each target's Euclidean
distance D to the observed set is found with one KD-tree query (scipy cKDTree over 3D positions); that
puts it in round j when D < r_j = r_0 2^j (r_0 = 2 texel widths on the surface, estimated from
neighbouring texels' positions; after ``max_rounds`` one unbounded round). Round j fills its targets
from their k nearest sources among the texels filled in round j - 1 (the observed texels for round 0;
all filled texels when the previous round was empty), so colour spreads outwards over the surface
front by front -- newly filled texels become the sources of the next round -- instead of jumping
across the object, and each target is queried once (k nearest, no radius limit: every target of the
round gets filled). A target takes
  c = sum_i w_i c_i / sum_i w_i,   w_i = (max(0, n . n_i)^p + eps) / (|x - x_i| + delta)
(inverse distance times normal alignment, p = ``normal_power``, eps = 1e-3 keeps a purely distance-based
weight when all normals disagree, delta = one texel width avoids the pole). No valid texel stays unfilled.
With ``harmonic`` (``TextureConfig.inpaint_fill`` = harmonic, the default) the values of every
unobserved texel are then replaced by the harmonic (Laplace) fill over the surface with the observed
texels as boundary values (``engine.texture.harmonic_fill``), which this fill starts: the front-by-front
rounds leave flat patches with jumps between them, the harmonic fill has neither.
If no texel at all is known, all valid texels get ``NEUTRAL_COLOUR`` (mid grey, sRGB 0.5) and
``stats["neutral_fill"]`` is set: a flat, visible default rather than a black or transparent hole.

``dilate_gutter``: texels outside every chart within ``pixels`` of a chart take the colour of the
nearest chart texel (exact Euclidean distance transform), so mip levels do not bleed background.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.errors import ConfigError

NEUTRAL_COLOUR = 0.5
_LOG = logging.getLogger(__name__)


def texel_world_size(position: np.ndarray, valid: np.ndarray) -> float:
    """Median distance in world units between horizontally/vertically adjacent valid texels."""
    d = []
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        both = valid[tuple(a)] & valid[tuple(b)]
        d.append(np.linalg.norm(position[tuple(a)][both] - position[tuple(b)][both], axis=-1))
    dist = np.concatenate(d)
    dist = dist[dist > 0]
    return float(np.median(dist)) if dist.size else 1e-3


def _fill(tree, src_col, src_nrm, pts, nrm, k, radius, delta, power):
    """Weighted colours for query points [M, 3]; returns (colours [M, C], found bool [M])."""
    k_eff = min(k, tree.n)
    dist, idx = tree.query(pts, k=k_eff, distance_upper_bound=radius, workers=-1)
    dist, idx = dist.reshape(len(pts), k_eff), idx.reshape(len(pts), k_eff)
    hit = np.isfinite(dist)                                                 # [M, k]
    found = hit.any(1)
    idx = np.where(hit, idx, 0)
    align = np.maximum(np.einsum("mc,mkc->mk", nrm, src_nrm[idx]), 0.0) ** power
    w = np.where(hit, (align + 1e-3) / (np.where(hit, dist, 0.0) + delta), 0.0)   # [M, k]
    wsum = np.maximum(w.sum(1, keepdims=True), 1e-30)
    col = np.einsum("mk,mkc->mc", w, src_col[idx]) / wsum
    return col.astype(np.float32), found


def uv_ring_fill(atlas: np.ndarray, known: np.ndarray, valid: np.ndarray, position: np.ndarray,
                 delta: float, rings: int = 16, gate: float = 3.0) -> tuple[np.ndarray, np.ndarray, int]:
    """The UV-ring stage (module docstring): returns (atlas, grown known set, texels filled). The numba
    kernel ``triton_kernels.uv_ring_fill`` (its numpy reference ``uv_ring_fill_ref`` gives the same bytes)."""
    from triton_kernels.uv_ring_fill import uv_ring_fill as kernel

    return kernel(atlas, known, valid, position, gate * delta, rings)


def inpaint_3d(atlas: np.ndarray, known: np.ndarray, texels, k: int = 8, normal_power: float = 2.0,
               max_rounds: int = 12, stats: dict | None = None, uv_rings: int = 16, uv_gate: float = 3.0,
               harmonic: bool = False) -> np.ndarray:
    """Fill every valid, unknown texel from known texels nearby on the surface (see module docstring).

    atlas:  float32 [H, W, C] colours (values at unknown texels are ignored).
    known:  bool [H, W] texels with a trusted colour.
    texels: ``TexelGeometry`` (position, normal, valid [H, W]).
    Returns a new float32 [H, W, C] atlas; texels outside ``texels.valid`` are left unchanged.
    ``stats`` (optional dict) receives rounds, filled counts and ``neutral_fill``.
    ``harmonic``: then replace the values of every unobserved texel by the harmonic (Laplace) fill over
    the surface (``engine.texture.harmonic_fill``), starting from this fill.
    """
    from scipy.spatial import cKDTree

    if k < 1:
        raise ConfigError(f"inpainting neighbours k={k} must be >= 1", "use e.g. k=8")
    out = np.array(atlas, dtype=np.float32, copy=True)
    valid = texels.valid
    if out.shape[:2] != valid.shape or known.shape != valid.shape:
        raise ConfigError(f"atlas {out.shape}, known {known.shape} and texels {valid.shape} disagree",
                          "pass arrays of the same atlas size")
    src = known & valid
    tgt = valid & ~known
    st = stats if stats is not None else {}
    st.update(inpaint_targets=int(tgt.sum()), inpaint_rounds=0, neutral_fill=False, inpaint_unfilled=0)
    if not tgt.any():
        return out
    if not src.any():
        _LOG.warning("no texel is observed by any view; filling the texture with neutral grey")
        out[valid] = NEUTRAL_COLOUR
        st["neutral_fill"] = True
        return out
    delta = texel_world_size(texels.position, valid)
    out, src, ring_filled = uv_ring_fill(out, src, valid, texels.position, delta, uv_rings, uv_gate)
    st["inpaint_ring_filled"] = ring_filled
    tgt = valid & ~src
    if not tgt.any():
        st["inpaint_unfilled"] = 0
        return _harmonic(out, known & valid, texels, delta, st) if harmonic else out
    flat_col = out.reshape(-1, out.shape[-1])
    flat_pos, flat_nrm = texels.position.reshape(-1, 3), texels.normal.reshape(-1, 3)
    src_idx, tgt_idx = np.flatnonzero(src), np.flatnonzero(tgt)            # flat texel indices
    tree = cKDTree(flat_pos[src_idx], balanced_tree=False, compact_nodes=False)
    d0, _ = tree.query(flat_pos[tgt_idx], k=1, workers=-1)                 # distance to the observed set
    edges = 2.0 * delta * 2.0 ** np.arange(max_rounds + 1)
    band = np.searchsorted(edges, d0)                                       # round that fills each target
    filled = src.copy()
    front = src_idx                                                         # sources of the next round
    for j in range(int(band.max()) + 1):
        todo = tgt_idx[band == j]
        if todo.size == 0:
            front = todo
            continue
        if front.size == 0:                                                 # a gap: use every source
            front = np.concatenate([src_idx, tgt_idx[band < j]])
        if j > 0:
            tree = cKDTree(flat_pos[front], balanced_tree=False, compact_nodes=False)
        col, _ = _fill(tree, flat_col[front], flat_nrm[front], flat_pos[todo], flat_nrm[todo], k,
                       np.inf, delta, normal_power)
        flat_col[todo] = col
        filled.reshape(-1)[todo] = True
        front = todo
        st["inpaint_rounds"] = j + 1
    st["inpaint_unfilled"] = int((valid & ~filled).sum())
    return _harmonic(out, known & valid, texels, delta, st) if harmonic else out


def _harmonic(atlas: np.ndarray, observed: np.ndarray, texels, delta: float, stats: dict) -> np.ndarray:
    import time

    from engine.texture.harmonic_fill import harmonic_fill

    t0 = time.perf_counter()
    out = harmonic_fill(atlas, observed, texels.valid, texels.position, delta, stats=stats)
    stats["seconds_harmonic"] = time.perf_counter() - t0
    return out


def dilate_gutter(atlas: np.ndarray, valid: np.ndarray, pixels: int | None = 16) -> np.ndarray:
    """Extend chart colours into the gutter: atlas [H, W, C] (any dtype), valid bool [H, W].
    Texels outside ``valid`` within ``pixels`` (Euclidean, None = everywhere) of a valid texel take the
    nearest valid texel's colour. Returns a new array of the same dtype."""
    from scipy.ndimage import distance_transform_edt

    out = np.array(atlas, copy=True)
    if valid.all() or not valid.any():
        return out
    dist, (ri, ci) = distance_transform_edt(~valid, return_indices=True)
    fill = ~valid if pixels is None else (~valid) & (dist <= pixels)
    out[fill] = out[ri[fill], ci[fill]]
    return out
