"""Per-view photometric harmonisation and sub-pixel alignment of generated views before fusion (issue 14).

Generated views disagree with each other in ways a rendered view does not: each has its own exposure and
white balance, and each is misregistered against the geometry it was conditioned on by up to about a pixel.
Blending such views averages the disagreement into the atlas (colour blotches between views, doubled
edges). Before the blend, this module estimates per view k
  gain   g_k [3]  (per channel): observed = clip(g_k * true, 0, 1);
  shift  s_k [2]  (pixels, x right, y down): view k shows at pixel p + s_k what the geometry puts at p,
and fusion then samples view k at p + s_k and divides by g_k. Both are estimated from the views alone,
on the texels that two or more views see (``estimation_texels``: incidence >= ``min_incidence`` in at least
two views, a strided subset of at most ``max_texels``):

  gains   for every pair of views (j, k) with >= ``min_overlap`` texels seen unclipped by both, the median
          over those texels of log o_j - log o_k per channel (robust to the misregistered texels at colour
          edges); then the log gains a = log g solve the weighted least squares
            min_a  sum_(j,k) n_jk (a_j - a_k - d_jk)^2   subject to  sum_k a_k = 0 (over views with data)
          (n_jk: pair count). The constraint is the anchor: the generated views' mean exposure is taken as
          true (the global gain of all views together cannot be seen from their agreement). Views without
          overlaps keep gain 1.
  shifts  Gauss-Newton on the consensus: with c_kt the incidence^2-weighted mean of the OTHER views'
          gain-corrected colours of texel t, each step minimises
            sum_t w_kt rho(r) |I_k(p_kt + s_k) / g_k - c_kt|^2 over s_k,   linearised with the image
          gradient (central differences), w_kt = incidence^2, rho = Cauchy weights (scale 0.05) against
          occlusion and clipping outliers, a Levenberg damping of 1e-3 trace, |s_k| <= ``max_shift_px``.
          All views step together (Jacobi), coarse to fine: step i runs on level ``align_levels[i]``
          of a box pyramid of the views (level l: means of 2^l x 2^l pixels, coordinates / 2^l).
          Gauge: a common 3D translation T of the object
          moves view k by P_k T (P_k = R / 2h [r_k; -u_k]) and keeps every pair of views consistent, so
          colours cannot see it; after each step the weighted least-squares fit of P_k T is removed (the
          minimum-norm solution, the best guess for independent zero-mean misregistrations).
  order   gains from the unshifted views, then the shifts, then the gains again from the aligned views.

Clipping (over-exposed views): a channel at >= ``clip_level`` only says that the true value is >= 1 / g_k.
Such samples are left out of both estimates; in the corrected view they take 1.0 (the top of their
feasible interval: asset textures saturate often, e.g. a pure white or pure red) and their blend weight is
multiplied by ``clipped_weight``, so an unclipped view of the same texel wins where there is one.
``correct_views`` turns (images, estimate) into the corrected images and this per-pixel confidence.

Layouts: images float32 [K, 3, R, R] in [0, 1] (channels first); pixel float32 [K, N, 2] (x right, y
down, centres at +0.5: ``OrthoCamera.world_to_pixel``); incidence float32 [K, N]; any device (torch ops
only: the CPU reference ``backproject.fuse_views`` and the GPU ``fusion_gpu.fuse_views_gpu`` share it).
Cost: a few bilinear passes over at most ``max_texels`` texels x K views, a box pyramid and gradients
of the K views per level;
host syncs: ~50 (pair counts, medians, 2 x 2 solves), all outside any captured graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.errors import ConfigError

CLIP_LEVEL = 254.5 / 255.0     # a uint8 channel at 255 is clipped
LOG_FLOOR = 4.0 / 255.0        # darker channels are left out of the gain estimate (log noise)
CAUCHY_SCALE = 0.05            # residual scale of the alignment's robust weights (colour units)


@dataclass(frozen=True)
class HarmoniseConfig:
    """Settings of ``harmonise_views`` (module docstring).

    gains / align: estimate per-view gains / shifts. min_incidence: texels used for the estimates need at
    least this incidence in two views. max_texels: size of the estimation subset. min_overlap: texels a
    pair of views must share to constrain their gain ratio. max_shift_px: bound of |s_k| in pixels.
    align_levels: pyramid level of each Gauss-Newton step, coarse to fine (level l: 2^l x 2^l box means).
    clip_level: channel
    values at or above it are clipped. clipped_weight: blend-weight factor of clipped samples (0, 1].
    """

    gains: bool = True
    align: bool = True
    min_incidence: float = 0.25
    max_texels: int = 262144
    min_overlap: int = 256
    max_shift_px: float = 1.5
    align_levels: tuple[int, ...] = (2, 2, 1, 1, 0, 0, 0)
    clip_level: float = CLIP_LEVEL
    clipped_weight: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_incidence < 1.0:
            raise ConfigError(f"harmonise min_incidence = {self.min_incidence} must be in [0, 1)", "use 0.25")
        if self.max_texels < 1 or self.min_overlap < 1:
            raise ConfigError("harmonise max_texels and min_overlap must be >= 1", "use 262144 and 256")
        if not (math.isfinite(self.max_shift_px) and self.max_shift_px >= 0):
            raise ConfigError(f"harmonise max_shift_px = {self.max_shift_px} must be >= 0", "use 1.5")
        if any(not 0 <= lev <= 4 for lev in self.align_levels):
            raise ConfigError(f"harmonise align_levels {self.align_levels} must be in 0..4",
                              "use e.g. (1, 0, 0)")
        if not 0.0 < self.clip_level <= 1.0 or not 0.0 < self.clipped_weight <= 1.0:
            raise ConfigError("harmonise clip_level and clipped_weight must be in (0, 1]",
                              "use 254.5/255, 0.05")


@dataclass(frozen=True)
class ViewCorrection:
    """Per-view estimate: gains float32 [K, 3] (observed = gain * true), shifts float32 [K, 2] pixels (view k
    shows at p + shift what the geometry puts at p), stats (pairs used, texels, steps)."""

    gains: torch.Tensor
    shifts: torch.Tensor
    stats: dict

    @staticmethod
    def identity(k: int, device: torch.device | str) -> ViewCorrection:
        return ViewCorrection(torch.ones(k, 3, device=device), torch.zeros(k, 2, device=device), {})


# ------------------------------------------------------------------------------------------- sampling
def sample_bilinear(images: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """Clamp-to-edge bilinear lookups of images [K, C, R, R] at pixel [K, M, 2] (x right, y down, centres at
    +0.5) -> [K, M, C]. Inside the outer pixel centres this is ``backproject._taps``'s bilinear tap."""
    r = images.shape[-1]
    grid = (pixel.float() * (2.0 / r) - 1.0).unsqueeze(1)                     # [K, 1, M, 2]
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)                                       # [K, M, C]


