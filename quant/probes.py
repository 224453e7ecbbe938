"""Calibration inputs and stage probes of the engine's diffusion transformers (real conditioning paths).

``Target`` bundles what ``quant.analyse`` needs for one network: the module, ``calibrate()`` (runs every
calibration input through the stage's own sampler, eagerly, so the ``Calibrator`` hooks see each step)
and the ``Probe`` (the stage output on the first input; score against the budget):
  * ``meshgen_coarse``: DINOv2 tokens of real pictures (``../shared/images``, prepared as the engine does)
    at the coarse resolution -> the coarse sampler's 25 DDIM steps (folded guidance) from seeded noise.
    Budget: final latent relative error <= 2 %; reported beside it: agreement of the decoded SDF's sign
    (the coarse VAE on a 48^3 lattice).
  * ``texturegen``: condition renders (normals, positions) of real meshes (``../shared/assets``) with a
    real picture as the reference -> the flow sampler's steps -> the image VAE's decoded views.
    Budget: views PSNR >= 30 dB against the unquantised network (score = MSE / MSE at 30 dB).
Random networks (``scale``: "paper" or "tiny") are the engine's own random bundles with the engine's
seeds; a random TextureGen's adaLN-Zero layers get N(0, (0.2 / sqrt(fan_in))^2) weights there
(``engine.models.texturegen_dit.live_adaln``: every block contributes, not gated off), and the recipe's
``weights`` field (the bundle's source) says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from quant.sensitivity import Budget, Probe

LATENT_BUDGET = 0.02
PSNR_BUDGET_DB = 30.0


@dataclass
class Target:
    network: str
    model: nn.Module
    calibrate: Callable[[], None]
    probe: Probe
    budget: Budget
    weights: str
    inputs: str
    timed: Callable[[], torch.Tensor] | None = None   # the network's sampler with CUDA graphs (benchmarks)
    reset: Callable[[], None] = lambda: None          # drop captured graphs after layers were swapped


def prepared_pictures(paths: list[Path]) -> list[np.ndarray]:
    """rgba uint8 [S, S, 4] of each picture, prepared as the engine's preprocess stage does."""
    from engine.io.image_input import prepare_image

    return [prepare_image(p).rgba for p in paths]


