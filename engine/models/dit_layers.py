"""Building blocks shared by the engine's diffusion transformers (MeshGen coarse/refine, TextureGen).

Everything attends through ``engine.models.attention.attention`` (layout [B, H, N, Dh], cuDNN SDPA first
on CUDA). Token tensors are [B, N, W] (batch, tokens, width); conditioning vectors are [B, C].

* ``TimestepEmbedder``: sinusoidal features of a (float) timestep -> MLP -> [B, C] (DiT, Peebles & Xie).
* ``AdaLN`` modulation: one SiLU + Linear per block maps the conditioning vector to (shift, scale, gate)
  for each modulated sub-layer; ``adaln_zero`` zero-initialises that linear so a fresh block is the
  identity (DiT's adaLN-Zero). Applied as ``x + gate * f(norm(x) * (1 + scale) + shift)``.
* ``SwiGLU``: ``w_out(silu(x w_gate) * (x w_up))`` with gate and up fused in one GEMM; hidden size
  rounded up to a multiple of 256 (``swiglu_hidden``).
* ``SelfAttention``: fused QKV GEMM, optional RMSNorm on q and k per head (QK norm), optional rotary
  tables (``apply_rope``; rotate-half convention, cos/sin [N, Dh] built once per request elsewhere).
* ``CrossAttention``: q from the tokens, k/v from the context; ``context_kv`` computes (k, v) once per
  request so a denoising step only runs the q projection, attention and the output projection.
* ``DiTBlock``: self-attention, cross-attention, SwiGLU, each pre-normed with a residual; which of them
  are AdaLN-modulated is part of ``DiTBlockConfig`` (MeshGen: self + cross, the paper's text;
  TextureGen: all three with adaLN-Zero).
* Fused kernels (``set_fused``; the engine turns them on for its eager CUDA networks): each sub-layer's
  LayerNorm + modulation, and SwiGLU's gating, run as one Triton pass (``triton_kernels.norm_modulate``,
  ``triton_kernels.swiglu_rows``) that also quantises the activation when the GEMM after it is a native
  ``quant.linear.QuantLinear`` (it then receives a ``QuantInput``). Inside ``torch.compile`` the eager
  ops run, for Inductor to fuse.

FLOPs (multiply-add = 2) of one block on B x N tokens with M context tokens, context K/V precomputed:
  2BN W (3W + W + W + W) + 6BN W H_ff + 4BN W (N + M)
(QKV, self out, cross q, cross out; SwiGLU; the two attentions). ``block_flops`` returns it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.attention import attention, attention_flops

SUBLAYERS = ("self", "cross", "ffn")


def swiglu_hidden(width: int, ratio: float = 8.0 / 3.0, multiple: int = 256) -> int:
    """Hidden size of a SwiGLU FFN: ``ratio * width`` rounded up to a multiple of ``multiple``."""
    return int(multiple * math.ceil(ratio * width / multiple))


@dataclass(frozen=True)
class DiTBlockConfig:
    """One transformer block. ``context_dim`` None drops the cross-attention sub-layer."""

    width: int
    heads: int
    mlp_hidden: int
    context_dim: int | None = None
    cond_dim: int | None = None  # width of the AdaLN conditioning vector; None -> width
    qk_norm: bool = True
    adaln_zero: bool = False
    modulate: tuple[str, ...] = ("self", "cross")  # sub-layers with AdaLN (subset of SUBLAYERS)
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.width % self.heads != 0:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        if (self.width // self.heads) % 2 != 0:
            raise ValueError(f"head dim {self.width // self.heads} must be even")
        bad = [m for m in self.modulate if m not in SUBLAYERS]
        if bad or ("cross" in self.modulate and self.context_dim is None):
            raise ValueError(f"modulate {self.modulate} must be a subset of {SUBLAYERS} "
                             "(and 'cross' needs a context_dim)")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def timestep_frequencies(dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[dim // 2] fp32 frequencies exp(-ln(max_period) * i / (dim / 2)) of the sinusoidal embedding."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)


def timestep_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """t [B] (any float units, e.g. 0..999) -> [B, 2 * len(freqs)] fp32 as cat(cos, sin)."""
    args = t.float()[:, None] * freqs[None, :]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t [B] -> [B, out_dim]: sinusoid (freq_dim features, table built once) -> Linear -> SiLU -> Linear."""

    def __init__(self, out_dim: int, freq_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.register_buffer("freqs", timestep_frequencies(freq_dim, max_period), persistent=False)

    def reset_buffers(self) -> None:
        """Recompute the constant table (after ``to_empty``)."""
        self.freqs = timestep_frequencies(self.freq_dim, self.max_period).to(self.freqs.device)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freqs)  # [B, freq_dim] fp32
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, N, W] * (1 + scale [B, W]) + shift [B, W]."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half convention: x [B, H, N, Dh]; cos, sin [N, Dh] (pairs i, i + Dh/2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, optional QK RMSNorm and rotary tables."""

    def __init__(self, width: int, heads: int, qk_norm: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """x [B, N, W]; rope (cos, sin) [N, Dh] or None -> [B, N, W]."""
        b, n, w = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3,B,H,N,Dh]
        q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        o = attention(q, k, v)  # [B, H, N, Dh]
        return self.out(o.transpose(1, 2).reshape(b, n, w))


