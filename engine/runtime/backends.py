"""One registry that picks each stage's implementation, once, when the engine is built.

Every geometry / texture operation of the pipeline has a CPU reference (always available: the fallback and
the oracle of the parity tests) and, where one exists, a device implementation (Triton / numba-cuda
kernels). ``select_backends(device)`` resolves the whole table at once and returns a frozen ``Backends``;
the stages call ``backends.<op>(...)`` and never ask which device they run on. Implementations are imported
where used (optional dependencies: a missing one names the extra to install when the engine is built).

Each operation has one signature for both implementations (``Backends`` documents them); the meshes a
stage passes between operations are whatever ``stage_mesh`` makes of a host ``TriMesh``: itself on the
CPU, a ``DeviceMesh`` on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from engine.config import Device, HiddenFaces, InpaintFill, Placement


# ----------------------------------------------------------------------------------------- CPU reference
def _cpu_stage_mesh(mesh):
    return mesh


def _cpu_tensor_mesh(verts, faces):
    from engine.geometry.mesh import TriMesh

    return TriMesh(verts.detach().float().cpu().numpy(), faces.detach().cpu().numpy().astype(np.int32))


def _cpu_shape_field(mask: np.ndarray, resolution: int):
    from engine.geometry.silhouette_prior import sdf_from_mask

    return sdf_from_mask(mask, resolution=resolution, device=None)


def _cpu_extract(sdf):
    from engine.geometry.marching_cubes import extract_mesh

    return extract_mesh(sdf)


def _cpu_floaters(mesh, fraction: float):
    from engine.geometry.floaters import remove_floaters

    return remove_floaters(mesh, fraction)


def _cpu_simplify(mesh, faces: int, placement: Placement):
    from engine.geometry.simplify import Placement as SimplifyPlacement
    from engine.geometry.simplify import simplify_qem

    return simplify_qem(mesh, faces, SimplifyPlacement(placement.value))


def _cpu_hidden_faces(mesh, views: int, resolution: int, method: HiddenFaces):
    from engine.geometry.hidden_faces import HiddenFaceMethod, remove_hidden_faces

    return remove_hidden_faces(mesh, views, resolution, HiddenFaceMethod(method.value))


def _cpu_normal_bake(low, dense, size: int, max_distance: float):
    from engine.geometry.normal_bake import bake_normal_map

    return bake_normal_map(low, dense, size=size, max_distance_fraction=max_distance)


def _cpu_watertight(mesh, resolution: int):
    from engine.geometry.watertight import watertight_mesh

    return watertight_mesh(mesh, resolution)


def _cpu_fusion_plan(mesh, cameras, atlas_size: int, view_resolution: int, masks, min_incidence: float,
                     neighbours: int, fill: InpaintFill = InpaintFill.KNN, harmonise=None):
    """The CPU reference fuses in one step: the plan only carries its arguments."""
    return dict(mesh=mesh, cameras=list(cameras), atlas_size=atlas_size, masks=masks,
                min_incidence=min_incidence, neighbours=neighbours, harmonic=fill is InpaintFill.HARMONIC,
                harmonise=harmonise)


def _cpu_coverage(mesh, cameras, resolution: int) -> np.ndarray:
    from engine.texture.render_conditions import render_views

    return render_views(mesh, list(cameras), resolution).mask


def _cpu_fuse(plan, images) -> tuple[np.ndarray, dict]:
    from engine.texture.backproject import fuse_views

    if not isinstance(images, np.ndarray):       # TextureGen's views: a uint8 tensor on the CPU here
        images = images.cpu().numpy()
    p = plan
    return fuse_views(p["mesh"], p["cameras"], images, p["atlas_size"], masks=p["masks"],
                      min_incidence=p["min_incidence"], neighbours=p["neighbours"], harmonic=p["harmonic"],
                      harmonise=p.get("harmonise"))


# -------------------------------------------------------------------------------------- device (CUDA)
def _gpu_stage_mesh(mesh):
    from engine.geometry.device_mesh import DeviceMesh
    from triton_kernels.numba_cuda import kernel_device

    return mesh if isinstance(mesh, DeviceMesh) else DeviceMesh.from_trimesh(mesh, kernel_device())


def _gpu_tensor_mesh(verts, faces):
    import torch

    from engine.geometry.device_mesh import DeviceMesh
    from triton_kernels.numba_cuda import kernel_device

    dev = kernel_device()
    return DeviceMesh(verts.detach().to(dev, torch.float32).contiguous(),
                      faces.detach().to(dev).int().contiguous())


def _gpu_shape_field(mask: np.ndarray, resolution: int):
    """``sdf_from_mask(..., device="cuda")`` in its two parts (substeps of the serial profile): the host's
    depth profile, then the field built where marching cubes reads it."""
    from engine.geometry.sdf_grid import SdfGrid
    from engine.geometry.silhouette_prior import BOUNDS, first_order_field, silhouette_profile
    from profiling.stage_timer import substep

    with substep("silhouette profile (host)"):
        coords, h, norm = silhouette_profile(mask, resolution)
    with substep("field on the device"):
        values = first_order_field(coords, h, norm, "cuda")
    return SdfGrid(values, -BOUNDS, BOUNDS)


def _gpu_extract(sdf):
    import torch

    from engine.geometry.marching_cubes import extract_mesh_device
    from engine.geometry.sdf_grid import SdfGrid

    if isinstance(sdf.values, np.ndarray):
        sdf = SdfGrid(torch.from_numpy(np.ascontiguousarray(sdf.values)).cuda(), sdf.lo, sdf.hi)
    return extract_mesh_device(sdf)           # weld + compaction on the device, same mesh as extract_mesh


def _gpu_floaters(mesh, fraction: float):
    from engine.geometry.floaters_gpu import remove_floaters_gpu

    return remove_floaters_gpu(_gpu_stage_mesh(mesh), fraction)


def _gpu_simplify(mesh, faces: int, placement: Placement):
    from engine.geometry.simplify import Placement as SimplifyPlacement
    from engine.geometry.simplify_gpu import simplify_qem_gpu

    return simplify_qem_gpu(mesh, faces, SimplifyPlacement(placement.value))


def _gpu_hidden_faces(mesh, views: int, resolution: int, method: HiddenFaces):
    from engine.geometry.hidden_faces import HiddenFaceMethod
    from engine.geometry.hidden_faces_gpu import remove_hidden_faces_gpu

    return remove_hidden_faces_gpu(mesh, views, resolution, HiddenFaceMethod(method.value))


def _gpu_normal_bake(low, dense, size: int, max_distance: float):
    from engine.geometry.normal_bake_gpu import bake_normal_map_gpu

    return bake_normal_map_gpu(low, dense, size=size, max_distance_fraction=max_distance)


def _gpu_watertight(mesh, resolution: int):
    from engine.geometry.watertight_gpu import watertight_mesh_gpu

    return _gpu_stage_mesh(watertight_mesh_gpu(mesh, resolution, mc="sparse"))


def _gpu_fusion_plan(mesh, cameras, atlas_size: int, view_resolution: int, masks, min_incidence: float,
                     neighbours: int, fill: InpaintFill = InpaintFill.KNN, harmonise=None):
    """``fill`` HARMONIC: the k-nearest fill, then the harmonic fill of the GPU fusion (its graph and
    matrix planned here, ``engine.texture.harmonic_fill_gpu``). ``harmonise``:
    ``view_harmonisation.HarmoniseConfig`` or None (off)."""
    from engine.texture.fusion_gpu import FusionConfig, plan_fusion

    cfg = FusionConfig(min_incidence=min_incidence, neighbours=neighbours, harmonise=harmonise,
                       harmonic=fill is InpaintFill.HARMONIC)
    return plan_fusion(mesh, cameras, atlas_size, view_resolution, "cuda", cfg, pixel_mask=masks)


def _gpu_coverage(mesh, cameras, resolution: int) -> np.ndarray:
    from engine.texture.render_conditions_gpu import render_views_gpu

    return render_views_gpu(mesh, list(cameras), resolution).mask.cpu().numpy()


def _gpu_fuse(plan, images) -> tuple[np.ndarray, dict]:
    from engine.texture.fusion_gpu import fuse_views_gpu

    atlas, stats = fuse_views_gpu(plan, images)
    stats["uv_overlap"] = plan.uv_overlap
    return atlas.cpu().numpy(), stats


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Backends:
    """The implementation of every operation for one device. Signatures (same on every device):

    stage_mesh(TriMesh) -> mesh the other operations take (TriMesh on CPU, DeviceMesh on CUDA)
    tensor_mesh(verts [V, 3], faces [F, 3] torch) -> stage mesh (a network's decoded surface)
    shape_field(mask bool [S, S], resolution) -> SdfGrid
    extract(SdfGrid) -> stage mesh                       marching cubes
    floaters(mesh, min_area_fraction) -> (mesh, removed)
    simplify(mesh, faces, Placement) -> (mesh, SimplifyReport)
    hidden_faces(mesh, views, resolution, HiddenFaces) -> (TriMesh, report)
    normal_bake(low TriMesh with uvs/tangents, dense mesh, size, max_distance) -> (uint8 map, report)
    watertight(TriMesh, resolution) -> stage mesh        repair of a broken input (paper 5.1)
    coverage(rig TriMesh, cameras, resolution) -> bool [K, R, R] numpy: pixels the mesh covers per view
    fusion_plan(rig TriMesh, cameras, atlas_size, view_resolution, masks, min_incidence, neighbours,
                fill InpaintFill, harmonise HarmoniseConfig | None = None) -> plan
    fuse(plan, views uint8 [K, R, R, 3], numpy or a torch tensor on any device) -> (atlas uint8 [S, S, 3]
        on the host, stats)
    """

    device: Device
    stage_mesh: Callable[..., Any]
    tensor_mesh: Callable[..., Any]
    shape_field: Callable[..., Any]
    extract: Callable[..., Any]
    floaters: Callable[..., Any]
    simplify: Callable[..., Any]
    hidden_faces: Callable[..., Any]
    normal_bake: Callable[..., Any]
    watertight: Callable[..., Any]
    coverage: Callable[..., Any]
    fusion_plan: Callable[..., Any]
    fuse: Callable[..., Any]

    def names(self) -> dict[str, str]:
        """Operation -> implementing function (for notes and tests)."""
        return {f.name: getattr(self, f.name).__name__ for f in fields(self) if f.name != "device"}


_OPS = ("stage_mesh", "tensor_mesh", "shape_field", "extract", "floaters", "simplify", "hidden_faces",
        "normal_bake", "watertight", "coverage", "fusion_plan", "fuse")
REGISTRY: dict[Device, dict[str, Callable[..., Any]]] = {
    Device.CPU: {op: globals()[f"_cpu_{op}"] for op in _OPS},
    Device.CUDA: {op: globals()[f"_gpu_{op}"] for op in _OPS},
}


def reference_backends() -> Backends:
    """The CPU reference of every operation."""
    return Backends(Device.CPU, **REGISTRY[Device.CPU])


def select_backends(device: Device) -> Backends:
    """Every operation's implementation for ``device``, resolved once. On CUDA the GPU dependencies are
    checked here (a missing one raises MissingDependencyError naming the ``gpu`` extra)."""
    if device is Device.CUDA:
        from triton_kernels.numba_cuda import cuda_module, kernel_device

        cuda_module()
        kernel_device()
    return Backends(device, **REGISTRY[device])
