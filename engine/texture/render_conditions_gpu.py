"""Geometric condition renders on the GPU (paper 7.1, 7.5): the device twin of ``render_conditions``.

All K views of the rig in one launch set, outputs GPU-resident torch tensors on ``kernel_device()``:
  1. ``triton_kernels.rasterize_views.rasterize_views_gpu``: batched z-buffer of the K orthographic views
     (face id, barycentrics, depth; same coverage, depth and tie rule as ``rasterize_ortho``);
  2. ``triton_kernels.sample_texture.shade_pixels_gpu``: one thread per pixel interpolates the world
     position and the smooth normal and applies the tangent-space normal map exactly as the CPU
     ``shading_normals`` does (bilinear REPEAT lookup, Gram-Schmidt tangent, B = w cross(N, T)).
Outputs (K = len(cameras), R = resolution; ``ViewRendersGPU``), conventions of ``render_conditions``:
  face_id int32 [K, R, R] (-1 empty), bary float32 [K, R, R, 3], depth float32 [K, R, R] (inf empty),
  position float32 [K, R, R, 3] world (0 empty), normal float32 [K, R, R, 3] unit (0 empty),
  mask bool [K, R, R].
Smooth vertex normals are those of the CPU ``smooth_normals``: the mesh's own when present, else
area-weighted normals of the position-welded mesh (UV seams do not crease the shading), computed on the
device. The normal map is applied when the mesh has UVs, tangents and a map; otherwise smooth normals
are returned (the CPU path's documented fallback).

Host syncs: the rasteriser's one ``nonzero`` (big triangles); none here. Memory per view at 1024^2:
4 + 12 + 4 + 12 + 12 + 1 B/px = 45 MB, plus the rasteriser's 8 B/px z-buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.geometry.normal_bake_gpu import vertex_normals_torch
from engine.texture.render_conditions import ViewRenders
from engine.texture.views import OrthoCamera
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_views import camera_params, rasterize_views_gpu
from triton_kernels.sample_texture import shade_pixels_gpu


def smooth_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals float32 [V, 3] of the position-welded mesh (the CPU
    ``smooth_normals`` without ``mesh.normals``): vertices that share a position share a normal."""
    _, inverse = torch.unique(vertices, dim=0, return_inverse=True)               # [V] -> welded id
    inverse = inverse.reshape(-1)
    n_welded = int(inverse.max()) + 1 if inverse.numel() else 0
    first = torch.full((n_welded,), vertices.shape[0], dtype=torch.int64, device=vertices.device)
    first.scatter_reduce_(0, inverse, torch.arange(vertices.shape[0], device=vertices.device), "amin")
    welded = vertex_normals_torch(vertices[first], inverse[faces.long()].to(torch.int32))
    return welded[inverse].contiguous()


def _device_tensor(a, dtype: torch.dtype, dev: torch.device) -> torch.Tensor | None:
    if a is None:
        return None
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=dev, dtype=dtype).contiguous()


