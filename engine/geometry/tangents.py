"""Per-vertex tangents in the MikkTSpace convention glTF requires, and the shading frame baker and
viewer share (paper 6.4).

Conventions (glTF 2.0, section 3.7.2.1 and ``material.normalTexture``):
  * ``TriMesh.uvs`` are glTF UVs: origin at the image's top-left corner, v grows DOWN the image.
  * A tangent-space normal map stores +X = image right (+u) and +Y = image UP, i.e. towards DEcreasing
    glTF v. MikkTSpace is written for OpenGL UVs (origin bottom-left, t up), so we work with
    ``s = u`` and ``t = -v`` (any offset, e.g. ``1 - v``, drops out of the derivatives).
  * tangent.xyz is the unit direction of dP/ds (= dP/du) made orthogonal to the vertex normal N;
    tangent.w = +1 or -1 is chosen so that the bitangent ``B = w * cross(N, T)`` points along dP/dt
    (= -dP/dv, image up). w = -1 marks mirrored UVs.

Per triangle with corners p0, p1, p2 and (s, t) texture coordinates:
    e1 = p1 - p0, e2 = p2 - p0, (ds1, dt1), (ds2, dt2) the UV edges, det = ds1 * dt2 - ds2 * dt1
    dP/ds = (dt2 * e1 - dt1 * e2) / det,     dP/dt = (ds1 * e2 - ds2 * e1) / det
(MikkTSpace's eq. 18/19 with the same 1 / det scaling). Per vertex, each incident corner contributes
its face's dP/ds and dP/dt projected onto the plane orthogonal to the vertex normal and normalised,
weighted by the corner angle (MikkTSpace's weighting). The tangent is the normalised sum (the
projection is the Gram-Schmidt step); w = sign(dot(cross(N, T), sum of bitangents)), +1 on a tie.

Limits: triangles whose UV area is degenerate (|det| <= 1e-12 x the product of their UV edge lengths,
or zero 3D area) contribute nothing. A vertex without any usable corner, or whose contributions cancel,
gets a fallback tangent: the world axis least aligned with N, orthogonalised against N, w = +1.
Unlike MikkTSpace we never split vertices: where faces of opposite handedness share a vertex (a mirror
line welded in the index buffer) the majority, by angle weight, decides w.

Shading frame shared by ``normal_bake.bake_normal_map`` and ``normal_bake.baked_normal_error``
(and what a glTF viewer that normalises, such as the Khronos sample viewer, approximates):
    N = normalize(interpolated vertex normal)
    T = normalize(t - dot(t, N) N) with t the interpolated tangent.xyz (Gram-Schmidt per texel)
    B = w * cross(N, T) with w = sign of the interpolated tangent.w (+1 when >= 0)
The frame is orthonormal, so baking is the projection n_ts = (n.T, n.B, n.N) and decoding is
n = normalize(x T + y B + z N), its exact inverse. MikkTSpace's unnormalised variant differs from this
by the small non-orthogonality of interpolated vectors; we chose the normalised frame.
"""

from __future__ import annotations

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, vertex_normals

_DET_EPS = 1e-12     # relative UV-area threshold (sine of the UV angle)
_LEN_EPS = 1e-12     # length below which a projected vector counts as zero


