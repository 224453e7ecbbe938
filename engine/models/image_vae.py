"""Image VAE of TextureGen (paper 7.2): a 1024 x 1024 view <-> a 64 x 64 latent (16x per side).

The paper names no VAE, only its compression (f16). Design chosen here, f16c32:
* Layout of the SD3/Flux convolutional VAE (Rombach et al. 2022; Esser et al. 2024): ResNet blocks
  (norm, SiLU, 3x3 conv, twice, plus identity), one 2x resampling between resolution levels, a mid block
  ResNet / self-attention / ResNet at the latent resolution; five levels (128, 256, 512, 512, 512 channels)
  give 4 halvings = 16x, one more than Flux's three.
* From DC-AE (Chen et al. 2024, "Deep Compression Autoencoder"), the two ingredients that make high
  compression train well: residual resampling shortcuts (space-to-channel averaging on the way down,
  channel-duplicating pixel shuffle on the way up, so each resampler learns a residual) and a per-pixel
  channel RMSNorm (weight and bias) instead of GroupNorm.
* 32 latent channels: 32 / 16^2 = 0.125 values per pixel, twice SD-VAE's f8c4 budget and half Flux's
  f8c16, and four times DC-AE f32c32's budget, which reconstructs 1024 px images at rFID < 1. The
  TextureGen DiT therefore sees 32 channels per slot (96 with the encoded normal and position maps).

The per-pixel norm is a speed decision too: after the mid block (whose attention is the only global
op, at 64 x 64), every decoder op is local, so spatial tiles with a halo of ``decoder_halo()`` latent
pixels decode EXACTLY the same image as one pass (GroupNorm would make tiles approximate). Memory is
bounded by chunking the views (``max_batch`` images per pass, exact) and, optionally, spatial tiles.
Peak activation memory of one 1024 px view in the decoder is ~6 tensors of 128 x 1024^2 bf16 (~1.5 GB);
the benchmark reports the measured peak for the chunk size used.

Used for the reference image, the per-view normal maps (unit xyz in [-1, 1]) and position maps (object
in the unit sphere, xyz in [-1, 1]) -- all encoded as 3-channel images in one ``encode`` call -- and to
decode the K generated views.

Tensors: images [B, 3, H, W] in [-1, 1], H and W multiples of 16; latents [B, 32, H/16, W/16] normalised
as (mean - shift_factor) * scaling_factor. On CUDA the model runs in bf16, channels-last (``prepare``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.models.attention import attention


@dataclass(frozen=True)
class ImageVAEConfig:
    name: str
    in_channels: int = 3
    latent_channels: int = 32
    block_channels: tuple[int, ...] = (128, 256, 512, 512, 512)  # one entry per resolution level
    encoder_blocks: int = 2  # ResNet blocks per level in the encoder
    decoder_blocks: int = 3  # ResNet blocks per level in the decoder
    attention_head_dim: int = 128  # mid-block attention heads of 128 (the cuDNN SDPA sweet spot)
    norm_eps: float = 1e-6
    scaling_factor: float = 1.0  # latent = (posterior mean - shift) * scale; set from a trained model
    shift_factor: float = 0.0
    max_batch: int = 2  # images per encoder/decoder pass (memory bound; 1024 px saturates the GPU anyway)

    def __post_init__(self) -> None:
        ch = self.block_channels
        if len(ch) < 2 or min(ch) <= 0:
            raise ConfigError(f"image VAE needs >= 2 positive block channels, got {ch}",
                              "use e.g. block_channels=(128, 256, 512, 512, 512)")
        for a, b in zip(ch, ch[1:]):
            if (4 * a) % b or (4 * b) % a:
                raise ConfigError(f"image VAE channels {a} -> {b} cannot use pixel-shuffle shortcuts",
                                  "make consecutive block channels differ by a factor of 1, 2 or 4")
        if ch[-1] % self.attention_head_dim:
            raise ConfigError(f"mid-block width {ch[-1]} is not a multiple of head dim "
                              f"{self.attention_head_dim}", "choose a head dim dividing the last channels")
        if self.max_batch < 1 or self.encoder_blocks < 1 or self.decoder_blocks < 1:
            raise ConfigError("image VAE block counts and max_batch must be >= 1", "use positive values")

    @property
    def downsample(self) -> int:
        """Pixels per latent along each axis (16 for five levels)."""
        return 2 ** (len(self.block_channels) - 1)

    @classmethod
    def paper(cls) -> ImageVAEConfig:
        return cls(name="paper")

    @classmethod
    def tiny(cls) -> ImageVAEConfig:
        """16x like the paper's, narrow: runs on the CPU in milliseconds (tests)."""
        return cls(name="tiny", latent_channels=4, block_channels=(8, 16, 16, 32, 32), encoder_blocks=1,
                   decoder_blocks=1, attention_head_dim=16)

    @classmethod
    def from_name(cls, name: str) -> ImageVAEConfig:
        presets = {"paper": cls.paper, "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown image VAE preset '{name}'", f"use one of {sorted(presets)}")
        return presets[name]()


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of each pixel, with weight and bias (DC-AE's 2-D RMSNorm)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.eps) + self.bias  # [B,H,W,C]
        return y.permute(0, 3, 1, 2)  # free view back to [B, C, H, W] when x is channels-last


class ResBlock(nn.Module):
    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(channels, eps)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = ChannelRMSNorm(channels, eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Downsample(nn.Module):
    """3x3 stride-2 conv c_in -> c_out plus the space-to-channel shortcut: pixel-unshuffle (4 c_in
    channels) averaged in groups down to c_out (DC-AE). With c_out = c_in this is a 2x2 average pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.c_out = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.pixel_unshuffle(x, 2)  # [B, 4 c_in, H/2, W/2]
        b, c, h, w = s.shape
        s = s.reshape(b, self.c_out, c // self.c_out, h, w).mean(2)  # [B, c_out, H/2, W/2]
        return self.conv(x) + s


class Upsample(nn.Module):
    """Nearest 2x then 3x3 conv c_in -> c_out, plus the channel-duplicating pixel-shuffle shortcut
    (DC-AE). With c_out = c_in the shortcut equals the nearest-upsampled input."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.repeats = 4 * c_out // c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.pixel_shuffle(x.repeat_interleave(self.repeats, dim=1), 2)  # [B, c_out, 2H, 2W]
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")) + s


class MidAttention(nn.Module):
    """Multi-head self-attention over all pixels of the latent-resolution feature map (global)."""

    def __init__(self, channels: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = ChannelRMSNorm(channels, eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.heads = channels // head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, N, C]
        q, k, v = self.qkv(t).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)  # [B, N, C]
        return x + self.proj(o).view(b, h, w, c).permute(0, 3, 1, 2)


class MidBlock(nn.Module):
    def __init__(self, channels: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, eps)
        self.attn = MidAttention(channels, head_dim, eps)
        self.res2 = ResBlock(channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ImageVAEConfig) -> None:
        super().__init__()
        ch, eps = cfg.block_channels, cfg.norm_eps
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList(nn.Sequential(*[ResBlock(c, eps) for _ in range(cfg.encoder_blocks)])
                                    for c in ch)
        self.down = nn.ModuleList(Downsample(a, b) for a, b in zip(ch, ch[1:]))
        self.mid = MidBlock(ch[-1], cfg.attention_head_dim, eps)
        self.norm_out = ChannelRMSNorm(ch[-1], eps)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)  # posterior mean, log-var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # [B, c0, H, W]
        for i, level in enumerate(self.levels):
            h = level(h)
            if i < len(self.down):
                h = self.down[i](h)  # halves H, W
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))  # [B, 2C, H/16, W/16]