@dataclass
class TexturedDeviceMesh:
    """A mesh with the attributes texturing needs, on ``kernel_device()`` (glTF conventions of TriMesh).

    vertices float32 [V, 3] (already scaled into the rig sphere), faces int32 [F, 3], normals float32
    [V, 3] unit smooth normals, uvs float32 [V, 2] glTF UVs or None, tangents float32 [V, 4] or None,
    normal_map uint8 [H, W, 3] tangent-space map or None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    normals: torch.Tensor
    uvs: torch.Tensor | None = None
    tangents: torch.Tensor | None = None
    normal_map: torch.Tensor | None = None

    def __post_init__(self) -> None:
        v, n_v = self.vertices, self.vertices.shape[0]
        checks = (("vertices", v, torch.float32, (n_v, 3)), ("faces", self.faces, torch.int32, None),
                  ("normals", self.normals, torch.float32, (n_v, 3)),
                  ("uvs", self.uvs, torch.float32, (n_v, 2)),
                  ("tangents", self.tangents, torch.float32, (n_v, 4)),
                  ("normal_map", self.normal_map, torch.uint8, None))
        for name, t, dtype, shape in checks:
            if t is None:
                continue
            bad_shape = shape is not None and tuple(t.shape) != shape
            if t.dtype != dtype or bad_shape or t.device != v.device:
                raise MeshError(f"textured device mesh: {name} is {t.dtype} {tuple(t.shape)} on {t.device}",
                                f"give {name} as {dtype}" + (f" {shape}" if shape else "")
                                + f" on {v.device}")
            setattr(self, name, t.contiguous())
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise MeshError(f"faces have shape {tuple(self.faces.shape)}", "give int32 faces [F, 3]")
        if self.normal_map is not None and (self.normal_map.ndim != 3 or self.normal_map.shape[2] != 3
                                            or 0 in self.normal_map.shape):
            raise MeshError(f"normal map has shape {tuple(self.normal_map.shape)}", "give uint8 [H, W, 3]")

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def has_normal_map(self) -> bool:
        return self.uvs is not None and self.tangents is not None and self.normal_map is not None

    @classmethod
    def from_trimesh(cls, mesh: TriMesh, device: torch.device | None = None) -> TexturedDeviceMesh:
        """Upload ``mesh`` (its uvs, tangents and normal map when present); smooth normals as the CPU
        ``smooth_normals``: ``mesh.normals`` when given, else welded area-weighted, computed on the device."""
        validate_mesh(mesh)
        dev = device or kernel_device()
        v = _device_tensor(mesh.vertices, torch.float32, dev)
        f = _device_tensor(mesh.faces, torch.int32, dev)
        uvs = mesh.uvs if mesh.uvs is not None and mesh.uvs.shape == (mesh.num_vertices, 2) else None
        tan = mesh.tangents if mesh.tangents is not None and mesh.tangents.shape == (mesh.num_vertices, 4) \
            else None
        nmap = None
        if mesh.normal_map is not None:
            nmap = np.asarray(mesh.normal_map)
            if nmap.dtype != np.uint8 or nmap.ndim != 3 or nmap.shape[2] < 3:
                raise MeshError(f"normal map is {nmap.dtype} {nmap.shape}", "give an 8-bit RGB map [H, W, 3]")
            nmap = nmap[..., :3]
        if mesh.normals is not None and mesh.normals.shape == mesh.vertices.shape:
            n = _device_tensor(mesh.normals, torch.float32, dev)
            n = n / torch.linalg.vector_norm(n, dim=1, keepdim=True).clamp_min(1e-12)
        else:
            n = smooth_normals_torch(v, f)
        return cls(v, f, n.contiguous(), _device_tensor(uvs, torch.float32, dev),
                   _device_tensor(tan, torch.float32, dev), _device_tensor(nmap, torch.uint8, dev))

    @classmethod
    def from_device_mesh(cls, mesh: DeviceMesh, uvs: torch.Tensor | None = None,
                         tangents: torch.Tensor | None = None, normal_map: torch.Tensor | None = None,
                         normals: torch.Tensor | None = None) -> TexturedDeviceMesh:
        """Wrap a ``DeviceMesh`` and optional attributes (moved to its device); smooth normals computed
        when ``normals`` is None."""
        dev = mesh.device
        n = smooth_normals_torch(mesh.vertices, mesh.faces) if normals is None \
            else _device_tensor(normals, torch.float32, dev)
        return cls(mesh.vertices, mesh.faces, n, _device_tensor(uvs, torch.float32, dev),
                   _device_tensor(tangents, torch.float32, dev), _device_tensor(normal_map, torch.uint8, dev))


@dataclass
class ViewRendersGPU:
    """Per-view renders on the device; K = len(cameras), R = resolution (see the module docstring).
    ``cam_params`` float64 [K, 13] are the rasteriser's camera rows (``camera_params``)."""

    cameras: tuple[OrthoCamera, ...]
    resolution: int
    cam_params: torch.Tensor
    face_id: torch.Tensor    # int32 [K, R, R]
    bary: torch.Tensor       # float32 [K, R, R, 3]
    depth: torch.Tensor      # float32 [K, R, R]
    position: torch.Tensor   # float32 [K, R, R, 3]
    normal: torch.Tensor | None  # float32 [K, R, R, 3]; None when rendered with shade=False
    mask: torch.Tensor       # bool [K, R, R]

    def to_host(self) -> ViewRenders:
        """Host copy as the CPU ``ViewRenders`` (normals zero when not shaded)."""
        nrm = self.normal if self.normal is not None else torch.zeros_like(self.position)
        return ViewRenders(self.cameras, self.resolution, self.face_id.cpu().numpy(),
                           self.depth.cpu().numpy(), self.position.cpu().numpy(), nrm.cpu().numpy(),
                           self.mask.cpu().numpy())


def render_views_gpu(mesh: TexturedDeviceMesh | TriMesh, cameras: Sequence[OrthoCamera], resolution: int,
                     normal_map: bool = True, shade: bool = True) -> ViewRendersGPU:
    """Render position / normal / depth maps of ``mesh`` (already scaled into the rig sphere) from all
    ``cameras`` at ``resolution`` x ``resolution``, on ``kernel_device()``; the device twin of
    ``render_conditions.render_views`` (same outputs, see the module docstring).

    normal_map: apply the mesh's tangent-space normal map (when it has one, with uvs and tangents).
    shade:      False skips the normals (``normal`` is None): positions and depth only (fusion precompute).
    """
    if len(cameras) == 0:
        raise ConfigError("no cameras given to render", "pass camera_rig() or a list of OrthoCamera")
    if not all(isinstance(c, OrthoCamera) for c in cameras):
        raise ConfigError("cameras must be OrthoCamera views", "pass camera_rig() or a list of OrthoCamera")
    dm = mesh if isinstance(mesh, TexturedDeviceMesh) else TexturedDeviceMesh.from_trimesh(mesh)
    if dm.faces.shape[0] == 0:
        raise MeshError("mesh has no faces", "give a mesh with at least one triangle")
    cams = camera_params(cameras, dm.device)                                     # float64 [K, 13]
    face_id, bary, depth = rasterize_views_gpu(dm.vertices, dm.faces, cams, resolution)
    use_map = normal_map and dm.has_normal_map
    position, normal = shade_pixels_gpu(face_id, bary, dm.vertices, dm.faces, dm.normals if shade else None,
                                        dm.uvs if use_map else None, dm.tangents if use_map else None,
                                        dm.normal_map if use_map else None)
    return ViewRendersGPU(tuple(cameras), int(resolution), cams, face_id, bary, depth, position, normal,
                          face_id >= 0)
