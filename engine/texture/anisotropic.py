"""Per-texel anisotropic filtering for backprojection (paper 7.4, "Backprojection"): torch reference + API.

A texel of the atlas covers a small parallelogram of each view image. Its image-space footprint is the
Jacobian of the UV -> image mapping, estimated by finite differences on the atlas grid:
  dP/du, dP/dv   world-space differences to the +u (column + 1) and +v (row + 1) texels [T, 3]
                 (one texel step). At chart borders, where a neighbour has no surface, the difference
                 is one-sided (towards the neighbour that exists); where both exist the shorter one is
                 taken (a longer one usually crosses into another chart packed next to this one); where
                 neither exists along an axis that column is the other one turned by 90 degrees
                 (isotropic guess); an isolated texel gets a zero footprint (= one bilinear tap).
  J_k = A_k [dP/du  dP/dv]  [2, 2] pixels per texel step; A_k = R / (2 h_k) [r_k; -u_k] is the linear
                 part of the orthographic ``OrthoCamera.world_to_pixel`` (exact: projection is affine).
SVD of J_k (closed form for 2 x 2): singular values s1 >= s2 >= 0 and the major left singular vector
e1 = (cos t, sin t), t = atan2(2F, E - G) / 2 with E, F, G the entries of J J^T. Then
  n     = clamp(ceil(s1 / s2), 1, max_taps)                  taps along the major axis (8 in the paper)
  lod   = max(0, log2(max(s2, s1 / n)) + lod_bias)           mip level, lod_bias = -0.5 (paper)
  step  = (s1 / n) e1                                        tap spacing, level-0 pixels
  taps  i = 0..n-1 at  centre + (i - (n - 1) / 2) step, equal weights, each a trilinear lookup at lod.
Anisotropy-aware mip compensation: the mip level follows the MINOR axis (detail along the elongated
footprint is kept, where isotropic trilinear filtering would blur by the major axis), widened to s1 / n
only when the anisotropy exceeds max_taps, so the n taps -- each prefiltered over 2^lod pixels -- still
cover the major axis without gaps (no aliasing). A 1-pixel isotropic footprint gives n = 1, lod = 0:
exactly one bilinear tap at the texel centre (``backproject.sample_views``).

Mip chain: level 0 = the view images, level l + 1 = a separable 2x Lanczos-2 (a = 2) downsample of level
l: 8 taps per axis at source offsets d = +-0.5 .. +-3.5 with weights sinc(d/2) sinc(d/4), normalised,
clamp-to-edge. Levels continue while the side is even (1024 -> 1, 768 -> 3). Per-level sharpening (paper
7.4 names no amount): every level >= 1 is stored as L + s (L - blur121(L)), an unsharp mask with a
[1, 2, 1] / 4 blur, while the chain itself continues from the unsharpened L (no compounding). Default
s = 0.3: on a synthetic tilted plane (0-78 deg, 4-24 cycles per atlas side, truth = texel box average)
the texel RMSE was 0.0217 at s = 0, 0.0185 / 0.0182 / 0.0189 / 0.0205 at s = 0.2 / 0.3 / 0.4 / 0.5,
single bilinear taps 0.0269; the same study put the LOD bias at -0.5 (0.0182) ahead of -1 (0.0192),
-0.25 (0.0231) and 0 (0.0314). The oracle benchmark should confirm both on held-back renders. With a
pixel mask the chain carries premultiplied colour + alpha (4 channels) and lookups divide by the filtered
alpha, so background pixels under a footprint do not bleed into the texel's colour.

Layouts: images float [K, C, R, R] (C = 3 colours); texel centres ``px`` float32 [K, T, 2] (x right, y
down, pixel centres at +0.5, as ``OrthoCamera.world_to_pixel``); footprint step float32 [K, T, 2], lod
float32 [K, T], taps uint8 [K, T]; colours float32 [K, T, 3]. T = packed valid texels (row-major order of
the atlas mask, i.e. ``position[valid]``). All on one device; the GPU path is
``triton_kernels.anisotropic_sample`` (same maths, one thread per (view, texel)), which also holds the
lookup's torch reference ``sample_anisotropic_ref`` and ``Footprint`` (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine.errors import ConfigError, InputImageError
from triton_kernels.anisotropic_sample import Footprint as Footprint  # re-exported
from triton_kernels.anisotropic_sample import sample_anisotropic_gpu
from triton_kernels.anisotropic_sample import sample_anisotropic_ref as sample_anisotropic_ref

if TYPE_CHECKING:
    from engine.texture.views import OrthoCamera

LANCZOS_A = 2


@dataclass(frozen=True)
class AnisoConfig:
    """Anisotropic filter settings. lod_bias: added to log2 of the minor axis (paper -0.5); max_taps:
    taps along the major axis (paper 8, <= 255); sharpen: per-level unsharp amount for mips >= 1
    (0..2, 0 = off);
    min_size: the mip chain stops before a level smaller than this side (>= 1)."""

    lod_bias: float = -0.5
    max_taps: int = 8
    sharpen: float = 0.3
    min_size: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.max_taps <= 255:
            raise ConfigError(f"max_taps={self.max_taps} out of range", "use 1..255 (paper: 8)")
        if not (math.isfinite(self.lod_bias) and -4.0 <= self.lod_bias <= 4.0):
            raise ConfigError(f"lod_bias={self.lod_bias} out of range",
                              "use a value in [-4, 4] (paper: -0.5)")
        if not (math.isfinite(self.sharpen) and 0.0 <= self.sharpen <= 2.0):
            raise ConfigError(f"sharpen={self.sharpen} out of range", "use a value in [0, 2]")
        if self.min_size < 1:
            raise ConfigError(f"min_size={self.min_size} must be >= 1", "use 1")


# ----------------------------------------------------------------------------------------- mip chain
def lanczos2_weights(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 8 normalised weights float32 [8] of the 2x Lanczos-2 downsampler at offsets -3.5 .. 3.5."""
    d = torch.arange(8, dtype=torch.float64) - 3.5
    w = torch.sinc(d / 2.0) * torch.sinc(d / (2.0 * LANCZOS_A))
    return (w / w.sum()).to(torch.float32).to(device)


