"""Text encoders of TextureGen (paper 7.2: T5 and CLIP embeddings, injected by cross-attention).

No tokenizer files exist offline: both encoders take token ids. Architectures and weight names follow the
Hugging Face layouts (``T5EncoderModel``; ``CLIPTextModel`` / ``CLIPTextModelWithProjection``), checked
against transformers' modeling_t5.py / modeling_clip.py; code written here.

T5 v1.1 encoder (``T5EncoderConfig.xxl()``: d_model 4096, 24 blocks, 64 heads of 64, gated-GELU FFN 10240,
~4.76B parameters). Keys: ``shared.weight``, ``encoder.block.N.layer.0.{SelfAttention.{q,k,v,o},
layer_norm}``, ``encoder.block.0.layer.0.SelfAttention.relative_attention_bias`` [buckets, heads] (block 0
only; its bias is shared by all blocks), ``encoder.block.N.layer.1.{DenseReluDense.{wi_0,wi_1,wo},
layer_norm}``, ``encoder.final_layer_norm``. T5 attention is unscaled (no 1/sqrt(d)); RMSNorm without bias.
The tied copy ``encoder.embed_tokens.weight`` some files carry is folded by ``t5_hf_state_dict``.

CLIP text transformer (``ClipTextConfig.vit_l14()``: width 768, 12 layers, 12 heads, 77 positions,
quick_gelu, causal mask, ~123M parameters). Keys: ``text_model.embeddings.{token_embedding,
position_embedding}``, ``text_model.encoder.layers.N.{self_attn.{q_proj,k_proj,v_proj,out_proj},
layer_norm1, mlp.{fc1,fc2}, layer_norm2}``, ``text_model.final_layer_norm``, optional ``text_projection``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention, attention_flops


@dataclass(frozen=True)
class T5EncoderConfig:
    vocab_size: int = 32128
    d_model: int = 4096
    num_layers: int = 24
    num_heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        sizes = (self.d_model, self.num_layers, self.num_heads, self.d_kv, self.d_ff)
        if min(sizes) < 1 or self.num_buckets < 4:
            raise ConfigError(f"T5 config out of range: {self}", "use a preset (T5EncoderConfig.from_name)")

    @classmethod
    def xxl(cls) -> T5EncoderConfig:
        """google/t5-v1_1-xxl encoder (the T5 of Flux / SD3-style text conditioning)."""
        return cls()

    @classmethod
    def tiny(cls) -> T5EncoderConfig:
        return cls(vocab_size=100, d_model=32, num_layers=2, num_heads=4, d_kv=8, d_ff=64, num_buckets=8,
                   max_distance=16)

    @classmethod
    def from_name(cls, name: str) -> T5EncoderConfig:
        presets = {"xxl": cls.xxl, "paper": cls.xxl, "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown T5 preset '{name}'", f"choose one of {', '.join(presets)}")
        return presets[name]()


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 bidirectional buckets of ``relative = key_pos - query_pos`` (int64, any shape).

    Half the buckets per direction (positive offsets in the upper half); in each half, offsets below
    num_buckets/4 get their own bucket, larger ones share log-spaced buckets up to max_distance, beyond
    which everything falls in the last bucket.
    """
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    dist = relative.abs()
    exact = half // 2
    log_ratio = torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, large)