def box_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[level 0 = images, level l = 2 x 2 means of level l - 1] for l <= ``levels``; [K, C, R / 2^l, ..]."""
    out = [images]
    for _ in range(levels):
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def image_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences d/dx, d/dy (per pixel, replicate borders) of [K, C, R, R]."""
    p = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    gy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return gx, gy


# ------------------------------------------------------------------------------------------ estimates
def estimation_texels(incidence: torch.Tensor, config: HarmoniseConfig) -> torch.Tensor:
    """int64 [M]: texels with incidence >= min_incidence in at least two views, strided to <= max_texels."""
    good = (incidence >= max(config.min_incidence, 1e-6)).sum(0) >= 2                # [N]
    idx = torch.nonzero(good).view(-1)
    if idx.numel() > config.max_texels:
        stride = math.ceil(idx.numel() / config.max_texels)
        idx = idx[::stride]
    return idx


def _solve_channel(logo: torch.Tensor, usable: torch.Tensor, min_overlap: int) -> tuple[torch.Tensor, int]:
    """Log gains float64 [K] of one channel: logo [K, M] log colours, usable bool [K, M]."""
    k = logo.shape[0]
    rows, rhs, wts = [], [], []
    for j in range(k):
        for i in range(j + 1, k):
            both = usable[j] & usable[i]
            n = int(both.sum())
            if n < min_overlap:
                continue
            rows.append((j, i))
            rhs.append(float(torch.median(logo[j, both] - logo[i, both])))
            wts.append(math.sqrt(n))
    res = torch.zeros(k, dtype=torch.float64)
    if not rows:
        return res, 0
    a = torch.zeros(len(rows) + 1, k, dtype=torch.float64)
    for p, ((j, i), w) in enumerate(zip(rows, wts)):
        a[p, j], a[p, i] = w, -w
    b = torch.tensor([d * w for d, w in zip(rhs, wts)] + [0.0], dtype=torch.float64)
    has = a[:-1].abs().sum(0) > 0                                              # views with data
    a[-1] = has.double() * sum(wts)                                            # sum_k a_k = 0, stiff
    res[has] = torch.linalg.lstsq(a[:, has], b[:, None]).solution[:, 0]
    return res, len(rows)


def estimate_log_gains(obs: torch.Tensor, usable: torch.Tensor, config: HarmoniseConfig
                       ) -> tuple[torch.Tensor, int]:
    """Log gains float32 [K, 3] (per channel sum 0 over the views with data) from colours obs [K, M, 3] and
    usable bool [K, M, 3] (seen, unclipped, not too dark) by pairwise medians and weighted least squares
    (module docstring). Returns (log gains, pairs used, summed over channels)."""
    logo = torch.log(obs.clamp_min(LOG_FLOOR))
    cols, pairs = [], 0
    for c in range(obs.shape[-1]):
        sol, n = _solve_channel(logo[..., c], usable[..., c], config.min_overlap)
        cols.append(sol)
        pairs += n
    return torch.stack(cols, -1).to(device=obs.device, dtype=torch.float32), pairs