class Decoder(nn.Module):
    """``head`` (conv_in + mid block, global) then ``tail`` (local: levels, upsamplers, output conv)."""

    def __init__(self, cfg: ImageVAEConfig) -> None:
        super().__init__()
        ch, eps = cfg.block_channels, cfg.norm_eps
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)
        self.mid = MidBlock(ch[-1], cfg.attention_head_dim, eps)
        rev = ch[::-1]
        self.levels = nn.ModuleList(nn.Sequential(*[ResBlock(c, eps) for _ in range(cfg.decoder_blocks)])
                                    for c in rev)
        self.up = nn.ModuleList(Upsample(a, b) for a, b in zip(rev, rev[1:]))
        self.norm_out = ChannelRMSNorm(ch[0], eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.in_channels, 3, padding=1)
        self.blocks = cfg.decoder_blocks

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.mid(self.conv_in(z))  # [B, c_last, h, w]

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        for i, level in enumerate(self.levels):
            h = level(h)
            if i < len(self.up):
                h = self.up[i](h)  # doubles H, W
        return self.conv_out(F.silu(self.norm_out(h)))  # [B, 3, 16 h, 16 w]

    def halo(self) -> int:
        """Latent pixels of context ``tail`` needs on each side of a tile for exact results: 3x3 convs
        add one pixel of their own level, crossing a nearest 2x upsampler divides by two (rounded up)."""
        r = 1 + 2 * self.blocks  # conv_out + the finest level's ResBlocks
        for _ in self.up:
            r = math.ceil((r + 1) / 2) + 2 * self.blocks  # + the upsampler's conv, then the coarser level
        return r


