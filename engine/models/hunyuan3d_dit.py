"""Hunyuan3D-2 shape DiT (``Hunyuan3DDiT``): a Flux-style flow transformer over an unordered latent set.

Provenance: written here after reading Tencent's public ``hy3dgen/shapegen/models/denoisers/hunyuan3ddit.py``
(Hunyuan3D-2, commit da4d775) for module names, shapes, modulation order and the timestep embedding; no code
was copied. Architecture (one forward, no positional encoding anywhere: the latents are a set):

    img = latent_in(x)                               # [B, N, C] -> [B, N, W]
    vec = time_in(emb(t)) (+ guidance_in(emb(g)))    # [B] -> [B, W]
    txt = cond_in(cond)                              # [B, L, Dc] -> [B, L, W]
    double_blocks: img and txt keep their own weights, attend jointly over cat(txt, img)
    single_blocks: x = cat(txt, img), parallel attention + MLP (one linear in, one linear out)
    out = final_layer(x[:, L:], vec)                 # [B, N, C], the flow velocity

Modulation (per block, from ``silu(vec)``): double blocks produce 6 vectors per stream in the order
(shift1, scale1, gate1, shift2, scale2, gate2); single blocks (shift, scale, gate); the final layer
(shift, scale). A modulated norm is ``(1 + scale) * LayerNorm(x) + shift`` (LayerNorm without affine,
eps 1e-6); residuals are ``x + gate * f(...)``. QK normalisation is an RMSNorm over the head dim with a
learned ``scale`` (eps 1e-6). MLPs are Linear -> GELU(tanh) -> Linear at ``mlp_ratio`` x width.

Timestep embedding: ``[cos(f * 1000 t), sin(f * 1000 t)]`` with ``f_i = exp(-ln(P) i / 128)``, 256 wide.
Tencent's forward passes ``time_factor`` (1000) positionally into the ``max_period`` slot, so P = 1000, not
the usual 10000; the published weights were trained that way and this module reproduces it (the fp32
frequency table is built once per device, outside the state dict). The guidance embedding uses the same
function on the guidance scale itself (e.g. 5.0 -> 5000 before the frequencies).

State-dict keys, exactly the published names (``model.`` prefix stripped by the snapshot loader):
  verified against the public source: ``latent_in.{weight,bias}``, ``time_in.{in_layer,out_layer}.*``,
  ``guidance_in.{in_layer,out_layer}.*`` (guidance_embed only), ``cond_in.*``,
  ``double_blocks.N.{img,txt}_mod.lin.*``, ``double_blocks.N.{img,txt}_attn.qkv.{weight,bias}``,
  ``double_blocks.N.{img,txt}_attn.norm.{query_norm,key_norm}.scale``,
  ``double_blocks.N.{img,txt}_attn.proj.*``,
  ``double_blocks.N.{img,txt}_mlp.{0,2}.*``, ``single_blocks.N.{linear1,linear2}.*``,
  ``single_blocks.N.norm.{query_norm,key_norm}.scale``, ``single_blocks.N.modulation.lin.*``,
  ``final_layer.linear.*``, ``final_layer.adaLN_modulation.1.*``.
  Inferred, not checked against a downloaded file (no weights here): that the fp16 safetensors holds exactly
  these names under ``model.`` and nothing else (e.g. no EMA copies); the open_checkpoints.md summary agrees.

Sizes (``Hunyuan3DDiTConfig``): v2-0 width 1024, 16 heads, 16 double + 32 single blocks, context 1536
(DINOv2-giant), 3072 latents of 64 channels: 1,113,274,432 parameters (``-fast`` adds guidance_in: 1.3 M);
mini (8 + 16 blocks) 559,196,224. One v2-0 forward on 3072 latents + 1370 image tokens: 5.37 TFLOP of token
GEMMs + 3.88 TFLOP of attention (``flops_per_forward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention, attention_flops

TIME_EMBED_DIM = 256


@dataclass(frozen=True)
class Hunyuan3DDiTConfig:
    """``Hunyuan3DDiT`` hyper-parameters, with Tencent's YAML parameter names."""

    in_channels: int = 64
    context_in_dim: int = 1536
    hidden_size: int = 1024
    mlp_ratio: float = 4.0
    num_heads: int = 16
    depth: int = 16  # double-stream blocks
    depth_single_blocks: int = 32
    axes_dim: tuple[int, ...] = (64,)  # RoPE axes in Flux; unused (pe is None) but must sum to head_dim
    theta: int = 10_000
    qkv_bias: bool = True
    time_factor: float = 1000.0
    guidance_embed: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                              f"{self.num_heads}",
                              "use a width that is a multiple of the head count")
        if sum(self.axes_dim) != self.hidden_size // self.num_heads:
            raise ConfigError(f"axes_dim {self.axes_dim} does not sum to the head dim "
                              f"{self.hidden_size // self.num_heads}", "fix axes_dim in the config")
        if min(self.in_channels, self.context_in_dim, self.depth + self.depth_single_blocks) < 1:
            raise ConfigError("Hunyuan3DDiT sizes must be positive", "check the config")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @classmethod
    def v2_0(cls) -> Hunyuan3DDiTConfig:
        """``hunyuan3d-dit-v2-0`` (and ``-turbo``'s geometry): CFG batched at sampling time."""
        return cls()

    @classmethod
    def v2_0_fast(cls) -> Hunyuan3DDiTConfig:
        """``hunyuan3d-dit-v2-0-fast``: guidance-distilled, the scale enters through ``guidance_in``."""
        return cls(guidance_embed=True)

    @classmethod
    def mini(cls) -> Hunyuan3DDiTConfig:
        """``hunyuan3d-dit-v2-mini``: 8 double + 16 single blocks."""
        return cls(depth=8, depth_single_blocks=16)

    @classmethod
    def tiny(cls) -> Hunyuan3DDiTConfig:
        """CPU-test size: same structure, width 64, 4 heads, 2 + 2 blocks, 8 latent channels."""
        return cls(in_channels=8, context_in_dim=32, hidden_size=64, num_heads=4, depth=2,
                   depth_single_blocks=2, axes_dim=(16,))

    @classmethod
    def from_name(cls, name: str) -> Hunyuan3DDiTConfig:
        presets = {"v2_0": cls.v2_0, "v2_0_fast": cls.v2_0_fast, "mini": cls.mini, "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown Hunyuan3DDiT preset '{name}'", f"use one of {sorted(presets)}")
        return presets[name]()

    @classmethod
    def from_yaml_params(cls, params: dict) -> Hunyuan3DDiTConfig:
        """Config from the ``model.params`` mapping of a Tencent ``config.yaml``. Keys the published class
        ignores (it takes ``**kwargs``; e.g. ``ckpt_path``) are ignored here too."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in params.items() if k in known}
        if "axes_dim" in kwargs:
            kwargs["axes_dim"] = tuple(int(a) for a in kwargs["axes_dim"])
        return replace(cls(), **kwargs)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (``in_layer``, ``out_layer``)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSScale(nn.Module):
    """RMSNorm over the last axis with a learned ``scale`` (the published parameter name), eps 1e-6."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.scale, eps=1e-6)