def translation_basis(cameras: Sequence, resolution: int, device: torch.device | str) -> torch.Tensor:
    """P float32 [K, 2, 3]: pixel shift of view k per world translation of the object (P_k T)."""
    mats = []
    for cam in cameras:
        r, u, _ = cam.basis()
        s = resolution / (2.0 * cam.half_extent)
        mats.append([list(r * s), list(-u * s)])
    return torch.tensor(mats, dtype=torch.float32, device=device)


def remove_common_translation(shifts: torch.Tensor, basis: torch.Tensor, weight: torch.Tensor
                              ) -> torch.Tensor:
    """shifts [K, 2] minus their weighted least-squares fit P_k T (basis [K, 2, 3], weight [K] >= 0)."""
    w = weight.double()
    p = basis.double()
    h = torch.einsum("k,kij,kil->jl", w, p, p)                                 # [3, 3]
    if float(torch.linalg.matrix_rank(h)) < 3:
        return shifts
    t = torch.linalg.solve(h, torch.einsum("k,kij,ki->j", w, p, shifts.double()))
    return (shifts.double() - torch.einsum("kij,j->ki", p, t)).to(shifts.dtype)


def _consensus_step(stack: torch.Tensor, px: torch.Tensor, shifts: torch.Tensor, w: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gauss-Newton step of every view against the others. stack [K, 10, R, R] = (colour 3, d/dx 3,
    d/dy 3, clipped 1); px [K, M, 2]; w [K, M] weights (0 = unseen). Returns (delta [K, 2], count [K])."""
    smp = sample_bilinear(stack, px + shifts[:, None, :])                      # [K, M, 10]
    val, gx, gy, clip = smp[..., 0:3], smp[..., 3:6], smp[..., 6:9], smp[..., 9]
    wk = w * (clip < 0.5)                                                      # [K, M]
    total = (wk[..., None] * val).sum(0)                                       # [M, 3]
    wsum = wk.sum(0)                                                           # [M]
    other = (wsum[None] - wk).clamp_min(0.0)                                   # [K, M]
    ok = (other > 1e-6) & (wk > 0)
    cons = (total[None] - wk[..., None] * val) / other.clamp_min(1e-6)[..., None]
    r = torch.where(ok[..., None], val - cons, torch.zeros_like(val))          # [K, M, 3]
    rho = 1.0 / (1.0 + (r / CAUCHY_SCALE) ** 2)
    ww = torch.where(ok[..., None], wk[..., None] * rho, torch.zeros_like(r))   # [K, M, 3]
    hxx, hxy, hyy = (ww * gx * gx).sum((1, 2)), (ww * gx * gy).sum((1, 2)), (ww * gy * gy).sum((1, 2))
    bx, by = (ww * gx * r).sum((1, 2)), (ww * gy * r).sum((1, 2))
    damp = 1e-3 * (hxx + hyy) + 1e-12
    hxx, hyy = hxx + damp, hyy + damp
    det = hxx * hyy - hxy * hxy
    dx = -(hyy * bx - hxy * by) / det
    dy = -(hxx * by - hxy * bx) / det
    return torch.stack([dx, dy], -1), ok.sum(1)


def estimate_shifts(images: torch.Tensor, clipped: torch.Tensor, px: torch.Tensor, weight: torch.Tensor,
                    basis: torch.Tensor, config: HarmoniseConfig) -> torch.Tensor:
    """Shifts float32 [K, 2] (module docstring). images [K, 3, R, R] gain-corrected, clipped [K, 1, R, R]
    float (1 = clipped), px [K, M, 2] texel pixels, weight [K, M] (0 = not used)."""
    k = images.shape[0]
    shifts = torch.zeros(k, 2, device=images.device)
    pyramid = box_pyramid(torch.cat([images, clipped], 1), max(config.align_levels, default=0))
    stacks: dict[int, torch.Tensor] = {}
    for level in config.align_levels:
        if level not in stacks:
            lev = pyramid[level]
            gx, gy = image_gradients(lev[:, :3])
            stacks = {level: torch.cat([lev[:, :3], gx, gy, lev[:, 3:]], 1)}      # [K, 10, R_l, R_l]
        scale = 0.5 ** level
        delta, count = _consensus_step(stacks[level], px * scale, shifts * scale, weight)
        delta = torch.where(torch.isfinite(delta), delta / scale, torch.zeros_like(delta))
        shifts = shifts + delta
        norm = torch.linalg.vector_norm(shifts, dim=-1, keepdim=True)
        shifts = shifts * torch.clamp(config.max_shift_px / norm.clamp_min(1e-12), max=1.0)
        shifts = remove_common_translation(shifts, basis, (count > 0).float())
    return shifts


def _gain_inputs(images: torch.Tensor, px: torch.Tensor, shifts: torch.Tensor, weight: torch.Tensor,
                 config: HarmoniseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    smp = sample_bilinear(images, px + shifts[:, None, :])                     # [K, M, 3]
    usable = (weight > 0)[..., None] & (smp < config.clip_level) & (smp > LOG_FLOOR)   # [K, M, 3]
    return smp, usable


def harmonise_views(images: torch.Tensor, pixel: torch.Tensor, incidence: torch.Tensor, cameras: Sequence,
                    config: HarmoniseConfig = HarmoniseConfig()) -> ViewCorrection:
    """Estimate per-view gains and shifts (module docstring).

    images float [K, 3, R, R] in [0, 1]; pixel float32 [K, N, 2]; incidence float32 [K, N] (0 = unseen);
    cameras: the K ``OrthoCamera`` (for the translation gauge). Returns a ``ViewCorrection``.
    """
    k, _, r, _ = images.shape
    if (tuple(pixel.shape[:1]) != (k,) or tuple(incidence.shape) != tuple(pixel.shape[:2])
            or len(cameras) != k):
        raise ConfigError(f"harmonise inputs disagree: images {tuple(images.shape)}, pixel "
                          f"{tuple(pixel.shape)}, incidence {tuple(incidence.shape)}, {len(cameras)} cameras",
                          "pass [K, 3, R, R], [K, N, 2], [K, N] and K cameras")
    dev = images.device
    corr = ViewCorrection.identity(k, dev)
    idx = estimation_texels(incidence, config)
    stats = {"harmonise_texels": int(idx.numel()), "harmonise_pairs": 0}
    if idx.numel() == 0:
        return ViewCorrection(corr.gains, corr.shifts, stats)
    px = pixel[:, idx]                                                         # [K, M, 2]
    inc = incidence[:, idx]
    weight = torch.where(inc >= config.min_incidence, inc * inc, torch.zeros_like(inc))
    x = images.float()
    shifts = corr.shifts
    log_g = torch.zeros(k, 3, device=dev)
    if config.gains:
        log_g, stats["harmonise_pairs"] = estimate_log_gains(*_gain_inputs(x, px, shifts, weight, config),
                                                             config)
    if config.align and config.align_levels:
        clipped = (x >= config.clip_level).any(1, keepdim=True).float()        # [K, 1, R, R]
        corrected = torch.where(clipped > 0, torch.ones_like(x), x / torch.exp(log_g)[:, :, None, None])
        shifts = estimate_shifts(corrected.clamp(0.0, 1.0), clipped, px, weight,
                                 translation_basis(cameras, r, dev), config)
        if config.gains:
            log_g, stats["harmonise_pairs"] = estimate_log_gains(
                *_gain_inputs(x, px, shifts, weight, config), config)
    stats["harmonise_steps"] = len(config.align_levels) if config.align else 0
    return ViewCorrection(torch.exp(log_g).float(), shifts.float(), stats)


def correct_views(images: torch.Tensor, correction: ViewCorrection,
                  config: HarmoniseConfig = HarmoniseConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrected images float32 [K, 3, R, R] in [0, 1], aux float32 [K, 4, R, R]) for fusion. Corrected:
    unclipped channels divided by the view's gain, clipped ones 1.0 (module docstring). aux channel 0:
    blend confidence, ``clipped_weight`` where any channel is clipped, else 1; channels 1-3: the lower
    bound 1 / g_k of the true value in each clipped channel (0 elsewhere; ``censored_floor``). Shifts are
    applied by the caller at sampling time (pixel + shift)."""
    x = images.float()
    clipped = x >= config.clip_level                                           # [K, 3, R, R]
    gains = correction.gains[:, :, None, None]
    out = torch.where(clipped, torch.ones_like(x), x / gains).clamp_(0.0, 1.0)
    conf = torch.where(clipped.any(1, keepdim=True), torch.full_like(x[:, :1], config.clipped_weight),
                       torch.ones_like(x[:, :1]))
    lower = torch.where(clipped, (1.0 / gains).clamp(max=1.0).expand_as(x), torch.zeros_like(x))
    return out, torch.cat([conf, lower], 1)


def censored_floor(atlas: torch.Tensor, lower: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Blended colours [N, 3] raised to the largest lower bound that a view which saw the texel clipped
    puts on it: lower [K, N, 3] sampled aux channels 1-3 of ``correct_views``, seen bool [K, N]."""
    floor = torch.where(seen[..., None], lower, torch.zeros_like(lower)).amax(0)   # [N, 3]
    return torch.maximum(atlas, floor)
