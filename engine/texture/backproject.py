"""Backward projection of K orthographic views into a UV atlas (paper 7.4, "Backprojection").

Every atlas texel with a surface under it (``texel_geometry``: UV rasterisation -> 3D position and
smooth normal) is projected into each view k with the view's ``OrthoCamera.world_to_pixel``:
  incidence  I_k = max(0, n . d_k), set to 0 when the texel is occluded (its depth exceeds the view's
             z-buffer at the pixel containing it by more than ``tolerance``), falls outside the image,
             or when one of its 4 bilinear taps is background, on a position-map discontinuity
             (``edge_mask``) or outside an optional per-view pixel mask (e.g. a reference alpha mask).
  colour     A_k = bilinear sample of view k's image at the projected point (clamp-to-edge).
The per-texel anisotropic filter of the paper (Jacobian footprint, Lanczos mip chain, up to 8 taps)
comes in a later issue; this module samples one bilinear tap per texel and view.

Layouts: atlas H = W = atlas_size, views R x R; texel (r, c) centre at u = (c + 0.5) / W,
v = (r + 0.5) / H (glTF UVs). Arrays are host numpy; per-view work is vectorised over valid texels.
Images are float32 in [0, 1] after ``sample_views`` (uint8 inputs are divided by 255).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError, InputImageError, MeshError
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.geometry.rasterize import interpolate, rasterize_uv
from engine.texture.blend import DEFAULT_ALPHA
from engine.texture.render_conditions import ViewRenders, render_views, smooth_normals
from engine.texture.view_harmonisation import HarmoniseConfig
from engine.texture.views import OrthoCamera


@dataclass
class TexelGeometry:
    """Surface under each atlas texel. H = W = atlas size.

    face_id  int32 [H, W] (-1 outside every chart), bary float32 [H, W, 3],
    position float32 [H, W, 3] world, normal float32 [H, W, 3] unit smooth normal, valid bool [H, W].
    """

    face_id: np.ndarray
    bary: np.ndarray
    position: np.ndarray
    normal: np.ndarray
    valid: np.ndarray

    @property
    def size(self) -> int:
        return int(self.face_id.shape[0])


def texel_geometry(mesh: TriMesh, atlas_size: int) -> TexelGeometry:
    """Rasterise ``mesh.uvs`` at ``atlas_size`` and interpolate positions and smooth normals."""
    validate_mesh(mesh)
    if mesh.uvs is None or mesh.uvs.shape != (mesh.num_vertices, 2):
        raise MeshError("mesh has no per-vertex UVs", "unwrap the mesh (engine.geometry.uv_unwrap) first")
    fid, bary = rasterize_uv(mesh.uvs, mesh.faces, atlas_size)
    pos = interpolate(mesh.vertices, mesh.faces, fid, bary)
    nrm = interpolate(smooth_normals(mesh), mesh.faces, fid, bary)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
    return TexelGeometry(fid, bary, pos, nrm, fid >= 0)


def edge_mask(renders: ViewRenders, threshold: float | None = None) -> np.ndarray:
    """Unreliable pixels bool [K, R, R]: foreground pixels with a 4-neighbour that is background or
    whose position differs by more than ``threshold`` world units (default: 4 pixel widths of each
    view, 4 * 2 h / R, i.e. surfaces steeper than ~76 deg from the view plane count as edges)."""
    k, r = renders.mask.shape[:2]
    out = np.zeros((k, r, r), bool)
    for i, cam in enumerate(renders.cameras):
        thr = 4.0 * 2.0 * cam.half_extent / r if threshold is None else float(threshold)
        m, p = renders.mask[i], renders.position[i]
        e = np.zeros((r, r), bool)
        for axis in (0, 1):
            a = [slice(None)] * 2
            b = [slice(None)] * 2
            a[axis], b[axis] = slice(0, -1), slice(1, None)
            a, b = tuple(a), tuple(b)
            jump = (m[a] != m[b]) | (np.linalg.norm(p[a] - p[b], axis=-1) > thr)
            e[a] |= jump
            e[b] |= jump
        out[i] = e & m
    return out


def _taps(px: np.ndarray, r: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps of pixel coordinates px [N, 2]: (x0, y0, x1, y1 int64 clamped, fx, fy float32)."""
    x, y = px[:, 0] - 0.5, px[:, 1] - 0.5
    x0f, y0f = np.floor(x), np.floor(y)
    fx, fy = (x - x0f).astype(np.float32), (y - y0f).astype(np.float32)
    x0 = np.clip(x0f.astype(np.int64), 0, r - 1)
    y0 = np.clip(y0f.astype(np.int64), 0, r - 1)
    return x0, y0, np.minimum(x0 + 1, r - 1), np.minimum(y0 + 1, r - 1), fx, fy


