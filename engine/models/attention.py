"""Scaled dot-product attention for every model of the engine, on the fastest backend the device has.

Layout: q [B, H, Nq, Dh], k and v [B, H, Nk, Dh], same dtype and device; returns [B, H, Nq, Dh].
On CUDA the backends are tried in the order cuDNN, FlashAttention-2, memory-efficient, math: on the
H100 the cuDNN backend runs bf16 attention at 590-690 TFLOP/s against ~365 for FlashAttention-2
(shared/TARGETS.md), so it comes first. On CPU torch picks its own kernel. An additive or boolean mask
[B or 1, H or 1, Nq, Nk] is accepted but rules out the fused cuDNN/flash kernels: sparse patterns (the
TextureGen multi-view attention) are computed as gathered dense blocks instead of masks.

FLOPs of one call: 4 * B * H * Nq * Nk * Dh (QK^T and PV, multiply-add counted as 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

CUDA_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                 SDPBackend.MATH]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
              ) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) + mask) v over the last two axes; shapes as in the module docstring.

    Inside ``torch.compile`` the call is the opaque op ``assetgen::attention`` (same kernel, same backend
    order): Inductor fuses what surrounds it but keeps the device's fastest attention kernel. Exports
    (``torch.export``: AOTInductor packages, ONNX) trace the plain aten op, which a C++ host can run."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects [B, H, N, Dh] tensors, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():   # exports keep plain aten
        return _attention_op(q, k, v, mask).transpose(1, 2)
    return _sdpa(q, k, v, mask)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if q.is_cuda:
        with sdpa_kernel(CUDA_BACKENDS, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@torch.library.custom_op("assetgen::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                  ) -> torch.Tensor:
    """``attention`` for compiled graphs -> [B, Nq, H, Dh] contiguous (a fixed layout the compiler can
    rely on; the fused kernels already write it, so ``contiguous`` copies nothing there)."""
    return _sdpa(q, k, v, mask).transpose(1, 2).contiguous()


@_attention_op.register_fake
def _attention_op_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                       ) -> torch.Tensor:
    b, h, n, _ = q.shape
    return q.new_empty((b, n, h, v.shape[-1]))


def attention_flops(batch: int, heads: int, n_q: int, n_k: int, head_dim: int) -> int:
    """Floating-point operations of one ``attention`` call (multiply-add = 2)."""
    return 4 * batch * heads * n_q * n_k * head_dim