def _down_axis(x: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """2x Lanczos-2 decimation of x [N, C, S, S] along dim (2 or 3), clamp-to-edge: out j = sum_i
    w_i x[2j - 3 + i]. Written as 8 strided multiply-adds (exact float32; no TF32 convolution)."""
    n = x.shape[dim]
    idx = torch.clamp(torch.arange(-3, n + 3, device=x.device), 0, n - 1)
    xp = x.index_select(dim, idx)                                   # [.., n + 6, ..]
    out = None
    for i in range(8):
        sl = [slice(None)] * x.ndim
        sl[dim] = slice(i, i + n, 2)
        part = xp[tuple(sl)]                                        # [.., n / 2, ..] = x[2j - 3 + i]
        out = part * w[i] if out is None else out + part * w[i]
    return out


def _blur121(x: torch.Tensor) -> torch.Tensor:
    """Separable [1, 2, 1] / 4 blur with clamp-to-edge, x [N, C, S, S]."""
    for dim in (2, 3):
        n = x.shape[dim]
        lo = x.index_select(dim, torch.clamp(torch.arange(n, device=x.device) - 1, min=0))
        hi = x.index_select(dim, torch.clamp(torch.arange(n, device=x.device) + 1, max=n - 1))
        x = 0.25 * lo + 0.5 * x + 0.25 * hi
    return x


def build_mip_chain(images: torch.Tensor, mask: torch.Tensor | None = None,
                    config: AnisoConfig = AnisoConfig()) -> list[torch.Tensor]:
    """Lanczos-2 mip chain of K view images (see the module docstring).

    images: float [K, 3, R, R] in [0, 1] (any float dtype; computed in float32), on any device.
    mask:   optional bool/float [K, R, R]: pixels that may be sampled; then every level is premultiplied
            [K, 4, R_l, R_l] = (rgb * m, m).
    Returns [level 0 .. L-1], level l float32 [K, C, R / 2^l, R / 2^l], C = 3 (4 with a mask).
    One host sync (the NaN check); call once per set of views, outside any captured graph.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or images.shape[2] < 1:
        raise InputImageError(f"view images must be [K, 3, R, R], got {tuple(images.shape)}",
                              "pass square RGB views, channels first")
    if not images.is_floating_point():
        raise InputImageError(f"view images must be float in [0, 1], got {images.dtype}",
                              "convert with images.float() / 255")
    x = images.float()
    if not bool(torch.isfinite(x).all()):
        raise InputImageError("view images contain NaN/Inf pixels", "check the texture diffusion output")
    if mask is not None:
        if tuple(mask.shape) != (x.shape[0], x.shape[2], x.shape[3]) or mask.device != x.device:
            raise InputImageError(f"mask must be [K, R, R] on {x.device}, got {tuple(mask.shape)} on "
                                  f"{mask.device}", "give one mask per view at the image resolution")
        m = mask.to(torch.float32).unsqueeze(1)                                # [K, 1, R, R]
        x = torch.cat([x * m, m], dim=1)                                       # [K, 4, R, R]
    x = x.contiguous()
    w = lanczos2_weights(x.device)
    levels, carry = [x], x
    while carry.shape[-1] % 2 == 0 and carry.shape[-1] // 2 >= config.min_size:
        carry = _down_axis(_down_axis(carry, w, 3), w, 2)                   # [K, C, S/2, S/2]
        sharp = carry + config.sharpen * (carry - _blur121(carry)) if config.sharpen > 0 else carry
        levels.append(sharp.contiguous())                                   # the chain goes on unsharpened
    return levels


# ---------------------------------------------------------------------------------------- footprints
def texel_differentials(position: torch.Tensor, valid: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """World-space finite differences per texel step, packed over valid texels.

    position: float32 [H, W, 3] texel centres (world); valid: bool [H, W] (surface under the texel).
    Returns (dp_du, dp_dv float32 [T, 3], ok_u, ok_v bool [T]: that axis had a neighbour), T =
    valid.sum(), rows in ``position[valid]`` order; du is along columns (+x of the atlas), dv along
    rows. Border rule: module docstring.
    """
    if position.ndim != 3 or position.shape[2] != 3 or tuple(valid.shape) != tuple(position.shape[:2]):
        raise ConfigError(f"texel maps disagree: position {tuple(position.shape)}, "
                          f"valid {tuple(valid.shape)}", "pass position [H, W, 3] and valid [H, W]")
    p = position.float()
    cols = []
    for dim in (1, 0):                                             # du: columns, dv: rows
        fwd = torch.zeros_like(p)
        bwd = torch.zeros_like(p)
        has_f = torch.zeros_like(valid)
        has_b = torch.zeros_like(valid)
        n = p.shape[dim]
        a, b = p.narrow(dim, 0, n - 1), p.narrow(dim, 1, n - 1)
        va, vb = valid.narrow(dim, 0, n - 1), valid.narrow(dim, 1, n - 1)
        fwd.narrow(dim, 0, n - 1).copy_(b - a)
        has_f.narrow(dim, 0, n - 1).copy_(va & vb)
        bwd.narrow(dim, 1, n - 1).copy_(b - a)
        has_b.narrow(dim, 1, n - 1).copy_(va & vb)
        lf, lb = fwd.norm(dim=-1), bwd.norm(dim=-1)
        use_b = has_b & (~has_f | (lb < lf))
        d = torch.where(use_b[..., None], bwd, torch.where(has_f[..., None], fwd, torch.zeros_like(p)))
        cols.append((d[valid], (has_f | has_b)[valid]))
    (du, ok_u), (dv, ok_v) = cols
    return du, dv, ok_u, ok_v


def pixel_jacobian(dp_du: torch.Tensor, dp_dv: torch.Tensor, ok_u: torch.Tensor, ok_v: torch.Tensor,
                   cameras: list[OrthoCamera], resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-space Jacobian columns per view: (j_u, j_v) float32 [K, T, 2] pixels per texel step.

    dp_du, dp_dv float32 [T, 3] and ok_u, ok_v bool [T] from ``texel_differentials``; a column whose
    axis had no neighbour is the other column turned by 90 degrees (isotropic guess)."""
    mats = []
    for cam in cameras:
        r, u, _ = cam.basis()
        s = resolution / (2.0 * cam.half_extent)
        mats.append([list(r * s), list(-u * s)])
    a = torch.tensor(mats, dtype=torch.float32, device=dp_du.device)         # [K, 2, 3]
    ju = torch.einsum("kij,tj->kti", a, dp_du.float())                       # [K, T, 2]
    jv = torch.einsum("kij,tj->kti", a, dp_dv.float())
    rot_v = torch.stack([-jv[..., 1], jv[..., 0]], dim=-1)
    rot_u = torch.stack([-ju[..., 1], ju[..., 0]], dim=-1)
    ju2 = torch.where((~ok_u & ok_v)[None, :, None], rot_v, ju)
    jv2 = torch.where((~ok_v & ok_u)[None, :, None], rot_u, jv)
    return ju2.contiguous(), jv2.contiguous()


def svd2x2(j_u: torch.Tensor, j_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form SVD of J = [j_u j_v] (columns [..., 2]): (s1 >= s2 >= 0 [...], e1 unit [..., 2] the
    major left singular vector, i.e. the image direction of the footprint's long axis)."""
    a, c = j_u[..., 0], j_u[..., 1]
    b, d = j_v[..., 0], j_v[..., 1]
    e, f, g = a * a + b * b, a * c + b * d, c * c + d * d                     # J J^T = [[e, f], [f, g]]
    root = torch.sqrt((e - g) ** 2 + 4.0 * f * f)
    s1 = torch.sqrt(0.5 * (e + g + root))
    det = torch.abs(a * d - b * c)
    s2 = torch.where(s1 > 0, det / torch.where(s1 > 0, s1, torch.ones_like(s1)), torch.zeros_like(s1))
    s2 = torch.minimum(s2, s1)
    t = 0.5 * torch.atan2(2.0 * f, e - g)
    return s1, s2, torch.stack([torch.cos(t), torch.sin(t)], dim=-1)


def footprints(j_u: torch.Tensor, j_v: torch.Tensor, config: AnisoConfig = AnisoConfig()) -> Footprint:
    """Filter parameters from the Jacobian columns j_u, j_v float32 [K, T, 2] (``pixel_jacobian``).
    Formulas in the module docstring. Pure elementwise torch on the inputs' device (no host sync)."""
    if j_u.shape != j_v.shape or j_u.ndim != 3 or j_u.shape[-1] != 2:
        raise ConfigError(f"Jacobian columns must both be [K, T, 2], got {tuple(j_u.shape)}, "
                          f"{tuple(j_v.shape)}", "pass pixel_jacobian's outputs")
    s1, s2, e1 = svd2x2(j_u.float(), j_v.float())
    ratio = s1 / torch.clamp(s2, min=1e-12)
    n = torch.clamp(torch.ceil(ratio * (1.0 - 1e-4)), 1, config.max_taps)    # tolerance: isotropic -> 1
    n = torch.where(s1 > 0, n, torch.ones_like(n))
    minor = torch.maximum(s2, s1 / n)
    lod = torch.log2(torch.clamp(minor, min=1e-30)) + config.lod_bias
    lod = torch.clamp(torch.nan_to_num(lod, nan=0.0), min=0.0)
    step = (s1 / n)[..., None] * e1
    return Footprint(step.contiguous(), lod.contiguous(), n.to(torch.uint8).contiguous())


def precompute_footprints(position: torch.Tensor, valid: torch.Tensor, cameras: list[OrthoCamera],
                          resolution: int, config: AnisoConfig = AnisoConfig()) -> Footprint:
    """Mesh + rig only (runs while diffusion runs, paper 8.2): texel maps position float32 [H, W, 3],
    valid bool [H, W] on any device -> Footprint over [K = len(cameras), T = valid.sum()] texels."""
    du, dv, ok_u, ok_v = texel_differentials(position, valid)
    ju, jv = pixel_jacobian(du, dv, ok_u, ok_v, cameras, resolution)
    return footprints(ju, jv, config)


def sample_anisotropic(mips: list[torch.Tensor], px: torch.Tensor, fp: Footprint,
                       where: torch.Tensor | None = None) -> torch.Tensor:
    """Anisotropic colours float32 [K, T, 3] of K views at texel centres px [K, T, 2] (0 where ``where``
    [K, T] is False). CUDA tensors go to the numba-cuda kernel (``triton_kernels.anisotropic_sample``,
    no host sync); CPU tensors to the torch reference."""
    if px.is_cuda:
        return sample_anisotropic_gpu(mips, px, fp, where)
    return sample_anisotropic_ref(mips, px, fp, where)
