"""Flow-matching Euler sampler of TextureGen (paper 7.2, 7.3): 4 steps, pinned reference slot, CFG.

Convention (optimal-transport conditional flow matching, Tong et al. 2023, as the paper cites): time t runs
from 0 (pure noise x0 ~ N(0, I)) to 1 (data x1); z_t = (1 - t) x0 + t x1 and the model predicts the
velocity v = x1 - x0. Uniform schedule t_k = k / N, k = 0..N (the distilled students keep the teacher's
uniform grid halved at each stage: 32 -> 16 -> 8 -> 4). Euler: z_{k+1} = z_k + (t_{k+1} - t_k) v(z_k, t_k).

The latent grid has S = 1 + K slots (slot 0 the reference image latent, slots 1..K the target views in
the rig order of ``engine.texture.views``). The reference is pinned: it is written into slot 0 before
every model call (never noised) and the velocity the model returns for slot 0 is ignored.

Guidance modes:
  CFG (default preset, 1024 px): one batched call of 2B grids per step -- rows [0, B) the conditional
      branch with the reference latent, rows [B, 2B) the unconditional branch with a uniform-white
      reference latent (the image VAE's encoding of a white image; text and geometry stay) -- then
      v = v_u + w (v_c - v_u).
  DISTILLED (flash, 768 px): CFG folded into the model, one call of B grids per step.

The velocity function is ``velocity_fn(grid [B', S, C, h, w], t [B']) -> [B', S, C, h, w]`` with t in
[0, 1]; it owns the geometry and text conditioning and must accept B' = 2B in CFG mode (the conditional
rows first), e.g. ``TextureGenDiT.velocity_fn``. No host syncs: the step sizes are Python floats and the
per-step time vectors are built once before the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from engine.config import TextureGuidance
from engine.errors import ConfigError

DEFAULT_GUIDANCE_SCALE = 3.0  # w of CFG: the paper gives no value
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GuidanceMode(Enum):
    CFG = "cfg"              # batched conditional + white-reference unconditional branch
    DISTILLED = "distilled"  # guidance folded into the model: one pass


@dataclass(frozen=True)
class TextureSamplerConfig:
    """steps: Euler steps (4 after progressive distillation); guidance_scale: w of CFG (unused when
    distilled; the paper gives no value, 3.0 is our default)."""

    steps: int = 4
    mode: GuidanceMode = GuidanceMode.CFG
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ConfigError(f"TextureGen steps {self.steps} out of range", "use 1..1000 (paper: 4)")
        if not self.guidance_scale >= 0.0:
            raise ConfigError(f"guidance scale {self.guidance_scale} must be >= 0", "use e.g. 3.0")

    @staticmethod
    def default() -> TextureSamplerConfig:
        return TextureSamplerConfig(4, GuidanceMode.CFG, DEFAULT_GUIDANCE_SCALE)

    @staticmethod
    def flash() -> TextureSamplerConfig:
        return TextureSamplerConfig(4, GuidanceMode.DISTILLED, 1.0)

    @staticmethod
    def from_texture_config(steps: int, guidance: TextureGuidance,
                            guidance_scale: float = DEFAULT_GUIDANCE_SCALE) -> TextureSamplerConfig:
        """From the typed pipeline values (``TextureConfig.steps``, ``TextureConfig.guidance``): CFG runs
        the white-reference branch with ``guidance_scale``, DISTILLED one conditional pass (scale 1)."""
        if guidance is TextureGuidance.CFG:
            return TextureSamplerConfig(steps, GuidanceMode.CFG, guidance_scale)
        if guidance is TextureGuidance.DISTILLED:
            return TextureSamplerConfig(steps, GuidanceMode.DISTILLED, 1.0)
        raise ConfigError(f"unknown TextureGen guidance {guidance!r}", "use TextureGuidance.CFG or DISTILLED")

    @staticmethod
    def from_name(name: str) -> TextureSamplerConfig:
        presets = {"default": TextureSamplerConfig.default, "flash": TextureSamplerConfig.flash}
        if name not in presets:
            raise ConfigError(f"unknown TextureGen sampler preset '{name}'", f"use one of {sorted(presets)}")
        return presets[name]()


def flow_times(steps: int) -> list[float]:
    """The uniform grid t_0 = 0 < ... < t_N = 1 as Python floats (N = steps)."""
    return [k / steps for k in range(steps + 1)]


def sample_texture_views(velocity_fn: VelocityFn, noise: torch.Tensor, reference: torch.Tensor,
                         config: TextureSamplerConfig, white_reference: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Generate the K view latents.

    noise:           [B, K, C, h, w] x0 of the views (its dtype is the state's; float32 recommended).
    reference:       [B, C, h, w] latent of the reference image (pinned in slot 0).
    white_reference: [C, h, w] or [B, C, h, w] latent of a uniform-white image; required for CFG.
    Returns x1 [B, K, C, h, w] in noise's dtype, on its device.
    """
    b, k, c, h, w = noise.shape
    if reference.shape != (b, c, h, w):
        raise ValueError(f"reference must be [{b}, {c}, {h}, {w}], got {tuple(reference.shape)}")
    cfg = config.mode is GuidanceMode.CFG
    refs = reference.to(noise.dtype)
    if cfg:
        if white_reference is None:
            raise ConfigError("CFG sampling needs the white-reference latent",
                              "pass white_reference (image VAE encoding of a white image) or use 'flash'")
        refs = torch.cat([refs, white_reference.to(refs).expand(b, c, h, w)])           # [2B, C, h, w]
    rows = refs.shape[0]
    grid = noise.new_empty(rows, 1 + k, c, h, w)                                        # [B', S, C, h, w]
    times = flow_times(config.steps)
    t_rows = torch.tensor(times[:-1], dtype=torch.float32, device=noise.device)[:, None].expand(-1, rows)
    z = noise.clone()                                                                    # [B, K, C, h, w]
    for step in range(config.steps):
        grid[:, 0].copy_(refs)                       # re-pin the reference every step
        grid[:b, 1:].copy_(z)
        if cfg:
            grid[b:, 1:].copy_(z)
        vel = velocity_fn(grid, t_rows[step])[:, 1:]                                     # slot 0 ignored
        if cfg:
            v_c, v_u = vel[:b], vel[b:]
            vel = v_u + config.guidance_scale * (v_c - v_u)
        z.add_(vel.to(z.dtype), alpha=times[step + 1] - times[step])
    return z
