"""A brute-force visibility oracle for judging hidden-face removal (tests and benchmarks only).

A face is visible when some ray from outside the bounding sphere reaches a point of it unobstructed, on
either side; reversed, a ray from that point escapes the mesh. The oracle samples that definition densely
and independently of the engine's method (``hidden_faces_escape``): per face, ``points`` area-uniform
random points (numpy RNG, not the engine's fixed barycentrics) and, per point, ``directions`` directions
drawn uniformly on the sphere (not rotated Fibonacci sets), cast with the nearest-hit ``Bvh.ray_cast``
(not the any-hit kernel); no views, portals or neighbours. It keeps the engine's definition of leaving a
face: a ray starts 1e-6 x (bounding radius) off the face plane on the side it leaves by, and a ray within
0.6 degrees of the plane proves nothing (``GRAZING_COS``). A face is visible when one other ray hits
nothing. Faces stop at their first escape (chunks of 64 directions), so visible faces are cheap; a hidden
face costs points x directions rays, 16 x 4096 = 65,536 by default.

Its answer is a lower bound of the true visible set (an escape it finds is a proof; one it misses is a
cone narrower than its sampling), so recall against it means: every face the oracle can prove visible
was kept.
"""

from __future__ import annotations

import numpy as np

from engine.geometry.bvh import Bvh, build_bvh
from engine.geometry.hidden_faces import bounding_sphere
from engine.geometry.hidden_faces_escape import GRAZING_COS
from engine.geometry.mesh import TriMesh, face_areas, face_normals

ORACLE_POINTS = 16
ORACLE_DIRECTIONS = 4096
_CHUNK = 64
_RAYS = 1 << 20


def _random_points(tri: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[C, n, 3] area-uniform random points of triangles tri [C, 3, 3]."""
    r1, r2 = np.sqrt(rng.random((tri.shape[0], n))), rng.random((tri.shape[0], n))
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)                       # [C, n, 3]
    return np.einsum("cnk,ckd->cnd", w, tri)


def oracle_visible(mesh: TriMesh, faces: np.ndarray | None = None, points: int = ORACLE_POINTS,
                   directions: int = ORACLE_DIRECTIONS, seed: int = 0, bvh: Bvh | None = None) -> np.ndarray:
    """bool [len(faces)]: whether the oracle proves each face (ids int [C], default all) visible."""
    ids = np.arange(mesh.num_faces) if faces is None else np.asarray(faces, np.int64)
    bvh = bvh or build_bvh(mesh.vertices, mesh.faces)
    rng = np.random.default_rng(seed)
    offset = 1e-6 * bounding_sphere(mesh)[1]
    normals = face_normals(mesh.vertices, mesh.faces).astype(np.float64)
    area = face_areas(mesh.vertices, mesh.faces)
    found = np.zeros(ids.size, bool)
    open_ = np.flatnonzero(area[ids] > 0)
    pts = _random_points(mesh.vertices[mesh.faces[ids[open_]]].astype(np.float64), points, rng)
    pts_of = np.full((ids.size, points, 3), np.nan)
    pts_of[open_] = pts
    for j0 in range(0, directions, _CHUNK):
        open_ = open_[~found[open_]]
        if open_.size == 0:
            break
        block = max(1, _RAYS // (_CHUNK * points))
        for s in range(0, open_.size, block):
            idx = open_[s:s + block]
            d = rng.normal(size=(idx.size, _CHUNK, points, 3))
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            n = normals[ids[idx]][:, None, None, :]
            side = np.where((d * n).sum(-1, keepdims=True) >= 0, offset, -offset)
            o = pts_of[idx][:, None] + side * n                                   # [c, chunk, points, 3]
            miss = bvh.ray_cast(o.reshape(-1, 3), d.reshape(-1, 3)).face_id < 0
            miss &= (np.abs((d * n).sum(-1)) >= GRAZING_COS).reshape(-1)       # as the engine: not edge-on
            found[idx] |= miss.reshape(idx.size, -1).any(axis=1)
    return found
