"""3D inpainting and gutter dilation on the GPU (paper 7.4, "Inpainting"): the device twins of
``engine.texture.inpaint.inpaint_3d`` and ``dilate_gutter`` (their docstrings are the specification and
their outputs the references of the parity tests).

Split by dependency (paper 8.2). Which texels are known (seen by some view), the texel positions and
normals depend only on the mesh and the rig, so everything but the colours is planned ahead:
  ``plan_inpaint``  (mesh-only, may run while diffusion runs): texel width delta (median 4-neighbour
                    distance, same float32 arithmetic as ``texel_world_size``); round of every target from
                    its distance to the observed set (exact nearest query on a ``knn_grid`` index of the
                    sources; round j when r_(j-1) < D <= r_j, r_j = 2 delta 2^j, one unbounded round after
                    ``max_rounds``); per round, one grid over that round's sources (the previous round's
                    targets; all filled texels after an empty round) and one exact k-nearest query, turned
                    into normalised weights w_i = (max(0, n . n_i)^p + 1e-3) / (|x - x_i| + delta).
  ``apply_inpaint`` (colour-dependent): per round, atlas[targets] = sum_i w_i atlas[sources_i]: one
                    gather and one weighted sum per round, no host sync.
``inpaint_gpu`` does both. Host syncs (plan only): valid/known counts, delta, the round sizes, and two
per round inside ``build_grid`` (bounds, table size).

Layouts: atlas float32 [H, W, C]; known, valid bool [H, W]; position, normal float32 [H, W, 3] (world,
unit normals), all on ``kernel_device()``. Plan tensors index the flattened atlas (r * W + c).
Parity: neighbour sets equal the KD-tree's up to points at equal distance, weights are float32 (the
reference mixes float32 and float64): colours agree to ~1e-6 except where a tie picks another neighbour.

``dilate_gutter_gpu``: exact Euclidean nearest chart texel within ``pixels``
(``triton_kernels.nearest_texel``): per column the nearest valid row above and below (torch
cummax/cummin), then one thread per gutter texel takes the minimum of dc^2 + dr^2 over the columns
|dc| <= pixels. Ties (equal distance): the smaller |dc| wins, then the right column, then the row above;
scipy's EDT may pick another of the tied texels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from engine.errors import ConfigError
from engine.texture.inpaint import NEUTRAL_COLOUR
from triton_kernels.knn_grid import MAX_K, build_grid, knn_grid, nearest_grid
from triton_kernels.nearest_texel import nearest_valid_texel
from triton_kernels.numba_cuda import kernel_device

_LOG = logging.getLogger(__name__)
ALIGN_EPS = 1e-3


@dataclass(frozen=True)
class InpaintRound:
    """One front of the fill: targets int64 [M] flat texel indices, sources int64 [M, k] flat texel
    indices of their k nearest sources, weights float32 [M, k] (rows sum to 1)."""

    targets: torch.Tensor
    sources: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class InpaintPlan:
    """Mesh-only inpainting plan (see the module docstring). ``valid`` bool [H, W]; ``neutral`` when no
    texel is known (every valid texel then gets NEUTRAL_COLOUR); ``delta`` texel width (world units)."""

    valid: torch.Tensor
    rounds: tuple[InpaintRound, ...]
    targets: int
    neutral: bool
    delta: float
    stats: dict = field(default_factory=dict)


def _check_maps(known, position, normal, valid) -> tuple[int, int]:
    dev = kernel_device()
    if not isinstance(valid, torch.Tensor) or valid.ndim != 2:
        raise ConfigError(f"valid must be a bool [H, W] tensor, got {getattr(valid, 'shape', type(valid))}",
                          "pass the chart mask of the atlas")
    hw = tuple(valid.shape)
    for name, t, shape, dtype in (("known", known, hw, torch.bool), ("valid", valid, hw, torch.bool),
                                  ("position", position, hw + (3,), torch.float32),
                                  ("normal", normal, hw + (3,), torch.float32)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ConfigError(f"{name} has shape {getattr(t, 'shape', type(t))}, expected {shape}",
                              "pass maps of the same atlas size")
        if t.dtype != dtype or t.device.type != dev.type:
            raise ConfigError(f"{name} is {t.dtype} on {t.device}", f"pass {dtype} on {dev}")
    return hw


def texel_world_size_gpu(position: torch.Tensor, valid: torch.Tensor) -> float:
    """Median distance between 4-adjacent valid texels, in the float32 arithmetic of
    ``inpaint.texel_world_size`` (((dx^2 + dy^2) + dz^2), sqrt, mean of the two middles); 1e-3 if none."""
    d = []
    for a, b in (((slice(0, -1), slice(None)), (slice(1, None), slice(None))),
                 ((slice(None), slice(0, -1)), (slice(None), slice(1, None)))):
        both = valid[a] & valid[b]
        diff = position[a][both] - position[b][both]                                   # [n, 3]
        d.append(torch.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]))
    dist = torch.cat(d)
    dist = torch.sort(dist[dist > 0]).values
    n = int(dist.numel())
    if n == 0:
        return 1e-3
    mid = dist[n // 2] if n % 2 else (dist[n // 2 - 1] + dist[n // 2]) / 2
    return float(mid)


def _round_weights(front, todo, pos, nrm, k, power, delta) -> InpaintRound:
    """Exact k nearest of ``todo`` among ``front`` (flat indices) and their normalised weights."""
    grid = build_grid(pos[front].contiguous(), 2.0 * delta)
    dist, idx = knn_grid(grid, pos[todo].contiguous(), min(k, int(front.numel())))     # [M, k]
    src = front[idx]                                                                    # [M, k]
    align = (nrm[todo][:, None, :] * nrm[src]).sum(-1).clamp_min(0.0) ** power          # [M, k]
    w = (align + ALIGN_EPS) / (dist + delta)
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    return InpaintRound(todo, src, w)


_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shift(x: torch.Tensor, dy: int, dx: int, fill) -> torch.Tensor:
    """y[r, c] = x[r + dy, c + dx] (``fill`` outside), for [H, W] or [H, W, C] tensors."""
    h, w = x.shape[:2]
    out = torch.full_like(x, fill)
    out[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = \
        x[max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)]
    return out


def uv_ring_rounds(known: torch.Tensor, valid: torch.Tensor, position: torch.Tensor, delta: float,
                   rings: int, gate: float) -> tuple[list[InpaintRound], torch.Tensor]:
    """The UV-ring stage of ``inpaint_3d`` as rounds (see its docstring): ring r fills every valid unknown
    texel with a known 8-neighbour closer than ``gate * delta`` in 3D, by the mean of those neighbours.
    Returns the rounds (sources [M, 8]; unused slots repeat a used one with weight 0, so unknown colours,
    even NaN, are never read) and the grown known set."""
    h, w = known.shape
    flat = torch.arange(h * w, device=known.device).view(h, w)
    rounds, known = [], known & valid
    near = [(_shift(position, dy, dx, float("inf")) - position).norm(dim=-1) < gate * delta
            for dy, dx in _OFFSETS]                                                       # 8 x [H, W]
    nbr_all = torch.stack([_shift(flat, dy, dx, 0) for dy, dx in _OFFSETS], -1).view(-1, 8)
    for _ in range(rings):
        oks = [_shift(known, dy, dx, False) & n for (dy, dx), n in zip(_OFFSETS, near)]
        ok = torch.stack(oks, -1) & (valid & ~known)[..., None]                           # [H, W, 8]
        todo = ok.any(-1)
        targets = torch.nonzero(todo.view(-1)).view(-1)                                   # host sync
        if targets.numel() == 0:
            break
        ok_t = ok.view(-1, 8)[targets]
        nbr = nbr_all[targets]                                                            # [M, 8]
        first = nbr.gather(1, ok_t.int().argmax(1, keepdim=True))                         # a known neighbour
        src = torch.where(ok_t, nbr, first)            # unused slots repeat it (weight 0, finite colour)
        wts = ok_t.float() / ok_t.sum(1, keepdim=True).float()
        rounds.append(InpaintRound(targets, src, wts))
        known = known | todo
    return rounds, known


def plan_inpaint(known: torch.Tensor, position: torch.Tensor, normal: torch.Tensor, valid: torch.Tensor,
                 k: int = 8, normal_power: float = 2.0, max_rounds: int = 12, uv_rings: int = 16,
                 uv_gate: float = 3.0) -> InpaintPlan:
    """Mesh-only part of ``inpaint_gpu`` (maps as in the module docstring; the UV-ring stage first)."""
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"inpainting neighbours k={k} must be in [1, {MAX_K}]", "use e.g. k=8")
    if not (math.isfinite(normal_power) and normal_power >= 0) or max_rounds < 0:
        raise ConfigError(f"normal_power={normal_power}, max_rounds={max_rounds} out of range",
                          "use normal_power >= 0 (e.g. 2) and max_rounds >= 0 (e.g. 12)")
    _check_maps(known, position, normal, valid)
    src_idx = torch.nonzero((known & valid).view(-1)).view(-1)                         # [S] int64
    tgt_idx = torch.nonzero((valid & ~known).view(-1)).view(-1)                        # [T] int64
    stats = {"inpaint_targets": int(tgt_idx.numel()), "inpaint_rounds": 0, "neutral_fill": False}
    if tgt_idx.numel() == 0 or src_idx.numel() == 0:
        return InpaintPlan(valid, (), int(tgt_idx.numel()), bool(src_idx.numel() == 0 and tgt_idx.numel()),
                           1e-3, stats)
    pos, nrm = position.reshape(-1, 3), normal.reshape(-1, 3)
    delta = texel_world_size_gpu(position, valid)
    ring_rounds, grown = uv_ring_rounds(known, valid, position, delta, uv_rings, uv_gate)
    stats["inpaint_ring_filled"] = int(sum(r.targets.numel() for r in ring_rounds))
    src_idx = torch.nonzero(grown.view(-1)).view(-1)
    tgt_idx = torch.nonzero((valid & ~grown).view(-1)).view(-1)
    if tgt_idx.numel() == 0:
        return InpaintPlan(valid, tuple(ring_rounds), stats["inpaint_targets"], False, delta, stats)
    d0, _ = nearest_grid(build_grid(pos[src_idx].contiguous(), 2.0 * delta), pos[tgt_idx].contiguous())
    edges = 2.0 * delta * 2.0 ** torch.arange(max_rounds + 1, dtype=torch.float64, device=d0.device)
    band = torch.searchsorted(edges, d0)                                               # [T], as numpy's
    band, order = torch.sort(band, stable=True)
    tgt_sorted = tgt_idx[order]
    counts = torch.bincount(band, minlength=max_rounds + 2).tolist()                   # one host sync
    rounds, front, start = list(ring_rounds), src_idx, 0
    for j, count in enumerate(counts):
        todo = tgt_sorted[start:start + count]
        if count == 0:
            front, start = todo, start + count
            if start == tgt_sorted.numel():
                break
            continue
        if front.numel() == 0:                                                          # a gap: all so far
            front = torch.cat([src_idx, tgt_sorted[:start]])
        rounds.append(_round_weights(front, todo, pos, nrm, k, normal_power, delta))
        front, start = todo, start + count
        stats["inpaint_rounds"] = j + 1
    return InpaintPlan(valid, tuple(rounds), stats["inpaint_targets"], False, delta, stats)


def apply_inpaint(plan: InpaintPlan, atlas: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Fill the planned targets of float32 [H, W, C] ``atlas`` (known colours must be finite); returns a
    new atlas and stats (rounds, targets, neutral_fill). No host sync."""
    if not isinstance(atlas, torch.Tensor) or atlas.ndim != 3 \
            or tuple(atlas.shape[:2]) != tuple(plan.valid.shape):
        raise ConfigError(f"atlas {getattr(atlas, 'shape', type(atlas))} does not match the plan's "
                          f"{tuple(plan.valid.shape)}", "pass an [H, W, C] atlas of the planned size")
    if atlas.dtype != torch.float32 or atlas.device != plan.valid.device:
        raise ConfigError(f"atlas is {atlas.dtype} on {atlas.device}", f"pass float32 on {plan.valid.device}")
    out = atlas.clone()
    flat = out.view(-1, out.shape[-1])                                                 # [H W, C]
    if plan.neutral:
        _LOG.warning("no texel is observed by any view; filling the texture with neutral grey")
        out = torch.where(plan.valid[..., None], torch.full_like(out, NEUTRAL_COLOUR), out)
        flat = out.view(-1, out.shape[-1])
    for rnd in plan.rounds:
        flat[rnd.targets] = (rnd.weights[..., None] * flat[rnd.sources]).sum(1)        # [M, C]
    stats = dict(plan.stats)
    stats["neutral_fill"] = plan.neutral
    return out, stats


