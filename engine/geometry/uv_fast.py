"""Fast UV unwrapping by projection charts (paper 6.3's stage without xatlas): 0.10-0.77 s for 20K faces
into a 1024^2 atlas on one core of the 2-core CI machine (benchmarks/results/uv_unwrap_cpu_halfres_*.md).

Method (all faces of a chart face its projection direction, so no chart folds):
  1. Labels: each face gets the axis direction (+-X, +-Y, +-Z) it faces most, then iterated conditional
     modes on a Potts energy (``triton_kernels.uv_charting.smooth_labels``): data cost area x (1 - n.d)
     (forbidden below n.d = ``_MIN_COS``), ``_LAMBDA`` x mean face area per edge between labels, so chart
     borders are short and seams few.
  2. Charts: connected components of equal label over edge-adjacent faces; charts below ``_SMALL_SHARE``
     of the surface merge into the neighbour sharing most edges while every face stays within
     acos(``_MIN_COS``) of the merged projection direction (``merge_small_charts``).
  3. Projection: each chart orthographically onto the plane of its area-weighted mean normal (the label's
     axis when a face would face away from the mean). Charts longer than ``_MAX_EXTENT`` x the expected
     atlas side (in world units) are bisected at the area median along their longest axis: long thin
     charts pack badly.
  4. Overlap: a chart whose faces all face one direction can still cover a spot twice (two layers). Each
     chart is rasterised at ~1/2 texel (``self_overlap_cells``) and charts with a doubly covered cell are
     bisected by depth along the projection direction until none is. Once the scale is known, each chart
     is checked again on the final texel grid in both packing orientations (placements move charts by
     whole texels): an orientation with a doubly covered texel is barred at packing, a chart with both
     barred is re-split. The packed atlas is checked once more at one texel (a hit splits and repacks).
  5. Packing: one ``uv_pack`` layout (orientation, order). Scale: log-space bisection at half resolution
     (4x fewer texels) over the scales whose chart area fills ``_FILL_BRACKET`` of the atlas, ``_LEVELS``
     levels (the bracket moves while all or nothing fits); with ``workers`` threads each round packs the
     next ``workers`` nodes of the bisection tree at once (the packing kernel runs without the GIL), and
     the walk through the tree, so the result, is the serial one. The atlas is the half-resolution packing
     at the found scale doubled (at full resolution, twice the scale): every texel a chart touches at full
     resolution lies in a doubled half-resolution texel it touches, so doubled footprints stay disjoint,
     with gutters of >= 2 x ``padding`` texels (half-resolution padding ceil(padding / 2)). The search's
     own packing is reused when each chart's orientation there is allowed on the full-resolution grid;
     else the charts are packed again at half resolution with the allowed orientations. Same scale, so
     same utilisation, as a full-resolution packing, at a quarter of its texels. When that does not fit
     (coarser footprints), one packing at full resolution (2 % smaller until it fits).

Output contract = ``unwrap_uv``: vertices split per chart with ``meta["vmapping"]`` (int64 [V']), smooth
normals fixed before the split, faces in input order, ``uvs`` float32 [V', 2] glTF (u right, v down) in
[0, 1]; ``UvReport`` (charts = UV-connected components, utilisation by rasterising, seconds). Stretch:
a face at angle t to its chart's direction is shortened by cos t across the slope (Linf <= 1/_MIN_COS).
Limits: projection charts are near-planar patches, so curved regions give more charts than LSCM would;
degenerate faces get the projection of their corners (zero UV area, no texel).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh, face_normals, validate_mesh
from engine.geometry.rasterize import rasterize_uv
from engine.geometry.uv_pack import pack_at, prepare_charts, texel_coords
from engine.geometry.uv_unwrap import UvReport, welded_vertex_normals
from triton_kernels.uv_charting import merge_small_charts, regrow_charts, self_overlap_cells, smooth_labels

_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
_MIN_COS = 0.25          # a face never joins a chart whose direction is > 75.5 deg from its normal
_MERGE_COS = 0.15        # small charts may merge up to 81 deg from the merged direction
_LAMBDA = 1.0            # border cost per edge, in mean face areas
_SMALL_SHARE = 2e-3      # charts below this share of the surface area merge into a neighbour
_MAX_EXTENT = 0.35       # longest chart side / expected atlas side (world units) before a bisection
_FILL_GUESS = 0.62       # chart area / atlas area of the first packing
_FILL_MAX = 0.8          # no packing fills more: the overlap grid is fine enough at this scale
_COMPACT = 0.35          # charts filling more of their span^2 (squares: 1, discs: 0.79) are not split
_FILL_BRACKET = (0.36, 0.9)  # chart area / atlas area at the ends of the first scale bracket
_LEVELS = 7              # bisection levels: the bracket's scale ratio 1.58 -> 1.0036
_OVERLAP_CELL = 1.0      # texels per overlap-check cell before packing (at _FILL_MAX)


def face_neighbours(faces: np.ndarray) -> np.ndarray:
    """The face across each edge (v_j, v_{j+1}): int64 [F, 3], -1 at a boundary; at an edge of 3+ faces
    the first face (in face order) links to the second and the others to the first."""
    f = np.asarray(faces, np.int64)
    a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)                # [3F] edge slots
    key = np.minimum(a, b) * (int(f.max(initial=0)) + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    k = key[order]
    start = np.r_[True, k[1:] != k[:-1]]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)                                    # [E] first sorted slot per edge
    size = np.diff(np.r_[first, len(k)])
    second = np.where(size >= 2, order[np.minimum(first + 1, len(k) - 1)], -1)
    nb = np.where(start, np.where(second[group] >= 0, second[group] // 3, -1), order[first[group]] // 3)
    out = np.empty(3 * len(f), np.int64)
    out[order] = nb
    return out.reshape(-1, 3)


def _components(labels: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Chart id int64 [F]: connected components of equal label over edge-adjacent faces."""
    nf = len(labels)
    rows, cols = np.repeat(np.arange(nf), 3), nbrs.reshape(-1)
    keep = (cols >= 0) & (labels[rows] == labels[np.maximum(cols, 0)])
    graph = coo_matrix((np.ones(int(keep.sum()), np.int8), (rows[keep], cols[keep])), shape=(nf, nf))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _chart_tables(chart: np.ndarray, normals: np.ndarray, areas: np.ndarray):
    """(normal_sum [C, 3], area [C], unit mean normal [C, 3], cone [C] = min n.m over live faces)."""
    nc = int(chart.max()) + 1
    nsum = np.zeros((nc, 3))
    np.add.at(nsum, chart, normals * areas[:, None])
    area = np.bincount(chart, weights=areas, minlength=nc)
    mean = nsum / np.maximum(np.linalg.norm(nsum, axis=1, keepdims=True), 1e-300)
    dots = np.where(areas > 0, (normals * mean[chart]).sum(1), 1.0)
    cone = np.ones(nc)
    np.minimum.at(cone, chart, dots)
    return nsum, area, mean, cone


