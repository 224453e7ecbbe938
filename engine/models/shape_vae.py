"""VecSet shape VAE decoder (paper 5.2; Hunyuan3D-2 ``ShapeVAE`` layout): latents -> K/V, points -> SDF.

Maths
-----
Latents ``z`` [B, N, E] (E = 64, as sampled by the DiT, i.e. multiplied by ``scale_factor``) are divided by
``scale_factor``, projected to width W (``post_kl``) and run through ``num_layers`` pre-LN transformer blocks
(self-attention with per-head LayerNorm QK norm, GELU MLP 4x). The geometry decoder is ONE cross-attention
block: a query point p [3] is Fourier-embedded (below), projected to W (``query_proj``), attends to the
decoded latents (q from the point, k/v from ``ln_2(latents)``), then MLP, ``ln_post`` and ``output_proj``
give one scalar. Everything that depends only on the latents -- the transformer, ``ln_2``, ``c_kv`` and the
k norm -- is computed ONCE per request by ``decode_latents`` (-> ``LatentKV``); a query then costs
query_proj + c_q + attention over N (or top-k) latents + c_proj + MLP.

Fourier embedding (Hunyuan3D ``FourierEmbedder`` layout, written here): f_j = 2^j (times pi when
``include_pi``), j < F; e = [p_0 f_0 .. p_0 f_{F-1}, p_1 f_0, .., p_2 f_{F-1}] (coordinate-major);
output ``cat(p, sin(e), cos(e))`` of 3 (2F + 1) = 51 features for F = 8.

Head layout of the fused projections (as published): ``c_qkv`` output viewed [.., H, 3 Dh] and split into
q, k, v per head (NOT [3, H, Dh]); ``c_kv`` output viewed [.., H, 2 Dh] and split into k, v per head.

FlashVDM top-k (Lai et al. 2025, "Unleashing Vecset Diffusion Model for Fast Shape Generation"; rule
re-derived here): queries are grouped in spatially coherent chunks of ``chunk`` points (the caller sorts
them by spatial block); for chunk c and head h every latent j is scored by the mean attention logit of the
chunk's queries, ``s_j = k_j . mean_p q_p`` (FlashVDM averages every 50th query's logits; the mean commutes
with the dot product, so using every query costs the same single [Dh] mean); the top ``k`` latents per
(chunk, head) are gathered and the chunk attends to them only. k >= N is exact full attention.

Sign: the engine's SDF convention is NEGATIVE INSIDE; ``inside_positive`` flips the decoder output.

Verified against the public Hunyuan3D-2 / 2.1 code (hy3dgen/shapegen/models/autoencoders/attention_blocks.py
and model.py, hy3dshape/... for 2.1) and configs: module and key names listed in the task, LayerNorm
(eps 1e-6, affine) for ln_1/ln_2/ln_3 and the per-head q_norm/k_norm, default-eps LayerNorm ``ln_post``,
exact GELU MLP, bias-free c_qkv/c_q/c_kv when qkv_bias is false (c_proj always biased), the per-head
split layout, Fourier layout and 51 features, ``latents / scale_factor`` before ``post_kl``, the turbo
decoder variant (geo_decoder_downsample_ratio 2 -> ``latents_proj`` and half width/heads, mlp ratio 1,
no ln_post and then no QK norm in the geo decoder), v2-0 (3072 latents, scale 0.9990943042622529), mini
(512, 1.0188137142395404) and 2.1 (4096, 1.0039506158752403; same widths). Not verified (no weights here):
the sign of the output field (``inside_positive`` False, inferred from the v2 report calling the output an
SDF and from their export flipping the faces that skimage writes; flip it if meshes come out inside-out),
and whether a given ``vae.*`` file also carries the encoder (``encoder.*``/``pre_kl.*`` keys are dropped
on load: this module is the decoder only). ``assetgen()`` (paper: N = 4096, D = 64) reuses the v2-0 widths
(inferred: the paper gives no VAE width).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention, attention_flops

ENCODER_PREFIXES = ("encoder.", "pre_kl.")


@dataclass(frozen=True)
class ShapeVaeConfig:
    """Sizes of the VecSet decoder. ``scale_factor``: DiT latents are divided by it before decoding."""

    name: str = "hunyuan_v2_0"
    num_latents: int = 3072
    embed_dim: int = 64
    width: int = 1024
    heads: int = 16
    num_layers: int = 16
    num_freqs: int = 8
    include_pi: bool = False
    qkv_bias: bool = False
    qk_norm: bool = True
    scale_factor: float = 0.9990943042622529
    geo_mlp_ratio: int = 4
    geo_downsample: int = 1
    geo_ln_post: bool = True
    inside_positive: bool = False
    default_topk: int = 1024

    def __post_init__(self) -> None:
        for key in ("num_latents", "embed_dim", "width", "heads", "num_layers", "geo_mlp_ratio",
                    "geo_downsample"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"shape VAE {key}={getattr(self, key)} must be >= 1", "use a positive size")
        if self.width % (self.heads * self.geo_downsample) or (self.width // self.geo_downsample) % 2:
            raise ConfigError(f"shape VAE width {self.width} is not divisible by heads {self.heads} x "
                              f"geo_downsample {self.geo_downsample}", "use a width that divides evenly")
        if self.num_freqs < 0 or not self.scale_factor > 0:
            raise ConfigError("shape VAE num_freqs must be >= 0 and scale_factor > 0", "fix the preset")

    @property
    def geo_width(self) -> int:
        return self.width // self.geo_downsample

    @property
    def geo_heads(self) -> int:
        return self.heads // self.geo_downsample

    @property
    def fourier_dim(self) -> int:
        return 3 * (2 * self.num_freqs + 1)

    @staticmethod
    def hunyuan_v2_0() -> ShapeVaeConfig:
        return ShapeVaeConfig()

    @staticmethod
    def hunyuan_mini() -> ShapeVaeConfig:
        return ShapeVaeConfig(name="hunyuan_mini", num_latents=512, scale_factor=1.0188137142395404,
                              default_topk=256)

    @staticmethod
    def hunyuan_v2_1() -> ShapeVaeConfig:
        return ShapeVaeConfig(name="hunyuan_v2_1", num_latents=4096, scale_factor=1.0039506158752403,
                              default_topk=1365)

    @staticmethod
    def hunyuan_turbo() -> ShapeVaeConfig:
        """The ``-turbo`` VAE's lighter geometry decoder (half width/heads, MLP 1x, no ln_post)."""
        return ShapeVaeConfig(name="hunyuan_turbo", geo_mlp_ratio=1, geo_downsample=2, geo_ln_post=False)

    @staticmethod
    def assetgen() -> ShapeVaeConfig:
        return ShapeVaeConfig(name="assetgen", num_latents=4096, scale_factor=1.0, default_topk=1024)

    @staticmethod
    def paper() -> ShapeVaeConfig:
        return ShapeVaeConfig.assetgen()

    @staticmethod
    def tiny() -> ShapeVaeConfig:
        return ShapeVaeConfig(name="tiny", num_latents=64, embed_dim=8, width=64, heads=4, num_layers=2,
                              num_freqs=2, scale_factor=1.0, default_topk=16)

    @staticmethod
    def from_name(name: str) -> ShapeVaeConfig:
        presets = {"hunyuan_v2_0": ShapeVaeConfig.hunyuan_v2_0, "hunyuan_mini": ShapeVaeConfig.hunyuan_mini,
                   "hunyuan_v2_1": ShapeVaeConfig.hunyuan_v2_1, "hunyuan_turbo": ShapeVaeConfig.hunyuan_turbo,
                   "assetgen": ShapeVaeConfig.assetgen, "paper": ShapeVaeConfig.paper,
                   "tiny": ShapeVaeConfig.tiny}
        if name not in presets:
            raise ConfigError(f"unknown shape VAE preset '{name}'", f"use one of {sorted(presets)}")
        return presets[name]()

    def with_(self, **changes) -> ShapeVaeConfig:
        return replace(self, **changes)