def inpaint_gpu(atlas: torch.Tensor, known: torch.Tensor, position: torch.Tensor, normal: torch.Tensor,
                valid: torch.Tensor, k: int = 8, normal_power: float = 2.0, max_rounds: int = 12
                ) -> tuple[torch.Tensor, dict]:
    """``inpaint_3d`` on the device: every valid texel not ``known`` is filled (see the module docstring).
    Known texels whose colour has NaN/Inf are treated as unobserved (documented fallback). Returns the new
    float32 [H, W, C] atlas and stats (inpaint_targets, inpaint_rounds, neutral_fill, inpaint_unfilled,
    inpaint_nonfinite_known)."""
    _check_maps(known, position, normal, valid)
    if atlas.ndim != 3 or tuple(atlas.shape[:2]) != tuple(valid.shape):
        raise ConfigError(f"atlas {tuple(atlas.shape)} and valid {tuple(valid.shape)} disagree",
                          "pass arrays of the same atlas size")
    finite = torch.isfinite(atlas).all(-1)
    bad = known & valid & ~finite
    n_bad = int(bad.sum())
    plan = plan_inpaint(known & ~bad, position, normal, valid, k, normal_power, max_rounds)
    out, stats = apply_inpaint(plan, atlas.float())
    stats["inpaint_nonfinite_known"] = n_bad
    stats["inpaint_unfilled"] = int((valid & ~torch.isfinite(out).all(-1)).sum())
    return out, stats