def visibility(texels: TexelGeometry, cameras: list[OrthoCamera], renders: ViewRenders,
               tolerance: float | None = None, edges: np.ndarray | None = None,
               pixel_mask: np.ndarray | None = None) -> np.ndarray:
    """Incidence maps float32 [K, H, W] in [0, 1] (see module docstring); 0 on invalid texels.

    tolerance:  allowed depth excess over the z-buffer, world units (default: 3 pixel widths, which
                absorbs the depth slope of surfaces up to ~70 deg within the half-pixel offset).
    edges:      bool [K, R, R] from ``edge_mask`` (or None): pixels that may not be sampled.
    pixel_mask: bool [K, R, R] pixels that may be sampled (e.g. the reference image's alpha), or None.
    """
    k, r = len(cameras), renders.resolution
    if renders.depth.shape[0] != k:
        raise ConfigError(f"{k} cameras but {renders.depth.shape[0]} renders", "render the same cameras")
    allowed = renders.mask.copy()
    if edges is not None:
        allowed &= ~edges
    if pixel_mask is not None:
        if pixel_mask.shape != allowed.shape:
            raise InputImageError(f"pixel mask shape {pixel_mask.shape} != renders {allowed.shape}",
                                  "give one mask per view at the render resolution")
        allowed &= pixel_mask.astype(bool)
    pos, nrm = texels.position[texels.valid], texels.normal[texels.valid]   # [N, 3]
    out = np.zeros((k,) + texels.valid.shape, np.float32)
    for i, cam in enumerate(cameras):
        px, z = cam.world_to_pixel(pos, r)
        inside = (px[:, 0] >= 0) & (px[:, 0] < r) & (px[:, 1] >= 0) & (px[:, 1] < r)
        ix = np.clip(px[:, 0].astype(np.int64), 0, r - 1)
        iy = np.clip(px[:, 1].astype(np.int64), 0, r - 1)
        tol = 3.0 * 2.0 * cam.half_extent / r if tolerance is None else float(tolerance)
        ok = inside & (z <= renders.depth[i][iy, ix] + tol)
        x0, y0, x1, y1, _, _ = _taps(px, r)
        a = allowed[i]
        ok &= a[y0, x0] & a[y0, x1] & a[y1, x0] & a[y1, x1]
        inc = np.maximum(nrm @ np.asarray(cam.direction, np.float32), 0.0)
        out[i][texels.valid] = np.where(ok, inc, 0.0)
    return out


def sample_views(texels: TexelGeometry, cameras: list[OrthoCamera], images: np.ndarray,
                 where: np.ndarray | None = None, shifts: np.ndarray | None = None) -> np.ndarray:
    """Bilinear colours of every valid texel in every view: float32 [K, H, W, C] in [0, 1].

    images: [K, R, R, C] uint8 (divided by 255) or float in [0, 1], C = 3 (RGB) or any channel count >= 1;
            pixel (r, c) centre at (c+.5, r+.5).
    where:  optional bool [K, H, W]; only those texels are sampled (others stay 0) to save time.
    shifts: optional float [K, 2] pixels added to every texel's projection in view k (x right, y down;
            ``view_harmonisation``: view k shows at p + shift what the geometry puts at p).
    One bilinear tap per texel (clamp-to-edge); the anisotropic filter is the GPU fusion's.
    """
    imgs = np.asarray(images)
    k = len(cameras)
    if imgs.ndim != 4 or imgs.shape[0] != k or imgs.shape[1] != imgs.shape[2] or imgs.shape[3] < 1:
        raise InputImageError(f"view images must be [K={k}, R, R, 3], got {imgs.shape}",
                              "pass one square RGB image per camera")
    scale = 1.0 / 255.0 if imgs.dtype == np.uint8 else 1.0
    r, c = imgs.shape[1], imgs.shape[3]
    out = np.zeros((k,) + texels.valid.shape + (c,), np.float32)
    for i, cam in enumerate(cameras):
        sel = texels.valid if where is None else texels.valid & where[i]
        px, _ = cam.world_to_pixel(texels.position[sel], r)
        if shifts is not None:
            px = px + np.asarray(shifts[i], np.float32)
        x0, y0, x1, y1, fx, fy = _taps(px, r)
        img = imgs[i].astype(np.float32) * scale
        fx, fy = fx[:, None], fy[:, None]
        top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
        bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
        out[i][sel] = top * (1 - fy) + bot * fy
    return out