class QKNorm(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.query_norm = RMSScale(head_dim)
        self.key_norm = RMSScale(head_dim)


class SelfAttention(nn.Module):
    """Holds one stream's ``qkv``, ``norm`` and ``proj``; the joint attention runs in the block."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, W] -> normalised q, k and v, each [B, H, L, Dh]."""
        b, n, w = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return self.norm.query_norm(qkv[0]), self.norm.key_norm(qkv[1]), qkv[2]


class Modulation(nn.Module):
    """``lin(silu(vec))`` split into ``3 * sets`` vectors of width W, each [B, 1, W]."""

    def __init__(self, dim: int, sets: int) -> None:
        super().__init__()
        self.chunks = 3 * sets
        self.lin = nn.Linear(dim, self.chunks * dim)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.lin(F.silu(vec))[:, None, :].chunk(self.chunks, dim=-1)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=1e-6), 1 + scale)


def _merge_heads(o: torch.Tensor) -> torch.Tensor:
    """[B, H, L, Dh] -> [B, L, H * Dh]."""
    b, h, n, d = o.shape
    return o.transpose(1, 2).reshape(b, n, h * d)


class DoubleStreamBlock(nn.Module):
    def __init__(self, cfg: Hunyuan3DDiTConfig) -> None:
        super().__init__()
        w = cfg.hidden_size
        self.img_mod = Modulation(w, 2)
        self.img_attn = SelfAttention(w, cfg.num_heads, cfg.qkv_bias)
        self.img_mlp = _mlp(w, cfg.mlp_hidden)
        self.txt_mod = Modulation(w, 2)
        self.txt_attn = SelfAttention(w, cfg.num_heads, cfg.qkv_bias)
        self.txt_mlp = _mlp(w, cfg.mlp_hidden)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """img [B, N, W], txt [B, L, W], vec [B, W] -> (img, txt) of the same shapes."""
        i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2 = self.img_mod(vec)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(vec)
        iq, ik, iv = self.img_attn.qkv_heads(_modulate(img, i_sh1, i_sc1))
        tq, tk, tv = self.txt_attn.qkv_heads(_modulate(txt, t_sh1, t_sc1))
        o = attention(torch.cat((tq, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2))
        o = _merge_heads(o)  # [B, L + N, W], txt first
        n_txt = txt.shape[1]
        img = img + i_g1 * self.img_attn.proj(o[:, n_txt:])
        img = img + i_g2 * self.img_mlp(_modulate(img, i_sh2, i_sc2))
        txt = txt + t_g1 * self.txt_attn.proj(o[:, :n_txt])
        txt = txt + t_g2 * self.txt_mlp(_modulate(txt, t_sh2, t_sc2))
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, cfg: Hunyuan3DDiTConfig) -> None:
        super().__init__()
        w = cfg.hidden_size
        self.heads = cfg.num_heads
        self.mlp_hidden = cfg.mlp_hidden
        self.linear1 = nn.Linear(w, 3 * w + self.mlp_hidden)  # qkv and MLP-in, one GEMM
        self.linear2 = nn.Linear(w + self.mlp_hidden, w)  # attention-out and MLP-out, one GEMM
        self.norm = QKNorm(cfg.head_dim)
        self.modulation = Modulation(w, 1)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """x [B, L + N, W], vec [B, W] -> [B, L + N, W]."""
        shift, scale, gate = self.modulation(vec)
        b, n, w = x.shape
        qkv, mlp = self.linear1(_modulate(x, shift, scale)).split([3 * w, self.mlp_hidden], dim=-1)
        qkv = qkv.view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        o = attention(self.norm.query_norm(qkv[0]), self.norm.key_norm(qkv[1]), qkv[2])
        out = self.linear2(torch.cat((_merge_heads(o), F.gelu(mlp, approximate="tanh")), dim=-1))
        return torch.addcmul(x, gate, out)


