"""LayerNorm + AdaLN modulation (+ the next GEMM's activation quantisation) of a DiT sub-layer in one pass.

What a DiT block does before each of its GEMMs (``engine.models.dit_layers.DiTBlock._pre``), eager: a
LayerNorm pass, a modulation pass (``addcmul``) and, when the GEMM runs in FP8 / INT8, the quantisation pass
of ``quant_rows``; each reads and writes the whole [M, W] activation. Here one program per row reads the row
once and writes either the modulated row (x's dtype) or its codes and scale.

Maths (``norm_modulate_ref``, the reference, is the eager composition itself). Row r of x [M, W] belongs to
batch item b = r // R (R = rows per item, M = B R):
  h = (x - mean) / sqrt(var + eps) [* weight + bias]     LayerNorm (biased variance, fp32), rounded to
                                                          x's dtype
  h = shift_b + h * round(1 + scale_b)                    the modulation (``modulate``), rounded to x's dtype
  then, when a format is given, ``quant_rows``'s maths on h (dynamic per-row or static scale, optional
  SmoothQuant divisor), via ``quant_rows.quantize_row_store``.
The roundings to x's dtype sit where the eager ops round, so the result differs from the reference only by
the order of the row sums (mean, variance): at most one unit in the last place of x's dtype in a few
elements, and then at most one code step of the quantised row.

Layouts: x [M, W] contiguous; shift, scale [B, W] (rows of any stride 1 layout, e.g. chunks of the AdaLN
output); weight, bias [W] (affine LayerNorm) or None. Output [M, W] in x's dtype, or (codes [M, W], scale
float32 [M, 1] / the static scalar). Limits: W <= 32768 (one program holds a row). Floor: reads 2 M W bytes
(bf16) and writes 2 M W (or M W + 4 M quantised): at M = 25344, W = 3072 (TextureGen flash) 311 MB
(234 MB), ~0.1 ms at 3 TB/s, against ~0.4 ms of traffic for the three eager passes (byte counts, not
timings; the sampler timings are in benchmarks/results/quant_texturegen_fused_h100.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from triton_kernels.errors import ConfigError
from triton_kernels.quant_rows import (
    MAX_K,
    fused_outputs,
    quant_flags,
    quant_rows_ref,
    quantize_row_store,
    round_bf16,
    row_warps,
)


def norm_modulate_ref(x: torch.Tensor, rows_per_item: int, shift: torch.Tensor | None,
                      scale: torch.Tensor | None, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, eps: float = 1e-6, fmt: str | None = None,
                      smooth: torch.Tensor | None = None, static_scale: torch.Tensor | None = None):
    """The eager ops: ``F.layer_norm`` then ``addcmul(shift, h, 1 + scale)`` per item, then
    ``quant_rows_ref`` when ``fmt`` is given. x [M, W] -> [M, W] or (codes, scale)."""
    m, w = x.shape
    h = F.layer_norm(x, (w,), weight, bias, eps)
    if shift is not None:
        h3 = h.view(m // rows_per_item, rows_per_item, w)
        h = torch.addcmul(shift[:, None], h3, 1 + scale[:, None]).view(m, w)
    return h if fmt is None else quant_rows_ref(h, fmt, smooth, static_scale)


@triton.jit
def _norm_modulate_kernel(x_ptr, out_ptr, shift_ptr, scale_ptr, shift_stride, scale_stride, w_ptr, b_ptr,
                          q_ptr, qscale_ptr, smooth_ptr, static_ptr, W, R, eps,
                          MODULATE: tl.constexpr, AFFINE: tl.constexpr, QUANT: tl.constexpr,
                          BF16: tl.constexpr,
                          HAS_SMOOTH: tl.constexpr, STATIC: tl.constexpr, FP8: tl.constexpr,
                          QMAX: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < W
    xv = tl.load(x_ptr + row * W + offs, mask=mask, other=0.0)
    v = xv.to(tl.float32)
    mean = tl.sum(v, axis=0) / W
    d = tl.where(mask, v - mean, 0.0)
    var = tl.sum(d * d, axis=0) / W
    h = d * tl.math.rsqrt(var + eps)                                   # as PyTorch's CUDA LayerNorm
    if AFFINE:
        h = h * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) \
            + tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if BF16:
        h = round_bf16(h)                                                   # F.layer_norm's rounding
    if MODULATE:
        item = row // R
        sh = tl.load(shift_ptr + item * shift_stride + offs, mask=mask, other=0.0).to(tl.float32)
        one_plus = tl.load(scale_ptr + item * scale_stride + offs, mask=mask, other=0.0).to(tl.float32) + 1.0
        if BF16:
            one_plus = round_bf16(one_plus)                                 # eager `1 + scale` is bf16
        h = sh + h * one_plus
        if BF16:
            h = round_bf16(h)                                               # addcmul's rounding
    h = tl.where(mask, h, 0.0)
    if QUANT:
        quantize_row_store(h, mask, offs, row, W, q_ptr, qscale_ptr, smooth_ptr, static_ptr,
                           HAS_SMOOTH, STATIC, FP8, QMAX)
    else:
        tl.store(out_ptr + row * W + offs, h.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor | None, items: int, w: int, name: str) -> torch.Tensor | None:
    if t is None:
        return None
    if t.dim() != 2 or tuple(t.shape) != (items, w) or t.stride(1) != 1:
        raise ValueError(f"norm_modulate: {name} must be [{items}, {w}] with unit channel stride, "
                         f"got {tuple(t.shape)} strides {t.stride()}")
    return t


def norm_modulate(x: torch.Tensor, rows_per_item: int, shift: torch.Tensor | None,
                  scale: torch.Tensor | None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, eps: float = 1e-6, fmt: str | None = None,
                  smooth: torch.Tensor | None = None, static_scale: torch.Tensor | None = None):
    """The kernel: same contract as ``norm_modulate_ref`` (CPU tensors need TRITON_INTERPRET=1)."""
    if x.dtype not in (torch.float32, torch.bfloat16) or any(
            t is not None and t.dtype != x.dtype for t in (shift, scale, weight, bias)):
        raise ValueError("norm_modulate: x, shift, scale, weight and bias are all float32 or all bfloat16")
    if x.dim() != 2 or not x.is_contiguous():
        raise ConfigError(f"norm_modulate needs a contiguous [M, W] matrix, got {tuple(x.shape)}",
                          "reshape the activation to [tokens, channels] first")
    m, w = x.shape
    if w > MAX_K:
        raise ConfigError(f"norm_modulate holds a row of at most {MAX_K} channels, got {w}",
                          "use the eager LayerNorm for wider rows")
    if rows_per_item < 1 or m % rows_per_item:
        raise ValueError(f"norm_modulate: {m} rows are not whole items of {rows_per_item}")
    if (shift is None) != (scale is None) or (weight is None) != (bias is None):
        raise ValueError("norm_modulate: give shift with scale and weight with bias")
    items = m // rows_per_item
    shift, scale = _rows(shift, items, w, "shift"), _rows(scale, items, w, "scale")
    out, q, qscale = fused_outputs(x, m, w, fmt, static_scale)
    if m == 0:
        return out if fmt is None else (q, qscale)
    block = triton.next_power_of_2(w)
    _norm_modulate_kernel[(m,)](
        x, out, shift if shift is not None else x, scale if scale is not None else x,
        shift.stride(0) if shift is not None else 0, scale.stride(0) if scale is not None else 0,
        weight if weight is not None else x, bias if bias is not None else x,
        q, qscale, smooth if smooth is not None else x, qscale, w, rows_per_item, float(eps),
        MODULATE=shift is not None, AFFINE=weight is not None, BF16=x.dtype == torch.bfloat16,
        **quant_flags(fmt, smooth, static_scale), BLOCK=block, num_warps=row_warps(block))
    return out if fmt is None else (q, qscale)