class CrossAttention(nn.Module):
    """Tokens attend to a context whose K/V (``context_kv``) are computed once per request."""

    def __init__(self, width: int, heads: int, context_dim: int, qk_norm: bool = True,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim, 2 * width)
        self.out = nn.Linear(width, width)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, M, C] -> (k, v), each [B, H, M, Dh], k already normalised."""
        b, m, _ = context.shape
        kv = self.kv(context).view(b, m, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.k_norm(kv[0]).contiguous(), kv[1].contiguous()

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x [B, N, W], kv from ``context_kv`` (batch B) -> [B, N, W]."""
        b, n, w = x.shape
        q = self.q_norm(self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2))  # [B,H,N,Dh]
        o = attention(q, kv[0], kv[1])
        return self.out(o.transpose(1, 2).reshape(b, n, w))


def _fusing(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs its fused Triton kernel on ``x`` (module doc: ``set_fused``)."""
    return module.fused and x.dtype in (torch.bfloat16, torch.float32) and not torch.compiler.is_compiling()


def _quant_handoff(consumer: nn.Module, rows: int):
    """(format, smooth, static scale) when ``consumer`` quantises its input natively and takes it from the
    producing kernel (``QuantLinear.input_spec``), else None (a plain linear, or one that pads rows)."""
    spec = getattr(consumer, "input_spec", None)
    return spec(rows) if spec is not None else None


class SwiGLU(nn.Module):
    """x [B, N, W] -> w_out(silu(x W_gate) * (x W_up)) [B, N, W]; gate and up share one GEMM."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.out = nn.Linear(hidden, width, bias=False)
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gu = self.gate_up(x)
        if not _fusing(self, gu):
            gate, up = gu.split(self.hidden, dim=-1)
            return self.out(F.silu(gate) * up)
        from triton_kernels.swiglu_rows import swiglu_rows

        lead, gu2 = gu.shape[:-1], gu.reshape(-1, 2 * self.hidden).contiguous()
        spec = _quant_handoff(self.out, gu2.shape[0])
        if spec is None:
            return self.out(swiglu_rows(gu2).view(*lead, self.hidden))
        from quant.linear import QuantInput

        return self.out(QuantInput(*swiglu_rows(gu2, *spec), tuple(lead)))


class DiTBlock(nn.Module):
    """Pre-norm block: x += g1 * SelfAttn(mod(norm x)); x += g2 * CrossAttn(mod(norm x)); x += g3 * FFN.

    Sub-layers listed in ``cfg.modulate`` use a LayerNorm without affine parameters followed by AdaLN
    (shift, scale) and a gate from the conditioning vector; the others use an affine LayerNorm and no
    gate. The per-block AdaLN linear maps cond [B, C] -> [B, 3 * len(modulate) * W].
    """

    def __init__(self, cfg: DiTBlockConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, eps = cfg.width, cfg.norm_eps
        self.sublayers = ("self", "cross", "ffn") if cfg.context_dim is not None else ("self", "ffn")
        self.norms = nn.ModuleDict({
            s: nn.LayerNorm(w, eps=eps, elementwise_affine=s not in cfg.modulate) for s in self.sublayers})
        self.attn = SelfAttention(w, cfg.heads, cfg.qk_norm, eps)
        self.cross = (CrossAttention(w, cfg.heads, cfg.context_dim, cfg.qk_norm, eps)
                      if cfg.context_dim is not None else None)
        self.ffn = SwiGLU(w, cfg.mlp_hidden)
        self.ada = None
        if cfg.modulate:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_dim or w, 3 * len(cfg.modulate) * w))
            if cfg.adaln_zero:
                nn.init.zeros_(self.ada[1].weight)
                nn.init.zeros_(self.ada[1].bias)
        self.fused = False

    def modulation(self, cond: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """cond [B, C] -> {sublayer: (shift, scale, gate)} each [B, W]; depends on cond only, so a
        sampler may compute it once per timestep table entry."""
        if self.ada is None:
            return {}
        chunks = self.ada(cond).chunk(3 * len(self.cfg.modulate), dim=-1)
        return {s: chunks[3 * i: 3 * i + 3] for i, s in enumerate(self.cfg.modulate)}

    def _pre(self, name: str, x: torch.Tensor, mods: dict):
        """The sub-layer's input: norm (+ modulation); fused, also quantised for its first GEMM."""
        if _fusing(self, x):
            return self._pre_fused(name, x, mods)
        h = self.norms[name](x)
        return modulate(h, mods[name][0], mods[name][1]) if name in mods else h

    def _consumer(self, name: str) -> nn.Module:
        """The linear layer that reads sub-layer ``name``'s normalised input."""
        return {"self": self.attn.qkv, "cross": self.cross.q if self.cross is not None else None,
                "ffn": self.ffn.gate_up}[name]

    def _pre_fused(self, name: str, x: torch.Tensor, mods: dict):
        """``_pre`` as one ``norm_modulate`` pass: [B, N, W] in x's dtype, or a ``QuantInput`` when the
        sub-layer's first GEMM is a native QuantLinear."""
        from triton_kernels.norm_modulate import norm_modulate

        b, n, w = x.shape
        norm = self.norms[name]
        shift, scale = mods[name][:2] if name in mods else (None, None)
        x2 = x.reshape(b * n, w).contiguous()
        spec = _quant_handoff(self._consumer(name), b * n)
        out = norm_modulate(x2, n, shift, scale, norm.weight, norm.bias, norm.eps, *(spec or ()))
        if spec is None:
            return out.view(b, n, w)
        from quant.linear import QuantInput

        return QuantInput(*out, (b, n))

    def _residual(self, name: str, x: torch.Tensor, y: torch.Tensor, mods: dict) -> torch.Tensor:
        return torch.addcmul(x, mods[name][2][:, None], y) if name in mods else x + y

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, N, W]; cond [B, C]; kv (k, v) [B, H, M, Dh] from ``self.cross.context_kv``; rope
        (cos, sin) [N, Dh] or None -> [B, N, W]."""
        mods = self.modulation(cond)
        x = self._residual("self", x, self.attn(self._pre("self", x, mods), rope), mods)
        if self.cross is not None:
            if kv is None:
                raise ValueError("this block has cross-attention: pass kv = block.cross.context_kv(ctx)")
            x = self._residual("cross", x, self.cross(self._pre("cross", x, mods), kv), mods)
        return self._residual("ffn", x, self.ffn(self._pre("ffn", x, mods)), mods)


def set_fused(module: nn.Module, on: bool = True) -> int:
    """Run every ``DiTBlock`` and ``SwiGLU`` of ``module`` through the fused Triton kernels (``on``) or the
    eager ops; returns how many modules were set. The kernels need a GPU (or TRITON_INTERPRET=1)."""
    count = 0
    for m in module.modules():
        if isinstance(m, (DiTBlock, SwiGLU)):
            m.fused = on
            count += 1
    return count


def block_flops(cfg: DiTBlockConfig, batch: int, n_tokens: int, n_context: int = 0) -> int:
    """FLOPs of one ``DiTBlock.forward`` (context K/V precomputed, AdaLN GEMV ignored)."""
    w, bn = cfg.width, batch * n_tokens
    flops = 2 * bn * w * 4 * w + 6 * bn * w * cfg.mlp_hidden
    flops += attention_flops(batch, cfg.heads, n_tokens, n_tokens, cfg.head_dim)
    if cfg.context_dim is not None:
        flops += 2 * bn * w * 2 * w + attention_flops(batch, cfg.heads, n_tokens, n_context, cfg.head_dim)
    return flops


def context_kv_flops(cfg: DiTBlockConfig, batch: int, n_context: int) -> int:
    """FLOPs of one block's ``context_kv`` (paid once per request)."""
    return 0 if cfg.context_dim is None else 2 * batch * n_context * cfg.context_dim * 2 * cfg.width


