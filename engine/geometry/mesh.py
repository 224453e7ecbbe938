"""The triangle mesh that flows between geometry stages, and its checks.

Convention (stated once, converted at the edges): glTF's. +Y up, metres, right-handed, counter-clockwise
front faces seen from outside, so face normals ``cross(v1 - v0, v2 - v0)`` point out of the object.
UV origin is glTF's: (0, 0) is the top-left corner of the texture image, v grows downwards.

Arrays are numpy on the host: positions float32 ``[V, 3]``, faces int32 ``[F, 3]``. Per-vertex
attributes share the vertex index (a UV seam duplicates the vertex).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from engine.errors import MeshError


@dataclass
class TriMesh:
    """An indexed triangle mesh with optional per-vertex attributes and textures.

    vertices:   float32 [V, 3], metres, +Y up.
    faces:      int32 [F, 3], counter-clockwise front faces.
    normals:    float32 [V, 3] unit vertex normals, or None.
    uvs:        float32 [V, 2] glTF UVs (origin top-left), or None.
    tangents:   float32 [V, 4] MikkTSpace-convention tangents, w = handedness (+1/-1), or None.
    colors:     float32 [V, 3] linear vertex colours in [0, 1], or None.
    base_color: uint8 [H, W, 3] sRGB base-colour texture addressed by ``uvs``, or None.
    normal_map: uint8 [H, W, 3] tangent-space normal map (RGB = (n + 1) / 2), or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    tangents: np.ndarray | None = None
    colors: np.ndarray | None = None
    base_color: np.ndarray | None = None
    normal_map: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def copy(self, **changes) -> TriMesh:
        """A shallow copy with some fields replaced (arrays are shared unless replaced)."""
        return replace(self, meta=dict(self.meta), **changes)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo [3], hi [3]) of the vertices actually referenced by faces."""
        used = self.vertices[np.unique(self.faces)] if self.num_faces else self.vertices
        return used.min(axis=0), used.max(axis=0)

    def diagonal(self) -> float:
        lo, hi = self.bounds()
        return float(np.linalg.norm(hi - lo))


def face_normals(vertices: np.ndarray, faces: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Per-face normals [F, 3] float32; area-weighted (length = 2 x area) when ``normalize`` is False."""
    v0, v1, v2 = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    n = np.cross(v1 - v0, v2 - v0)
    if normalize:
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n = n / np.maximum(length, 1e-30)
    return n.astype(np.float32)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-face areas [F] float64."""
    return 0.5 * np.linalg.norm(face_normals(vertices, faces, normalize=False).astype(np.float64), axis=1)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] float32 (zero-area neighbourhoods get +Y)."""
    fn = face_normals(vertices, faces, normalize=False).astype(np.float64)
    vn = np.zeros((vertices.shape[0], 3), dtype=np.float64)
    for i in range(3):
        np.add.at(vn, faces[:, i], fn)
    length = np.linalg.norm(vn, axis=1, keepdims=True)
    vn = np.where(length > 1e-30, vn / np.maximum(length, 1e-30), np.array([0.0, 1.0, 0.0]))
    return vn.astype(np.float32)


def validate_mesh(mesh: TriMesh, what: str = "mesh") -> None:
    """Raise MeshError naming the problem when the mesh cannot be processed at all.

    Checks: at least one face, finite positions, face indices in range. Degenerate (zero-area) faces
    and duplicate faces are not errors here: ``clean_mesh`` repairs them.
    """
    if mesh.num_faces == 0:
        raise MeshError(f"{what} has no faces", "give a mesh with at least one triangle")
    if not np.isfinite(mesh.vertices).all():
        bad = int((~np.isfinite(mesh.vertices).all(axis=1)).sum())
        raise MeshError(f"{what} has {bad} vertices with NaN/Inf positions",
                        "repair or re-export the mesh with finite coordinates")
    if mesh.faces.min() < 0 or mesh.faces.max() >= mesh.num_vertices:
        raise MeshError(f"{what} has face indices outside [0, {mesh.num_vertices})",
                        "re-export the mesh; its index buffer is corrupt")


def clean_mesh(mesh: TriMesh, weld_tolerance: float = 0.0) -> TriMesh:
    """Geometry-only repair: weld coincident positions, drop degenerate and duplicate faces and
    unreferenced vertices. Attributes (UVs, normals, textures) are dropped: use on dense geometry.

    weld_tolerance: positions closer than this (metres) are merged; 0 merges exact duplicates only.
    """
    validate_mesh(mesh)
    v = mesh.vertices.astype(np.float64)
    key = np.round(v / weld_tolerance) if weld_tolerance > 0 else v
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[mesh.faces]
    verts = mesh.vertices[first]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    if faces.shape[0]:
        sorted_faces = np.sort(faces, axis=1)
        _, uniq = np.unique(sorted_faces, axis=0, return_index=True)
        faces = faces[np.sort(uniq)]
        keep = face_areas(verts, faces) > 0.0
        faces = faces[keep]
    used, remap = np.unique(faces, return_inverse=True)
    out = TriMesh(verts[used], remap.reshape(-1, 3).astype(np.int32), meta=dict(mesh.meta))
    validate_mesh(out, "mesh after removing degenerate faces")
    return out
