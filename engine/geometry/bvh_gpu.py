"""Triangle BVH on the GPU: the device twin of ``engine.geometry.bvh`` (paper 6.2, 6.4).

``build_bvh_gpu`` builds the same LBVH as ``build_bvh`` (same Morton keys, hierarchy and boxes; kernels
in ``triton_kernels/lbvh.py``) from torch tensors on ``kernel_device()`` -- the GPU, or the CPU when the
kernels run in numba's simulator (CI). Queries take and return torch tensors on that device and have the
host's semantics:

  ray_cast(origins [R, 3], directions [R, 3], t_max=inf, cull_backfaces=False)
      -> face_id int32 [R] (-1 miss), t float32 [R] (inf miss; distance along the normalised direction,
         0 < t <= t_max), bary float32 [R, 3] (weights of the face's v0, v1, v2; zeros on miss).
      Rays are answered in input order (camera rays already come in coherent image order).
  closest_point(points [P, 3], max_distance=inf)
      -> face_id int32 [P] (-1 when no face within max_distance), point float32 [P, 3] (NaN on miss),
         bary float32 [P, 3], distance float32 [P] (inf on miss). Queries run in Morton order.

Tolerance against the host: both traverse in float64 in the same node order, so face ids are equal except
on exact ties and t / distances agree to ~1e-12 relative (FMA contraction on the GPU is the only
difference); the tests require 1e-5. Validation costs one device-to-host sync per call.
Convention: glTF (CCW front faces; a ray sees the front when dot(face normal, direction) < 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.errors import AssetGenError, MeshError
from triton_kernels.lbvh import build_lbvh, closest_point_lbvh, ray_cast_lbvh
from triton_kernels.numba_cuda import kernel_device


def _query(x: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """[N, 3] float tensor -> contiguous float64 on ``device``; AssetGenError otherwise."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AssetGenError(f"BVH query '{name}' has shape {shape}, expected an [N, 3] tensor",
                            f"pass {name} as an [N, 3] float tensor")
    if not x.is_floating_point():
        raise AssetGenError(f"BVH query '{name}' has dtype {x.dtype}", f"pass {name} as float32")
    out = x.to(device=device, dtype=torch.float64).contiguous()
    if out.numel() and not bool(torch.isfinite(out).all()):
        raise AssetGenError(f"BVH query '{name}' contains NaN/Inf", f"pass finite {name}")
    return out


@dataclass
class GpuBvh:
    """A linear BVH on ``kernel_device()``; flat layout of ``engine.geometry.bvh`` (torch tensors).

    vertices float32 [V, 3], faces int32 [F, 3]; left, right int32 [F-1]; parent int32 [2F-1];
    aabb_lo, aabb_hi float32 [2F-1, 3]; leaf_face int32 [F].
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    parent: torch.Tensor
    aabb_lo: torch.Tensor
    aabb_hi: torch.Tensor
    leaf_face: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def tree(self) -> dict[str, torch.Tensor]:
        return {"left": self.left, "right": self.right, "parent": self.parent, "aabb_lo": self.aabb_lo,
                "aabb_hi": self.aabb_hi, "leaf_face": self.leaf_face}

    def ray_cast(self, origins: torch.Tensor, directions: torch.Tensor, t_max: float = math.inf,
                 cull_backfaces: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest hit per ray; see the module docstring for shapes and semantics."""
        o = _query(origins, "origins", self.device)
        d = _query(directions, "directions", self.device)
        if o.shape != d.shape:
            raise AssetGenError(f"{o.shape[0]} ray origins but {d.shape[0]} directions",
                                "pass one direction per origin")
        length = torch.linalg.vector_norm(d, dim=1, keepdim=True)             # [R, 1]
        if d.numel() and not bool((length > 0).all()):
            raise AssetGenError("a ray direction has zero length", "pass non-zero directions")
        if not t_max > 0:
            raise AssetGenError(f"t_max={t_max} must be > 0", "pass a positive t_max (or inf)")
        return ray_cast_lbvh(self.tree, self.vertices, self.faces, o, (d / length).contiguous(),
                             float(t_max), bool(cull_backfaces))

    def closest_point(self, points: torch.Tensor, max_distance: float = math.inf
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact closest surface point per query; see the module docstring for shapes and semantics."""
        p = _query(points, "points", self.device)
        if not max_distance >= 0:
            raise AssetGenError(f"max_distance={max_distance} must be >= 0", "pass a distance >= 0 (or inf)")
        return closest_point_lbvh(self.tree, self.vertices, self.faces, p, float(max_distance))


def build_bvh_gpu(vertices: torch.Tensor, faces: torch.Tensor) -> GpuBvh:
    """Build an LBVH over a triangle mesh on ``kernel_device()``.

    vertices float32 [V, 3] (finite), faces int32 [F, 3] with F >= 1 and indices in [0, V) -- torch
    tensors (moved to the kernel device and converted when needed). Degenerate faces are allowed.
    Raises MeshError on bad input (one device-to-host sync for the checks).
    """
    if not isinstance(vertices, torch.Tensor) or not isinstance(faces, torch.Tensor):
        raise MeshError("GPU BVH input must be torch tensors",
                        "pass torch.from_numpy(vertices), torch.from_numpy(faces) or a DeviceMesh's")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshError(f"BVH input has vertices {tuple(vertices.shape)} and faces {tuple(faces.shape)}",
                        "pass vertices [V, 3] and faces [F, 3]")
    if faces.shape[0] == 0:
        raise MeshError("mesh for the BVH has no faces", "give a mesh with at least one triangle")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise MeshError(f"BVH faces have dtype {faces.dtype}", "pass integer (int32) face indices")
    if faces.shape[0] >= 2**31:
        raise MeshError(f"mesh has {faces.shape[0]} faces", "split it below 2^31 faces")
    dev = kernel_device()
    verts = vertices.to(device=dev, dtype=torch.float32).contiguous()
    tris = faces.to(device=dev, dtype=torch.int32).contiguous()
    stats = torch.stack([torch.isfinite(verts).all().to(torch.int64), tris.min().to(torch.int64),
                         tris.max().to(torch.int64)]).cpu()
    if not bool(stats[0]):
        raise MeshError("mesh for the BVH has vertices with NaN/Inf positions",
                        "repair or re-export the mesh with finite coordinates")
    if int(stats[1]) < 0 or int(stats[2]) >= verts.shape[0]:
        raise MeshError(f"mesh for the BVH has face indices outside [0, {verts.shape[0]})",
                        "re-export the mesh; its index buffer is corrupt")
    tree = build_lbvh(verts, tris)
    return GpuBvh(verts, tris, tree["left"], tree["right"], tree["parent"], tree["aabb_lo"],
                  tree["aabb_hi"], tree["leaf_face"])
