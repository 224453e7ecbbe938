"""Quality measures of a UV atlas: charts, stretch (Sander et al. 2001) and overlapping texels.

Conventions: ``uvs`` float32 [V, 2] glTF UVs in [0, 1] (u right, v down, texel (r, c) centre at
((c + .5) / size, (r + .5) / size)), ``faces`` int32 [F, 3] into ``uvs`` and into the matching 3D
``vertices`` float32 [V, 3] (one 3D position per UV vertex, as ``unwrap_uv`` outputs).

Stretch (Sander, Snyder, Gortler, Hoppe, "Texture mapping progressive meshes", SIGGRAPH 2001): for a
triangle with 3D corners q_i and UV corners (s_i, t_i), A = signed UV area,
    S_s = (q1 (t2 - t3) + q2 (t3 - t1) + q3 (t1 - t2)) / (2A),
    S_t = (q1 (s3 - s2) + q2 (s1 - s3) + q3 (s2 - s1)) / (2A),
a = S_s.S_s, b = S_s.S_t, c = S_t.S_t; the singular values of the UV -> 3D Jacobian are
Gamma, gamma = sqrt(((a + c) +- sqrt((a - c)^2 + 4 b^2)) / 2); L2(T) = sqrt((a + c) / 2), Linf(T) = Gamma.
Mesh L2 = sqrt(sum L2(T)^2 A3d(T) / sum A3d(T)); both are multiplied by sqrt(sum A_uv / sum A3d) so a
uniformly scaled atlas scores the same and an isometric one scores 1 (lower is better, 1 is the floor).
Faces with zero 3D area are skipped; faces with zero UV area but non-zero 3D area are counted in
``collapsed`` (their stretch is infinite) and left out of L2/Linf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class UvStretch:
    """l2: area-weighted L2 stretch (>= 1); linf: max stretch; collapsed: faces with zero UV area and
    non-zero 3D area."""

    l2: float
    linf: float
    collapsed: int


def uv_stretch(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray) -> UvStretch:
    """Sander et al. L2 and Linf stretch of the UV map of a mesh (see module docstring)."""
    q = np.asarray(vertices, np.float64)[faces]                        # [F, 3, 3]
    st = np.asarray(uvs, np.float64)[faces]                            # [F, 3, 2]
    s, t = st[..., 0], st[..., 1]
    a2 = ((s[:, 1] - s[:, 0]) * (t[:, 2] - t[:, 0]) - (s[:, 2] - s[:, 0]) * (t[:, 1] - t[:, 0])) / 2
    a3 = np.linalg.norm(np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]), axis=1) / 2
    tiny = 1e-14 * max(float(np.abs(a3).max(initial=0.0)), 1e-30)
    live = a3 > tiny
    ok = live & (np.abs(a2) > 1e-12 * max(float(np.abs(a2).max(initial=0.0)), 1e-30))
    if not ok.any():
        return UvStretch(float("inf"), float("inf"), int(live.sum()))
    q, s, t, a2, a3 = q[ok], s[ok], t[ok], a2[ok], a3[ok]
    den = (2 * a2)[:, None]
    ss = (q[:, 0] * (t[:, 1] - t[:, 2])[:, None] + q[:, 1] * (t[:, 2] - t[:, 0])[:, None]
          + q[:, 2] * (t[:, 0] - t[:, 1])[:, None]) / den
    sv = (q[:, 0] * (s[:, 2] - s[:, 1])[:, None] + q[:, 1] * (s[:, 0] - s[:, 2])[:, None]
          + q[:, 2] * (s[:, 1] - s[:, 0])[:, None]) / den
    a, b, c = (ss * ss).sum(1), (ss * sv).sum(1), (sv * sv).sum(1)
    gamma_max = np.sqrt(((a + c) + np.sqrt((a - c) ** 2 + 4 * b * b)) / 2)
    norm = np.sqrt(np.abs(a2).sum() / a3.sum())
    l2 = np.sqrt((((a + c) / 2) * a3).sum() / a3.sum()) * norm
    return UvStretch(float(l2), float(gamma_max.max() * norm), int(live.sum() - ok.sum()))


def uv_charts(faces: np.ndarray, num_vertices: int) -> tuple[int, np.ndarray]:
    """(number of charts, chart id int32 [F]): faces connected through shared UV vertex indices."""
    f = np.asarray(faces, np.int64)
    nf = f.shape[0]
    rows = np.repeat(np.arange(nf), 3)
    graph = coo_matrix((np.ones(3 * nf, np.int8), (rows, f.reshape(-1) + nf)),
                       shape=(nf + num_vertices, nf + num_vertices))
    _, labels = connected_components(graph, directed=False)
    _, chart = np.unique(labels[:nf], return_inverse=True)
    return int(chart.max(initial=-1) + 1), chart.astype(np.int32)


@njit(cache=True)
def _overlap_kernel(xy, faces, chart, size):
    owner = np.full((size, size), -1, np.int32)
    clash = np.zeros((size, size), np.bool_)
    for f in range(faces.shape[0]):
        ax, ay = xy[faces[f, 0], 0], xy[faces[f, 0], 1]
        bx, by = xy[faces[f, 1], 0], xy[faces[f, 1], 1]
        cx, cy = xy[faces[f, 2], 0], xy[faces[f, 2], 1]
        area = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
        if area == 0.0:
            continue
        sign = 1.0 if area > 0 else -1.0
        c0 = max(int(np.floor(min(ax, bx, cx) - 0.5)), 0)
        c1 = min(int(np.ceil(max(ax, bx, cx) - 0.5)), size - 1)
        r0 = max(int(np.floor(min(ay, by, cy) - 0.5)), 0)
        r1 = min(int(np.ceil(max(ay, by, cy) - 0.5)), size - 1)
        for r in range(r0, r1 + 1):
            py = r + 0.5
            for c in range(c0, c1 + 1):
                px = c + 0.5
                w0 = sign * ((bx - ax) * (py - ay) - (by - ay) * (px - ax))
                w1 = sign * ((cx - bx) * (py - by) - (cy - by) * (px - bx))
                w2 = sign * ((ax - cx) * (py - cy) - (ay - cy) * (px - cx))
                if w0 > 0 and w1 > 0 and w2 > 0:                   # strictly inside: touching is no clash
                    if owner[r, c] < 0:
                        owner[r, c] = chart[f]
                    elif owner[r, c] != chart[f]:
                        clash[r, c] = True
    return clash.sum()


def overlap_texels(uvs: np.ndarray, faces: np.ndarray, size: int) -> int:
    """Texels of a ``size``^2 atlas whose centre lies strictly inside faces of two different charts."""
    _, chart = uv_charts(faces, len(uvs))
    xy = np.asarray(uvs, np.float64) * size
    return int(_overlap_kernel(xy, np.asarray(faces, np.int64), chart, int(size)))


def uv_seam_edges(faces: np.ndarray, vmapping: np.ndarray, uvs: np.ndarray) -> int:
    """UV seam edges: mesh edges (pairs of input vertices ``vmapping[faces]``) shared by two faces whose UVs
    differ at one of the two shared vertices. Boundary edges and edges of more than two faces count once
    per extra face that disagrees with the first. faces int32 [F, 3] into the split vertices,
    vmapping int [V'] input vertex per split vertex, uvs float [V', 2]."""
    f = np.asarray(faces, np.int64)
    src = np.asarray(vmapping, np.int64)[f]                                # [F, 3] input vertices
    a, b = src, np.roll(src, -1, axis=1)                                   # directed edges a -> b
    ua, ub = f, np.roll(f, -1, axis=1)
    lo, hi = np.minimum(a, b).ravel(), np.maximum(a, b).ravel()
    swap = (a > b).ravel()
    uv = np.asarray(uvs, np.float64)
    u_lo = np.where(swap[:, None], uv[ub.ravel()], uv[ua.ravel()])      # [3F, 2] UV at the lower vertex
    u_hi = np.where(swap[:, None], uv[ua.ravel()], uv[ub.ravel()])
    keys = np.column_stack([lo, hi, u_lo, u_hi])
    order = np.lexsort(keys.T[::-1])
    k = keys[order]
    same_edge = (k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1])
    same_uv = (k[1:, 2:] == k[:-1, 2:]).all(axis=1)
    return int((same_edge & ~same_uv).sum())
