"""Tangent-space normal-map baking on the GPU: the device twin of ``normal_bake.bake_normal_map`` (paper 6.4).

Same stages and maths as the host baker (its docstring is the specification and its output the reference):
  1. G-buffer: ``triton_kernels.rasterize_uv.rasterize_uv_gpu`` (coverage identical to the host's).
  2-5. ``triton_kernels.normal_bake_texels.bake_texels``, one thread per texel (a 256-thread block is a 16 x
     16 texel tile, so a warp's closest-point queries are neighbours on the surface): interpolate position /
     normal / tangent in float32 as ``rasterize.interpolate`` does, build the shading frame in float64 as
     ``tangents.shading_frame`` does, apply the UV-reliability filter (per-face flags from
     ``normal_bake.unreliable_uv_faces``, computed on the host from the small low mesh), find the closest
     dense point within the distance limit (``triton_kernels.lbvh.closest_point_device``), take the smooth
     dense normal there and project it on (T, B, N). Status per texel: 0 empty, 1 baked, 2 unreliable UV /
     frame (neutral), 3 beyond the distance limit (neutral).
  6. Dilation and the uint8 encode with torch ops on the device (no host round trip per round; rounds
     that grow nothing are no-ops, so running all of them equals the host's early exit).
Differences from the host are rounding only (FMA contraction in the interpolation, float32 sums in the
dilation): the tests require >= 99.5 % of texels within 1 RGB level.

Work: one raster of the low mesh, size^2 texel threads each with one O(log F_dense) closest-point walk,
and ``dilate`` x 8 shifted adds over the float32 [3, size, size] image. Device memory at 2048^2:
face_id 16 MB + bary 48 MB + image 48 MB + dilation temporaries ~100 MB, plus the dense BVH (~68 B/face).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError, MeshError
from engine.geometry.bvh_gpu import GpuBvh, build_bvh_gpu
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.geometry.normal_bake import BakeReport, _check_low, dense_normals, unreliable_uv_faces
from triton_kernels.normal_bake_texels import BAKED as BAKED  # status codes, re-exported
from triton_kernels.normal_bake_texels import EMPTY as EMPTY
from triton_kernels.normal_bake_texels import REJECTED_DISTANCE as REJECTED_DISTANCE
from triton_kernels.normal_bake_texels import REJECTED_UV as REJECTED_UV
from triton_kernels.normal_bake_texels import bake_texels
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_uv import rasterize_uv_gpu


def vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals float32 [V, 3] on the mesh's device (``mesh.vertex_normals``
    in float64 torch ops; zero-area neighbourhoods get +Y)."""
    v = vertices.to(torch.float64)
    f = faces.to(torch.int64)
    fn = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])    # [F, 3]
    vn = torch.zeros_like(v)
    for k in range(3):
        vn.index_add_(0, f[:, k], fn)
    length = torch.linalg.vector_norm(vn, dim=1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64, device=v.device)
    return torch.where(length > 1e-30, vn / length.clamp_min(1e-30), up).to(torch.float32).contiguous()


