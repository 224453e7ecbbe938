"""Floater removal on the GPU: same semantics as ``engine.geometry.floaters.remove_floaters`` (components
over shared vertices, drop those below ``min_area_fraction`` of the total area, always keep the largest).

Connected components: lock-free union-find over vertices
(``triton_kernels.connected_components.mesh_vertex_roots``: one numba-cuda thread per face, hooking the
larger root under the smaller with atomic CAS, then one pointer-jumping pass so every vertex holds its
root). A root is the smallest vertex index of its component, so dense labels ``unique(root)`` number
components in order of their smallest vertex (scipy's order among the components that have faces).
Component areas: float64 scatter-add of face areas over the face labels.

Layouts: parent int32 [V]; faces int32 [F, 3] on ``kernel_device()``. Cost floor: the union reads the
faces once (12 B/face) plus a few parent reads per edge; the areas read 3 float32 positions per corner:
~60 B/face, ~0.03 ms at 1M faces on an H100. Host syncs: the removed-component count and the kept face
count. The CPU reference of the labels is ``component_labels`` in floaters.py (scipy).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.floaters import _keep_faces, component_labels
from engine.geometry.mesh import TriMesh, validate_mesh
from triton_kernels.connected_components import mesh_vertex_roots
from triton_kernels.numba_cuda import kernel_device

REFERENCE = component_labels


def component_labels_device(faces: torch.Tensor, num_vertices: int) -> tuple[int, torch.Tensor]:
    """(number of components that have faces, dense per-face label int64 [F]) of faces int32 [F, 3] on
    the kernel device; labels follow the components' smallest vertex index. ValueError on other faces."""
    parent = mesh_vertex_roots(faces, num_vertices)
    roots, label = torch.unique(parent[faces[:, 0].long()], return_inverse=True)
    return int(roots.shape[0]), label


def _keep_mask(vertices: torch.Tensor, faces: torch.Tensor, fraction: float) -> tuple[torch.Tensor, int]:
    """(bool [F] faces to keep, removed component count)."""
    n, label = component_labels_device(faces, vertices.shape[0])
    v = vertices.to(torch.float64)
    f = faces.long()
    cross = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])     # [F, 3]
    area = 0.5 * torch.linalg.vector_norm(cross, dim=1)
    comp_area = torch.zeros(n, dtype=torch.float64, device=faces.device).index_add_(0, label, area)
    keep = comp_area >= fraction * comp_area.sum()
    keep[torch.argmax(comp_area)] = True
    return keep[label], int((~keep).sum())


def remove_floaters_gpu(mesh: TriMesh | DeviceMesh, min_area_fraction: float = 0.01
                        ) -> tuple[TriMesh | DeviceMesh, int]:
    """Remove connected components with area below ``min_area_fraction`` x total area, on the GPU.

    mesh: TriMesh (host; per-vertex attributes are compacted alongside, as ``remove_floaters`` does) or
        DeviceMesh (float32 [V, 3] / int32 [F, 3] on ``kernel_device()``).
    Returns (mesh of the input's type without the dropped components and unreferenced vertices, vertex
    order preserved; number of removed components). The largest component is always kept.
    """
    if not (0.0 <= min_area_fraction < 1.0):
        raise ConfigError(f"floater area fraction {min_area_fraction} is outside [0, 1)",
                          "use a fraction such as 0.01")
    if isinstance(mesh, TriMesh):
        validate_mesh(mesh)
        dev = kernel_device()
        faces = torch.from_numpy(np.ascontiguousarray(mesh.faces)).to(dev)
        keep, removed = _keep_mask(torch.from_numpy(mesh.vertices).to(dev), faces, min_area_fraction)
        return (mesh.copy() if removed == 0 else _keep_faces(mesh, keep.cpu().numpy())), removed
    if mesh.num_faces == 0:
        raise MeshError("mesh has no faces", "give a mesh with at least one triangle")
    keep, removed = _keep_mask(mesh.vertices, mesh.faces, min_area_fraction)
    if removed == 0:
        return DeviceMesh(mesh.vertices.clone(), mesh.faces.clone(), dict(mesh.meta)), 0
    faces = mesh.faces[keep]
    used = torch.zeros(mesh.num_vertices, dtype=torch.bool, device=faces.device)
    used[faces.reshape(-1).long()] = True
    remap = torch.cumsum(used.to(torch.int64), 0) - 1
    return DeviceMesh(mesh.vertices[used], remap[faces.long()].to(torch.int32), dict(mesh.meta)), removed