def _charts(normals: np.ndarray, areas: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Steps 1-2: chart id int64 [F] (compact)."""
    dots = normals @ _AXES.T                                          # [F, 6]
    live = areas > 0
    cost = np.where(live[:, None], (areas / max(areas.mean(), 1e-300))[:, None] * (1.0 - dots), 0.0)
    cost[live[:, None] & (dots < _MIN_COS)] = 1e9
    labels = smooth_labels(np.argmax(dots, axis=1), cost, nbrs, _LAMBDA)
    chart = _components(labels, nbrs)
    nsum, area, _, _ = _chart_tables(chart, normals, areas)
    return merge_small_charts(chart, nbrs, nsum, area, normals, areas > 0, _SMALL_SHARE * areas.sum(),
                              _MERGE_COS)


def _directions(chart, normals, areas):
    """Projection direction per chart [C, 3]: the unit mean normal, or, where a face would face it by less
    than _MIN_COS / 2, the axis whose least-facing face faces it most."""
    _, _, mean, cone = _chart_tables(chart, normals, areas)
    bad = cone < _MIN_COS / 2
    if bad.any():
        worst = np.ones((len(mean), 6))
        np.minimum.at(worst, chart[areas > 0], (normals @ _AXES.T)[areas > 0])
        mean[bad] = _AXES[np.argmax(worst[bad], axis=1)]
    return mean


def _frames(chart, direction):
    """Per face, the (u, w) axes of its chart's projection plane: float64 [F, 2, 3], (u, w, d) right-handed
    so counter-clockwise faces stay counter-clockwise."""
    d = direction[chart]
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(helper, d)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return np.stack([u, np.cross(d, u)], axis=1)


def _project(vertices, faces, chart, frames):
    """Split vertices per chart and project each face's corners on its frame: (vmapping int64 [V'], faces
    int64 [F, 3] into V', uv float64 [V', 2]). Sub-charts of one projected chart share its frame."""
    nv = len(vertices)
    key = (chart[:, None] * nv + faces).reshape(-1)                   # [3F] (chart, vertex) pairs
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    corner = vertices[faces.reshape(-1)[first]]                        # [V', 3]
    frame = frames[first // 3]                                         # [V', 2, 3]
    return uniq % nv, inverse.reshape(-1, 3), np.einsum("vkc,vc->vk", frame, corner)


def _bisect(chart, values, faces_uv, which, nbrs):
    """Split each chart in ``which`` at the area median of ``values`` (per face); returns new chart ids."""
    out = chart.copy()
    nxt = int(chart.max()) + 1
    for c in which:
        idx = np.flatnonzero(chart == c)
        order = idx[np.argsort(values[idx], kind="stable")]
        w = np.cumsum(faces_uv[order])
        cut = int(np.clip(np.searchsorted(w, w[-1] / 2), 1, len(order) - 1)) if len(order) > 1 else 0
        out[order[cut:]] = nxt
        nxt += 1
    return _components(out, nbrs)


def _principal_span(uv, faces, chart, areas):
    """Per face, its centroid's coordinate along its chart's principal axis [F]; per chart the span of the
    chart's vertices along that axis [C] and the chart's UV area [C]."""
    nc = int(chart.max()) + 1
    cen = uv[faces].mean(axis=1)                                       # [F, 2]
    w = areas + 1e-30
    tot = np.bincount(chart, weights=w, minlength=nc)
    mu = np.stack([np.bincount(chart, weights=w * cen[:, k], minlength=nc) for k in range(2)], 1)
    mu /= tot[:, None]
    d = cen - mu[chart]
    cxx, cyy, cxy = (np.bincount(chart, weights=w * x, minlength=nc)
                     for x in (d[:, 0] ** 2, d[:, 1] ** 2, d[:, 0] * d[:, 1]))
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    axis = np.stack([np.cos(theta), np.sin(theta)], 1)                 # [C, 2]
    along = (cen * axis[chart]).sum(1)
    vchart = np.zeros(len(uv), np.int64)
    vchart[faces.reshape(-1)] = np.repeat(chart, 3)
    pv = (uv * axis[vchart]).sum(1)
    hi, lo = np.full(nc, -np.inf), np.full(nc, np.inf)
    np.maximum.at(hi, vchart, pv)
    np.minimum.at(lo, vchart, pv)
    e1, e2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
    area = np.bincount(chart, weights=np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2, minlength=nc)
    return along, hi - lo, area


def _bisect_scale(fits, lo: float, hi: float, workers: int) -> tuple[float, bool, bool]:
    """Log-space bisection of the largest fitting scale in [lo, hi] to _LEVELS levels: (scale, whether it
    was packed and fits, whether a packing failed). ``fits(scales) -> list[bool]`` packs candidates (all at
    once). Each round packs the next ``workers`` nodes of the bisection tree below the current bracket
    (breadth first, the fitting branch first), then walks down through every node already decided: the
    walk, and so the result, is the serial bisection's whatever ``workers`` is and however the threads run.
    """
    known: dict[float, bool] = {}
    a, b, failed = lo, hi, False
    for depth in range(_LEVELS):
        m = float(np.sqrt(a * b))
        if m not in known:
            todo, queue = [], [(a, b, depth)]
            while queue and len(todo) < workers:
                qa, qb, d = queue.pop(0)
                if d < _LEVELS:
                    qm = float(np.sqrt(qa * qb))
                    todo.append(qm)
                    queue += [(qm, qb, d + 1), (qa, qm, d + 1)]
            known.update(zip(todo, fits(todo)))
        if known[m]:
            a = m
        else:
            b, failed = m, True
    return a, a in known, failed


def _search_scale(prep, resolution: int, padding: int, fits) -> float:
    """Largest fitting scale (to _LEVELS bisection levels) of the charts in ``prep`` at ``resolution``:
    the bracket is the scales filling _FILL_BRACKET of the atlas with chart area, moved down while
    nothing in it fits and up while everything does. ``fits(prep, scales, resolution, padding)``."""
    lo, hi = (resolution * np.sqrt(f / max(prep[6], 1e-300)) for f in _FILL_BRACKET)
    ratio = hi / lo
    for _ in range(64):
        scale, packed, failed = _bisect_scale(lambda s: fits(prep, s, resolution, padding), lo, hi,
                                              fits.workers)
        if not failed:                                       # all fit: the largest may be larger
            lo, hi = scale, scale * ratio
        elif packed or fits(prep, [scale], resolution, padding)[0]:
            return scale
        else:                                                 # nothing fits: look lower
            lo, hi = lo / ratio, lo
    raise MeshError(f"{len(prep[4])} UV charts do not fit one {resolution}^2 atlas",
                    "raise the resolution or simplify the mesh further")


class _Packer:
    """Packs candidate scales of one chart layout: in this thread (``workers`` 1) or concurrently in a
    thread pool (the packing kernel runs without the GIL). Called as fits(prep, scales, resolution,
    padding) -> list[bool]."""

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        self.placed: dict[tuple, np.ndarray] = {}     # (scale, resolution, padding) -> the search's placement

    def __call__(self, prep, scales, resolution: int, padding: int) -> list[bool]:
        run = self._pool.map if self._pool is not None and len(scales) > 1 else map
        places = list(run(lambda s: pack_at(prep, s, resolution, padding), scales))
        for s, place in zip(scales, places):
            if place is not None:
                self.placed[(float(s), resolution, padding)] = place
        return [p is not None for p in places]

    def overlap(self, uv, faces, chart, cell: float) -> np.ndarray:
        """``self_overlap_cells`` over the pool's threads (same counts as one call)."""
        if self._pool is None:
            return self_overlap_cells(uv, faces, chart, cell)
        return self_overlap_cells(uv, faces, chart, cell, self._pool.map, self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _free_turns(prep, faces, chart, scale: float, padding: int, fits: _Packer):
    """Per chart, the orientations (0, +90 deg) in which no texel centre of the final grid at ``scale`` is
    covered twice: bool [C, 2]; and the rot-0 texel coordinates [V', 2] (placements only translate by
    whole texels, so the grid seen here is the packed one)."""
    nc = len(prep[4])
    allowed, tex = np.empty((nc, 2), bool), []
    for rot in (0, 1):
        place = np.zeros((nc, 3), np.int64)
        place[:, 2] = rot
        tex.append(texel_coords(prep, place, scale, padding))
        allowed[:, rot] = fits.overlap(tex[-1], faces, chart, 1.0) == 0
    return allowed, tex[0]


def _pack(prep, resolution, padding, scale, allowed, chart, searched=None):
    """Step 5's atlas at ``scale`` texels per unit of the full ``resolution``: (texel coordinates float64
    [V', 2], scale). A half-resolution packing at scale / 2 doubled (module doc): ``searched`` (the scale
    search's placement there) when every chart's orientation in it is ``allowed``, else a new one with the
    allowed orientations; when that does not fit (its coarser footprints), a full-resolution packing,
    2 % smaller until it fits (the scale the orientation check saw is kept whenever it fits)."""
    half, pad = resolution // 2, (padding + 1) // 2
    if searched is None or not allowed[np.arange(len(searched)), searched[:, 2]].all():
        searched = pack_at(prep, scale / 2, half, pad, allowed)
    if searched is not None:
        return 2 * texel_coords(prep, searched, scale / 2, pad), scale
    for _ in range(64):
        place = pack_at(prep, scale, resolution, padding, allowed)
        if place is not None:
            return texel_coords(prep, place, scale, padding), scale
        scale *= 0.98
    raise MeshError(f"{int(chart.max()) + 1} UV charts do not fit one {resolution}^2 atlas with "
                    f"{padding} texels of padding", "raise the resolution or simplify the mesh further")


def _check(mesh: TriMesh, resolution: int, padding: int, workers: int) -> None:
    validate_mesh(mesh, "mesh to unwrap")
    if int(resolution) != resolution or not 16 <= resolution <= 16384:
        raise ConfigError(f"UV atlas resolution {resolution} out of range", "use an integer in [16, 16384]")
    if int(padding) != padding or not 0 <= padding <= 64:
        raise ConfigError(f"UV padding {padding} out of range", "use an integer in [0, 64] texels")
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"UV packing workers {workers} out of range", "use an integer >= 1")
    if mesh.normals is not None and np.shape(mesh.normals) != (mesh.num_vertices, 3):
        raise MeshError(f"mesh normals have shape {np.shape(mesh.normals)}",
                        f"give normals of shape ({mesh.num_vertices}, 3) or none")