@dataclass
class LatentKV:
    """Per-request keys/values of the geometry decoder: k, v [B, H, N, Dh] (k already QK-normed)."""

    k: torch.Tensor
    v: torch.Tensor


class FourierEmbedder(nn.Module):
    """p [..., 3] float32 -> [..., 3 (2F + 1)] (layout in the module docstring); no parameters."""

    def __init__(self, num_freqs: int, include_pi: bool) -> None:
        super().__init__()
        freqs = 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("frequencies", freqs * torch.pi if include_pi else freqs, persistent=False)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.frequencies.numel() == 0:
            return p
        e = (p[..., None] * self.frequencies).flatten(-2)               # [..., 3F]
        return torch.cat((p, e.sin(), e.cos()), dim=-1)


class Mlp(nn.Module):
    def __init__(self, width: int, ratio: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, width * ratio)
        self.c_proj = nn.Linear(width * ratio, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class QkNorm(nn.Module):
    """Holds ``q_norm``/``k_norm`` (per-head LayerNorm over Dh, or identity) under the published name."""

    def __init__(self, head_dim: int, enabled: bool) -> None:
        super().__init__()
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if enabled else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if enabled else nn.Identity()


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = QkNorm(width // heads, qk_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.c_qkv(x).view(b, n, self.heads, -1).split(w // self.heads, dim=-1)  # [B, N, H, Dh]
        q, k = self.attention.q_norm(q), self.attention.k_norm(k)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))         # [B, H, N, Dh]
        return self.c_proj(out.transpose(1, 2).reshape(b, n, w))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: ShapeVaeConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = SelfAttention(cfg.width, cfg.heads, cfg.qkv_bias, cfg.qk_norm)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = Mlp(cfg.width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ShapeVaeConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width, bias=qkv_bias)
        self.c_kv = nn.Linear(width, 2 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = QkNorm(width // heads, qk_norm)


class CrossAttentionBlock(nn.Module):
    def __init__(self, cfg: ShapeVaeConfig) -> None:
        super().__init__()
        w, qk = cfg.geo_width, cfg.qk_norm and cfg.geo_ln_post
        self.ln_1 = nn.LayerNorm(w, eps=1e-6)
        self.ln_2 = nn.LayerNorm(w, eps=1e-6)
        self.ln_3 = nn.LayerNorm(w, eps=1e-6)
        self.attn = CrossAttention(w, cfg.geo_heads, cfg.qkv_bias, qk)
        self.mlp = Mlp(w, cfg.geo_mlp_ratio)


class GeoDecoder(nn.Module):
    def __init__(self, cfg: ShapeVaeConfig) -> None:
        super().__init__()
        self.fourier_embedder = FourierEmbedder(cfg.num_freqs, cfg.include_pi)
        self.query_proj = nn.Linear(cfg.fourier_dim, cfg.geo_width)
        if cfg.geo_downsample != 1:
            self.latents_proj = nn.Linear(cfg.width, cfg.geo_width)
        self.cross_attn_decoder = CrossAttentionBlock(cfg)
        self.ln_post = nn.LayerNorm(cfg.geo_width) if cfg.geo_ln_post else nn.Identity()
        self.output_proj = nn.Linear(cfg.geo_width, 1)


class ShapeVaeDecoder(nn.Module):
    """Decoder half of the VecSet VAE. ``decode_latents`` once per request, then ``query`` per point batch."""

    def __init__(self, cfg: ShapeVaeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.post_kl = nn.Linear(cfg.embed_dim, cfg.width)
        self.transformer = Transformer(cfg)
        self.geo_decoder = GeoDecoder(cfg)

    def decode_latents(self, z: torch.Tensor) -> LatentKV:
        """z [B, N, E] (DiT output scale) -> LatentKV with k, v [B, H, N, Dh] in the module's dtype."""
        cfg, geo = self.cfg, self.geo_decoder
        if z.dim() != 3 or z.shape[-1] != cfg.embed_dim:
            raise ConfigError(f"shape latents must be [B, N, {cfg.embed_dim}], got {tuple(z.shape)}",
                              "pass the DiT's output latents unchanged")
        x = self.transformer(self.post_kl(z.to(self.post_kl.weight.dtype) / cfg.scale_factor))  # [B, N, W]
        if cfg.geo_downsample != 1:
            x = geo.latents_proj(x)
        block = geo.cross_attn_decoder
        b, n, w = x.shape
        kv = block.attn.c_kv(block.ln_2(x)).view(b, n, cfg.geo_heads, -1)             # [B, N, H, 2Dh]
        k, v = kv.split(w // cfg.geo_heads, dim=-1)
        k = block.attn.attention.k_norm(k)
        return LatentKV(k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous())

    def query(self, points: torch.Tensor, kv: LatentKV, topk: int | None = None, chunk: int = 4096
              ) -> torch.Tensor:
        """points float32 [B, P, 3] (world units of the [-bound, bound]^3 box) -> float32 [B, P] field value,
        negative inside. ``topk``: latents kept per (chunk of ``chunk`` consecutive points, head); None or
        >= N attends to all latents."""
        cfg, geo = self.cfg, self.geo_decoder
        block = geo.cross_attn_decoder
        dtype = geo.query_proj.weight.dtype
        x = geo.query_proj(geo.fourier_embedder(points.float()).to(dtype))              # [B, P, W]
        b, p, w = x.shape
        q = block.attn.c_q(block.ln_1(x)).view(b, p, cfg.geo_heads, -1)                  # [B, P, H, Dh]
        q = block.attn.attention.q_norm(q).transpose(1, 2)                              # [B, H, P, Dh]
        if topk is None or topk >= kv.k.shape[2]:
            out = attention(q, kv.k, kv.v)
        else:
            out = topk_attention(q, kv, topk, chunk)
        x = x + block.attn.c_proj(out.transpose(1, 2).reshape(b, p, w))
        x = x + block.mlp(block.ln_3(x))
        value = geo.output_proj(geo.ln_post(x))[..., 0].float()                         # [B, P]
        return -value if cfg.inside_positive else value


def topk_attention(q: torch.Tensor, kv: LatentKV, topk: int, chunk: int) -> torch.Tensor:
    """FlashVDM-style attention: q [B, H, P, Dh] split into chunks of ``chunk`` consecutive queries, each
    attending to its own top-``topk`` latents per head (rule in the module docstring). Returns [B, H, P, Dh].
    The last chunk is padded by repeating its last query (padding rows are dropped)."""
    b, h, p, d = q.shape
    c = -(-p // chunk)
    if c * chunk != p:
        q = torch.cat([q, q[:, :, -1:].expand(b, h, c * chunk - p, d)], dim=2)
    qc = q.view(b, h, c, chunk, d)                                                       # [B, H, C, Pc, Dh]
    score = qc.mean(dim=3) @ kv.k.transpose(-1, -2)                                      # [B, H, C, N]
    idx = score.topk(topk, dim=-1).indices                                              # [B, H, C, k]
    n = kv.k.shape[2]
    gather_idx = idx[..., None].expand(b, h, c, topk, d)
    k = torch.gather(kv.k[:, :, None].expand(b, h, c, n, d), 3, gather_idx)            # [B, H, C, k, Dh]
    v = torch.gather(kv.v[:, :, None].expand(b, h, c, n, d), 3, gather_idx)
    out = attention(_chunks_as_batch(qc), _chunks_as_batch(k), _chunks_as_batch(v))      # [B C, H, Pc, Dh]
    out = out.view(b, c, h, chunk, d).permute(0, 2, 1, 3, 4).reshape(b, h, c * chunk, d)
    return out[:, :, :p]


def _chunks_as_batch(t: torch.Tensor) -> torch.Tensor:
    """[B, H, C, M, Dh] -> [B C, H, M, Dh]."""
    b, h, c, m, d = t.shape
    return t.permute(0, 2, 1, 3, 4).reshape(b * c, h, m, d)


def init_random(model: ShapeVaeDecoder, seed: int = 0) -> ShapeVaeDecoder:
    """Seeded random weights for latency runs: the checkpoint helper's ``init_random`` (normal 0.02,
    zero biases), then unit LayerNorm weights (their names hold no 'norm')."""
    from engine.models.checkpoints import init_random as seeded

    seeded(model, seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
    return model


def param_count(model: nn.Module) -> int:
    return sum(t.numel() for t in model.parameters())


def hunyuan_decoder_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's keys of a Hunyuan3D-2 VAE state dict: a ``vae.`` prefix (combined DiT file) is
    stripped, the encoder's ``encoder.*``/``pre_kl.*`` keys (unused by decoding) are dropped; every other
    key is kept for strict loading."""
    out = {}
    for key, tensor in state_dict.items():
        name = key[4:] if key.startswith("vae.") else key
        if not name.startswith(ENCODER_PREFIXES):
            out[name] = tensor
    return out


def load_hunyuan_vae(model: ShapeVaeDecoder, state_dict: dict[str, torch.Tensor]) -> ShapeVaeDecoder:
    """Strict load (WeightsError listing missing/unexpected/mis-shaped keys) of a Hunyuan-layout state dict,
    cast to the model's dtype (e.g. a ``model.fp16.safetensors`` into a bf16 or fp32 model)."""
    from engine.models.checkpoints import load_strict

    return load_strict(model, hunyuan_decoder_state(state_dict), what=f"shape VAE ({model.cfg.name})")


def decode_flops(cfg: ShapeVaeConfig, batch: int = 1) -> int:
    """FLOPs of ``decode_latents`` (post_kl, transformer, latents_proj, c_kv)."""
    n, w = cfg.num_latents, cfg.width
    per_layer = 2 * n * (3 * w * w + w * w + 8 * w * w) + attention_flops(1, cfg.heads, n, n, w // cfg.heads)
    total = 2 * n * cfg.embed_dim * w + cfg.num_layers * per_layer
    total += 2 * n * w * cfg.geo_width * (cfg.geo_downsample != 1) + 2 * n * cfg.geo_width * 2 * cfg.geo_width
    return batch * total


def query_flops(cfg: ShapeVaeConfig, num_queries: int, topk: int | None = None, chunk: int = 4096) -> int:
    """FLOPs of ``query`` on ``num_queries`` points (attention over top-k latents, plus the chunk scores)."""
    w, n = cfg.geo_width, cfg.num_latents
    keys = n if topk is None or topk >= n else topk
    per_query = 2 * w * (cfg.fourier_dim + w + w + 2 * cfg.geo_mlp_ratio * w + 1) + 4 * w * keys
    score = 0 if keys == n else 2 * -(-num_queries // chunk) * n * w
    return num_queries * per_query + score
