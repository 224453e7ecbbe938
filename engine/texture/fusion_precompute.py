"""Mesh- and rig-only part of texture fusion, on the GPU (paper 7.4 and 8.2: "precompute backproject data").

Everything here depends on the processed mesh and the camera rig, never on the generated colours, so the
scheduler runs ``precompute_fusion`` while TextureGen's diffusion runs; the colour-dependent steps
(anisotropic sampling, blending, inpainting) then only read these tensors. Semantics are those of the CPU
``engine.texture.backproject`` (its ``texel_geometry``, ``edge_mask`` and ``visibility`` are the
references of the parity tests):

  texel geometry  UV rasterisation of the atlas (``rasterize_uv_gpu``, coverage identical to the host's):
                  face id, barycentrics, world position and unit smooth normal of every valid texel.
                  Texel (r, c) centre at u = (c + .5) / S, v = (r + .5) / S.
  view renders    z-buffered positions and depth of the K views (``render_views_gpu`` without shading,
                  or the condition renders when they were made at the fusion resolution).
  edge mask       foreground pixels with a 4-neighbour that is background or whose position differs by
                  more than ``edge_threshold_px`` pixel widths (2 h / R each) -- ``edge_mask``.
  projection      pixel coordinates (x right, y down, centres at +.5) and depth of every valid texel in
                  every view, float64 maths rounded to float32 as ``OrthoCamera.world_to_pixel``.
  visibility      inside the image, depth <= z-buffer at the containing pixel + ``depth_tolerance_px``
                  pixel widths, and all 4 bilinear taps (clamp-to-edge) on foreground, non-edge pixels.
  incidence       I_k = max(0, n . d_k) where visible, else 0; values below ``min_incidence`` become 0.

Layouts (S = atlas size, N = valid texels, K views, R = view resolution), all on ``kernel_device()``:
per-texel data are packed over the N valid texels in row-major texel order (``texel_index`` int64 [N]
holds r * S + c; ``packed_index`` int32 [S, S] maps a texel to its row, -1 outside every chart).
At S = 2048 with ~60 % coverage (N ~ 2.5M) and K = 10: pixel [K, N, 2] 200 MB, incidence [K, N] 100 MB,
visible [K, N] 25 MB -- 40 % less than dense [K, S, S] maps.

Also computed here: ``footprint``, the per-(view, texel) anisotropic filter parameters of
``engine.texture.anisotropic.precompute_footprints`` (finite-difference Jacobian, SVD, mip level, taps).
Slot filled by another step (kept here so one object travels from the precompute worker):
``inpaint_index`` (the inpainting step's spatial index over texels).

Host syncs: one to count valid texels (sizes the packed arrays), one in the view rasteriser, one for
the input checks. Work: a few dozen elementwise passes over [K, N] (~4 GB of traffic at S = 2048).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError, InputImageError, MeshError
from engine.geometry.mesh import TriMesh
from engine.texture.anisotropic import AnisoConfig, Footprint, precompute_footprints
from engine.texture.render_conditions_gpu import TexturedDeviceMesh, ViewRendersGPU, render_views_gpu
from engine.texture.views import OrthoCamera
from triton_kernels.rasterize_uv import rasterize_uv_gpu


@dataclass(frozen=True)
class FusionPrecomputeConfig:
    """Tolerances of the mesh-only fusion step (defaults: those of ``backproject.visibility``/``edge_mask``).

    depth_tolerance_px: allowed depth excess over the z-buffer, in pixel widths of each view (3 absorbs
                        the depth slope of surfaces up to ~70 deg within the half-pixel offset).
    edge_threshold_px:  position jump between 4-neighbour pixels that marks an edge, in pixel widths.
    min_incidence:      incidences below this become 0 (``fuse_views`` uses 0.05; 0 keeps all).
    footprints:         also compute the anisotropic filter footprints
                        (``anisotropic.precompute_footprints``).
    aniso:              their settings (paper: LOD bias -0.5, up to 8 taps).
    """

    depth_tolerance_px: float = 3.0
    edge_threshold_px: float = 4.0
    min_incidence: float = 0.0
    footprints: bool = True
    aniso: AnisoConfig = AnisoConfig()

    def __post_init__(self) -> None:
        for name in ("depth_tolerance_px", "edge_threshold_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"fusion {name} = {value} must be finite and >= 0", "use e.g. 3.0")
        if not 0.0 <= self.min_incidence < 1.0:
            raise ConfigError(f"fusion min_incidence = {self.min_incidence} must be in [0, 1)",
                              "use e.g. 0.05")


@dataclass
class TexelGeometryGPU:
    """Surface under each atlas texel, packed over the N valid texels (see the module docstring).

    face_id int32 [S, S] (-1 outside charts), valid bool [S, S], packed_index int32 [S, S] (-1 invalid),
    texel_index int64 [N] (r * S + c), bary float32 [N, 3], position float32 [N, 3] world,
    normal float32 [N, 3] unit smooth normal.
    """

    face_id: torch.Tensor
    valid: torch.Tensor
    packed_index: torch.Tensor
    texel_index: torch.Tensor
    bary: torch.Tensor
    position: torch.Tensor
    normal: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.face_id.shape[0])

    @property
    def count(self) -> int:
        return int(self.texel_index.shape[0])

    def scatter(self, packed: torch.Tensor, fill: float = 0.0, channels: bool = False) -> torch.Tensor:
        """Dense atlas map of a packed array: [..., N] -> [..., S, S], or with ``channels``
        [..., N, C] -> [..., S, S, C]; ``fill`` outside the charts."""
        n, s = self.count, self.size
        axis = packed.ndim - (2 if channels else 1)
        if axis < 0 or packed.shape[axis] != n:
            raise ConfigError(f"packed array {tuple(packed.shape)} has no axis of {n} texels at {axis}",
                              "pass [..., N] or [..., N, C] with channels=True")
        lead, tail = tuple(packed.shape[:axis]), tuple(packed.shape[axis + 1:])
        out = torch.full(lead + (s * s,) + tail, fill, dtype=packed.dtype, device=packed.device)
        out[(slice(None),) * len(lead) + (self.texel_index,)] = packed
        return out.view(lead + (s, s) + tail)


@dataclass
class FusionPrecompute:
    """The mesh + rig data of texture fusion (see the module docstring), on ``kernel_device()``.

    cameras, cam_params float64 [K, 13] (``camera_params``), priors float32 [K] (w_k), view_resolution R,
    texels (``TexelGeometryGPU``), pixel float32 [K, N, 2] (x right, y down, pixel centres at +.5),
    visible bool [K, N], incidence float32 [K, N] in [0, 1], view_mask bool [K, R, R] (foreground),
    edges bool [K, R, R], view_depth float32 [K, R, R] (z-buffer, inf background), config.
    footprint: ``anisotropic.Footprint`` over [K, N] (None when ``config.footprints`` is off);
    inpaint_index: the inpainting step's spatial index, filled by that step (None until then).
    """

    cameras: tuple[OrthoCamera, ...]
    cam_params: torch.Tensor
    priors: torch.Tensor
    view_resolution: int
    texels: TexelGeometryGPU
    pixel: torch.Tensor
    visible: torch.Tensor
    incidence: torch.Tensor
    view_mask: torch.Tensor
    edges: torch.Tensor
    view_depth: torch.Tensor
    config: FusionPrecomputeConfig
    footprint: Footprint | None = None
    inpaint_index: object | None = None

    @property
    def seen(self) -> torch.Tensor:
        """bool [N]: texels with a positive incidence in at least one view (the rest need inpainting)."""
        return (self.incidence > 0).any(dim=0)

    def incidence_dense(self) -> torch.Tensor:
        """float32 [K, S, S] incidence maps (the CPU ``visibility`` layout; 0 outside the charts)."""
        return self.texels.scatter(self.incidence)


def _as_device_mesh(mesh: TexturedDeviceMesh | TriMesh) -> TexturedDeviceMesh:
    if isinstance(mesh, TexturedDeviceMesh):
        return mesh
    if isinstance(mesh, TriMesh):
        return TexturedDeviceMesh.from_trimesh(mesh)
    raise MeshError(f"cannot fuse a texture onto a {type(mesh).__name__}",
                    "pass a TriMesh or a TexturedDeviceMesh")


def _interpolate(attr: torch.Tensor, tri: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """float32 [N, C] = attr[tri0] b0 + attr[tri1] b1 + attr[tri2] b2 (``rasterize.interpolate``'s order)."""
    return attr[tri[:, 0]] * bary[:, 0:1] + attr[tri[:, 1]] * bary[:, 1:2] + attr[tri[:, 2]] * bary[:, 2:3]


def texel_geometry_gpu(mesh: TexturedDeviceMesh | TriMesh, atlas_size: int) -> TexelGeometryGPU:
    """UV-rasterise ``mesh`` at ``atlas_size`` and interpolate positions and smooth normals of the valid
    texels (the device twin of ``backproject.texel_geometry``, packed)."""
    dm = _as_device_mesh(mesh)
    if int(atlas_size) != atlas_size or not 1 <= atlas_size <= 16384:
        raise ConfigError(f"atlas size {atlas_size} out of range", "use an integer in [1, 16384]")
    if dm.uvs is None:
        raise MeshError("mesh has no per-vertex UVs", "unwrap the mesh (engine.geometry.uv_unwrap) first")
    if not bool(torch.isfinite(dm.uvs).all()):
        raise MeshError("mesh UVs have NaN/Inf values", "re-unwrap the mesh")
    s = int(atlas_size)
    face_id, bary = rasterize_uv_gpu(dm.uvs, dm.faces, s)                        # [S, S], [S, S, 3]
    valid = face_id >= 0
    texel_index = torch.nonzero(valid.view(-1)).view(-1)                         # [N] int64 (host sync)
    if texel_index.numel() == 0:
        raise MeshError("the mesh's UVs cover no texel of the atlas", "re-unwrap the mesh into [0, 1]^2")
    n = texel_index.shape[0]
    packed_index = torch.full((s * s,), -1, dtype=torch.int32, device=face_id.device)
    packed_index[texel_index] = torch.arange(n, dtype=torch.int32, device=face_id.device)
    fid = face_id.view(-1)[texel_index]                                          # [N]
    b = bary.view(-1, 3)[texel_index]                                            # [N, 3]
    tri = dm.faces[fid.long()].long()                                            # [N, 3]
    nrm = _interpolate(dm.normals, tri, b)
    nrm = nrm / torch.linalg.vector_norm(nrm, dim=-1, keepdim=True).clamp_min(1e-12)
    return TexelGeometryGPU(face_id, valid, packed_index.view(s, s), texel_index, b,
                            _interpolate(dm.vertices, tri, b), nrm)


def edge_mask_gpu(renders: ViewRendersGPU, threshold_px: float = 4.0) -> torch.Tensor:
    """bool [K, R, R]: foreground pixels with a 4-neighbour that is background or whose world position
    differs by more than ``threshold_px`` pixel widths (``backproject.edge_mask``)."""
    m, p, r = renders.mask, renders.position, renders.resolution
    thr = (threshold_px * 2.0 * renders.cam_params[:, 9] / r).to(torch.float32).view(-1, 1, 1)   # [K, 1, 1]
    edges = torch.zeros_like(m)
    for axis in (1, 2):
        a, b = m.narrow(axis, 0, r - 1), m.narrow(axis, 1, r - 1)
        dist = torch.linalg.vector_norm(p.narrow(axis, 0, r - 1) - p.narrow(axis, 1, r - 1), dim=-1)
        jump = (a != b) | (dist > thr)
        edges.narrow(axis, 0, r - 1).logical_or_(jump)
        edges.narrow(axis, 1, r - 1).logical_or_(jump)
    return edges & m


def project_texels(position: torch.Tensor, cam_params: torch.Tensor, resolution: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates float32 [K, N, 2] (x right, y down, centres at +.5) and depth float32 [K, N] of
    world points [N, 3] in the K views (``OrthoCamera.world_to_pixel``: float64, rounded to float32)."""
    p = position.to(torch.float64).T                                             # [3, N]
    c = cam_params
    h = c[:, 9:10]                                                               # [K, 1]
    shift = c[:, 10:13]                                                          # camera centres (0)

    def along(axis: int) -> torch.Tensor:                                        # [K, N] float64
        basis = c[:, 3 * axis:3 * axis + 3]
        return (basis @ p).sub_((basis * shift).sum(1, keepdim=True))

    # in place, in the reference's operation order: ((a / h + 1) * 0.5) * R and ((1 - b / h) * 0.5) * R
    x = along(0).div_(h).add_(1.0).mul_(0.5).mul_(resolution).to(torch.float32)
    y = along(1).div_(h).neg_().add_(1.0).mul_(0.5).mul_(resolution).to(torch.float32)
    a = along(2)
    return torch.stack([x, y], dim=-1), (h - a).to(torch.float32)


def taps_allowed(pixel: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """bool [K, N]: all 4 clamp-to-edge bilinear taps of pixel [K, N, 2] fall on ``allowed`` [K, R, R]
    pixels (``backproject._taps``: x0 = clamp(floor(x - .5)), x1 = min(x0 + 1, R - 1))."""
    k, r = allowed.shape[0], allowed.shape[1]
    x0 = torch.floor(pixel[..., 0] - 0.5).long().clamp_(0, r - 1)               # [K, N]
    y0 = torch.floor(pixel[..., 1] - 0.5).long().clamp_(0, r - 1)
    x1, y1 = (x0 + 1).clamp_(max=r - 1), (y0 + 1).clamp_(max=r - 1)
    flat = allowed.reshape(k, r * r)
    ok = torch.gather(flat, 1, y0 * r + x0)
    for yy, xx in ((y0, x1), (y1, x0), (y1, x1)):
        ok &= torch.gather(flat, 1, yy * r + xx)
    return ok


def visibility_gpu(texels: TexelGeometryGPU, pixel: torch.Tensor, depth: torch.Tensor,
                   renders: ViewRendersGPU, allowed: torch.Tensor, tolerance_px: float = 3.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible bool [K, N], incidence float32 [K, N]) of ``backproject.visibility``: pixel [K, N, 2] and
    depth [K, N] from ``project_texels``; ``allowed`` bool [K, R, R] pixels that may be sampled."""
    k, r = renders.depth.shape[0], renders.resolution
    x, y = pixel[..., 0], pixel[..., 1]
    inside = (x >= 0) & (x < r) & (y >= 0) & (y < r)
    ix = x.long().clamp_(0, r - 1)                                               # truncation, as astype
    iy = y.long().clamp_(0, r - 1)
    zbuf = torch.gather(renders.depth.reshape(k, r * r), 1, iy * r + ix)         # [K, N]
    tol = (tolerance_px * 2.0 * renders.cam_params[:, 9:10] / r).to(torch.float32)   # [K, 1]
    visible = inside & (depth <= zbuf + tol) & taps_allowed(pixel, allowed)
    d = renders.cam_params[:, 6:9].to(torch.float32)                             # [K, 3]
    n = texels.normal
    # elementwise float32 dot (a matmul could run in TF32 when a model enabled it)
    inc = (d[:, 0:1] * n[:, 0] + d[:, 1:2] * n[:, 1] + d[:, 2:3] * n[:, 2]).clamp_min_(0.0)   # [K, N]
    return visible, torch.where(visible, inc, torch.zeros((), dtype=inc.dtype, device=inc.device))


def _check_pixel_mask(pixel_mask: torch.Tensor | np.ndarray, shape: tuple[int, ...], dev: torch.device
                      ) -> torch.Tensor:
    pm = pixel_mask if isinstance(pixel_mask, torch.Tensor) else torch.from_numpy(np.asarray(pixel_mask))
    if tuple(pm.shape) != shape:
        raise InputImageError(f"pixel mask shape {tuple(pm.shape)} != renders {shape}",
                              "give one mask per view at the view resolution")
    return pm.to(device=dev, dtype=torch.bool)


def mask_incidence(pre: FusionPrecompute, pixel_mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Incidence float32 [K, N] with the extra rule that all 4 bilinear taps lie inside ``pixel_mask``
    (bool [K, R, R], e.g. the generated views' alpha); for masks known only once the colours exist."""
    pm = _check_pixel_mask(pixel_mask, tuple(pre.view_mask.shape), pre.incidence.device)
    ok = taps_allowed(pre.pixel, pm)
    return torch.where(ok, pre.incidence, torch.zeros((), dtype=pre.incidence.dtype, device=ok.device))


def precompute_fusion(mesh: TexturedDeviceMesh | TriMesh, cameras: Sequence[OrthoCamera], atlas_size: int,
                      view_resolution: int, config: FusionPrecomputeConfig | None = None,
                      renders: ViewRendersGPU | None = None,
                      pixel_mask: torch.Tensor | np.ndarray | None = None) -> FusionPrecompute:
    """The mesh + rig step of fusion (module docstring). ``mesh`` must already be in the cameras' frame
    (scaled into the rig sphere) and carry UVs. ``renders``: reuse condition renders made with the same
    cameras at ``view_resolution`` (else the views are rasterised here, positions only). ``pixel_mask``:
    optional bool [K, R, R] pixels that may be sampled (as ``visibility``'s)."""
    cfg = config or FusionPrecomputeConfig()
    if int(view_resolution) != view_resolution or not 1 <= view_resolution <= 16384:
        raise ConfigError(f"view resolution {view_resolution} out of range", "use an integer in [1, 16384]")
    if len(cameras) == 0:
        raise ConfigError("no cameras given for fusion", "pass camera_rig()")
    dm = _as_device_mesh(mesh)
    texels = texel_geometry_gpu(dm, atlas_size)
    res = int(view_resolution)
    if renders is None:
        renders = render_views_gpu(dm, cameras, res, shade=False)
    elif renders.resolution != res or tuple(renders.cameras) != tuple(cameras):
        raise ConfigError(f"renders at {renders.resolution} px of {len(renders.cameras)} views do not match "
                          f"{len(cameras)} views at {res} px", "pass renders of the same cameras and size")
    edges = edge_mask_gpu(renders, cfg.edge_threshold_px)
    allowed = renders.mask & ~edges
    if pixel_mask is not None:
        allowed &= _check_pixel_mask(pixel_mask, tuple(allowed.shape), allowed.device)
    pixel, depth = project_texels(texels.position, renders.cam_params, res)
    visible, inc = visibility_gpu(texels, pixel, depth, renders, allowed, cfg.depth_tolerance_px)
    if cfg.min_incidence > 0:
        inc = torch.where(inc < cfg.min_incidence, torch.zeros((), dtype=inc.dtype, device=inc.device), inc)
    priors = torch.tensor([c.prior_weight for c in cameras], dtype=torch.float32, device=inc.device)
    footprint = None
    if cfg.footprints:
        dense_pos = texels.scatter(texels.position, channels=True)               # [S, S, 3]
        footprint = precompute_footprints(dense_pos, texels.valid, list(cameras), res, cfg.aniso)
    return FusionPrecompute(tuple(cameras), renders.cam_params, priors, res, texels, pixel, visible, inc,
                            renders.mask, edges, renders.depth, cfg, footprint)