def _split_long(chart, uv_of, faces, areas, nbrs, limit):
    """Bisect charts longer than ``limit`` whose area fills less than _COMPACT of their span^2 (long or
    ragged charts pack badly) until none is. uv_of(chart) -> (faces into uv, uv)."""
    for _ in range(32):
        fuv, uv = uv_of(chart)
        along, span, area = _principal_span(uv, fuv, chart, areas)
        long = (span > limit) & (area < _COMPACT * span * span)
        if not long.any():
            return chart
        chart = _bisect(chart, along, areas, np.flatnonzero(long), nbrs)
    return chart


def _layout(vertices, faces, normals, areas, nbrs, resolution, padding, fits):
    """Steps 2-5: (vmapping [V'], faces [F, 3] into V', texels [V', 2], charts)."""
    chart = _charts(normals, areas, nbrs)
    frames = _frames(chart, _directions(chart, normals, areas))       # fixed from here: splits keep them

    def uv_of(ch):
        return _project(vertices, faces, ch, frames)[1:]

    side = np.sqrt(areas.sum() / _FILL_GUESS)                          # expected atlas side, world units
    chart = _split_long(chart, uv_of, faces, areas, nbrs, _MAX_EXTENT * side)
    scale, searched = None, None
    for _ in range(16):
        vmap, fuv, uv = _project(vertices, faces, chart, frames)
        cell = _OVERLAP_CELL * np.sqrt(_uv_area(uv, fuv) / _FILL_MAX) / resolution
        twice = fits.overlap(uv, fuv, chart, cell) > 0
        if twice.any():
            chart, searched = regrow_charts(uv, fuv, chart, nbrs, twice, cell), None
            continue
        prep = prepare_charts(uv, fuv, chart)
        if scale is None:                  # searched at half resolution (4x fewer texels), then doubled
            half, pad = resolution // 2, (padding + 1) // 2
            found = _search_scale(prep, half, pad, fits)
            scale, searched = 2 * found, fits.placed.get((found, half, pad))
        allowed, tex0 = _free_turns(prep, fuv, chart, scale, padding, fits)
        if not allowed.any(axis=1).all():
            chart, searched = regrow_charts(tex0, fuv, chart, nbrs, ~allowed.any(axis=1), 1.0), None
            continue
        texels, scale = _pack(prep, resolution, padding, scale, allowed, chart, searched)
        searched = None
        twice = fits.overlap(texels, fuv, chart, 1.0) > 0
        if not twice.any():
            return vmap, fuv, texels, int(chart.max()) + 1
        chart = regrow_charts(texels, fuv, chart, nbrs, twice, 1.0)
    raise MeshError("UV charts still overlap themselves after 16 rounds of splitting",
                    "clean the mesh (clean_mesh) or use the xatlas unwrapper (unwrap_uv)")