def dilate_normals_torch(image: torch.Tensor, valid: torch.Tensor, rounds: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``normal_bake.dilate_normals`` on the device: image float32 [H, W, 3], valid bool [H, W]."""
    vals = image.permute(2, 0, 1)                                          # [3, H, W]
    ok = valid
    h, w = ok.shape
    for _ in range(rounds):
        pad_v = F.pad(vals * ok, (1, 1, 1, 1))                             # [3, H+2, W+2]
        pad_m = F.pad(ok.to(torch.float32), (1, 1, 1, 1))
        acc = torch.zeros_like(vals)
        cnt = torch.zeros((h, w), dtype=torch.float32, device=vals.device)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                acc += pad_v[:, dy:dy + h, dx:dx + w]
                cnt += pad_m[dy:dy + h, dx:dx + w]
        grow = ~ok & (cnt > 0)
        unit = acc / torch.linalg.vector_norm(acc, dim=0, keepdim=True).clamp_min(1e-30)
        vals = torch.where(grow, unit, vals)
        ok = ok | grow
    return vals.permute(1, 2, 0), ok


def _check_args(size: int, max_distance_fraction: float, dilate: int) -> None:
    if int(size) != size or not 16 <= size <= 16384:
        raise ConfigError(f"normal map size {size} out of range", "use an integer in [16, 16384]")
    if not (np.isfinite(max_distance_fraction) and max_distance_fraction > 0):
        raise ConfigError(f"bake distance fraction {max_distance_fraction} is not > 0", "use e.g. 0.01")
    if int(dilate) != dilate or dilate < 0:
        raise ConfigError(f"dilation {dilate} is not a count >= 0", "use e.g. 8 texels")


def _dense_on_device(dense: TriMesh | DeviceMesh, dense_bvh: GpuBvh | None
                     ) -> tuple[GpuBvh, torch.Tensor]:
    """(BVH of the dense mesh, its smooth vertex normals float32 [V, 3]) on kernel_device()."""
    dev = kernel_device()
    if isinstance(dense, DeviceMesh):
        bvh = dense_bvh if dense_bvh is not None else build_bvh_gpu(dense.vertices, dense.faces)
        return bvh, vertex_normals_torch(bvh.vertices, bvh.faces)
    if not isinstance(dense, TriMesh):
        raise MeshError(f"dense mesh is a {type(dense).__name__}", "pass a TriMesh or a DeviceMesh")
    validate_mesh(dense, "dense mesh")
    if dense_bvh is None:
        dense_bvh = build_bvh_gpu(torch.from_numpy(dense.vertices), torch.from_numpy(dense.faces))
    if dense.normals is not None and np.shape(dense.normals) == (dense.num_vertices, 3):
        return dense_bvh, torch.from_numpy(dense_normals(dense)).to(dev).contiguous()
    # no normals of its own: the host's area-weighted ones, computed on the device (host np.add.at over
    # 1M faces costs ~0.3 s)
    return dense_bvh, vertex_normals_torch(dense_bvh.vertices, dense_bvh.faces)


def bake_normal_map_torch(low: TriMesh, dense: TriMesh | DeviceMesh, size: int = 1024,
                          max_distance_fraction: float = 0.01, dilate: int = 8,
                          dense_bvh: GpuBvh | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The bake, staying on the device: (uint8 [size, size, 3] RGB map, int64 [4] texel counts per
    status EMPTY, BAKED, REJECTED_UV, REJECTED_DISTANCE), both on kernel_device(). No host sync after
    the inputs are uploaded. Arguments as ``bake_normal_map_gpu``."""
    _check_low(low)
    _check_args(size, max_distance_fraction, dilate)
    size = int(size)
    dev = kernel_device()
    bvh, d_normals = _dense_on_device(dense, dense_bvh)
    up = {k: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)
          for k, a in (("v", low.vertices), ("n", low.normals), ("t", low.tangents), ("uv", low.uvs))}
    low_f = torch.from_numpy(low.faces).to(dev)
    face_bad = torch.from_numpy(unreliable_uv_faces(low).astype(np.uint8)).to(dev)
    face_id, bary = rasterize_uv_gpu(up["uv"], low_f, size)                 # [S, S], [S, S, 3]
    max_d2 = (max_distance_fraction * low.diagonal()) ** 2
    tree = {"leaf_face": bvh.leaf_face, "left": bvh.left, "right": bvh.right, "aabb_lo": bvh.aabb_lo,
            "aabb_hi": bvh.aabb_hi}
    image, status = bake_texels(face_id, bary, up["v"], up["n"], up["t"], low_f, face_bad, bvh.vertices,
                                bvh.faces, d_normals, tree, max_d2)
    image = image.view(size, size, 3)
    image, valid = dilate_normals_torch(image, face_id >= 0, int(dilate))
    neutral = torch.tensor([0.0, 0.0, 1.0], device=dev)
    image = torch.where(valid[..., None], image, neutral)
    rgb = torch.round((image.to(torch.float64) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    counts = torch.bincount(status.to(torch.int64), minlength=4)
    return rgb, counts


def bake_normal_map_gpu(low: TriMesh, dense: TriMesh | DeviceMesh, size: int = 1024,
                        max_distance_fraction: float = 0.01, dilate: int = 8,
                        dense_bvh: GpuBvh | None = None) -> tuple[np.ndarray, BakeReport]:
    """Bake the dense mesh's normals into a tangent-space normal map on ``low``'s UV atlas, on the GPU.

    low: TriMesh with uvs float32 [V, 2] (glTF), normals float32 [V, 3], tangents float32 [V, 4];
    dense: TriMesh (its ``normals`` if present, else smooth area-weighted ones) or DeviceMesh (smooth
        area-weighted normals computed on the device);
    size, max_distance_fraction, dilate: as ``normal_bake.bake_normal_map``; dense_bvh:
        ``build_bvh_gpu(dense vertices, faces)`` to reuse across calls.
    Returns (uint8 [size, size, 3] RGB normal map, row 0 = v in [0, 1/size), BakeReport) on the host;
    ``seconds`` is wall time including uploads and the final copy.
    """
    t0 = time.perf_counter()
    rgb, counts = bake_normal_map_torch(low, dense, size, max_distance_fraction, dilate, dense_bvh)
    out = rgb.cpu().numpy()
    _, baked, rejected_uv, rejected_distance = (int(x) for x in counts.cpu())
    report = BakeReport(baked + rejected_uv + rejected_distance, rejected_distance, rejected_uv,
                        time.perf_counter() - t0)
    return out, report
