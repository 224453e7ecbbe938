"""Hidden-face removal (paper 6.2): ray visibility from a sphere of views, then a normal-gated flood fill.

1. Visibility. ``views`` directions are spread evenly on the unit sphere (Fibonacci lattice). For each, an
   orthographic grid of ``resolution x resolution`` parallel rays covers the mesh's bounding sphere (centre
   = bounding-box centre, radius = farthest referenced vertex, pixel pitch ``2 R / resolution``, rays start
   outside the sphere and point at it). The nearest hit of each ray (either side of the face, no culling:
   a back face seen through a hole is visible) marks its face visible; hits are counted per face. One BVH
   is built and reused for all views. Cost: ``views * resolution^2`` rays.
2. Flood fill. Rays miss exterior faces that are thinner than a pixel or shadowed in crevices. A
   breadth-first search from every ray-visible face crosses shared edges (non-manifold edges connect all
   their faces) and promotes a hidden neighbour when ``dot(n_seed, n_neighbour) > NORMAL_AGREEMENT``
   (0.5: within 60 degrees), where ``n_seed`` is the unit normal of the ray-visible face the front started
   from (promoted faces pass their seed on). Comparing against the seed rather than the previous face
   stops a front from drifting round a smooth fold into an enclosed interior; interior shells that share no
   edge with the exterior are never reached.

Limits: interior faces that share an edge with a visible face and face the same way as it (within 60
degrees) are kept. Zero-area faces have zero normals and are never promoted by the fill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from engine.errors import ConfigError
from engine.geometry.bvh import build_bvh
from engine.geometry.mesh import TriMesh, face_normals, validate_mesh

NORMAL_AGREEMENT = 0.5
_RAYS_PER_BATCH = 1 << 19


@dataclass
class HiddenFaceReport:
    """What ``remove_hidden_faces`` did. Face counts; ``seconds`` is the wall time of the whole call."""

    faces_in: int
    faces_out: int
    visible_by_rays: int
    added_by_flood_fill: int
    seconds: float
    note: str = ""


def fibonacci_sphere(n: int) -> np.ndarray:
    """n unit directions float64 [n, 3], evenly spread on the sphere (golden-angle spiral in z)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _ortho_basis(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors [3] completing w [3] (unit) to an orthonormal frame."""
    helper = np.array([0.0, 1.0, 0.0]) if abs(w[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, w)
    u /= np.linalg.norm(u)
    return u, np.cross(w, u)


def ortho_view_rays(direction: np.ndarray, center: np.ndarray, radius: float,
                    resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic ray grid of one view looking along ``-direction`` (direction points from the centre to
    the viewer). Returns origins float64 [res*res, 3] on the plane ``2 radius`` from the centre, and the
    shared unit direction float64 [3]. Pixel centres cover [-radius, radius]^2, row-major."""
    w = -direction / np.linalg.norm(direction)
    u, v = _ortho_basis(w)
    s = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0            # [res] in (-1, 1)
    gy, gx = np.meshgrid(s, s, indexing="ij")                              # [res, res]
    plane = (gx.reshape(-1, 1) * u + gy.reshape(-1, 1) * v) * radius      # [res*res, 3]
    return center - 2.0 * radius * w + plane, w


def bounding_sphere(mesh: TriMesh) -> tuple[np.ndarray, float]:
    """(centre float64 [3], radius) of a sphere holding every referenced vertex (box centre based)."""
    lo, hi = mesh.bounds()
    center = (lo.astype(np.float64) + hi) / 2.0
    used = mesh.vertices[np.unique(mesh.faces)].astype(np.float64)
    radius = float(np.linalg.norm(used - center, axis=1).max())
    return center, max(radius * 1.001, 1e-12)


def ray_hit_counts(mesh: TriMesh, views: int, resolution: int) -> np.ndarray:
    """Per-face count int64 [F] of view rays whose nearest hit is that face (see module docstring)."""
    bvh = build_bvh(mesh.vertices, mesh.faces)
    center, radius = bounding_sphere(mesh)
    counts = np.zeros(mesh.num_faces, np.int64)
    per_view = resolution * resolution
    batch = max(1, _RAYS_PER_BATCH // per_view)
    dirs = fibonacci_sphere(views)
    for s in range(0, views, batch):
        grids = [ortho_view_rays(d, center, radius, resolution) for d in dirs[s:s + batch]]
        origins = np.concatenate([g[0] for g in grids])
        directions = np.repeat(np.stack([g[1] for g in grids]), per_view, axis=0)
        fid = bvh.ray_cast(origins, directions).face_id
        counts += np.bincount(fid[fid >= 0], minlength=mesh.num_faces)
    return counts


def face_adjacency(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge adjacency in CSR form: (offsets int64 [F+1], neighbours int32 [sum]). Faces sharing an
    undirected edge are neighbours; an edge with k > 2 faces links all k (k - 1) / 2 pairs."""
    f_count = faces.shape[0]
    a = faces.reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    keys = np.minimum(a, b).astype(np.int64) * (int(a.max()) + 1) + np.maximum(a, b)
    owner = np.repeat(np.arange(f_count, dtype=np.int32), 3)
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, keys.shape[0]])
    pair_a = [owner[starts[lengths == 2]]]
    pair_b = [owner[starts[lengths == 2] + 1]]
    for st, ln in zip(starts[lengths > 2], lengths[lengths > 2]):    # non-manifold edges (rare)
        group = owner[st:st + ln]
        ii, jj = np.triu_indices(ln, 1)
        pair_a.append(group[ii])
        pair_b.append(group[jj])
    pa, pb = np.concatenate(pair_a), np.concatenate(pair_b)
    src = np.concatenate([pa, pb])
    dst = np.concatenate([pb, pa])
    keep = src != dst
    src, dst = src[keep], dst[keep]
    order = np.argsort(src, kind="stable")
    offsets = np.zeros(f_count + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=f_count), out=offsets[1:])
    return offsets, dst[order].astype(np.int32)


@njit(cache=True)
def _flood_fill(visible: np.ndarray, normals: np.ndarray, offsets: np.ndarray, nbrs: np.ndarray,
                threshold: float) -> np.ndarray:
    """BFS from visible faces (bool [F]); returns the promoted mask bool [F] (visible included)."""
    f_count = visible.shape[0]
    out = visible.copy()
    seed = np.full(f_count, -1, np.int32)
    queue = np.empty(f_count, np.int32)
    head = 0
    tail = 0
    for f in range(f_count):
        if visible[f]:
            seed[f] = f
            queue[tail] = f
            tail += 1
    while head < tail:
        f = queue[head]
        head += 1
        s = seed[f]
        for k in range(offsets[f], offsets[f + 1]):
            g = nbrs[k]
            if out[g]:
                continue
            dot = (normals[s, 0] * normals[g, 0] + normals[s, 1] * normals[g, 1]
                   + normals[s, 2] * normals[g, 2])
            if dot > threshold:
                out[g] = True
                seed[g] = s
                queue[tail] = g
                tail += 1
    return out


def _check_args(mesh: TriMesh, views: int, resolution: int) -> None:
    validate_mesh(mesh, "mesh for hidden-face removal")
    if views < 1:
        raise ConfigError(f"hidden-face removal needs >= 1 view, got {views}", "use e.g. 96 or 512 views")
    if not 2 <= resolution <= 8192:
        raise ConfigError(f"hidden-face resolution {resolution} out of range", "use a value in [2, 8192]")


def _visible_and_rays(mesh: TriMesh, views: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    by_rays = ray_hit_counts(mesh, views, resolution) > 0
    if not by_rays.any():
        return by_rays, by_rays
    offsets, nbrs = face_adjacency(mesh.faces)
    normals = face_normals(mesh.vertices, mesh.faces).astype(np.float64)
    return _flood_fill(by_rays, normals, offsets, nbrs, NORMAL_AGREEMENT), by_rays


def find_visible_faces(mesh: TriMesh, views: int, resolution: int) -> np.ndarray:
    """bool [F]: faces hit by at least one view ray, plus those the normal-gated flood fill promotes.

    mesh: TriMesh (glTF convention); views: number of Fibonacci viewpoints; resolution: rays per view side.
    """
    _check_args(mesh, views, resolution)
    return _visible_and_rays(mesh, views, resolution)[0]


def compact_faces(mesh: TriMesh, keep: np.ndarray) -> TriMesh:
    """Mesh with only faces ``keep`` (bool [F]) and the vertices they use; per-vertex attributes
    (normals, uvs, tangents, colors) follow their vertices, textures are shared, and ``meta`` arrays whose
    key starts with ``face_`` and whose length is F (e.g. ``face_material``) are filtered alike."""
    faces = mesh.faces[keep]
    used, remap = np.unique(faces, return_inverse=True)
    meta = dict(mesh.meta)
    for key, val in mesh.meta.items():
        if key.startswith("face_") and isinstance(val, np.ndarray) and val.shape[:1] == (mesh.num_faces,):
            meta[key] = val[keep]

    def pick(attr: np.ndarray | None) -> np.ndarray | None:
        return None if attr is None else attr[used]

    return replace(mesh, vertices=mesh.vertices[used], faces=remap.reshape(-1, 3).astype(np.int32),
                     normals=pick(mesh.normals), uvs=pick(mesh.uvs), tangents=pick(mesh.tangents),
                     colors=pick(mesh.colors), meta=meta)


def remove_hidden_faces(mesh: TriMesh, views: int, resolution: int) -> tuple[TriMesh, HiddenFaceReport]:
    """Drop faces no view ray reaches (after the flood fill). Returns (compacted mesh, report).

    If no face is visible at all (e.g. every face has zero area), the input mesh is returned unchanged and
    the report's ``note`` says so.
    """
    start = time.perf_counter()
    _check_args(mesh, views, resolution)
    visible, by_rays = _visible_and_rays(mesh, views, resolution)
    n_rays = int(by_rays.sum())
    if n_rays == 0:
        report = HiddenFaceReport(mesh.num_faces, mesh.num_faces, 0, 0, time.perf_counter() - start,
                                  "no face was hit by any view ray; mesh kept unchanged")
        return mesh, report
    out = compact_faces(mesh, visible)
    report = HiddenFaceReport(mesh.num_faces, out.num_faces, n_rays, int(visible.sum()) - n_rays,
                              time.perf_counter() - start)
    return out, report