class ImageVAE(nn.Module):
    """Encoder + decoder; ``encode``/``decode`` are the public API (no sampling: posterior mean)."""

    def __init__(self, cfg: ImageVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def decoder_halo(self) -> int:
        return self.decoder.halo()

    def _check(self, x: torch.Tensor, channels: int, multiple: int, what: str) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != channels or x.shape[2] % multiple or x.shape[3] % multiple:
            raise ConfigError(f"image VAE {what} must be [B, {channels}, H, W] with H, W multiples of "
                              f"{multiple}, got {tuple(x.shape)}", f"resize the {what} to a multiple of "
                              f"{multiple} pixels")
        p = next(self.parameters())
        return x.to(device=p.device, dtype=p.dtype, memory_format=torch.channels_last)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [-1, 1] -> latents [B, C, H/16, W/16] (normalised posterior mean)."""
        x = self._check(images, self.cfg.in_channels, self.cfg.downsample, "images")
        c = self.cfg.latent_channels
        out = [self.encoder(x[i:i + self.cfg.max_batch])[:, :c] for i in range(0, x.shape[0],
                                                                                 self.cfg.max_batch)]
        return (torch.cat(out) - self.cfg.shift_factor) * self.cfg.scaling_factor

    def decode(self, latents: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """latents [B, C, h, w] -> images [B, 3, 16 h, 16 w] in [-1, 1] (model dtype, channels-last).

        ``max_batch`` latents per pass; ``tile`` (latent pixels per side) additionally decodes each
        image in spatial tiles with ``decoder_halo()`` pixels of context: exactly the untiled result."""
        z = self._check(latents, self.cfg.latent_channels, 1, "latents")
        z = z / self.cfg.scaling_factor + self.cfg.shift_factor
        out = []
        for i in range(0, z.shape[0], self.cfg.max_batch):
            h = self.decoder.head(z[i:i + self.cfg.max_batch])  # [b, c_last, h, w]
            if tile is None:
                img = self.decoder.tail(h)
            else:
                img = tiled_map(self.decoder.tail, h, tile, self.decoder.halo(), self.cfg.downsample)
            out.append(img.clamp_(-1.0, 1.0))
        return torch.cat(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction: decode(encode(images))."""
        return self.decode(self.encode(images))


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, halo: int,
              scale: int, align: int = 1) -> torch.Tensor:
    """Apply a local, translation-equivariant ``fn`` ([B, C, H, W] -> [B, C', scale H, scale W]) over
    tiles of ``tile`` input pixels with ``halo`` pixels of context on each inner side; the result equals
    ``fn(x)`` when ``halo`` covers fn's receptive radius. Tile corners are multiples of ``align``."""
    if tile < 1 or tile % align or halo < 0:
        raise ConfigError(f"tile {tile} / halo {halo} invalid", f"use a tile that is a multiple of {align}")
    halo = -(-halo // align) * align
    H, W = x.shape[-2:]
    out = None
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            part = fn(x[..., ya:min(H, y1 + halo), xa:min(W, x1 + halo)])  # [B, C', s*th, s*tw]
            if out is None:
                out = torch.empty(part.shape[0], part.shape[1], H * scale, W * scale, dtype=part.dtype,
                                  device=part.device, memory_format=torch.channels_last)
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                part[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    assert out is not None
    return out


def prepare(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Inference placement: bf16 + channels-last on CUDA, fp32 on the CPU; eval mode."""
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()


def flops(model_fn: Callable[[], nn.Module], call: Callable[[nn.Module, torch.Tensor], torch.Tensor],
          shape: tuple[int, ...]) -> int:
    """FLOPs (multiply-add = 2) of ``call(model, x)`` for an input of ``shape``, counted from shapes
    alone: the model is built on the meta device and traced under torch's FlopCounterMode (convs,
    matmuls, attention; norms and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = model_fn()
        x = torch.empty(shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        call(model, x)
    return int(counter.get_total_flops())


def flops_encode(cfg: ImageVAEConfig, batch: int, size: int) -> int:
    return flops(lambda: ImageVAE(cfg), lambda m, x: m.encode(x), (batch, cfg.in_channels, size, size))


def flops_decode(cfg: ImageVAEConfig, batch: int, size: int) -> int:
    """FLOPs of decoding ``batch`` latents to ``size`` px images (untiled)."""
    n = size // cfg.downsample
    return flops(lambda: ImageVAE(cfg), lambda m, z: m.decode(z), (batch, cfg.latent_channels, n, n))
