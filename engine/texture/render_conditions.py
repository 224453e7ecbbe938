"""Geometric condition renders for TextureGen (paper 7.1, 7.5): per-view position and normal maps.

For each orthographic camera of the rig the mesh is rasterised with a z-buffer (both windings drawn,
nearest wins) and per-pixel attributes are interpolated:
  position [K, R, R, 3] float32: world-space point visible at the pixel (0 where empty).
  normal   [K, R, R, 3] float32: unit world-space shading normal (0 where empty). Smooth vertex normals
           (``mesh.normals`` or area-weighted normals of the position-welded mesh), perturbed by the mesh's
           tangent-space normal map when ``mesh.normal_map``, ``mesh.tangents`` and ``mesh.uvs`` exist:
           n_world = normalize(T x + B y + N z) with (x, y, z) = rgb / 255 * 2 - 1, T the interpolated
           tangent made orthogonal to N, B = w * cross(N, T) (glTF / MikkTSpace convention).
  depth    [K, R, R] float32: distance from the camera plane along the view (inf where empty).
  face_id  [K, R, R] int32 (-1 empty) and mask [K, R, R] bool (face_id >= 0).
Host numpy; the GPU path (DRTK-like) comes later with the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, validate_mesh, vertex_normals
from engine.geometry.rasterize import interpolate, rasterize_ortho
from engine.texture.views import OrthoCamera


@dataclass
class ViewRenders:
    """Per-view renders of one mesh; K = len(cameras), R = resolution. See the module docstring."""

    cameras: tuple[OrthoCamera, ...]
    resolution: int
    face_id: np.ndarray     # int32 [K, R, R]
    depth: np.ndarray       # float32 [K, R, R]
    position: np.ndarray    # float32 [K, R, R, 3]
    normal: np.ndarray      # float32 [K, R, R, 3]
    mask: np.ndarray        # bool [K, R, R]


def smooth_normals(mesh: TriMesh) -> np.ndarray:
    """Unit vertex normals float32 [V, 3]: ``mesh.normals`` when present, else area-weighted normals
    computed on the position-welded mesh so UV seams (split vertices) do not crease the shading."""
    if mesh.normals is not None and mesh.normals.shape == mesh.vertices.shape:
        n = mesh.normals.astype(np.float32)
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    _, first, inverse = np.unique(mesh.vertices, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    welded = vertex_normals(mesh.vertices[first], inverse[mesh.faces].astype(np.int32))
    return welded[inverse]


def sample_bilinear_repeat(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with REPEAT wrap. image [H, W, C] (any dtype), uv [..., 2] glTF UVs (origin
    top-left); texel (r, c) centre at ((c + 0.5) / W, (r + 0.5) / H). Returns float32 [..., C] in the
    image's units."""
    h, w = image.shape[:2]
    x = uv[..., 0].astype(np.float64) * w - 0.5
    y = uv[..., 1].astype(np.float64) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0 = x0.astype(np.int64) % w
    y0 = y0.astype(np.int64) % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    img = image.astype(np.float32).reshape(h, w, -1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def shading_normals(mesh: TriMesh, face_id: np.ndarray, bary: np.ndarray, vnormals: np.ndarray,
                    normal_map: bool = True) -> np.ndarray:
    """World-space unit normals float32 [H, W, 3] at rasterised samples (face_id [H, W], bary
    [H, W, 3]); applies the tangent-space normal map when available and ``normal_map``."""
    hit = face_id >= 0
    n = interpolate(vnormals, mesh.faces, face_id, bary)[hit]                      # [N, 3]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    use_map = (normal_map and mesh.normal_map is not None and mesh.tangents is not None
               and mesh.uvs is not None)
    if use_map:
        t4 = interpolate(mesh.tangents, mesh.faces, face_id, bary)[hit]             # [N, 4]
        t = t4[:, :3] - n * np.sum(t4[:, :3] * n, axis=1, keepdims=True)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        sign = np.where(t4[:, 3:4] < 0, -1.0, 1.0).astype(np.float32)
        b = sign * np.cross(n, t)
        uv = interpolate(mesh.uvs, mesh.faces, face_id, bary)[hit]                  # [N, 2]
        ts = sample_bilinear_repeat(mesh.normal_map, uv) / 255.0 * 2.0 - 1.0        # [N, 3]
        n = t * ts[:, 0:1] + b * ts[:, 1:2] + n * ts[:, 2:3]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    out = np.zeros(face_id.shape + (3,), np.float32)
    out[hit] = n
    return out


def render_views(mesh: TriMesh, cameras: list[OrthoCamera] | tuple[OrthoCamera, ...], resolution: int,
                 normal_map: bool = True) -> ViewRenders:
    """Render position/normal/depth maps of ``mesh`` (already scaled into the rig sphere) from each
    camera at ``resolution`` x ``resolution``. See the module docstring for the outputs."""
    validate_mesh(mesh)
    if len(cameras) == 0:
        raise MeshError("no cameras given to render", "pass camera_rig() or a list of OrthoCamera")
    k, r = len(cameras), int(resolution)
    vnormals = smooth_normals(mesh)
    out = ViewRenders(tuple(cameras), r, np.empty((k, r, r), np.int32), np.empty((k, r, r), np.float32),
                      np.empty((k, r, r, 3), np.float32), np.empty((k, r, r, 3), np.float32),
                      np.empty((k, r, r), bool))
    for i, cam in enumerate(cameras):
        fid, bary, depth = rasterize_ortho(mesh.vertices, mesh.faces, cam, r)
        out.face_id[i], out.depth[i], out.mask[i] = fid, depth, fid >= 0
        out.position[i] = interpolate(mesh.vertices, mesh.faces, fid, bary)
        out.normal[i] = shading_normals(mesh, fid, bary, vnormals, normal_map)
    return out
