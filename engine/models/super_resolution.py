"""Per-view super-resolution before atlas fusion (paper 3 and Table 6: default preset only, 3.112 s).

The paper does not name its network. Chosen here: ESRGAN's RRDBNet (Wang et al. 2018) in the
Real-ESRGAN "x2plus" configuration (Wang et al. 2021): pixel-unshuffle by 2, 23 residual-in-residual dense
blocks of 64 features (growth 32, residual scale 0.2, LeakyReLU 0.2) at half the input resolution, two
nearest-2x + 3x3 conv upsamplers, two output convs. Why this one:
* scale: the default preset generates 1024 px views and exports a 2K atlas; x2 brings the views to
  2048 px, one view pixel per atlas texel for a frontal view, so backprojection samples at the atlas
  rate. (Flash generates 768 px views for a 1K atlas and skips super-resolution, as in the paper.)
* it is the de-facto production upscaler for generated imagery, purely convolutional (cuDNN bf16,
  channels-last; no attention window bookkeeping as in SwinIR), and its parameter names follow the
  published Real-ESRGAN layout (``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``,
  ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so converted public x2plus/x4plus weights
  load strictly. Written here from the papers' description (provenance: ESRGAN / Real-ESRGAN).
* cost: ~9.4 TFLOP per 1024 px view (about 94 TFLOP for 10 views), within the 1.0 s target at
  >= 100 TFLOP/s of bf16 convolution.

Tensors: images [B, 3, H, W] in [0, 1] (H, W multiples of the unshuffle factor, 2 for x2) ->
[B, 3, scale H, scale W] in [0, 1]. Memory: ``max_batch`` views per pass (exact). Spatial tiles
(``tile``) are exact only with ``tile_pad >= receptive_radius()`` (698 px for the paper network, i.e.
whole 1024 px views); a smaller pad approximates, as Real-ESRGAN's own tiling does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.models.image_vae import flops, tiled_map


def _check(cond: bool, problem: str, fix: str) -> None:
    if not cond:
        raise ConfigError(problem, fix)


@dataclass(frozen=True)
class SuperResolutionConfig:
    name: str
    scale: int = 2  # output / input pixels per side: 1, 2 or 4
    channels: int = 3
    features: int = 64
    growth: int = 32
    blocks: int = 23  # RRDB blocks
    max_batch: int = 2  # views per pass (peak memory ~2 GB per 1024 px view in bf16)

    def __post_init__(self) -> None:
        _check(self.scale in (1, 2, 4), f"super-resolution scale {self.scale} is not supported",
               "use scale 1, 2 or 4")
        _check(min(self.features, self.growth, self.blocks, self.max_batch) >= 1,
               "super-resolution sizes must be >= 1", "use positive features, growth, blocks, max_batch")

    @property
    def unshuffle(self) -> int:
        """Input pixels per body pixel along each axis (the body always runs at 1/4 of the output)."""
        return 4 // self.scale

    @classmethod
    def paper(cls) -> SuperResolutionConfig:
        return cls(name="paper")

    @classmethod
    def tiny(cls) -> SuperResolutionConfig:
        return cls(name="tiny", features=8, growth=4, blocks=2)

    @classmethod
    def from_name(cls, name: str) -> SuperResolutionConfig:
        presets = {"paper": cls.paper, "tiny": cls.tiny}
        if name not in presets:
            raise ConfigError(f"unknown super-resolution preset '{name}'", f"use one of {sorted(presets)}")
        return presets[name]()


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense); residual x 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for i in range(1, 6):
            out = features if i == 5 else growth
            setattr(self, f"conv{i}", nn.Conv2d(features + (i - 1) * growth, out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            conv = getattr(self, f"conv{i}")
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2, inplace=True))  # [B, growth, h, w]
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class SuperResolution(nn.Module):
    """RRDBNet; ``upscale`` is the public API (value range, batching, tiling), ``forward`` the network."""

    def __init__(self, cfg: SuperResolutionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.features
        self.conv_first = nn.Conv2d(cfg.channels * cfg.unshuffle ** 2, f, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(f, cfg.growth) for _ in range(cfg.blocks)])
        self.conv_body = nn.Conv2d(f, f, 3, padding=1)
        self.conv_up1 = nn.Conv2d(f, f, 3, padding=1)
        self.conv_up2 = nn.Conv2d(f, f, 3, padding=1)
        self.conv_hr = nn.Conv2d(f, f, 3, padding=1)
        self.conv_last = nn.Conv2d(f, cfg.channels, 3, padding=1)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def receptive_radius(self) -> int:
        """Input pixels of context one output pixel depends on, per side (the exact tiling pad)."""
        r = 3  # conv_up2, conv_hr, conv_last at the output resolution
        r = -(-r // 2) + 1  # crossing the second upsampler, then conv_up1
        r = -(-r // 2) + 2 + 15 * self.cfg.blocks  # first upsampler; conv_first, conv_body, RRDB convs
        return r * self.cfg.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> [B, 3, scale H, scale W] (no clamping, model dtype)."""
        if self.cfg.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.cfg.unshuffle)  # [B, 3 u^2, H/u, W/u]
        feat = self.conv_first(x)  # [B, F, H/u, W/u]
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))  # [B, 3, 4H/u, 4W/u]

    def upscale(self, images: torch.Tensor, tile: int | None = None, tile_pad: int | None = None
                ) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, 3, scale H, scale W] in [0, 1], model dtype, channels-last.

        ``max_batch`` views per pass. ``tile`` (input pixels, a multiple of the unshuffle factor) splits
        each view spatially with ``tile_pad`` pixels of context (default: the exact receptive radius)."""
        u = self.cfg.unshuffle
        if images.dim() != 4 or images.shape[1] != self.cfg.channels or images.shape[2] % u \
                or images.shape[3] % u:
            raise ConfigError(f"super-resolution input must be [B, {self.cfg.channels}, H, W] with H, W "
                              f"multiples of {u}, got {tuple(images.shape)}",
                              f"resize the views to a multiple of {u} pixels")
        p = next(self.parameters())
        x = images.to(device=p.device, dtype=p.dtype, memory_format=torch.channels_last)
        pad = self.receptive_radius() if tile_pad is None else tile_pad
        out = []
        for i in range(0, x.shape[0], self.cfg.max_batch):
            chunk = x[i:i + self.cfg.max_batch]
            y = self(chunk) if tile is None else tiled_map(self, chunk, tile, pad, self.cfg.scale, align=u)
            out.append(y.clamp_(0.0, 1.0))
        return torch.cat(out)


def flops_upscale(cfg: SuperResolutionConfig, batch: int, size: int) -> int:
    """FLOPs (multiply-add = 2) of upscaling ``batch`` views of ``size`` x ``size`` px, from shapes."""
    return flops(lambda: SuperResolution(cfg), lambda m, x: m(x), (batch, cfg.channels, size, size))
