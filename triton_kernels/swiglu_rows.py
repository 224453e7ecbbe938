"""SwiGLU's gating (+ the output GEMM's activation quantisation) in one pass over the gate/up rows.

A SwiGLU feed-forward (``engine.models.dit_layers.SwiGLU``) computes ``gate_up = x W`` ([M, 2H]) and then,
eager, ``silu(gate)`` (a pass writing [M, H]), the product with ``up`` (a pass reading both, writing
[M, H]) and, when the output GEMM runs in FP8 / INT8, ``quant_rows`` (a pass reading [M, H] and writing
the codes). Here one program per row reads gate and up once and writes the product (the input's dtype) or
its codes and scale.

Maths (``swiglu_rows_ref``, the reference, is the eager composition itself): g, u = gate_up[:, :H],
gate_up[:, H:]; s = g / (1 + exp(-g)) rounded to the input's dtype (``F.silu``); h = s u rounded to the
input's dtype; then ``quant_rows``'s maths on h when a format is given (``quant_rows.quantize_row_store``).
The roundings sit where the eager ops round; the GPU's exponential may differ from PyTorch's by a unit in
the last place of fp32, which moves a bf16 result by one place in rare elements (and then one code step).

Layouts: gate_up [M, 2H] contiguous (the fused gate/up GEMM's output; gate first). Output [M, H] in its
dtype, or (codes [M, H], scale float32 [M, 1] / the static scalar). Limits: H <= 32768. Floor: reads
4 M H bytes (bf16) and writes 2 M H (M H + 4 M quantised): TextureGen flash (M = 25344, H = 12288)
1.87 GB (1.56 GB), ~0.55 ms at 3 TB/s, against ~3.1 GB (+0.93 GB quantising) for the eager passes
(byte counts, not timings).
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


def swiglu_rows_ref(gate_up: torch.Tensor, fmt: str | None = None, smooth: torch.Tensor | None = None,
                    static_scale: torch.Tensor | None = None):
    """The eager ops: ``F.silu(gate) * up``, then ``quant_rows_ref`` when ``fmt`` is given."""
    gate, up = gate_up.split(gate_up.shape[1] // 2, dim=-1)
    h = F.silu(gate) * up
    return h if fmt is None else quant_rows_ref(h, fmt, smooth, static_scale)


@triton.jit
def _swiglu_rows_kernel(gu_ptr, out_ptr, q_ptr, qscale_ptr, smooth_ptr, static_ptr, H,
                        QUANT: tl.constexpr, BF16: tl.constexpr, HAS_SMOOTH: tl.constexpr,
                        STATIC: tl.constexpr, FP8: tl.constexpr, QMAX: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < H
    g = tl.load(gu_ptr + row * 2 * H + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * H + H + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.math.div_rn(g, 1.0 + tl.exp(-g))                                 # F.silu (IEEE division)
    if BF16:
        s = round_bf16(s)
    h = s * u
    if BF16:
        h = round_bf16(h)
    h = tl.where(mask, h, 0.0)
    if QUANT:
        quantize_row_store(h, mask, offs, row, H, q_ptr, qscale_ptr, smooth_ptr, static_ptr,
                           HAS_SMOOTH, STATIC, FP8, QMAX)
    else:
        tl.store(out_ptr + row * H + offs, h.to(out_ptr.dtype.element_ty), mask=mask)


def swiglu_rows(gate_up: torch.Tensor, fmt: str | None = None, smooth: torch.Tensor | None = None,
                static_scale: torch.Tensor | None = None):
    """The kernel: same contract as ``swiglu_rows_ref`` (CPU tensors need TRITON_INTERPRET=1)."""
    if gate_up.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"swiglu_rows: float32 or bfloat16 rows, got {gate_up.dtype}")
    if gate_up.dim() != 2 or not gate_up.is_contiguous() or gate_up.shape[1] % 2:
        raise ConfigError(f"swiglu_rows needs a contiguous [M, 2H] matrix, got {tuple(gate_up.shape)}",
                          "reshape the gate/up GEMM's output to [tokens, 2 x hidden] first")
    m, h = gate_up.shape[0], gate_up.shape[1] // 2
    if h > MAX_K:
        raise ConfigError(f"swiglu_rows holds a row of at most {MAX_K} channels, got {h}",
                          "use the eager SwiGLU for wider rows")
    out, q, qscale = fused_outputs(gate_up, m, h, fmt, static_scale)
    if m == 0:
        return out if fmt is None else (q, qscale)
    block = triton.next_power_of_2(h)
    _swiglu_rows_kernel[(m,)](
        gate_up, out, q, qscale, smooth if smooth is not None else gate_up, qscale, h,
        BF16=gate_up.dtype == torch.bfloat16, **quant_flags(fmt, smooth, static_scale), BLOCK=block,
        num_warps=row_warps(block))
    return out if fmt is None else (q, qscale)
