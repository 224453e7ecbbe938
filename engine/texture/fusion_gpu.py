"""Texture fusion on the GPU, orchestrated (paper 7.4, 8.2): plan once per mesh, fuse once per set of views.

Two calls, split by dependency so the scheduler runs the first while TextureGen's diffusion runs:
  ``plan_fusion``      mesh + rig only: UV-overlap check, texel geometry, projection, depth-test visibility,
                       incidence (``fusion_precompute.precompute_fusion``), the per-(view, texel)
                       anisotropic footprints (``anisotropic.precompute_footprints``), which texels the
                       blend will know, and the 3D inpainting plan over the others (``inpaint_gpu.
                       plan_inpaint``: fill rounds, exact kNN sources and weights) -> ``FusionPlan``.
  ``fuse_views_gpu``   view colours: Lanczos-2 mip chain, anisotropic sampling (<= 8 taps along the major
                       axis, trilinear between levels), log-space blend with the view priors and sharpness
                       alpha (``blend_gpu``), 3D inpainting of texels no view saw (with ``FusionConfig.
                       harmonic`` then their harmonic fill over the surface, ``harmonic_fill_gpu``: graph,
                       components and matrix planned by ``plan_fusion``, CG here), gutter dilation, uint8.
``fuse_views_device`` chains both with the contract of the CPU reference ``backproject.fuse_views``
(host uint8 atlas + stats dict): the pipeline's drop-in on ``--device cuda``.

Layouts: S = atlas size, N = valid texels (packed row-major, ``TexelGeometryGPU``), K views, R = view
resolution. Images [K, R, R, 3] uint8 (sRGB, /255) or float in [0, 1] (clipped to [0, 1]); masks bool
[K, R, R] (pixels that may be used, e.g. the views' alpha). Outputs on ``kernel_device()``: atlas uint8
[S, S, 3]; outside the charts the gutter holds the nearest chart colour up to ``gutter`` texels, 0 beyond.

Bad input (``engine.errors``): a view count, size or dtype that does not match the plan -> InputImageError;
mesh without UVs, UVs covering nothing, or UVs of which more than ``max_uv_overlap`` of the covered texels
lie under two or more faces (overlapping charts: one texel cannot hold two surface points' colours) ->
MeshError. Documented fallbacks: a pixel with a NaN/Inf channel is treated as unseen (dropped from the
view's pixel mask, so no texel samples it; ``stats["nonfinite_pixels"]``); texels seen by no view are
inpainted from their 3D neighbours; when no texel is seen at all, the charts become neutral grey
(``inpaint.NEUTRAL_COLOUR``, ``stats["neutral_fill"]``) -- never black or transparent holes.

Pixel masks. The mip chain is always premultiplied by the plan's ``allowed`` pixels (foreground of the
mesh's own renders, off position-map edges, inside ``pixel_mask``), so no footprint tap reads background
or a silhouette edge. A ``pixel_mask`` known before the colours (e.g. the silhouettes the generator was
conditioned on) belongs in ``plan_fusion``; ``masks`` given to ``fuse_views_gpu`` (and NaN pixels) change
which texels are seen, so that call then re-plans the inpainting (host syncs, kNN grid builds).

Host syncs of ``fuse_views_gpu``: the non-finite check, the mip chain's NaN check, the stats counts
(the filled region's smoothness ``fill_gradient`` / ``fill_rms`` / ``fill_jumps`` as the CPU reference's)
and, with the harmonic fill, one per 8 CG iterations (none in the inpainting unless late masks re-plan
it). ``plan_fusion`` syncs a few dozen times (packed sizes, overlap share, inpainting rounds and grids,
the harmonic fill's graph and components).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import ConfigError, InputImageError, MeshError
from engine.geometry.mesh import TriMesh
from engine.texture.anisotropic import (
    AnisoConfig,
    Footprint,
    build_mip_chain,
    sample_anisotropic,
)
from engine.texture.blend import DEFAULT_ALPHA
from engine.texture.blend_gpu import blend_log_weights, blend_views_gpu
from engine.texture.fusion_precompute import (
    FusionPrecompute,
    FusionPrecomputeConfig,
    mask_incidence,
    precompute_fusion,
)
from engine.texture.harmonic_fill_gpu import HarmonicPlan, apply_harmonic, fill_smoothness_gpu, plan_harmonic
from engine.texture.inpaint_gpu import InpaintPlan, apply_inpaint, dilate_gutter_gpu, plan_inpaint
from engine.texture.render_conditions_gpu import TexturedDeviceMesh, ViewRendersGPU
from engine.texture.view_harmonisation import (
    HarmoniseConfig,
    censored_floor,
    correct_views,
    harmonise_views,
    sample_bilinear,
)
from engine.texture.views import OrthoCamera
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_uv import rasterize_uv_gpu

BLEND_EPS = 1e-8


@dataclass(frozen=True)
class FusionConfig:
    """Settings of GPU fusion; defaults are those of the CPU ``fuse_views``.

    alpha: blend sharpness (>= 0). min_incidence: incidences below this are dropped ([0, 1)).
    neighbours: k of the 3D inpainting (>= 1). gutter: texels of gutter dilation (None = whole background).
    depth_tolerance_px / edge_threshold_px: visibility and edge-mask tolerances in pixel widths.
    max_uv_overlap: largest share of covered texels under 2+ faces accepted ([0, 1]; 0 = none). 1 %: our
      own xatlas unwraps left 0.21 % on the helmet (5K faces; oracle run on the H100), a cosmetic
      defect reported in the stats; overlapping charts beyond 1 % are refused.
    aniso: the anisotropic filter (paper: 8 taps, LOD bias -0.5).
    harmonise: per-view gain and sub-pixel shift estimation before sampling (``view_harmonisation``;
      None = off, as for the reference picture; TextureGen's views: on, ``TextureConfig.harmonise_views``).
    harmonic: then replace the k-nearest fill of the texels no view saw by the harmonic (Laplace) fill
      over the surface (``harmonic_fill_gpu``; ``TextureConfig.inpaint_fill`` = harmonic). Off by default,
      as the CPU ``fuse_views``.
    """

    alpha: float = DEFAULT_ALPHA
    min_incidence: float = 0.05
    neighbours: int = 8
    gutter: int | None = 16
    depth_tolerance_px: float = 3.0
    edge_threshold_px: float = 4.0
    max_uv_overlap: float = 0.01
    aniso: AnisoConfig = field(default_factory=AnisoConfig)
    harmonise: HarmoniseConfig | None = None
    harmonic: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"fusion alpha = {self.alpha} must be finite and >= 0", "use e.g. 4.0")
        if self.neighbours < 1:
            raise ConfigError(f"fusion neighbours = {self.neighbours} must be >= 1", "use e.g. 8")
        if self.gutter is not None and self.gutter < 0:
            raise ConfigError(f"fusion gutter = {self.gutter} must be >= 0 or None", "use e.g. 16")
        if not 0.0 <= self.max_uv_overlap <= 1.0:
            raise ConfigError(f"max_uv_overlap = {self.max_uv_overlap} must be in [0, 1]", "use e.g. 0.01")
        self.precompute_config()                                   # validates the remaining fields

    def precompute_config(self) -> FusionPrecomputeConfig:
        return FusionPrecomputeConfig(self.depth_tolerance_px, self.edge_threshold_px, self.min_incidence,
                                      footprints=True, aniso=self.aniso)


@dataclass
class FusionPlan:
    """Everything fusion needs that does not depend on the view colours (``plan_fusion``).

    pre: ``FusionPrecompute`` (texels, pixel [K, N, 2], incidence [K, N], priors [K], ...; its ``footprint``
    and ``inpaint_index`` slots hold ``footprint`` and ``inpaint``); footprint: ``Footprint`` over [K, N];
    allowed: bool [K, R, R] pixels the mip chain may use; known: bool [N] texels the blend will know;
    inpaint: ``InpaintPlan`` filling the others; uv_overlap: share of covered texels under 2+ faces;
    unplanned: valid texels neither known nor an inpainting target (0 unless no texel is known at all,
    when the neutral fill covers them); harmonic: ``HarmonicPlan`` of the harmonic fill after the
    inpainting (None unless ``config.harmonic``).
    """

    pre: FusionPrecompute
    footprint: Footprint
    config: FusionConfig
    allowed: torch.Tensor
    known: torch.Tensor
    inpaint: InpaintPlan
    uv_overlap: float
    unplanned: int
    harmonic: HarmonicPlan | None = None

    @property
    def atlas_size(self) -> int:
        return self.pre.texels.size

    @property
    def view_resolution(self) -> int:
        return self.pre.view_resolution

    @property
    def num_views(self) -> int:
        return len(self.pre.cameras)


def _check_device(device: torch.device | str | None) -> torch.device:
    dev = kernel_device()
    if device is not None and torch.device(device).type != dev.type:
        raise ConfigError(f"GPU fusion runs on {dev}, not {device}",
                          "use --device cuda (or the CPU reference engine.texture.backproject.fuse_views)")
    return dev


def uv_overlap_share(mesh: TexturedDeviceMesh, face_id: torch.Tensor) -> float:
    """Share of covered texels lying under two or more faces. ``face_id`` int32 [S, S] is the UV
    rasterisation (highest covering face wins); a second pass over the faces in reverse order makes the
    lowest win, so a texel differs exactly when 2+ faces cover it (shared edges have one owner)."""
    n_faces = mesh.faces.shape[0]
    rev, _ = rasterize_uv_gpu(mesh.uvs, mesh.faces.flip(0).contiguous(), face_id.shape[0])
    lowest = torch.where(rev >= 0, n_faces - 1 - rev, rev)
    covered = face_id >= 0
    multi = covered & (lowest != face_id)
    return float(multi.sum()) / max(float(covered.sum()), 1.0)


def blend_known(incidence: torch.Tensor, priors: torch.Tensor, alpha: float, eps: float = BLEND_EPS
                ) -> torch.Tensor:
    """bool [N]: texels ``blend_views_gpu`` will call known (total weight >= eps), from the incidence."""
    return torch.logsumexp(blend_log_weights(incidence, priors, alpha), dim=0) >= math.log(eps)


def _plan_inpaint(pre: FusionPrecompute, known: torch.Tensor, cfg: FusionConfig
                  ) -> tuple[InpaintPlan, int, HarmonicPlan | None]:
    """Inpainting plan over the texels not ``known`` (bool [N]), the count of valid texels it misses and,
    with ``cfg.harmonic``, the harmonic fill's plan over them (observed texels as boundary)."""
    t = pre.texels
    known_d = t.scatter(known)                                                 # [S, S]
    position = t.scatter(t.position, channels=True)                            # [S, S, 3]
    plan = plan_inpaint(known_d, position, t.scatter(t.normal, channels=True), t.valid, cfg.neighbours)
    covered = known_d.clone().view(-1)
    for rnd in plan.rounds:
        covered[rnd.targets] = True
    missed = 0 if plan.neutral else int((t.valid.view(-1) & ~covered).sum())
    harmonic = None
    if cfg.harmonic and plan.targets and not plan.neutral:
        harmonic = plan_harmonic(known_d & t.valid, t.valid, position, plan.delta)
    return plan, missed, harmonic


def plan_fusion(mesh: TriMesh | TexturedDeviceMesh, cameras: Sequence[OrthoCamera], atlas_size: int,
                view_resolution: int, device: torch.device | str | None = None,
                config: FusionConfig | None = None, renders: ViewRendersGPU | None = None,
                pixel_mask: torch.Tensor | np.ndarray | None = None) -> FusionPlan:
    """Mesh + rig step of fusion (module docstring), on ``kernel_device()``.

    mesh: in the cameras' frame (scaled into the rig sphere) with per-vertex UVs (glTF).
    renders: condition renders of the same cameras at ``view_resolution`` to reuse (skips a rasterisation).
    pixel_mask: optional bool [K, R, R] pixels the views may contribute, known before the colours.
    """
    cfg = config or FusionConfig()
    _check_device(device)
    if isinstance(mesh, TriMesh):
        if mesh.uvs is None or mesh.uvs.shape != (mesh.num_vertices, 2):
            raise MeshError("mesh has no per-vertex UVs", "unwrap the mesh (engine.geometry.uv_unwrap) first")
        mesh = TexturedDeviceMesh.from_trimesh(mesh)
    pre = precompute_fusion(mesh, cameras, atlas_size, view_resolution, cfg.precompute_config(), renders,
                            pixel_mask)
    overlap = uv_overlap_share(mesh, pre.texels.face_id)
    if overlap > cfg.max_uv_overlap:
        raise MeshError(f"{100 * overlap:.2f} % of the covered atlas texels lie under two or more faces "
                        "(overlapping UV charts)", "re-unwrap the mesh (engine.geometry.uv_unwrap)")
    fp = pre.footprint                                 # computed once, by the precompute, with cfg.aniso
    allowed = pre.view_mask & ~pre.edges
    if pixel_mask is not None:
        allowed &= _as_tensor(pixel_mask, allowed.device).to(torch.bool)
    known = blend_known(pre.incidence, pre.priors, cfg.alpha)
    inpaint, missed, harmonic = _plan_inpaint(pre, known, cfg)
    pre.footprint, pre.inpaint_index = fp, inpaint
    return FusionPlan(pre, fp, cfg, allowed.contiguous(), known, inpaint, overlap, missed, harmonic)


def _as_tensor(x, dev: torch.device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dev)


def prepare_views(plan: FusionPlan, images, masks=None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Checked views: (float32 [K, 3, R, R] in [0, 1], late mask bool [K, R, R] or None when every pixel
    may be used, number of non-finite pixels -- one host sync). See the module docstring for the rules."""
    dev = plan.pre.incidence.device
    k, r = plan.num_views, plan.view_resolution
    img = _as_tensor(images, dev)
    if tuple(img.shape) != (k, r, r, 3):
        raise InputImageError(f"fusion views must be [{k}, {r}, {r}, 3], got {tuple(img.shape)}",
                              f"pass one {r}x{r} RGB image per camera of the plan ({k} views)")
    if img.dtype == torch.uint8:
        x = img.float() / 255.0
    elif img.is_floating_point():
        x = img.float()
    else:
        raise InputImageError(f"fusion views have dtype {img.dtype}", "pass uint8 or float images in [0, 1]")
    bad = ~torch.isfinite(x).all(dim=-1)                                       # [K, R, R]
    n_bad = int(bad.sum())                                                     # host sync
    late = None
    if masks is not None:
        m = _as_tensor(masks, dev)
        if tuple(m.shape) != (k, r, r):
            raise InputImageError(f"fusion masks must be [{k}, {r}, {r}], got {tuple(m.shape)}",
                                  "pass one bool mask per view at the view resolution")
        late = m.to(torch.bool)
    if n_bad:
        late = ~bad if late is None else late & ~bad
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = x.clamp_(0.0, 1.0).permute(0, 3, 1, 2).contiguous()                   # [K, 3, R, R]
    return x, late, n_bad


def fuse_views_gpu(plan: FusionPlan, images, masks=None) -> tuple[torch.Tensor, dict]:
    """Colour step of fusion (module docstring).

    images: [K, R, R, 3] uint8 or float in [0, 1] (tensor or array; K, R those of the plan).
    masks:  optional bool [K, R, R] pixels that may be sampled, known only now (re-plans the inpainting).
    Returns (atlas uint8 [S, S, 3] on ``kernel_device()``, stats: valid_texels, known_texels,
    nonfinite_pixels, inpaint_targets, inpaint_rounds, inpaint_unfilled, neutral_fill, the filled region's
    fill_gradient / fill_rms / fill_jumps (``harmonic_fill.fill_smoothness``) and, with the harmonic
    fill, harmonic_texels / _iterations / _kept and seconds_harmonic).
    """
    pre, cfg = plan.pre, plan.config
    x, late, n_bad = prepare_views(plan, images, masks)
    inc, allowed, inpaint, missed, harmonic = (pre.incidence, plan.allowed, plan.inpaint, plan.unplanned,
                                               plan.harmonic)
    if late is not None:                                                       # colour-dependent masks
        inc, allowed = mask_incidence(pre, late), allowed & late
    hstats: dict = {}
    if cfg.harmonise is not None and plan.num_views >= 2:
        colours, conf, lower, hstats = _harmonised_colours(plan, x, inc, allowed)
        packed, known = blend_views_gpu(colours, inc, pre.priors, cfg.alpha, BLEND_EPS, confidence=conf)
        packed = torch.where(known[:, None], censored_floor(packed, lower, inc > 0), packed)
    else:
        mips = build_mip_chain(x, allowed, cfg.aniso)                          # premultiplied, 4 channels
        colours = sample_anisotropic(mips, pre.pixel, plan.footprint, where=inc > 0)   # [K, N, 3]
        packed, known = blend_views_gpu(colours, inc, pre.priors, cfg.alpha, BLEND_EPS)   # [N, 3], [N]
    if late is not None:
        inpaint, missed, harmonic = _plan_inpaint(pre, known, cfg)
    t = pre.texels
    atlas, stats = apply_inpaint(inpaint, t.scatter(packed, channels=True))   # [S, S, 3]
    if harmonic is not None:
        t0 = time.perf_counter()
        atlas, st = apply_harmonic(harmonic, atlas)                           # syncs every 8 iterations
        stats.update(st, seconds_harmonic=time.perf_counter() - t0)
    stats.update(fill_smoothness_gpu(atlas, t.valid & ~t.scatter(known), t.valid,
                                     t.scatter(t.position, channels=True), inpaint.delta))
    atlas = dilate_gutter_gpu(atlas, t.valid, cfg.gutter)
    stats.update(valid_texels=t.count, known_texels=int(known.sum()), nonfinite_pixels=n_bad,
                 inpaint_unfilled=missed, **hstats)
    return torch.round(atlas * 255.0).clamp_(0, 255).to(torch.uint8), stats


def shift_mask(allowed: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """float32 [K, R, R] mask in the frame of shifted views: content pixel q of view k shows the geometry's
    pixel q - shift_k (bilinear, 0 beyond the image). allowed bool [K, R, R], shifts [K, 2] pixels."""
    k, r = allowed.shape[0], allowed.shape[1]
    c = torch.arange(r, dtype=torch.float32, device=allowed.device) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    q = torch.stack([xx, yy], -1).view(1, r * r, 2) - shifts[:, None, :].float()     # [K, R*R, 2]
    m = allowed.float()[:, None]                                                      # [K, 1, R, R]
    inside = ((q >= 0) & (q <= r)).all(-1)                                            # [K, R*R]
    return (sample_bilinear(m, q)[..., 0] * inside).view(k, r, r)


def _harmonised_colours(plan: FusionPlan, x: torch.Tensor, inc: torch.Tensor, allowed: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Anisotropic colours [K, N, 3] of the harmonised views (``view_harmonisation``), their blend
    confidence [K, N], censored lower bounds [K, N, 3] and stats. x float32 [K, 3, R, R]; inc [K, N]."""
    pre, cfg = plan.pre, plan.config
    corr = harmonise_views(x, pre.pixel, inc, pre.cameras, cfg.harmonise)
    rgb, aux = correct_views(x, corr, cfg.harmonise)                           # [K, 3 | 4, R, R]
    px = pre.pixel + corr.shifts[:, None, :]                                   # [K, N, 2]
    mips = build_mip_chain(rgb, shift_mask(allowed, corr.shifts), cfg.aniso)
    colours = sample_anisotropic(mips, px, plan.footprint, where=inc > 0)      # [K, N, 3]
    side = sample_bilinear(aux, px)                                            # [K, N, 4]
    stats = dict(corr.stats, gains=corr.gains.tolist(), shifts=corr.shifts.tolist())
    return colours, side[..., 0].clamp_min(1e-6), side[..., 1:], stats


def fuse_views_device(mesh: TriMesh, cameras: Sequence[OrthoCamera], images: np.ndarray, atlas_size: int,
                      device: torch.device | str = "cuda", masks: np.ndarray | None = None,
                      alpha: float = DEFAULT_ALPHA, min_incidence: float = 0.05, neighbours: int = 8,
                      gutter: int | None = 16, harmonic: bool = False) -> tuple[np.ndarray, dict]:
    """Drop-in for ``backproject.fuse_views`` (same arguments plus ``device``, same return: host uint8
    atlas [H, W, 3] and a stats dict). ``device`` of the kernel device type runs ``plan_fusion`` +
    ``fuse_views_gpu``; "cpu" without the numba simulator runs the CPU reference ``fuse_views``."""
    from triton_kernels.numba_cuda import simulated

    dev = torch.device(device)
    if dev.type == "cpu" and not simulated():
        from engine.texture.backproject import fuse_views

        return fuse_views(mesh, list(cameras), images, atlas_size, masks, alpha, min_incidence, neighbours,
                          gutter, harmonic)
    cfg = FusionConfig(alpha=alpha, min_incidence=min_incidence, neighbours=neighbours, gutter=gutter,
                       harmonic=harmonic)
    res = np.shape(images)[1] if np.ndim(images) == 4 else -1
    if res < 1:
        raise InputImageError(f"view images must be [K, R, R, 3], got {np.shape(images)}",
                              "pass one square RGB image per camera")
    t0 = time.perf_counter()
    plan = plan_fusion(mesh, cameras, atlas_size, res, dev, cfg, pixel_mask=masks)   # masks known up front
    t1 = time.perf_counter()
    atlas, stats = fuse_views_gpu(plan, images)
    out = atlas.cpu().numpy()
    stats.update(seconds_plan=t1 - t0, seconds_fuse=time.perf_counter() - t1, uv_overlap=plan.uv_overlap)
    return out, stats