@torch.no_grad()
def init_random(module: nn.Module, seed: int, std: float | None = None) -> nn.Module:
    """Deterministic random weights in place (for latency runs and tests): Linear weights
    N(0, std or 1/sqrt(fan_in)), biases 0, norms 1/0; AdaLN-Zero linears stay zero; ``reset_buffers``
    is called on every sub-module that has it (constant tables lost by ``to_empty``). Same seed and
    device -> same weights."""
    device = next(module.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, m in module.named_modules():
        if hasattr(m, "reset_buffers"):
            m.reset_buffers()
        if isinstance(m, nn.Linear):
            if name.endswith("ada.1") and is_adaln_zero_linear(module, name):
                m.weight.zero_()
            else:
                s = std if std is not None else 1.0 / math.sqrt(m.in_features)
                w = torch.randn(m.weight.shape, generator=gen, device=device, dtype=torch.float32) * s
                m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
            m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return module


def is_adaln_zero_linear(root: nn.Module, linear_name: str) -> bool:
    """Whether ``linear_name`` (a '*.ada.1' linear) is the modulation of an adaLN-Zero ``DiTBlock``."""
    block = root.get_submodule(linear_name.rsplit(".ada.1", 1)[0])
    return isinstance(block, DiTBlock) and block.cfg.adaln_zero


def build_on(device: str | torch.device, dtype: torch.dtype, make: Callable[..., nn.Module], *args,
             seed: int = 0, init: Callable[[nn.Module, int], nn.Module] | None = None) -> nn.Module:
    """Construct ``make(*args)`` directly on ``device`` in ``dtype`` with random weights from ``seed``,
    without an fp32 copy first: parameters are created on the meta device, constant buffers by the
    constructor (``checkpoints.materialise``: they keep their values and dtype), then the parameters get
    device storage and ``init(module, seed)`` (default ``init_random`` of this file) fills them."""
    from engine.models.checkpoints.materialise import materialise_, skeleton

    module = materialise_(skeleton(lambda: make(*args)), device, dtype)
    return (init or init_random)(module, seed)
