"""Tensor-only faces of the engine's networks: what AOTInductor (and any other exporter) traces.

Each wrapper holds one resident network of a bundle (``MeshGenNetworks`` / ``TextureNetworks``) and exposes
the call the engine makes per request or per step with only tensors in and out, so that its graph has a
fixed signature (``trt_builds.export_spec`` names and sizes every tensor). Contract of every wrapper:
  * boundary tensors (what a host creates or reads: pixels, noise/latents, timesteps, query points, images)
    are float32; the wrapper casts to the network's dtype inside, exactly where the engine does;
  * internal tensors (tokens, cross-attention K/V, rotary tables, the TextureGen base embedding) stay in
    the network's dtype: a host only passes them from one package to the next;
  * outputs are a tensor or a flat tuple, in the order ``export_spec`` lists them.
No wrapper changes numerics: each forward is the engine's own code path (``forward`` of the model or the
method the stage calls) on the same inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.meshgen_dit import MeshGenContext
from engine.models.shape_vae import LatentKV


class DinoTokens(nn.Module):
    """pixels float32 [1, 3, R, R] (ImageNet-normalised, ``prepare_pixels``) -> tokens [1, M, C] (model
    dtype): the whole ``last_hidden_state`` (MeshGen conditions on all tokens)."""

    def __init__(self, dino: nn.Module) -> None:
        super().__init__()
        self.dino = dino

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = self.dino.layernorm.weight.dtype
        return self.dino(pixels.to(dtype))


class MeshGenContextKV(nn.Module):
    """cond [1, M, C] (model dtype) [, positions int64 [N, 3] for the refine DiT] -> (k_0, v_0, ...,
    k_{L-1}, v_{L-1}) [1, H, M, Dh] [, rope cos, sin [N, Dh]]: ``MeshGenDiT.precompute_context``."""

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, cond: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(self.dit.precompute_context(cond, positions).tensors())


class MeshGenStep(nn.Module):
    """One velocity evaluation of the (guidance-folded) DiT: x float32 [1, N, D], t float32 [1] training
    timestep, context tensors as ``MeshGenContextKV`` returns them -> v float32 [1, N, D]."""

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, x: torch.Tensor, t: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        cfg = self.dit.cfg
        ctx = MeshGenContext.from_tensors(list(context), cfg.depth, cfg.rope)
        return self.dit(x.to(self.dit.x_in.weight.dtype), t, ctx).float()


class ShapeLatentKV(nn.Module):
    """latents float32 [1, N, E] (DiT output scale) -> the geometry decoder's (k, v) [1, H, N, Dh]."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.vae.decode_latents(latents)
        return kv.k, kv.v


class ShapeQuery(nn.Module):
    """points float32 [1, P, 3] (world units), k, v from ``ShapeLatentKV`` -> field float32 [1, P], negative
    inside: ``ShapeVaeDecoder.query`` with the engine's top-k (FlashVDM) over chunks of ``chunk`` points."""

    def __init__(self, vae: nn.Module, topk: int | None, chunk: int) -> None:
        super().__init__()
        self.vae, self.topk, self.chunk = vae, topk, chunk

    def forward(self, points: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.vae.query(points, LatentKV(k, v), self.topk, self.chunk)


class TexturePrepare(nn.Module):
    """geometry float32 [1, K, 2C, h, w] (normal and position latents per view) -> (base [B', S*T, W],
    k_0, v_0, ...) in model dtype: ``TextureGenDiT.prepare`` with the bundle's empty-prompt text context
    (a constant of the bundle, computed at load: stored here as buffers) and ``branches`` = B' rows (2 for
    CFG, 1 guidance-distilled)."""

    def __init__(self, dit: nn.Module, text_context: tuple[torch.Tensor, torch.Tensor], branches: int
                 ) -> None:
        super().__init__()
        self.dit, self.branches = dit, branches
        self.register_buffer("t5", text_context[0].detach().clone())
        self.register_buffer("clip", text_context[1].detach().clone())

    def forward(self, geometry: torch.Tensor) -> tuple[torch.Tensor, ...]:
        req = self.dit.prepare(geometry, self.t5, self.clip, repeat=self.branches)
        return (req.base, *[t for pair in req.kv for t in pair])


class TextureStep(nn.Module):
    """grid float32 [B', S, C, h, w] (slot 0 the pinned reference), t float32 [B'] flow time in [0, 1],
    base and K/V from ``TexturePrepare`` -> velocity float32 [B', S, C, h, w]."""

    def __init__(self, dit: nn.Module, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        self.dit, self.grid_hw = dit, grid_hw

    def forward(self, grid: torch.Tensor, t: torch.Tensor, base: torch.Tensor, *kv: torch.Tensor
                ) -> torch.Tensor:
        from engine.models.texturegen_dit import TextureGenRequest

        pairs = [(kv[2 * i], kv[2 * i + 1]) for i in range(len(kv) // 2)]
        req = TextureGenRequest(base, pairs, self.grid_hw, self.dit._plan(grid.device))
        return self.dit(grid, t, req)


class ImageEncode(nn.Module):
    """images float32 [1, 3, R, R] in [-1, 1] -> latents float32 [1, C, R/16, R/16] (``ImageVAE.encode``)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).float().contiguous()


class ImageDecode(nn.Module):
    """latents float32 [1, C, h, w] -> images float32 [1, 3, 16 h, 16 w] in [-1, 1] (``ImageVAE.decode``)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).float().contiguous()


class Upscale(nn.Module):
    """views float32 [1, 3, R, R] in [0, 1] -> float32 [1, 3, sR, sR] in [0, 1]
    (``SuperResolution.upscale``)."""

    def __init__(self, sr: nn.Module) -> None:
        super().__init__()
        self.sr = sr

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.sr.upscale(images).float().contiguous()