def _rel(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


def meshgen_coarse(scale: str, device: str, pictures: list[Path], steps: int = 25, seed: int = 0
                   ) -> Target:
    from engine.config import ShapeConfig
    from engine.models.shape_decoding import VaeField, dense_decode
    from engine.sampling.ddim_vpred import DDIMConfig
    from engine.sampling.guidance import GuidanceConfig, GuidedSampler
    from engine.stages.shape_networks import _image_tokens, picture_on_white, random_meshgen

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    nets = random_meshgen(scale, device, dtype, seed=seed, refine=False, smooth=False)
    res = ShapeConfig().dino_resolution_coarse if scale == "paper" else 56
    mc, dev = nets.coarse_cfg, nets.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        conds = [_image_tokens(nets, picture_on_white(rgba).to(dev), res)
                 for rgba in prepared_pictures(pictures)]
    zs = [torch.randn((1, mc.n_tokens, mc.latent_dim), generator=gen).to(dev) for _ in conds]
    sampler = GuidedSampler(nets.coarse, DDIMConfig(steps=steps), GuidanceConfig(), use_graph=False)

    def calibrate() -> None:
        for c, z in zip(conds, zs):
            sampler(c, z)

    def sdf(latents: torch.Tensor) -> torch.Tensor:
        vae = nets.coarse_vae
        with torch.inference_mode():
            return dense_decode(VaeField(vae, vae.decode_latents(latents.to(dtype))), 48, 1.0)

    def describe(ref: torch.Tensor, out: torch.Tensor) -> dict:
        agree = float((torch.sign(sdf(ref)) == torch.sign(sdf(out))).float().mean())
        return {"latent_rel_err": _rel(ref, out), "sdf_sign_agreement": agree}

    probe = Probe(run=lambda: sampler(conds[0], zs[0]), score=lambda r, o: _rel(r, o) / LATENT_BUDGET,
                  describe=describe)
    graphs = {}

    def timed() -> torch.Tensor:
        if "s" not in graphs:
            graphs["s"] = GuidedSampler(nets.coarse, DDIMConfig(steps=steps), GuidanceConfig())
        return graphs["s"](conds[0], zs[0])

    return Target("meshgen_coarse", nets.coarse, calibrate, probe,
                  Budget(stage_limit=f"latent relative error <= {LATENT_BUDGET:.0%}",
                         min_rows=256 if scale == "paper" else 16),
                  nets.source, f"DINOv2 tokens of {', '.join(p.name for p in pictures)} at {res} px, "
                  f"{steps} DDIM steps from seeded noise", timed, graphs.clear)


def meshgen_refine(scale: str, device: str, pictures: list[Path], steps: int = 5, seed: int = 0) -> Target:
    """The refine DiT on its own conditioning path: the coarse sampler's latents of each picture -> the
    coarse mesh (hierarchical decoding at 128^3 of the engine's paper-size smooth field, a closed
    sphere-like surface) -> ``refine_tokens`` anchors (3D RoPE) -> DINOv2 at the refine resolution -> the
    refine sampler's DDIM steps. Budget: final latent relative error <= 2 %."""
    from dataclasses import replace

    from engine.config import ShapeConfig
    from engine.models.meshgen_dit import refine_token_positions
    from engine.sampling.ddim_vpred import DDIMConfig
    from engine.sampling.guidance import GuidanceConfig, GuidedSampler
    from engine.stages.shape_networks import (
        REFINE_GRID,
        _image_tokens,
        decode_mesh,
        picture_on_white,
        random_meshgen,
    )

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    nets = random_meshgen(scale, device, dtype, seed=seed, refine=True, smooth=scale == "paper")
    paper = scale == "paper"
    cfg = replace(ShapeConfig(), grid_resolution=128 if paper else 32,
                  refine_tokens=nets.refine_cfg.n_tokens,
                  dino_resolution_coarse=518 if paper else 56, dino_resolution_refine=1022 if paper else 112)
    dev, gen = nets.device, torch.Generator(device="cpu").manual_seed(seed)
    coarse = nets.sampler("coarse", 25 if paper else 3)
    inputs = []
    with torch.inference_mode():
        for rgba in prepared_pictures(pictures):
            pic = picture_on_white(rgba).to(dev)
            z = torch.randn((1, nets.coarse_cfg.n_tokens, nets.coarse_cfg.latent_dim), generator=gen).to(dev)
            latents = coarse(_image_tokens(nets, pic, cfg.dino_resolution_coarse), z)
            verts, faces, _ = decode_mesh(nets.coarse_vae, latents, cfg, "coarse MeshGen")
            voxels, _ = refine_token_positions(verts, faces, n=cfg.refine_tokens, grid=REFINE_GRID,
                                               bounds=(-cfg.bounds, cfg.bounds), seed=seed)
            zr = torch.randn((1, cfg.refine_tokens, nets.refine_cfg.latent_dim), generator=gen).to(dev)
            inputs.append((_image_tokens(nets, pic, cfg.dino_resolution_refine), zr, voxels.to(dev)))
    sampler = GuidedSampler(nets.refine, DDIMConfig(steps=steps), GuidanceConfig(), use_graph=False)

    def calibrate() -> None:
        for c, z, v in inputs:
            sampler(c, z, v)

    graphs = {}

    def timed() -> torch.Tensor:
        if "s" not in graphs:
            graphs["s"] = GuidedSampler(nets.refine, DDIMConfig(steps=steps), GuidanceConfig())
        return graphs["s"](*inputs[0])

    probe = Probe(run=lambda: sampler(*inputs[0]), score=lambda r, o: _rel(r, o) / LATENT_BUDGET,
                  describe=lambda r, o: {"latent_rel_err": _rel(r, o)})
    return Target("meshgen_refine", nets.refine, calibrate, probe,
                  Budget(stage_limit=f"latent relative error <= {LATENT_BUDGET:.0%}",
                         min_rows=256 if paper else 16),
                  nets.source, f"{cfg.refine_tokens} anchors on the coarse mesh of "
                  f"{', '.join(p.name for p in pictures)}, DINOv2 {cfg.dino_resolution_refine} px, "
                  f"{steps} DDIM steps",
                  timed, graphs.clear)


def texturegen(scale: str, device: str, pictures: list[Path], meshes: list[Path], steps: int = 4,
               view_resolution: int | None = None, seed: int = 0) -> Target:
    from engine.config import TextureConfig, TextureGuidance
    from engine.io.asset_load import load_mesh
    from engine.stages.texture_networks import (live_adaln_draws, prepare_views, random_texturegen,
                                                sample_latents, sample_views)
    from triton_kernels.jit_cache import default_cache_dir

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    nets = random_texturegen(scale, device, dtype, seed=seed, text=False, super_resolution=False,
                             live=live_adaln_draws(scale, dtype, seed, default_cache_dir()))
    size = view_resolution or (768 if scale == "paper" else 64)
    cfg = TextureConfig(view_resolution=size, steps=steps, guidance=TextureGuidance.DISTILLED,
                        super_resolution=False)
    rgbas = prepared_pictures(pictures)
    jobs = [prepare_views(nets, load_mesh(m), rgbas[i % len(rgbas)], cfg, device, seed)
            for i, m in enumerate(meshes)]

    def calibrate() -> None:
        for job in jobs:
            sample_views(nets, job, graphs=False)

    def mse(ref, out) -> float:
        return float((out.float().clamp(0, 1) - ref.float().clamp(0, 1)).pow(2).mean())

    def psnr(ref, out) -> float:
        return 10.0 * math.log10(1.0 / max(mse(ref, out), 1e-30))

    limit = 10.0 ** (-PSNR_BUDGET_DB / 10.0)
    probe = Probe(run=lambda: sample_views(nets, jobs[0], graphs=False),
                  score=lambda r, o: mse(r, o) / limit,
                  describe=lambda r, o: {"views_psnr_db": psnr(r, o), "views_rel_err": _rel(r, o)})
    return Target("texturegen", nets.dit, calibrate, probe,
                  Budget(stage_limit=f"decoded views PSNR >= {PSNR_BUDGET_DB} dB",
                         min_rows=256 if scale == "paper" else 16),
                  nets.source,
                  f"condition renders of {', '.join(m.parent.name for m in meshes)} with "
                  f"{', '.join(p.name for p in pictures)} as references, {size} px, {steps} steps, distilled",
                  lambda: sample_latents(nets, jobs[0]), nets.runners.clear)