def harmonised_samples(texels: TexelGeometry, cameras: list[OrthoCamera], images: np.ndarray,
                       incidence: np.ndarray, config: HarmoniseConfig
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Colours of harmonised views (``view_harmonisation``: per-view gains and shifts estimated on the
    texels two views see, then corrected views sampled at the shifted projections).

    images [K, R, R, 3] uint8 or float [0, 1]; incidence float32 [K, H, W] (0 = unseen).
    Returns (colours float32 [K, H, W, 3], confidence float32 [K, H, W], floor float32 [H, W, 3]: the
    censored lower bound of each texel, stats: gains [K][3], shifts [K][2], harmonise_* counts).
    """
    import torch

    from engine.texture.view_harmonisation import censored_floor, correct_views, harmonise_views

    imgs = np.asarray(images)
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()
    if imgs.dtype == np.uint8:
        x = x / 255.0
    r = imgs.shape[1]
    valid = texels.valid
    pos = texels.position[valid]                                               # [N, 3]
    pixel = np.stack([cam.world_to_pixel(pos, r)[0] for cam in cameras])       # [K, N, 2]
    corr = harmonise_views(x, torch.from_numpy(pixel), torch.from_numpy(incidence[:, valid]), cameras,
                           config)
    rgb, aux = correct_views(x, corr, config)                                   # [K, 3 | 4, R, R]
    both = torch.cat([rgb, aux], 1).permute(0, 2, 3, 1).contiguous().numpy()  # [K, R, R, 7]
    shifts = corr.shifts.numpy()
    smp = sample_views(texels, cameras, both, where=incidence > 0, shifts=shifts)   # [K, H, W, 7]
    seen = incidence[:, valid] > 0
    floor = np.zeros(valid.shape + (3,), np.float32)
    floor[valid] = censored_floor(torch.zeros(int(valid.sum()), 3), torch.from_numpy(smp[:, valid, 4:]),
                                  torch.from_numpy(seen)).numpy()
    stats = dict(corr.stats, gains=corr.gains.tolist(), shifts=corr.shifts.tolist())
    return smp[..., :3], np.maximum(smp[..., 3], 1e-6), floor, stats


def fuse_views(mesh: TriMesh, cameras: list[OrthoCamera], images: np.ndarray, atlas_size: int,
               masks: np.ndarray | None = None, alpha: float = DEFAULT_ALPHA, min_incidence: float = 0.05,
               neighbours: int = 8, gutter: int | None = 16, harmonic: bool = False,
               harmonise: HarmoniseConfig | None = None) -> tuple[np.ndarray, dict]:
    """Full fusion: backproject K views, blend (``blend_views``), inpaint in 3D (``inpaint_3d``; with
    ``harmonic`` its harmonic fill of the unobserved texels) and dilate the gutter. mesh must already be
    in the cameras' frame (scaled into the rig sphere). With ``harmonise`` (and K >= 2) the views are
    first harmonised (``harmonised_samples``: per-view gains and sub-pixel shifts; clipped samples
    down-weighted, the blend raised to their censored lower bound).

    images [K, R, R, 3] uint8 or float [0, 1]; masks optional bool [K, R, R] (pixels that may be used).
    Returns (atlas uint8 [H, W, 3], stats dict with texel counts, stage seconds and the filled region's
    smoothness ``fill_gradient`` / ``fill_jumps``, see ``fill_smoothness``).
    """
    from engine.texture.blend import blend_views
    from engine.texture.harmonic_fill import fill_smoothness
    from engine.texture.inpaint import dilate_gutter, inpaint_3d, texel_world_size

    t0 = time.perf_counter()
    texels = texel_geometry(mesh, atlas_size)
    if not texels.valid.any():
        raise MeshError("the mesh's UVs cover no texel of the atlas", "re-unwrap the mesh into [0, 1]^2")
    renders = render_views(mesh, cameras, np.asarray(images).shape[1], normal_map=False)
    t1 = time.perf_counter()
    inc = visibility(texels, cameras, renders, edges=edge_mask(renders), pixel_mask=masks)
    inc[inc < min_incidence] = 0.0
    stats: dict = {}
    conf = floor = None
    if harmonise is not None and len(cameras) >= 2:
        colours, conf, floor, hstats = harmonised_samples(texels, cameras, images, inc, harmonise)
        stats.update(hstats)
    else:
        colours = sample_views(texels, cameras, images, where=inc > 0)
    t2 = time.perf_counter()
    priors = np.asarray([c.prior_weight for c in cameras], np.float32)
    atlas, known = blend_views(colours, inc, priors, alpha, confidence=conf)
    if floor is not None:
        atlas = np.where(known[..., None], np.maximum(atlas, floor), atlas)
    t3 = time.perf_counter()
    atlas = inpaint_3d(atlas, known, texels, k=neighbours, stats=stats, harmonic=harmonic)
    t4 = time.perf_counter()
    stats.update(fill_smoothness(atlas, texels.valid & ~known, texels.valid, texels.position,
                                 texel_world_size(texels.position, texels.valid)))
    atlas = dilate_gutter(atlas, texels.valid, gutter)
    stats.update(valid_texels=int(texels.valid.sum()), known_texels=int((known & texels.valid).sum()),
                 seconds_geometry=t1 - t0, seconds_backproject=t2 - t1, seconds_blend=t3 - t2,
                 seconds_inpaint=t4 - t3)
    return np.clip(np.rint(atlas * 255.0), 0, 255).astype(np.uint8), stats