# ----------------------------------------------------------------------------------------------------
# Gutter dilation
# ----------------------------------------------------------------------------------------------------

def dilate_gutter_gpu(atlas: torch.Tensor, valid: torch.Tensor, pixels: int | None = 16) -> torch.Tensor:
    """``dilate_gutter`` on the device: atlas [H, W, C] (any dtype), valid bool [H, W], both on
    ``kernel_device()``. Texels outside ``valid`` within ``pixels`` (Euclidean; None = everywhere, O(W) per
    texel) of a valid texel take the nearest valid texel's colour (ties: module docstring). New tensor."""
    dev = kernel_device()
    if not isinstance(valid, torch.Tensor) or valid.ndim != 2 or valid.dtype != torch.bool:
        raise ConfigError("valid must be a bool [H, W] tensor", "pass the chart mask of the atlas")
    if not isinstance(atlas, torch.Tensor) or atlas.ndim != 3 or atlas.shape[:2] != valid.shape:
        raise ConfigError(f"atlas {getattr(atlas, 'shape', None)} and valid {tuple(valid.shape)} disagree",
                          "pass an [H, W, C] atlas of the mask's size")
    if atlas.device.type != dev.type or valid.device.type != dev.type:
        raise ConfigError(f"atlas on {atlas.device}, valid on {valid.device}", f"pass both on {dev}")
    h, w = valid.shape
    p = max(h, w) if pixels is None else int(pixels)
    if p < 0:
        raise ConfigError(f"gutter pixels={pixels} must be >= 0", "use e.g. 16")
    src = nearest_valid_texel(valid, p)                                                # [H W] int64
    flat = atlas.reshape(h * w, -1)
    out = torch.where((src >= 0)[:, None], flat[src.clamp_min(0)], flat)             # [H W, C]
    return out.view(atlas.shape)
