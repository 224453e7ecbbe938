"""The last step of hidden-face removal (issue 14.4, "visible faces stay"): before a face is removed, try
hard to prove it visible; only faces no tested ray escapes from are removed.

Criterion (``hidden_faces``): a face is visible when a ray from outside the bounding sphere reaches a point
of it unobstructed, on either side; reversed, a ray from that point escapes (hits nothing). Rays start
``OFFSET`` x R (R: bounding radius) off the face plane on the side they leave by, and a ray within
``GRAZING_COS`` of the plane proves nothing (``hidden_faces_escape``'s rules, which the oracle keeps too).

The removal candidates (faces the views and step 2 did not keep) are few: tens to hundreds of 1e4-1e5. Each
is tested from ``POINTS`` fixed points (barycentric: the centroid, three points 90 % and three 98 % of the
way to each corner, the three points next to each edge midpoint), each in two stages, stopping at the
first escaping ray:

1. Cube map. ``6 x CUBE^2`` nearest-hit rays through the pixel centres of a cube map around the point
   (600 directions at ``CUBE`` = 10). An escaping ray proves the face visible; otherwise every pixel
   keeps its hit distance (infinite for a grazing escape).
2. Contour edges. A face seen only through a narrow opening (a slit between an eyeball and its socket, a
   small hole) is found by no fixed set of directions, but the opening is bounded by contour edges: seen
   from the point p, the set of escaping directions is bounded by rays that graze an edge whose faces lie
   on one side of the plane through p and the edge (a fold: a silhouette seen from p) or a boundary edge.
   So every such edge (positions welded, so UV seams are not boundaries) is aimed at: at ``EDGE_T``
   along it, q, then ``EDGE_GAPS`` x |q - p| past it on its free side (away from its faces). The
   segment p -> q is tested first; the grazing rays are cast only when it is free. Occluded edges are
   skipped without a ray when the cube map says so: when the largest hit distance of the pixels around q's
   direction (3 x 3, one pixel apart, across cube faces) is shorter than ``(1 - DEPTH_SLACK) |q - p|``.
A face is kept when one ray escapes (a proof: the ray is a line of sight to the outside); the rest are
removed. Deterministic: fixed points, directions and targets, no random numbers.

Cost: a visible candidate stops at its first escape (usually within the cube map of its first point); a
hidden one costs POINTS x (600 + 3 per unoccluded (contour edge, t) + the depth look-ups of all contour
edges): O(candidates x POINTS x edges) contour tests, plus rays that grow with the contour edges its
points see. On the 2-core CPU at 96 views x 256 px it adds 0-2.5 s per mesh (none when nothing is
left to remove) to the flood fill's 1-3.5 s: 36 s instead of 30 s over the 16 shared assets
(benchmarks/results/hidden_faces_recall_cpu.md). The GPU path (``hidden_faces_gpu``) runs this same host
step on its candidates after its device passes.

Limits: still a sampling. An opening is found when a contour edge bordering it is unoccluded at one of
its ``EDGE_T`` points, the cube map around that point does not see everything there 50 % nearer, and
the opening is wider than ``EDGE_GAPS[0]`` x the distance; a face visible only from an area between the
test points can be removed. Against a 16 x 4096 random-ray oracle (which finds only some of these faces
on each seed: seeds 0-3 found different ones on suzanne, helmet and trellis_T) it kept every face the
oracle proved visible on the test shapes and all 16 shared assets, and proved more.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# The kernels below inline bvh.py's ray tests; numba's cache is keyed on this file's stamp, so after
# editing those, touch this file (or clear the JIT cache) to recompile.
from engine.geometry.bvh import _STACK, Bvh, trace_ray
from engine.geometry.hidden_faces_escape import GRAZING_COS, OFFSET
from engine.geometry.mesh import TriMesh

POINTS = np.array([[1 / 3, 1 / 3, 1 / 3],
                   [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9],
                   [0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98],
                   [0.475, 0.475, 0.05], [0.05, 0.475, 0.475], [0.475, 0.05, 0.475]])
CUBE = 10                        # cube-map pixels per side per point
EDGE_T = (0.05, 0.3, 0.7, 0.95)  # targets along each contour edge
EDGE_GAPS = (1e-5, 1e-3)         # how far past the edge the grazing rays pass, share of the distance
DEPTH_SLACK = 0.5                # an edge is occluded when the cube map sees 50 % nearer than it
_SEGMENT = 1.0 - 1e-4            # the segment test stops just short of the edge


@njit(cache=True, inline="always")
def _first_hit(vertices, faces, leaf_face, left, right, lo, hi, o, d, inv, stack, t_max, nearest):
    """Distance of the nearest hit in (0, t_max] (any hit unless ``nearest``), inf when none."""
    t, f, _, _ = trace_ray(vertices, faces, leaf_face, left, right, lo, hi, o, d, inv, stack, t_max, False,
                           not nearest)
    return t if f >= 0 else np.inf


@njit(cache=True, inline="always")
def _cast(bvh, p, nrm, off, dx, dy, dz, o, d, inv, stack, t_max, nearest):
    """Ray from p (moved ``off`` off its face plane, on the side it leaves by) along the unit (dx, dy, dz):
    (hit distance or inf, grazing: within GRAZING_COS of the face plane)."""
    vertices, faces, leaf_face, left, right, lo, hi = bvh
    cos = dx * nrm[0] + dy * nrm[1] + dz * nrm[2]
    s = off if cos >= 0.0 else -off
    d[0], d[1], d[2] = dx, dy, dz
    for a in range(3):
        o[a] = p[a] + s * nrm[a]
        inv[a] = 1.0 / d[a] if d[a] != 0.0 else 1e300
    t = _first_hit(vertices, faces, leaf_face, left, right, lo, hi, o, d, inv, stack, t_max, nearest)
    return t, abs(cos) < GRAZING_COS


@njit(cache=True, inline="always")
def _cube_dir(k, i, j, res):
    """Unit direction through pixel (i, j) of cube face k (+x, -x, +y, -y, +z, -z)."""
    u = (i + 0.5) / res * 2.0 - 1.0
    v = (j + 0.5) / res * 2.0 - 1.0
    sg = 1.0 if k % 2 == 0 else -1.0
    if k // 2 == 0:
        x, y, z = sg, u, v
    elif k // 2 == 1:
        x, y, z = v, sg, u
    else:
        x, y, z = u, v, sg
    ln = np.sqrt(x * x + y * y + z * z)
    return x / ln, y / ln, z / ln


@njit(cache=True, inline="always")
def _cube_pixel(x, y, z, res):
    """(face, i, j) of the cube-map pixel holding direction (x, y, z); inverse of ``_cube_dir``."""
    ax, ay, az = abs(x), abs(y), abs(z)
    if ax >= ay and ax >= az:
        k, m, u, v = (0 if x > 0 else 1), ax, y, z
    elif ay >= az:
        k, m, u, v = (2 if y > 0 else 3), ay, z, x
    else:
        k, m, u, v = (4 if z > 0 else 5), az, x, y
    i = min(res - 1, max(0, int((u / m + 1.0) * 0.5 * res)))
    j = min(res - 1, max(0, int((v / m + 1.0) * 0.5 * res)))
    return k, i, j


@njit(cache=True, inline="always")
def _seen_depth(depth, dx, dy, dz, res):
    """Largest cube-map hit distance over 3 x 3 directions one pixel around the unit (dx, dy, dz)."""
    hx, hy, hz = (1.0, 0.0, 0.0) if abs(dx) < 0.9 else (0.0, 1.0, 0.0)
    ux, uy, uz = hy * dz - hz * dy, hz * dx - hx * dz, hx * dy - hy * dx
    ln = np.sqrt(ux * ux + uy * uy + uz * uz)
    ux, uy, uz = ux / ln, uy / ln, uz / ln
    vx, vy, vz = dy * uz - dz * uy, dz * ux - dx * uz, dx * uy - dy * ux
    step = 2.0 / res
    best = 0.0
    for a in range(-1, 2):
        for b in range(-1, 2):
            k, i, j = _cube_pixel(dx + step * (a * ux + b * vx), dy + step * (a * uy + b * vy),
                                  dz + step * (a * uz + b * vz), res)
            best = max(best, depth[k, i, j])
    return best


@njit(cache=True, inline="always")
def _contour_side(wv, e_a, e_b, e_c0, e_c1, e, p):
    """(side, unit normal m of the plane through p and edge e): side -1 / +1 is the edge's free side
    along m when e is a contour seen from p (its faces on one side of that plane) or a boundary edge;
    side 0 otherwise."""
    a, b = wv[e_a[e]], wv[e_b[e]]
    ax, ay, az = a[0] - p[0], a[1] - p[1], a[2] - p[2]
    bx, by, bz = b[0] - p[0], b[1] - p[1], b[2] - p[2]
    mx, my, mz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    mn = np.sqrt(mx * mx + my * my + mz * mz)
    if mn == 0.0:
        return 0.0, 0.0, 0.0, 0.0
    mx, my, mz = mx / mn, my / mn, mz / mn
    c0 = wv[e_c0[e]]
    s0 = mx * (c0[0] - p[0]) + my * (c0[1] - p[1]) + mz * (c0[2] - p[2])
    if e_c1[e] < 0:
        return (-1.0 if s0 > 0.0 else 1.0), mx, my, mz
    tol = 1e-9 * (abs(ax) + abs(ay) + abs(az) + abs(bx) + abs(by) + abs(bz))
    c1 = wv[e_c1[e]]
    s1 = mx * (c1[0] - p[0]) + my * (c1[1] - p[1]) + mz * (c1[2] - p[2])
    if (s0 > tol and s1 > -tol) or (s0 >= -tol and s1 > tol):
        return -1.0, mx, my, mz
    if (s0 < -tol and s1 < tol) or (s0 <= tol and s1 < -tol):
        return 1.0, mx, my, mz
    return 0.0, mx, my, mz


@njit(cache=True)
def _contour_escape(bvh, wv, e_a, e_b, e_c0, e_c1, p, nrm, off, depth, res, edge_t, gaps, slack, o, d, inv,
                    stack):
    """Stage 2 from point p: (escaped, rays cast)."""
    rays = 0
    for e in range(e_a.shape[0]):
        side, mx, my, mz = _contour_side(wv, e_a, e_b, e_c0, e_c1, e, p)
        if side == 0.0:
            continue
        a, b = wv[e_a[e]], wv[e_b[e]]
        for t in edge_t:
            qx = a[0] + t * (b[0] - a[0]) - p[0]
            qy = a[1] + t * (b[1] - a[1]) - p[1]
            qz = a[2] + t * (b[2] - a[2]) - p[2]
            dist = np.sqrt(qx * qx + qy * qy + qz * qz)
            if dist == 0.0 or _seen_depth(depth, qx / dist, qy / dist, qz / dist, res) < dist * (1.0 - slack):
                continue
            rays += 1
            hit, _ = _cast(bvh, p, nrm, off, qx / dist, qy / dist, qz / dist, o, d, inv, stack,
                           dist * _SEGMENT, False)
            if hit != np.inf:
                continue
            for gap in gaps:
                h = side * gap * dist
                ex, ey, ez = qx + h * mx, qy + h * my, qz + h * mz
                ln = np.sqrt(ex * ex + ey * ey + ez * ez)
                rays += 1
                hit, graze = _cast(bvh, p, nrm, off, ex / ln, ey / ln, ez / ln, o, d, inv, stack, np.inf,
                                   False)
                if hit == np.inf and not graze:
                    return True, rays
    return False, rays


@njit(parallel=True, cache=True)
def _verify_kernel(bvh, pts, normals, wv, e_a, e_b, e_c0, e_c1, res, edge_t, gaps, slack, off, proof, rays):
    """pts float64 [C, S, 3] test points, normals float64 [C, 3]; writes proof int8 [C] (0: none, 1: cube
    map, 2: contour edge) and rays int64 [C]."""
    for c in prange(pts.shape[0]):
        stack = np.empty(_STACK, np.int32)
        o, d, inv = np.empty(3), np.empty(3), np.empty(3)
        depth = np.empty((6, res, res))
        nrm = normals[c]
        for s in range(pts.shape[1]):
            p = pts[c, s]
            for k in range(6):
                for i in range(res):
                    for j in range(res):
                        dx, dy, dz = _cube_dir(k, i, j, res)
                        t, graze = _cast(bvh, p, nrm, off, dx, dy, dz, o, d, inv, stack, np.inf, True)
                        depth[k, i, j] = t
                        rays[c] += 1
                        if t == np.inf and not graze:
                            proof[c] = 1
            if proof[c]:
                break
            found, n = _contour_escape(bvh, wv, e_a, e_b, e_c0, e_c1, p, nrm, off, depth, res, edge_t, gaps,
                                       slack, o, d, inv, stack)
            rays[c] += n
            if found:
                proof[c] = 2
                break


def contour_edges(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, ...]:
    """Edge table of the mesh with positions welded (UV seams do not split edges): (welded positions
    float64 [W, 3], end points int64 [E], [E], the opposite corner of its first face int64 [E] and of its
    second face, -1 on a boundary, int64 [E]). An edge of k > 2 faces keeps its first two."""
    _, weld = np.unique(vertices, axis=0, return_inverse=True)
    weld = weld.reshape(-1)
    wv = np.zeros((int(weld.max()) + 1, 3))
    wv[weld] = vertices
    wf = weld[faces].astype(np.int64)                                        # [F, 3]
    a, b, c = wf.reshape(-1), wf[:, [1, 2, 0]].reshape(-1), wf[:, [2, 0, 1]].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi                                                          # welded-away edges
    lo, hi, c = lo[keep], hi[keep], c[keep]
    order = np.argsort(lo * wv.shape[0] + hi, kind="stable")
    lo, hi, c = lo[order], hi[order], c[order]
    start = np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
    size = np.diff(np.r_[start, lo.size])
    second = np.where(size >= 2, c[np.minimum(start + 1, lo.size - 1)], -1)
    return wv, lo[start], hi[start], c[start], second


def prove_visible(mesh: TriMesh, bvh: Bvh, candidates: np.ndarray, radius: float, points: np.ndarray = POINTS,
                  cube: int = CUBE) -> np.ndarray:
    """int8 [C]: for each candidate face (ids int [C]) of ``mesh`` (the BVH's mesh, bounding radius
    ``radius``), 0 when no tested ray escapes, 1 or 2 when a cube-map or contour-edge ray does (module
    docstring). Zero-area candidates should be left out (they are never visible). points: barycentric
    test points float [S, 3]; cube: cube-map pixels per side."""
    cand = np.asarray(candidates, np.int64)
    proof = np.zeros(cand.size, np.int8)
    if cand.size == 0:
        return proof
    v64 = mesh.vertices.astype(np.float64)
    tri = v64[mesh.faces[cand]]                                              # [C, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    pts = np.einsum("sk,ckd->csd", np.asarray(points, np.float64), tri)     # [C, S, 3]
    wv, e_a, e_b, e_c0, e_c1 = contour_edges(v64, mesh.faces)
    arrays = (bvh.vertices, bvh.faces, bvh.leaf_face, bvh.left, bvh.right, bvh.aabb_lo, bvh.aabb_hi)
    _verify_kernel(arrays, pts, normals, wv, e_a, e_b, e_c0, e_c1, cube, np.array(EDGE_T),
                   np.array(EDGE_GAPS), DEPTH_SLACK, OFFSET * radius, proof, np.zeros(cand.size, np.int64))
    return proof


def keep_provable(mesh: TriMesh, visible: np.ndarray, bvh: Bvh | None = None) -> tuple[np.ndarray, int]:
    """(visible bool [F] plus every face with area that ``prove_visible`` proves visible, how many it
    added). mesh: the host mesh (glTF convention); visible: bool [F], the faces already kept; bvh: one
    built on ``mesh``, or None to build it."""
    from engine.geometry.bvh import build_bvh
    from engine.geometry.hidden_faces import bounding_sphere
    from engine.geometry.mesh import face_areas

    cand = np.flatnonzero(~visible & (face_areas(mesh.vertices, mesh.faces) > 0))
    if cand.size == 0:
        return visible, 0
    bvh = bvh or build_bvh(mesh.vertices, mesh.faces)
    proved = cand[prove_visible(mesh, bvh, cand, bounding_sphere(mesh)[1]) > 0]
    out = visible.copy()
    out[proved] = True
    return out, int(proved.size)