def _uv_area(uv, faces) -> float:
    e1, e2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
    return float(np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() / 2)


def unwrap_uv_fast(mesh: TriMesh, resolution: int = 1024, padding: int = 2,
                   workers: int = 1) -> tuple[TriMesh, UvReport]:
    """UV-unwrap ``mesh`` into one ``resolution`` x ``resolution`` atlas by projection charts (module doc).

    mesh: TriMesh (float32 [V, 3], int32 [F, 3]); existing ``normals`` are kept, else smooth normals are
        computed before the seam split. resolution: atlas edge in texels (16..16384); padding: gutter
        texels per chart (0..64). workers: threads packing candidate scales at once (the engine passes
        ``RuntimeConfig.uv_workers``); the result does not depend on it.
    Returns (mesh with split vertices gathered through ``meta["vmapping"]`` int64 [V'], same faces in the
    same order, ``uvs`` float32 [V', 2] glTF in [0, 1]; UvReport) -- the contract of ``unwrap_uv``.
    """
    t0 = time.perf_counter()
    _check(mesh, resolution, padding, workers)
    normals = mesh.normals
    if normals is None:
        normals = welded_vertex_normals(mesh.vertices, mesh.faces)
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    fn = face_normals(v, f, normalize=False).astype(np.float64)       # [F, 3] length = 2 x area
    areas = np.linalg.norm(fn, axis=1) / 2
    if not areas.sum() > 0:
        raise MeshError("mesh to unwrap has only zero-area faces",
                        "give a mesh with non-degenerate triangles")
    fn /= np.maximum(2 * areas, 1e-300)[:, None]
    fits = _Packer(workers)
    try:
        vmapping, faces, texels, charts = _layout(v, f, fn, areas, face_neighbours(f), resolution, padding,
                                                  fits)
    finally:
        fits.close()
    uvs = np.clip(texels / resolution, 0.0, 1.0).astype(np.float32)   # [V', 2] glTF (u right, v down)
    out = TriMesh(
        mesh.vertices[vmapping], faces.astype(np.int32),
        normals=np.asarray(normals, np.float32)[vmapping], uvs=uvs,
        colors=None if mesh.colors is None else np.asarray(mesh.colors)[vmapping],
        meta={k: val for k, val in mesh.meta.items() if k not in ("materials", "face_material", "vmapping")},
    )
    out.meta["vmapping"] = vmapping.astype(np.int64)
    face_id, _ = rasterize_uv(uvs, out.faces, resolution)
    return out, UvReport(charts, float((face_id >= 0).mean()), time.perf_counter() - t0)
