"""The mesh that flows between GPU geometry stages: torch tensors on the kernels' device.

Same convention as ``TriMesh`` (glTF: +Y up, CCW front faces). ``vertices`` float32 [V, 3] and ``faces``
int32 [F, 3] live on ``triton_kernels.numba_cuda.kernel_device()`` -- the GPU, or the CPU when numba-cuda
kernels run in the simulator (CI). Stages take and return ``DeviceMesh`` so a mesh crosses the PCIe bus
once on the way in (``from_trimesh``) and once on the way out (``to_trimesh``), not between stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh


@dataclass
class DeviceMesh:
    """vertices float32 [V, 3], faces int32 [F, 3] (contiguous, same device); ``meta`` as in TriMesh."""

    vertices: torch.Tensor
    faces: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or self.faces.ndim != 2 \
                or self.faces.shape[1] != 3:
            raise MeshError(f"device mesh has vertices {tuple(self.vertices.shape)} and faces "
                            f"{tuple(self.faces.shape)}", "pass vertices [V, 3] and faces [F, 3]")
        if self.vertices.device != self.faces.device:
            raise MeshError("device mesh vertices and faces are on different devices",
                            "move both to the same device")
        self.vertices = self.vertices.to(torch.float32).contiguous()
        self.faces = self.faces.to(torch.int32).contiguous()

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @classmethod
    def from_trimesh(cls, mesh: TriMesh, device: torch.device | str) -> DeviceMesh:
        """Geometry of ``mesh`` copied to ``device`` (attributes other than ``meta`` are not carried)."""
        return cls(torch.from_numpy(np.ascontiguousarray(mesh.vertices, np.float32)).to(device),
                   torch.from_numpy(np.ascontiguousarray(mesh.faces, np.int32)).to(device), dict(mesh.meta))

    def to_trimesh(self) -> TriMesh:
        """Host copy as a geometry-only TriMesh."""
        return TriMesh(self.vertices.detach().cpu().numpy(), self.faces.detach().cpu().numpy(),
                       meta=dict(self.meta))


def lexsort_rows(x: torch.Tensor) -> torch.Tensor:
    """int64 [N] permutation sorting the rows of x [N, C] lexicographically (stable 1-D sorts, radix on
    CUDA, last column first); equal rows keep their input order (like numpy's stable argsort)."""
    order = torch.arange(x.shape[0], device=x.device)
    for c in range(x.shape[1] - 1, -1, -1):
        order = order[torch.sort(x[order, c], stable=True).indices]
    return order


def first_of_groups(rows: torch.Tensor) -> torch.Tensor:
    """bool [N]: True where a row of the sorted rows [N, C] differs from the one before it."""
    first = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    first[1:] = (rows[1:] != rows[:-1]).any(dim=1)
    return first


def compact_vertices(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop unreferenced vertices, keeping their order (``np.unique(faces, return_inverse=True)``'s
    numbering): (float32 [V', 3], int32 [F, 3]) on the input's device."""
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1).long()] = True
    remap = torch.cumsum(used.to(torch.int64), 0) - 1
    return vertices[used].to(torch.float32).contiguous(), remap[faces.long()].to(torch.int32).contiguous()
