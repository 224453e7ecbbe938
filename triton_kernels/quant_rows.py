"""Row-wise activation quantisation for low-precision GEMMs (Triton): x -> (q, scale), one pass.

Maths (identical to ``quant_rows_ref``, the reference). For a row x [K] of the activation matrix
x [M, K] (bf16, fp16 or fp32), with an optional per-channel divisor ``smooth`` [K] (SmoothQuant: the
activation is x / smooth, the weight was multiplied by smooth) and Q the format's largest code
(FP8 e4m3: 448, INT8: 127):
  * dynamic (default):  s = max(max_k |x_k / smooth_k|, 1e-12) * fp32(1 / Q)   one scale per row, [M, 1]
  * static:             s = the given per-tensor scale (from calibration)     the same for every row
  q_k = clamp(x_k / smooth_k / s, -Q, Q) rounded to the format: FP8 e4m3 round-to-nearest-even (what
  ``tensor.to(torch.float8_e4m3fn)`` does), INT8 round-half-to-even (``torch.round``).
The GEMM then computes x w^T ~= s_x * s_w * (q_x q_w^T) (``torch._scaled_mm`` / ``torch._int_mm``).

Layouts: x [M, K] row-major (contiguous); q [M, K] float8_e4m3fn or int8 row-major (the A operand of
``torch._scaled_mm``); scale float32 [M, 1] (dynamic) or the given scalar tensor (static).
The FP8 rounding is done in fp32 arithmetic on the bit pattern (3 mantissa bits kept, ties to even;
below 2^-6, the e4m3 subnormals, a fixed step of 2^-9) and the already representable value is cast:
Triton's CPU interpreter mis-rounds fp32 -> fp8 conversions whose rounding carries into the exponent
(124.7 -> 64), so the kernel never asks it to round. Divisions are IEEE round-to-nearest
(``tl.math.div_rn``): Triton's ``/`` on fp32 compiles to the approximate ``div.full.f32`` on NVIDIA GPUs,
which made 4 of 10 H100 parity cases (K = 3072, 12288) differ from the reference by one code. The scale
is the row maximum times the fp32 reciprocal of Q, written so in the reference too: PyTorch's CUDA
division by a Python number multiplies by its reciprocal while its CPU division divides, so ``amax / Q``
was a different scale on each (one unit in the last place in some rows, then codes one step apart: the
same 4 H100 cases, still failing with ``div_rn``, 2026-12-08).

Limits: K <= 32768 (one program holds a whole row); M any. Floor: reads 2 M K bytes (bf16) and writes
M K + 4 M bytes: at M = 25344, K = 3072 (a TextureGen flash linear) 234 MB, ~0.08 ms at 3 TB/s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels.errors import ConfigError

FORMATS = {"fp8": (torch.float8_e4m3fn, 448.0), "int8": (torch.int8, 127.0)}
MAX_K = 32768


def quant_rows_ref(x: torch.Tensor, fmt: str, smooth: torch.Tensor | None = None,
                   static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] float -> (q [M, K] in the format's dtype, scale float32 [M, 1] or the static scalar)."""
    dtype, qmax = FORMATS[fmt]
    v = x.float()
    if smooth is not None:
        v = v / smooth.float()
    if static_scale is None:
        scale = v.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) * (1.0 / qmax)    # [M, 1]
    else:
        scale = static_scale.float()
    y = (v / scale).clamp(-qmax, qmax)
    q = y.to(dtype) if fmt == "fp8" else torch.round(y).to(dtype)
    return q, scale


@triton.jit
def _rint(v):
    """Round half to even in fp32 arithmetic (|v| < 2^22)."""
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    up = (d > 0.5) | ((d == 0.5) & odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def _round_e4m3(y):
    """fp32 y with |y| <= 448 -> the nearest e4m3 value (ties to even), still fp32."""
    bits = y.to(tl.int32, bitcast=True)
    lsb = (bits >> 20) & 1
    rounded = ((bits + 0x7FFFF + lsb) & -1048576).to(tl.float32, bitcast=True)      # keep 3 mantissa bits
    sub = _rint(y * 512.0) / 512.0                                                   # e4m3 subnormals
    return tl.where(tl.abs(y) < 0.015625, sub, rounded)


@triton.jit
def round_bf16(y):
    """fp32 -> the nearest bfloat16 value (ties to even), still fp32, so the cast that follows is exact:
    Triton's CPU interpreter truncates fp32 -> bf16 conversions (the GPU rounds), so a kernel that must
    round like PyTorch's bf16 ops rounds here first. Finite inputs."""
    bits = y.to(tl.int32, bitcast=True)
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) & -65536).to(tl.float32, bitcast=True)


