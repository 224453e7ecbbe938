"""DINOv2 ViT image encoder (with or without register tokens): the image conditioner of MeshGen (paper 5.2).

Architecture (Oquab et al. 2023; registers: Darcet et al. 2023): a 14x14 patch convolution, a CLS token
plus learned position embeddings trained on a 37x37 grid (518 px), R register tokens inserted after CLS
without position embeddings, L pre-norm blocks ``x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))``
(LayerNorm eps 1e-6, qkv bias, LayerScale, SwiGLU FFN for the giant model), final LayerNorm.

Weights load in the Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` layout, which our module
names mirror (``embeddings.{cls_token, mask_token, register_tokens, position_embeddings,
patch_embeddings.projection}``, ``encoder.layer.N.{norm1, attention.attention.{query,key,value},
attention.output.dense, layer_scale1.lambda1, norm2, mlp.{weights_in,weights_out | fc1,fc2},
layer_scale2.lambda1}``, ``layernorm``); names confirmed against transformers' modeling_dinov2*.py, code
written here. ``mask_token`` exists for strict loading only (no masking at inference).

Position embeddings at other sizes: the 37x37 grid is resized bicubically (align_corners=False,
antialias=True as transformers' Dinov2WithRegisters does; ``pos_antialias``) to (H/14, W/14) in fp32,
once per (size, dtype, device, weights version) and cached; at 518 px the trained table is used as is.
1022 px -> 73x73 = 5329 patches.

Output of ``forward``: last_hidden_state after the final LayerNorm, [B, 1 + R + P, D] ordered
(CLS, registers, patches row-major). ViT-g/14 with registers at 518 px: [B, 1374, 1536].
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.attention import attention, attention_flops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Dinov2Config:
    """ViT hyper-parameters; ``image_size`` is the training size that fixes the position grid."""

    hidden_size: int = 1536
    num_layers: int = 40
    num_heads: int = 24
    patch_size: int = 14
    image_size: int = 518
    num_register_tokens: int = 4
    swiglu: bool = True
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    layerscale_value: float = 1.0
    num_channels: int = 3
    pos_antialias: bool = True  # transformers' Dinov2WithRegisters resizes with antialias=True (a=-0.5 cubic)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"DINOv2 width {self.hidden_size} is not divisible by {self.num_heads} heads",
                              "choose a head count dividing the width")
        if self.image_size % self.patch_size or min(self.num_layers, self.num_register_tokens + 1) < 1:
            raise ConfigError(f"DINOv2 config out of range: {self}", "use a preset (Dinov2Config.from_name)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid(self) -> int:
        """Side of the trained position-embedding grid (37 for 518 px / 14)."""
        return self.image_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        """FFN inner width: SwiGLU uses 2/3 of ratio*width rounded up to 8 (4096 for ViT-g)."""
        hidden = int(self.hidden_size * self.mlp_ratio)
        return (int(hidden * 2 / 3) + 7) // 8 * 8 if self.swiglu else hidden

    @classmethod
    def giant_registers(cls) -> Dinov2Config:
        """ViT-g/14 with 4 registers (facebook/dinov2-with-registers-giant), the paper's conditioner."""
        return cls()

    @classmethod
    def giant(cls) -> Dinov2Config:
        """ViT-g/14 without registers (facebook/dinov2-giant), the Hunyuan3D-2 conditioner."""
        return cls(num_register_tokens=0)

    @classmethod
    def large(cls) -> Dinov2Config:
        """ViT-L/14 without registers (facebook/dinov2-large; GELU MLP)."""
        return cls(hidden_size=1024, num_layers=24, num_heads=16, num_register_tokens=0, swiglu=False)

    @classmethod
    def tiny(cls) -> Dinov2Config:
        """CPU-test size: width 64, 2 layers, 4 heads, trained at 56 px (4x4 grid), 4 registers."""
        return cls(hidden_size=64, num_layers=2, num_heads=4, image_size=56)

    @classmethod
    def from_name(cls, name: str) -> Dinov2Config:
        presets = {"giant_registers": cls.giant_registers, "paper": cls.giant_registers,
                   "giant": cls.giant, "large": cls.large, "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown DINOv2 preset '{name}'", f"choose one of {', '.join(presets)}")
        return presets[name]()


