"""Anisotropic mip-chain lookups for backprojection (numba-cuda): one thread per (view, texel).

Maths (identical to ``sample_anisotropic_ref`` below, the reference; the footprints and the mip chain come
from ``engine.texture.anisotropic``, which re-exports ``Footprint`` and the reference). For item (k, t)
with centre c = px[k, t] (level-0 pixels, centres at +0.5), tap spacing s = step[k, t], n = taps[k, t]
and lod = min(lod[k, t], L - 1):
  l0 = floor(lod), f = lod - l0; for q in {0, 1} (level l = l0 + q < L, weight w_q = 1 - f, f):
    for i in 0..n-1: p = c + (i - (n - 1) / 2) s; bilinear lookup (clamp-to-edge) of level l at p / 2^l
    acc += w_q / n * lookup
With a premultiplied chain (C = 4: rgb * alpha, alpha) the colour is acc.rgb / max(acc.alpha, 1e-4).
Items with where[k, t] = 0 write zeros (texels the view does not see: incidence 0).

Layouts: the chain is packed channel-last in one float32 buffer (``pack_mips``): level l of side
S_l = S_0 / 2^l at offset off[l] = sum_{m < l} K S_m^2 C (recomputed per thread: no tables), element
(k, y, x, c) at off[l] + ((k S_l + y) S_l + x) C + c, so one bilinear corner is C adjacent floats.
px, step float32 [K, T, 2]; lod float32 [K, T]; taps uint8 [K, T]; where uint8 [K, T];
out float32 [K, T, 3].

Limits: C in {3, 4}; n <= 255 (the paper uses 8); every level exactly half the previous one; offsets
are int64 (no size limit from indexing).
Floor: per item 22 bytes of footprint + centre in, 12 bytes out, and up to 2 n bilinear lookups of 4 C
floats each (at n = 8, C = 3: 768 B of mostly L1/L2-resident gathers) with ~10 FLOPs per channel per
corner. A 2048^2 atlas (~2.5M valid texels) x 10 views at ~35 % visibility: ~9M items, ~300 MB of DRAM
traffic for the packed outputs and inputs, i.e. ~0.1 ms at 3 TB/s; the gathers dominate in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from numba import float32, int32, int64

from triton_kernels.errors import ConfigError
from triton_kernels.numba_cuda import cuda_module, kernel_device, launch, simulated, view

cuda = cuda_module()

SIM_THREADS = 32           # threads per launch in the CUDA simulator (each one is a Python thread)


@dataclass(frozen=True)
class Footprint:
    """Per (view, texel) filter parameters (precompute: mesh + rig only). step float32 [K, T, 2] tap
    spacing in level-0 pixels along the major axis; lod float32 [K, T] >= 0 (unclamped above: sampling
    clamps to the chain's last level); taps uint8 [K, T] in 1..max_taps."""

    step: torch.Tensor
    lod: torch.Tensor
    taps: torch.Tensor


# ---------------------------------------------------------------------------------------- reference
def _bilinear_ref(level: torch.Tensor, k: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Clamp-to-edge bilinear lookups in level [K, C, S, S] at level pixel coordinates x, y [N] of views
    k [N] (pixel centres at +0.5): [N, C]. Same as ``backproject._taps`` (engine) inside the image; beyond the
    outer pixel centres both corners clamp to the edge pixel (``_taps`` would blend pixels 0 and 1)."""
    s = level.shape[-1]
    xf, yf = x - 0.5, y - 0.5
    x0f, y0f = torch.floor(xf), torch.floor(yf)
    fx, fy = (xf - x0f)[:, None], (yf - y0f)[:, None]
    x0 = torch.clamp(x0f.long(), 0, s - 1)
    y0 = torch.clamp(y0f.long(), 0, s - 1)
    x1, y1 = torch.clamp(x0f.long() + 1, 0, s - 1), torch.clamp(y0f.long() + 1, 0, s - 1)
    img = level.permute(0, 2, 3, 1)                                          # [K, S, S, C]
    top = img[k, y0, x0] * (1 - fx) + img[k, y0, x1] * fx
    bot = img[k, y1, x0] * (1 - fx) + img[k, y1, x1] * fx
    return top * (1 - fy) + bot * fy


def sample_anisotropic_ref(mips: list[torch.Tensor], px: torch.Tensor, fp: Footprint,
                           where: torch.Tensor | None = None) -> torch.Tensor:
    """Vectorised torch reference of the anisotropic lookup: colours float32 [K, T, 3] (0 where
    ``where`` [K, T] bool is False). With a premultiplied chain (C = 4) colour = rgb / alpha."""
    kk, t = px.shape[:2]
    sel = torch.ones(kk, t, dtype=torch.bool, device=px.device) if where is None else where
    k, i = torch.nonzero(sel, as_tuple=True)                                 # [N]
    c = px[k, i].float()                                                     # [N, 2]
    step, n = fp.step[k, i], fp.taps[k, i].long()
    lod = torch.clamp(fp.lod[k, i], max=len(mips) - 1)
    l0 = torch.floor(lod).long()
    frac = lod - l0
    acc = torch.zeros(k.shape[0], mips[0].shape[1], device=px.device)
    for lev in range(len(mips)):
        wl = torch.where(l0 == lev, 1 - frac, torch.where(l0 + 1 == lev, frac, torch.zeros_like(frac)))
        if not bool((wl > 0).any()):
            continue
        scale = 0.5 ** lev
        for j in range(int(n.max())):
            on = (j < n).float() * wl / n.float()
            pos = c + (j - (n.float() - 1) * 0.5)[:, None] * step
            acc += on[:, None] * _bilinear_ref(mips[lev], k, pos[:, 0] * scale, pos[:, 1] * scale)
    if acc.shape[1] == 4:
        acc = acc[:, :3] / torch.clamp(acc[:, 3:], min=1e-4)
    out = torch.zeros(kk, t, 3, device=px.device)
    out[k, i] = acc
    return out


REFERENCE = sample_anisotropic_ref


# ------------------------------------------------------------------------------------------- kernels


def pack_mips(mips: list[torch.Tensor]) -> torch.Tensor:
    """Pack a chain [level l: float32 [K, C, S_l, S_l], S_l = S_0 / 2^l] into one channel-last float32
    buffer [sum_l K S_l^2 C] on the chain's device (layout in the module docstring)."""
    for lev, m in enumerate(mips):
        if m.shape[-1] << lev != mips[0].shape[-1] or m.shape[:2] != mips[0].shape[:2]:
            raise ConfigError(f"mip level {lev} is {tuple(m.shape)}, not level 0 {tuple(mips[0].shape)} / "
                              f"2^{lev}", "pass build_mip_chain's output")
    return torch.cat([m.permute(0, 2, 3, 1).reshape(-1) for m in mips]).float().contiguous()


@cuda.jit(device=True)
def _level_base(s0, k_views, chans, lev, k):
    """(side S_lev, offset of view k's image in level lev) of the packed chain."""
    off = int64(0)
    s = int64(s0)
    for _ in range(lev):
        off += int64(k_views) * s * s * chans
        s = s // 2
    return s, off + int64(k) * s * s * chans


@cuda.jit(device=True)
def _clamp_index(i, s):
    """i clamped to [0, s - 1] (clamp-to-edge addressing)."""
    if i < 0:
        return int64(0)
    if i > s - 1:
        return int64(s - 1)
    return int64(i)


@cuda.jit(device=True)
def _channel(mips, r0, r1, x0, x1, gx, fx, gy, fy):
    """Bilinear blend of one channel from the 4 corners (row starts r0, r1; column offsets x0, x1)."""
    top = mips[r0 + x0] * gx + mips[r0 + x1] * fx
    bot = mips[r1 + x0] * gx + mips[r1 + x1] * fx
    return top * gy + bot * fy


@cuda.jit(device=True)
def _bilinear(mips, base, s, chans, x, y):
    """Bilinear lookup (r, g, b, a) at level pixel coordinates x, y (centres at +0.5), clamp-to-edge;
    a = 1 for a 3-channel chain. Channels are explicit scalars (registers, no local memory)."""
    xf = x - float32(0.5)
    yf = y - float32(0.5)
    x0f = math.floor(xf)
    y0f = math.floor(yf)
    fx = xf - float32(x0f)
    fy = yf - float32(y0f)
    x0 = _clamp_index(int64(x0f), s) * chans
    x1 = _clamp_index(int64(x0f) + 1, s) * chans
    r0 = base + _clamp_index(int64(y0f), s) * s * chans
    r1 = base + _clamp_index(int64(y0f) + 1, s) * s * chans
    gx = float32(1.0) - fx
    gy = float32(1.0) - fy
    c0 = _channel(mips, r0, r1, x0, x1, gx, fx, gy, fy)
    c1 = _channel(mips, r0 + 1, r1 + 1, x0, x1, gx, fx, gy, fy)
    c2 = _channel(mips, r0 + 2, r1 + 2, x0, x1, gx, fx, gy, fy)
    c3 = float32(1.0)
    if chans == 4:
        c3 = _channel(mips, r0 + 3, r1 + 3, x0, x1, gx, fx, gy, fy)
    return c0, c1, c2, c3


@cuda.jit(cache=True)
def aniso_sample_kernel(mips, s0, k_views, nlev, chans, px, step, lod, taps, where, use_where, out,
                        n_items, t_per_view):
    """Grid-stride over (view, texel) items: trilinear lookups at up to ``taps`` points on the major axis."""
    for i in range(cuda.grid(1), n_items, cuda.gridsize(1)):
        k = i // t_per_view
        t = i - k * t_per_view
        a0 = float32(0.0)
        a1 = float32(0.0)
        a2 = float32(0.0)
        a3 = float32(0.0)
        if use_where == 0 or where[k, t] != 0:
            lv = lod[k, t]
            if lv > float32(nlev - 1):
                lv = float32(nlev - 1)
            l0 = int32(math.floor(lv))
            fr = lv - float32(l0)
            n = int32(taps[k, t])
            half = float32(n - 1) * float32(0.5)
            cx = px[k, t, 0]
            cy = px[k, t, 1]
            sx = step[k, t, 0]
            sy = step[k, t, 1]
            for q in range(2):
                lev = l0 + q
                wl = float32(1.0) - fr if q == 0 else fr
                if lev < nlev and wl > float32(0.0):
                    scale = float32(1.0) / float32(1 << lev)
                    s, base = _level_base(s0, k_views, chans, lev, k)
                    wt = wl / float32(n)
                    for j in range(n):
                        o = float32(j) - half
                        c0, c1, c2, c3 = _bilinear(mips, base, s, chans, (cx + o * sx) * scale,
                                                   (cy + o * sy) * scale)
                        a0 += wt * c0
                        a1 += wt * c1
                        a2 += wt * c2
                        a3 += wt * c3
            if chans == 4:
                al = a3 if a3 > float32(1e-4) else float32(1e-4)
                a0 = a0 / al
                a1 = a1 / al
                a2 = a2 / al
        out[k, t, 0] = a0
        out[k, t, 1] = a1
        out[k, t, 2] = a2


def _launch(kernel, items: int, *args) -> None:
    """One thread per item on the GPU; in the simulator one block of SIM_THREADS looping threads."""
    if simulated():
        launch(kernel, min(items, SIM_THREADS), *args, threads=SIM_THREADS)
    else:
        launch(kernel, items, *args)


def _check(px: torch.Tensor, fp: Footprint, where: torch.Tensor | None, dev: torch.device) -> None:
    k, t = px.shape[:2]
    shapes = {"px": (px, (k, t, 2), torch.float32), "step": (fp.step, (k, t, 2), torch.float32),
              "lod": (fp.lod, (k, t), torch.float32), "taps": (fp.taps, (k, t), torch.uint8)}
    if where is not None:
        shapes["where"] = (where, (k, t), torch.bool)
    for name, (x, shape, dtype) in shapes.items():
        if tuple(x.shape) != shape or x.dtype != dtype or x.device != dev:
            raise ConfigError(f"anisotropic sampling: {name} is {tuple(x.shape)} {x.dtype} on {x.device}, "
                              f"expected {shape} {dtype} on {dev}", "pass footprints() outputs on the device")


def sample_anisotropic_gpu(mips: list[torch.Tensor], px: torch.Tensor, fp: Footprint,
                           where: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel version of ``sample_anisotropic_ref``: colours float32 [K, T, 3] on ``kernel_device()``.

    mips: ``build_mip_chain`` output (levels float32 [K, C, S_l, S_l], C = 3 or 4) on kernel_device();
    px float32 [K, T, 2]; fp: ``footprints`` output; where: optional bool [K, T] (False -> zeros).
    No host sync."""
    dev = kernel_device()
    if px.ndim != 3 or px.shape[-1] != 2:
        raise ConfigError(f"texel centres must be [K, T, 2], got {tuple(px.shape)}", "pass per-view pixels")
    _check(px, fp, where, dev)
    k, t = px.shape[:2]
    if not mips or mips[0].shape[0] != k or mips[0].shape[1] not in (3, 4) or mips[0].device != dev:
        raise ConfigError(f"mip chain does not match {k} views on {dev}", "pass build_mip_chain's output")
    flat = pack_mips(mips)
    out = torch.empty(k, t, 3, dtype=torch.float32, device=dev)
    use_where = 0 if where is None else 1
    if where is None:
        w = torch.zeros(1, 1, dtype=torch.uint8, device=dev)                # never read (use_where = 0)
    else:
        w = where.contiguous().view(torch.uint8)
    pxc = px.contiguous()                                                    # alive until after the launch
    side, chans = int(mips[0].shape[-1]), int(mips[0].shape[1])
    _launch(aniso_sample_kernel, k * t, view(flat), side, k, len(mips), chans, view(pxc),
            view(fp.step), view(fp.lod), view(fp.taps), view(w), use_where, view(out),
            k * t, t)
    return out
