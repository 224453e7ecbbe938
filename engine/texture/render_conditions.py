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
from triton_kernels.sample_texture import sample_bilinear_repeat as sample_bilinear_repeat  # re-exported
from triton_kernels.sample_texture import shading_normals_ref


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


def shading_normals(mesh: TriMesh, face_id: np.ndarray, bary: np.ndarray, vnormals: np.ndarray,
                    normal_map: bool = True) -> np.ndarray:
    """World-space unit normals float32 [H, W, 3] at rasterised samples (face_id [H, W], bary
    [H, W, 3]); applies the tangent-space normal map when available and ``normal_map``. The maths is
    ``triton_kernels.sample_texture.shading_normals_ref``, the reference of the GPU shader."""
    nmap = mesh.normal_map if normal_map else None
    return shading_normals_ref(mesh.faces, face_id, bary, vnormals, mesh.uvs, mesh.tangents, nmap)


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