class ConditionTokens(enum.Enum):
    """Which tokens of ``last_hidden_state`` a DiT cross-attends to."""

    ALL = "all"              # CLS + registers + patches (1374 at 518 px): MeshGen; Hunyuan3D-2 keeps CLS
    NO_REGISTERS = "no_registers"  # CLS + patches (1370)
    PATCHES = "patches"      # patches only (1369)


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)


class Dinov2Embeddings(nn.Module):
    """Patch tokens + CLS with (interpolated) position embeddings, then register tokens after CLS."""

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + cfg.grid ** 2, d))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def position_table(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """[1, 1 + h*w, D] position embeddings for an h x w patch grid (cached)."""
        table = self.position_embeddings
        if torch.compiler.is_compiling():  # traced (torch.export, torch.compile): no data pointer, no cache
            return self._interpolated_table(h, w, dtype)
        version = 0 if torch.is_inference(table) else table._version  # inference tensors are never edited
        key = (h, w, dtype, table.device, version, table.data_ptr())
        cached = self._pos_cache.get(key)
        if cached is not None:
            return cached
        out = self._interpolated_table(h, w, dtype)
        self._pos_cache.clear()  # one size live at a time per module keeps memory bounded
        self._pos_cache[key] = out
        return out

    def _interpolated_table(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """The trained table bicubically resized to h x w patches (uncached)."""
        table = self.position_embeddings
        g, d = self.cfg.grid, self.cfg.hidden_size
        with torch.no_grad():
            if (h, w) == (g, g):
                out = table.detach().to(dtype)
            else:
                grid = table[:, 1:].detach().float().reshape(1, g, g, d).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False,
                                     antialias=self.cfg.pos_antialias)
                patches = grid.permute(0, 2, 3, 1).reshape(1, h * w, d)
                out = torch.cat([table[:, :1].detach().float(), patches], dim=1).to(dtype)
        return out

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, C, H, W] (ImageNet-normalised) -> tokens [B, 1 + R + P, D]."""
        b, _, height, width = pixels.shape
        p = self.cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"DINOv2 input {height}x{width} is not a multiple of the {p} px patch")
        proj = self.patch_embeddings.projection
        x = proj(pixels.to(proj.weight.dtype)).flatten(2).transpose(1, 2)   # [B, P, D]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_table(height // p, width // p, x.dtype)       # [B, 1 + P, D]
        if self.cfg.num_register_tokens:
            regs = self.register_tokens.expand(b, -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], regs, x[:, 1:]], dim=1)                 # [B, 1 + R + P, D]
        return x


class _SelfAttentionQKV(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.value = nn.Linear(d, d, bias=cfg.qkv_bias)


class _SelfOutput(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class Dinov2Attention(nn.Module):
    """Multi-head self-attention; ``fuse_qkv_`` swaps the three projections for one GEMM."""

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.attention = _SelfAttentionQKV(cfg)
        self.output = _SelfOutput(cfg)
        self.qkv: nn.Linear | None = None

    @torch.no_grad()
    def fuse_qkv_(self) -> None:
        a = self.attention
        d = a.query.in_features
        fused = nn.Linear(d, 3 * d, bias=a.query.bias is not None, device=a.query.weight.device,
                          dtype=a.query.weight.dtype)
        fused.weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([a.query.bias, a.key.bias, a.value.bias]))
        self.qkv = fused
        del self.attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        if self.qkv is not None:
            q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x [B, H, N, Dh]
        else:
            a = self.attention
            q, k, v = (lin(x).view(b, n, h, d // h).transpose(1, 2) for lin in (a.query, a.key, a.value))
        out = attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.output.dense(out)


class _LayerScale(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layerscale_value))


class _SwiGLU(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.weights_in = nn.Linear(cfg.hidden_size, 2 * cfg.mlp_hidden)
        self.weights_out = nn.Linear(cfg.mlp_hidden, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.weights_in(x).chunk(2, dim=-1)
        return self.weights_out(F.silu(gate) * up)


class _MLP(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Dinov2Layer(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention = Dinov2Attention(cfg)
        self.layer_scale1 = _LayerScale(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = _SwiGLU(cfg) if cfg.swiglu else _MLP(cfg)
        self.layer_scale2 = _LayerScale(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x)) * self.layer_scale1.lambda1
        return x + self.mlp(self.norm2(x)) * self.layer_scale2.lambda1


class _Encoder(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Dinov2Layer(cfg) for _ in range(cfg.num_layers))


class Dinov2Model(nn.Module):
    """DINOv2 encoder; ``forward(pixels [B, 3, H, W]) -> last_hidden_state [B, 1 + R + P, D]``.

    H and W must be multiples of 14 (518 coarse -> P = 1369, 1022 refine -> P = 5329). Pixels are
    ImageNet-normalised floats (see ``prepare_pixels``); compute runs in the weights' dtype.
    """

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Dinov2Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)

    def fuse_qkv_(self) -> Dinov2Model:
        """Inference form: one fused qkv GEMM per layer (same outputs; the module no longer loads or
        saves the Hugging Face layout afterwards). Call after loading weights."""
        for layer in self.encoder.layer:
            if layer.attention.qkv is None:
                layer.attention.fuse_qkv_()
        return self

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def condition_tokens(hidden: torch.Tensor, cfg: Dinov2Config,
                     which: ConditionTokens = ConditionTokens.ALL) -> torch.Tensor:
    """The DiT condition c [B, L, D] from ``last_hidden_state`` [B, 1 + R + P, D] (views, no copy).

    MeshGen (paper 5.2) cross-attends to ALL tokens (L = 1374 at 518 px with 4 registers, 5334 at 1022 px):
    the token count TARGETS.md's DiT-block ceiling was measured with. Hunyuan3D-2 uses its register-free
    giant model's full output (1370).
    """
    r = cfg.num_register_tokens
    if which is ConditionTokens.ALL:
        return hidden
    if which is ConditionTokens.PATCHES:
        return hidden[:, 1 + r:]
    return torch.cat([hidden[:, :1], hidden[:, 1 + r:]], dim=1)


def prepare_pixels(image: torch.Tensor, size: int = 518, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB image -> ImageNet-normalised [B, 3, size, size] on the image's device.

    ``image``: uint8 in [0, 255] or float in [0, 1], laid out [H, W, 3], [B, H, W, 3] or [B, 3, H, W].
    Resized (bicubic, antialiased) to size x size when needed; the caller crops/pads to a square first.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or 3 not in (image.shape[1], image.shape[-1]):
        raise ValueError("expected an RGB image [H, W, 3], [B, H, W, 3] or [B, 3, H, W], "
                         f"got {tuple(image.shape)}")
    if image.shape[1] != 3:
        image = image.permute(0, 3, 1, 2)
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def flops_per_forward(cfg: Dinov2Config, image_size: int, batch: int = 1) -> int:
    """Analytic FLOPs of one forward at image_size x image_size (multiply-add = 2; norms ignored)."""
    p = (image_size // cfg.patch_size) ** 2
    n = 1 + cfg.num_register_tokens + p
    d, hid = cfg.hidden_size, cfg.mlp_hidden
    ffn = 2 * n * d * (2 * hid) + 2 * n * hid * d if cfg.swiglu else 4 * n * d * hid
    attn = attention_flops(1, cfg.num_heads, n, n, cfg.head_dim)
    per_layer = 2 * n * d * 3 * d + 2 * n * d * d + ffn + attn
    patch = 2 * p * cfg.num_channels * cfg.patch_size ** 2 * d
    return batch * (cfg.num_layers * per_layer + patch)