@triton.jit
def quantize_row_store(v, mask, offs, row, K, q_ptr, scale_ptr, smooth_ptr, static_ptr,
                       HAS_SMOOTH: tl.constexpr, STATIC: tl.constexpr, FP8: tl.constexpr,
                       QMAX: tl.constexpr):
    """The quantisation of one row held in registers (fp32 ``v``, masked lanes 0), stored as codes at
    ``q_ptr + row * K`` and, when dynamic, its scale at ``scale_ptr + row``: the maths of the module
    docstring. Shared by the kernels that make an activation and quantise it in the same pass
    (``norm_modulate``, ``swiglu_rows``)."""
    if HAS_SMOOTH:
        v = tl.math.div_rn(v, tl.load(smooth_ptr + offs, mask=mask, other=1.0).to(tl.float32))
    if STATIC:
        s = tl.load(static_ptr).to(tl.float32)
    else:
        amax = tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12)
        s = amax * (1.0 / QMAX)
        tl.store(scale_ptr + row, s)
    y = tl.minimum(tl.maximum(tl.math.div_rn(v, s), -QMAX), QMAX)  # IEEE division: `/` is approximate
    if FP8:
        y = _round_e4m3(y)
    else:
        y = _rint(y)
    tl.store(q_ptr + row * K + offs, y.to(q_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _quant_rows_kernel(x_ptr, q_ptr, scale_ptr, smooth_ptr, static_ptr, K,
                       HAS_SMOOTH: tl.constexpr, STATIC: tl.constexpr, FP8: tl.constexpr,
                       QMAX: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < K
    v = tl.load(x_ptr + row * K + offs, mask=mask, other=0.0).to(tl.float32)
    quantize_row_store(v, mask, offs, row, K, q_ptr, scale_ptr, smooth_ptr, static_ptr,
                       HAS_SMOOTH, STATIC, FP8, QMAX)


def quant_outputs(m: int, k: int, fmt: str, device, static_scale: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [m, k] in the format's dtype, scale float32 [m, 1] or the static scalar, on ``device``):
    the outputs of a kernel that quantises rows (format and K checked)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown quantisation format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if k > MAX_K:
        raise ConfigError(f"quantised rows hold at most {MAX_K} channels, got {k}", "split the GEMM along K")
    q = torch.empty((m, k), device=device, dtype=FORMATS[fmt][0])
    if static_scale is not None:
        return q, static_scale.reshape(()).to(device=device, dtype=torch.float32)
    return q, torch.empty((m, 1), device=device, dtype=torch.float32)


def fused_outputs(like: torch.Tensor, m: int, k: int, fmt: str | None, static_scale: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, codes, scale) of a kernel that writes [m, k] rows in ``like``'s dtype (``fmt`` None) or their
    codes and scales (``quant_outputs``); the buffers it does not write are placeholders."""
    if fmt is None:
        out = like.new_empty((m, k))
        return out, out, out
    q, scale = quant_outputs(m, k, fmt, like.device, static_scale)
    return q, q, scale


def quant_flags(fmt: str | None, smooth: torch.Tensor | None, static_scale: torch.Tensor | None) -> dict:
    """The constexpr arguments of ``quantize_row_store`` (and QUANT, whether to call it) for ``fmt``."""
    return dict(QUANT=fmt is not None, HAS_SMOOTH=smooth is not None, STATIC=static_scale is not None,
                FP8=fmt == "fp8", QMAX=FORMATS[fmt][1] if fmt is not None else 1.0)


def row_warps(block: int) -> int:
    """Warps of a one-row-per-program kernel over ``block`` lanes (at most 32 values per thread)."""
    return max(1, min(16, block // 512))


def quant_rows(x: torch.Tensor, fmt: str, smooth: torch.Tensor | None = None,
               static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel: same contract as ``quant_rows_ref`` (CPU tensors need TRITON_INTERPRET=1)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown quantisation format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if x.dim() != 2 or not x.is_contiguous():
        raise ConfigError(f"quant_rows needs a contiguous [M, K] matrix, got {tuple(x.shape)}",
                          "reshape the activation to [tokens, channels] first")
    m, k = x.shape
    q, scale = quant_outputs(m, k, fmt, x.device, static_scale)
    if m == 0:
        return q, scale
    block = triton.next_power_of_2(k)
    _quant_rows_kernel[(m,)](x, q, scale, smooth if smooth is not None else x, scale, k,
                             HAS_SMOOTH=smooth is not None, STATIC=static_scale is not None,
                             FP8=fmt == "fp8", QMAX=FORMATS[fmt][1], BLOCK=block,
                             num_warps=row_warps(block))
    return q, scale
