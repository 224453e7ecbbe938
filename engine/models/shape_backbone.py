"""Learned shape backbones for ``assetgen generate``: picture -> dense mesh through real networks.

Two backbones, chosen by the configuration (``ShapeConfig``):
  * ``hunyuan3d`` (``--shape-model PATH``): a Hunyuan3D-2 / -2mini snapshot (``config.yaml`` +
    ``model.fp16.safetensors``, loaded strictly by ``engine.models.hunyuan3d``): DINOv2 tokens of the
    picture on white -> flow-matching Euler sampling of the DiT -> ShapeVAE K/V -> hierarchical SDF
    decoding (FlashVDM top-k) -> narrow-band marching cubes on the device.
  * ``meshgen`` (``--weights DIR``): AssetGen's own networks from engine-format checkpoints in DIR
    (``dinov2.safetensors``, ``meshgen_coarse.safetensors``, ``shape_vae.safetensors``, written by
    ``engine.models.checkpoints.save_engine_checkpoint``): DINOv2-g/14 at 518 px -> coarse MeshGen DiT with
    25-step DDIM (CFG folded, distilled) -> VecSet decoder -> hierarchical decoding -> marching cubes.
    The refine stage (refine DiT on 16384 surface-anchored tokens + refine VAE) is not wired here yet: the
    coarse mesh is used, and the stage note says so.
The mesh comes out in the decoder's frame: world units in [-bounds, bounds]^3, +Y up. Where no weights
are configured the pipeline uses the weight-free silhouette prior instead and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import MeshError, WeightsError

MESHGEN_FILES = {"dinov2": "dinov2.safetensors", "meshgen": "meshgen_coarse.safetensors",
                 "vae": "shape_vae.safetensors"}


def has_meshgen(folder: str | None) -> bool:
    """True when ``folder`` holds the three coarse MeshGen files."""
    return folder is not None and all((Path(folder) / f).is_file() for f in MESHGEN_FILES.values())


@dataclass
class ShapeResult:
    """verts float32 [V, 3] and faces int32 [F, 3] (torch, on the decoding device); ``source`` names the
    backbone and its files; ``queries`` counts the SDF evaluations of the hierarchical decoder."""

    verts: torch.Tensor
    faces: torch.Tensor
    source: str
    queries: int


def picture_on_white(rgba: np.ndarray) -> torch.Tensor:
    """uint8 [S, S, 4] straight-alpha picture -> uint8 [S, S, 3] composited on white (the conditioners'
    input convention)."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return torch.from_numpy(np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8))


def _coarse_resolution(final_res: int) -> int:
    """The hierarchy's first level: halve while the result stays >= 64 and even (512 -> 64, 192 -> 96)."""
    res = final_res
    while res % 2 == 0 and res // 2 >= 64:
        res //= 2
    return res


def _decode(vae, latents: torch.Tensor, grid_resolution: int, bounds: float) -> tuple:
    from engine.models.shape_decoding import HierarchyConfig, VaeField, hierarchical_decode

    kv = vae.decode_latents(latents)
    fld = VaeField(vae, kv, topk=vae.cfg.default_topk)
    cfg = HierarchyConfig(final_res=grid_resolution, coarse_res=_coarse_resolution(grid_resolution),
                          bound=bounds)
    sdf = hierarchical_decode(fld, cfg)
    verts, faces = sdf.mesh()
    if faces.shape[0] == 0:
        raise MeshError("the shape model decoded no surface (the SDF has no sign change in the grid)",
                        "check that the weights belong to this model, or run without them (weight-free path)")
    return verts, faces, fld.num_queries


@torch.inference_mode()
def hunyuan3d_latents(rgba: np.ndarray, path: str, device: str, seed: int = 0, steps: int | None = None,
                      guidance: float = 5.0) -> tuple[torch.Tensor, object, str]:
    """(latents [1, N, 64], the snapshot's ShapeVAE decoder, source text) for the picture."""
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = load_hunyuan3d_snapshot(path, device=device, dtype=dtype)
    tokens = model.encode_image(picture_on_white(rgba).to(device))
    latents = model.sample_latents(tokens, steps=steps, guidance=guidance, seed=seed)
    return latents, model.vae, f"Hunyuan3D-2 snapshot {model.spec.name} ({path})"


def hunyuan3d_shape(rgba: np.ndarray, path: str, grid_resolution: int, bounds: float, device: str,
                    seed: int = 0, steps: int | None = None, guidance: float = 5.0) -> ShapeResult:
    """Run a Hunyuan3D-2 snapshot on the picture (see the module docstring)."""
    latents, vae, source = hunyuan3d_latents(rgba, path, device, seed, steps, guidance)
    with torch.inference_mode():
        verts, faces, queries = _decode(vae, latents, grid_resolution, bounds)
    return ShapeResult(verts, faces, source, queries)


def _require_files(folder: Path) -> dict[str, Path]:
    paths = {k: folder / v for k, v in MESHGEN_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsError(f"AssetGen weights folder '{folder}' lacks {', '.join(missing)}",
                           "convert the checkpoints with engine.models.checkpoints.save_engine_checkpoint, "
                           "or run without --weights (weight-free path)")
    return paths


@torch.inference_mode()
def meshgen_latents(rgba: np.ndarray, folder: str, device: str, seed: int = 0, steps: int = 25
                    ) -> tuple[torch.Tensor, object, str]:
    """(latents [1, N, 64], the VecSet decoder, source text) from AssetGen's coarse MeshGen."""
    from engine.models.checkpoints import load_engine_checkpoint
    from engine.models.dinov2 import Dinov2Config, Dinov2Model, condition_tokens, prepare_pixels
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder
    from engine.sampling.ddim_vpred import DDIMConfig
    from engine.sampling.guidance import GuidanceConfig, GuidanceMode, GuidedSampler

    paths = _require_files(Path(folder))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    dino, dcfg = load_engine_checkpoint(paths["dinov2"], Dinov2Model, Dinov2Config, model_name="dinov2",
                                        dtype=dtype, device=device)
    dit, mcfg = load_engine_checkpoint(paths["meshgen"], MeshGenDiT, MeshGenConfig, model_name="meshgen_dit",
                                       dtype=dtype, device=device)
    vae, _ = load_engine_checkpoint(paths["vae"], ShapeVaeDecoder, ShapeVaeConfig, model_name="shape_vae",
                                    dtype=dtype, device=device)
    pixels = prepare_pixels(picture_on_white(rgba).to(device), 518, dtype)
    cond = condition_tokens(dino(pixels), dcfg)                                     # [1, M, 1536]
    del dino
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z_t = torch.randn((1, mcfg.n_tokens, mcfg.latent_dim), generator=gen).to(device, torch.float32)
    sampler = GuidedSampler(dit, DDIMConfig(steps=steps), GuidanceConfig(GuidanceMode.FOLDED))
    latents = sampler(cond, z_t)                                                    # [1, N, 64]
    return latents, vae, (f"AssetGen MeshGen coarse ({folder}); refine stage not run (the refine DiT exists "
                          "and is benchmarked, but generate does not wire it yet)")


def meshgen_shape(rgba: np.ndarray, folder: str, grid_resolution: int, bounds: float, device: str,
                  seed: int = 0, steps: int = 25) -> ShapeResult:
    """Run AssetGen's coarse MeshGen from engine-format checkpoints (see the module docstring)."""
    latents, vae, source = meshgen_latents(rgba, folder, device, seed, steps)
    with torch.inference_mode():
        verts, faces, queries = _decode(vae, latents, grid_resolution, bounds)
    return ShapeResult(verts, faces, source, queries)