class LastLayer(nn.Module):
    def __init__(self, w: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(w, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear(_modulate(x, shift, scale))


class Hunyuan3DDiT(nn.Module):
    """The shape DiT. ``forward(x, t, cond, guidance=None) -> velocity``.

    x: [B, N, in_channels] noisy latents (any float dtype; run in the module's dtype);
    t: [B] flow time in [0, 1] (0 = noise, 1 = data, Tencent's convention), float32 preferred;
    cond: [B, L, context_in_dim] image tokens (DINOv2 last hidden state, CLS first), or the zero
      tensor for the unconditional branch; guidance: [B] guidance scale, required iff guidance_embed.
    Returns [B, N, in_channels] in the module's dtype.
    """

    def __init__(self, cfg: Hunyuan3DDiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.hidden_size
        self.latent_in = nn.Linear(cfg.in_channels, w)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, w)
        self.cond_in = nn.Linear(cfg.context_in_dim, w)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, w) if cfg.guidance_embed else None
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single_blocks))
        self.final_layer = LastLayer(w, cfg.in_channels)
        # fp32 frequency table per device, built once (not a buffer: module.to(bf16) and to_empty must not
        # touch it, and the published state dict has no such key)
        self._freqs: dict[torch.device, torch.Tensor] = {}

    def time_frequencies(self, device: torch.device) -> torch.Tensor:
        """[128] float32: exp(-ln(time_factor) i / 128) (Tencent's max_period = time_factor quirk)."""
        freqs = self._freqs.get(device)
        if freqs is None:
            half = TIME_EMBED_DIM // 2
            i = torch.arange(half, dtype=torch.float32)
            freqs = self._freqs[device] = torch.exp(-math.log(self.cfg.time_factor) * i / half).to(device)
        return freqs

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] -> [B, 256] float32: [cos, sin] of time_factor * t times the frequency table."""
        args = (t.float() * self.cfg.time_factor)[:, None] * self.time_frequencies(t.device)[None]
        return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.latent_in.weight.dtype
        img = self.latent_in(x.to(dtype))  # [B, N, W]
        vec = self.time_in(self.embed_time(t).to(dtype))  # [B, W]
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this Hunyuan3DDiT is guidance-distilled: pass the guidance scale")
            vec = vec + self.guidance_in(self.embed_time(guidance).to(dtype))
        txt = self.cond_in(cond.to(dtype))  # [B, L, W]
        for block in self.double_blocks:
            img, txt = block(img, txt, vec)
        n_txt = txt.shape[1]
        h = torch.cat((txt, img), dim=1)  # [B, L + N, W]
        for block in self.single_blocks:
            h = block(h, vec)
        return self.final_layer(h[:, n_txt:], vec)  # [B, N, in_channels]


def param_count(cfg: Hunyuan3DDiTConfig) -> int:
    """Analytic parameter count (equals ``sum(p.numel())`` of the module)."""
    w, c, m = cfg.hidden_size, cfg.in_channels, cfg.mlp_hidden
    lin = lambda i, o, b=True: i * o + (o if b else 0)  # noqa: E731
    embed = lin(TIME_EMBED_DIM, w) + lin(w, w)
    total = lin(c, w) + embed + lin(cfg.context_in_dim, w) + (embed if cfg.guidance_embed else 0)
    stream = lin(w, 6 * w) + lin(w, 3 * w, cfg.qkv_bias) + 2 * cfg.head_dim + lin(w, w)
    stream += lin(w, m) + lin(m, w)
    single = lin(w, 3 * w + m) + lin(w + m, w) + 2 * cfg.head_dim + lin(w, 3 * w)
    return total + cfg.depth * 2 * stream + cfg.depth_single_blocks * single + lin(w, c) + lin(w, 2 * w)


def flops_per_forward(cfg: Hunyuan3DDiTConfig, n_latents: int, n_cond: int, batch: int = 1
                      ) -> dict[str, int]:
    """FLOPs of one forward (multiply-add = 2), split into token GEMMs and attention.

    Token GEMMs: per double block each stream's qkv/proj/MLP over its own tokens; per single block
    linear1/linear2 over all L + N tokens; plus latent_in, cond_in and the final linear. The per-sample
    modulation/embedding GEMVs (O(W^2) per block, not per token) are left out: < 0.1 % at these sizes.
    """
    w, m, n, l_ = cfg.hidden_size, cfg.mlp_hidden, n_latents, n_cond
    stream = 2 * (3 * w * w + w * w + 2 * w * m)  # per token
    single = 2 * (w * (3 * w + m) + (w + m) * w)  # per token
    gemm = cfg.depth * stream * (n + l_) + cfg.depth_single_blocks * single * (n + l_)
    gemm += 2 * (n * cfg.in_channels * w + l_ * cfg.context_in_dim * w + n * w * cfg.in_channels)
    attn = (cfg.depth + cfg.depth_single_blocks) * attention_flops(1, cfg.num_heads, n + l_, n + l_,
                                                                     cfg.head_dim)
    return {"gemm": batch * gemm, "attention": batch * attn, "total": batch * (gemm + attn)}