class _T5Attention(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.cfg = cfg
        self.q, self.k, self.v = (nn.Linear(cfg.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, cfg.num_heads)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, dk = self.cfg.num_heads, self.cfg.d_kv
        q, k, v = (lin(x).view(b, n, h, dk).transpose(1, 2) for lin in (self.q, self.k, self.v))
        q = q * math.sqrt(dk)  # T5 is unscaled; SDPA divides by sqrt(dk) (exact in bf16 for dk = 64)
        return self.o(attention(q, k, v, bias).transpose(1, 2).reshape(b, n, h * dk))


class _T5SelfLayer(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = _T5Attention(cfg, has_bias)
        self.layer_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)


class _T5GatedFFN(nn.Module):
    def __init__(self, cfg: T5EncoderConfig) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class _T5FFLayer(nn.Module):
    def __init__(self, cfg: T5EncoderConfig) -> None:
        super().__init__()
        self.DenseReluDense = _T5GatedFFN(cfg)
        self.layer_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)


class _T5Block(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_T5SelfLayer(cfg, has_bias), _T5FFLayer(cfg)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attn, ff = self.layer
        x = x + attn.SelfAttention(attn.layer_norm(x), bias)
        return x + ff.DenseReluDense(ff.layer_norm(x))


class _T5Stack(nn.Module):
    def __init__(self, cfg: T5EncoderConfig) -> None:
        super().__init__()
        self.block = nn.ModuleList(_T5Block(cfg, has_bias=i == 0) for i in range(cfg.num_layers))
        self.final_layer_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)


class T5Encoder(nn.Module):
    """``forward(input_ids [B, N] int64, attention_mask [B, N] (1 keep, 0 pad) | None)``
    -> last hidden state after the final RMSNorm, [B, N, d_model] in the weights' dtype."""

    def __init__(self, cfg: T5EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = _T5Stack(cfg)
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def position_bias(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """[1, H, N, N] relative-position bias for N tokens, built once per (N, dtype, device, weights)."""
        table = self.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight  # [buckets, H]
        version = 0 if torch.is_inference(table) else table._version
        key = (n, dtype, table.device, version, table.data_ptr())
        if key not in self._bias_cache:
            pos = torch.arange(n, device=table.device)
            buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.num_buckets,
                                               self.cfg.max_distance)              # [N, N]
            with torch.no_grad():
                bias = F.embedding(buckets, table.detach()).permute(2, 0, 1)[None].to(dtype)  # [1, H, N, N]
            self._bias_cache.clear()
            self._bias_cache[key] = bias.contiguous()
        return self._bias_cache[key]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.shared(input_ids)                                                   # [B, N, D]
        bias = self.position_bias(input_ids.shape[1], x.dtype)
        if attention_mask is not None:
            pad = (1 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            bias = bias + pad                                                        # [B, H, N, N]
        for block in self.encoder.block:
            x = block(x, bias)
        return self.encoder.final_layer_norm(x)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def t5_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold the tied ``encoder.embed_tokens.weight`` of HF T5 files into ``shared.weight`` (dropped when
    both are present, renamed when it is the only copy); decoder keys are an error left to load_strict."""
    out = dict(state_dict)
    tied = out.pop("encoder.embed_tokens.weight", None)
    if tied is not None and "shared.weight" not in out:
        out["shared.weight"] = tied
    return out


def t5_flops(cfg: T5EncoderConfig, tokens: int, batch: int = 1) -> int:
    """FLOPs of one encoder forward over ``tokens`` tokens (multiply-add = 2; norms ignored)."""
    inner = cfg.num_heads * cfg.d_kv
    per_layer = (2 * tokens * cfg.d_model * inner * 4 + 2 * tokens * cfg.d_model * cfg.d_ff * 3
                 + attention_flops(1, cfg.num_heads, tokens, tokens, cfg.d_kv))
    return batch * cfg.num_layers * per_layer


@dataclass(frozen=True)
class ClipTextConfig:
    vocab_size: int = 49408
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 77
    layer_norm_eps: float = 1e-5
    quick_gelu: bool = True
    projection_dim: int | None = None
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        if self.width % self.num_heads or min(self.num_layers, self.max_positions) < 1:
            raise ConfigError(f"CLIP text config out of range: {self}",
                              "use a preset (ClipTextConfig.from_name)")

    @classmethod
    def vit_l14(cls, projection: bool = False) -> ClipTextConfig:
        """openai/clip-vit-large-patch14 text tower (projection 768 for CLIPTextModelWithProjection)."""
        return cls(projection_dim=768 if projection else None)

    @classmethod
    def vit_bigg14(cls, projection: bool = True) -> ClipTextConfig:
        """OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder): width 1280, 32 layers, GELU."""
        return cls(width=1280, num_layers=32, num_heads=20, mlp_dim=5120, quick_gelu=False,
                   projection_dim=1280 if projection else None)

    @classmethod
    def tiny(cls) -> ClipTextConfig:
        return cls(vocab_size=120, width=32, num_layers=2, num_heads=4, mlp_dim=64, max_positions=16,
                   projection_dim=16, eos_token_id=119)

    @classmethod
    def from_name(cls, name: str) -> ClipTextConfig:
        presets = {"vit_l14": cls.vit_l14, "paper": cls.vit_l14, "vit_bigg14": cls.vit_bigg14,
                   "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown CLIP text preset '{name}'", f"choose one of {', '.join(presets)}")
        return presets[name]()


class _ClipEmbeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)


class _ClipAttention(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        d = cfg.width
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q, k, v = (lin(x).view(b, n, h, d // h).transpose(1, 2)
                   for lin in (self.q_proj, self.k_proj, self.v_proj))                 # 3 x [B, H, N, Dh]
        return self.out_proj(attention(q, k, v, mask).transpose(1, 2).reshape(b, n, d))


class _ClipMLP(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.quick = cfg.quick_gelu
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc1(x)
        y = y * torch.sigmoid(1.702 * y) if self.quick else F.gelu(y)
        return self.fc2(y)


class _ClipLayer(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.self_attn = _ClipAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = _ClipMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _ClipEncoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_ClipLayer(cfg) for _ in range(cfg.num_layers))


class _ClipTextTransformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.embeddings = _ClipEmbeddings(cfg)
        self.encoder = _ClipEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)


class ClipTextEncoder(nn.Module):
    """``forward(input_ids [B, N <= 77], attention_mask [B, N] | None) -> (hidden [B, N, W], pooled [B, P])``.

    ``hidden`` is the last hidden state after the final LayerNorm; ``pooled`` is the hidden state at each
    row's first EOS token, through ``text_projection`` when the config has one (P = projection_dim, else W).
    Attention is causal; padded keys are masked when ``attention_mask`` is given.
    """

    def __init__(self, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_model = _ClipTextTransformer(cfg)
        if cfg.projection_dim is not None:
            self.text_projection = nn.Linear(cfg.width, cfg.projection_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = input_ids.shape
        if n > self.cfg.max_positions:
            raise ValueError(f"CLIP takes at most {self.cfg.max_positions} tokens, got {n}")
        tm = self.text_model
        pos = tm.embeddings.position_embedding.weight[:n]
        x = tm.embeddings.token_embedding(input_ids) + pos                        # [B, N, W]
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, None]  # [1, 1, N, N] causal
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :].bool()                   # [B, 1, N, N]
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        hidden = tm.final_layer_norm(x)
        eos = (input_ids == self.cfg.eos_token_id).int().argmax(dim=-1)              # [B] first EOS
        pooled = hidden[torch.arange(b, device=x.device), eos]                      # [B, W]
        if self.cfg.projection_dim is not None:
            pooled = self.text_projection(pooled)
        return hidden, pooled

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def clip_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``text_model.embeddings.position_ids`` (a buffer older HF files saved); nothing else changes."""
    return {k: v for k, v in state_dict.items() if k != "text_model.embeddings.position_ids"}


def clip_flops(cfg: ClipTextConfig, tokens: int = 77, batch: int = 1) -> int:
    """FLOPs of one text-tower forward (multiply-add = 2; full, not causal-halved, attention)."""
    d = cfg.width
    per_layer = 2 * tokens * d * d * 4 + 4 * tokens * d * cfg.mlp_dim + attention_flops(
        1, cfg.num_heads, tokens, tokens, d // cfg.num_heads)
    return batch * cfg.num_layers * per_layer