def face_uv_derivatives(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face (dP/ds [F,3], dP/dt [F,3], ok bool [F]) in float64, with s = u and t = -v (glTF UVs).

    ``ok`` is False for faces with a degenerate UV triangle or zero 3D area; their derivatives are 0.
    vertices float32 [V,3], faces int32 [F,3], uvs float32 [V,2] glTF (origin top-left, v down).
    """
    p = vertices.astype(np.float64)[faces]                       # [F, 3, 3]
    st = uvs.astype(np.float64)[faces] * np.array([1.0, -1.0])   # [F, 3, 2] (s, t) with t up
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = st[:, 1] - st[:, 0], st[:, 2] - st[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]              # [F] twice the signed (s, t) area
    scale = np.linalg.norm(d1, axis=1) * np.linalg.norm(d2, axis=1)
    area3 = np.linalg.norm(np.cross(e1, e2), axis=1)
    ok = (np.abs(det) > _DET_EPS * scale) & (scale > 0) & (area3 > 0)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    dpds = (d2[:, 1:2] * e1 - d1[:, 1:2] * e2) * inv
    dpdt = (d1[:, 0:1] * e2 - d2[:, 0:1] * e1) * inv
    return dpds, dpdt, ok


def _corner_angles(p: np.ndarray) -> np.ndarray:
    """Interior angles [F, 3] (radians) of triangles p [F, 3, 3]."""
    out = np.empty(p.shape[:2])
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        cos = np.einsum("fi,fi->f", a, b) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
        out[:, k] = np.arccos(np.clip(cos, -1.0, 1.0))
    return out


def _perpendicular(n: np.ndarray) -> np.ndarray:
    """A unit vector orthogonal to each unit vector n [P,3] (the least aligned world axis, projected)."""
    axis = np.eye(3)[np.argmin(np.abs(n), axis=1)]               # [P, 3]
    t = axis - np.einsum("pi,pi->p", axis, n)[:, None] * n
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-300)


def _project_normalize(v: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit part of v [P,3] orthogonal to n [P,3], its pre-normalisation length [P])."""
    v = v - np.einsum("pi,pi->p", v, n)[:, None] * n
    length = np.linalg.norm(v, axis=1)
    return v / np.maximum(length, 1e-300)[:, None], length


def compute_tangents(mesh: TriMesh) -> np.ndarray:
    """MikkTSpace-convention vertex tangents, float32 [V, 4] (xyz unit, orthogonal to the vertex normal;
    w = +1/-1 handedness with B = w * cross(N, T) pointing towards decreasing glTF v).

    Needs ``mesh.uvs`` (glTF convention). Uses ``mesh.normals`` when present, else area-weighted vertex
    normals of the mesh as indexed. Raises MeshError without UVs or with mismatched attribute shapes.
    """
    if mesh.uvs is None:
        raise MeshError("mesh has no UVs, so tangents are undefined", "unwrap it first (unwrap_uv)")
    uvs = np.asarray(mesh.uvs, dtype=np.float32)
    if uvs.shape != (mesh.num_vertices, 2) or not np.isfinite(uvs).all():
        raise MeshError(f"mesh UVs have shape {uvs.shape} or non-finite values",
                        f"give finite float UVs of shape ({mesh.num_vertices}, 2)")
    normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces)
    normals = np.asarray(normals, dtype=np.float64)
    if normals.shape != (mesh.num_vertices, 3):
        raise MeshError(f"mesh normals have shape {normals.shape}",
                        f"give normals of shape ({mesh.num_vertices}, 3) or none")
    nlen = np.linalg.norm(normals, axis=1, keepdims=True)
    n_unit = np.where(nlen > _LEN_EPS, normals / np.maximum(nlen, 1e-300), np.array([0.0, 1.0, 0.0]))

    faces = mesh.faces
    dpds, dpdt, ok = face_uv_derivatives(mesh.vertices, faces, uvs)
    angles = _corner_angles(mesh.vertices.astype(np.float64)[faces]) * ok[:, None]   # [F, 3]
    t_sum = np.zeros((mesh.num_vertices, 3))
    b_sum = np.zeros((mesh.num_vertices, 3))
    for k in range(3):
        vid = faces[:, k]
        t_dir, t_len = _project_normalize(dpds, n_unit[vid])
        b_dir, b_len = _project_normalize(dpdt, n_unit[vid])
        np.add.at(t_sum, vid, t_dir * (angles[:, k] * (t_len > _LEN_EPS))[:, None])
        np.add.at(b_sum, vid, b_dir * (angles[:, k] * (b_len > _LEN_EPS))[:, None])

    tangent, t_len = _project_normalize(t_sum, n_unit)
    bad = t_len <= 1e-9
    tangent[bad] = _perpendicular(n_unit[bad])
    w = np.where(np.einsum("pi,pi->p", np.cross(n_unit, tangent), b_sum) < 0.0, -1.0, 1.0)
    w[bad] = 1.0
    return np.concatenate([tangent, w[:, None]], axis=1).astype(np.float32)


def shading_frame(normals: np.ndarray, tangents: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-texel/per-fragment frame shared by the baker and the error metric (module docstring).

    normals [P,3] interpolated vertex normals, tangents [P,4] interpolated vertex tangents (any float).
    Returns (T [P,3], B [P,3], N [P,3]) float64 orthonormal rows, and ok bool [P]: False where the
    normal or the tangent's part orthogonal to it is degenerate (then T, B, N hold a fallback frame).
    """
    n = np.asarray(normals, dtype=np.float64)
    t = np.asarray(tangents, dtype=np.float64)
    nlen = np.linalg.norm(n, axis=1)
    ok = nlen > 1e-6
    n_unit = np.where(ok[:, None], n / np.maximum(nlen, 1e-300)[:, None], np.array([0.0, 0.0, 1.0]))
    t_unit, t_len = _project_normalize(t[:, :3], n_unit)
    ok &= t_len > 1e-6
    t_unit[~ok] = _perpendicular(n_unit[~ok])
    w = np.where(t[:, 3] < 0.0, -1.0, 1.0)
    b_unit = w[:, None] * np.cross(n_unit, t_unit)
    return t_unit, b_unit, n_unit, ok
