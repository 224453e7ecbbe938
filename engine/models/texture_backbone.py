"""TextureGen for ``assetgen generate --weights DIR``: reference picture + mesh -> 10 views -> atlas.

Used when DIR holds ``texturegen.safetensors`` and ``image_vae.safetensors`` (engine format, written by
``engine.models.checkpoints.save_engine_checkpoint``); optional ``t5_xxl.safetensors``,
``clip_l.safetensors`` and ``super_resolution.safetensors``. Steps (paper 7.1-7.4):
  1. the mesh is scaled into the rig sphere and rendered from the 10 rig views (normals with the baked
     normal map, world positions), at 768 px (flash) or 1024 px (default): ``render_views_gpu`` on CUDA,
     the CPU reference ``render_views`` elsewhere;
  2. the image VAE encodes the reference (the picture on white), a uniform-white image (the CFG
     unconditional reference), and every view's normal map (n * 0.5 + 0.5 -> [-1, 1]) and position map
     (world xyz in the unit rig sphere, already in [-1, 1]); background pixels are white / zero;
  3. text context: the CLI takes no prompt, so the context is the EMPTY prompt -- T5 on the token ids
     [</s>] and CLIP on [<bos>, <eos>] = [49406, 49407] (what tokenizers give for ""), when the encoders'
     weights are in DIR; without them the context is zeros, and the stage note says so;
  4. flow-matching Euler, 4 steps, with CFG (default preset) or CFG-distilled (flash);
  5. the image VAE decodes the 10 views; the default preset upscales them x2 with the super-resolution
     network when its weights are present;
  6. the views are fused onto the mesh's UV atlas (anisotropic backprojection, blending, 3D inpainting) on
     the GPU (``fuse_views_device``) or with the CPU reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import WeightsError
from engine.geometry.mesh import TriMesh
from engine.models.shape_backbone import picture_on_white

REQUIRED = {"texturegen": "texturegen.safetensors", "image_vae": "image_vae.safetensors"}
OPTIONAL = {"t5": "t5_xxl.safetensors", "clip": "clip_l.safetensors", "sr": "super_resolution.safetensors"}
T5_EMPTY_PROMPT = (1,)                 # "</s>"


def has_texturegen(folder: str | None) -> bool:
    """True when ``folder`` holds the two files TextureGen needs."""
    return folder is not None and all((Path(folder) / f).is_file() for f in REQUIRED.values())


def _load(path: Path, make, cfg_cls, name: str, dtype, device):
    from engine.models.checkpoints import load_engine_checkpoint

    model, cfg = load_engine_checkpoint(path, make, cfg_cls, model_name=name, dtype=dtype, device=device)
    return model.eval(), cfg


def _text_context(folder: Path, tcfg, dtype, device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(t5 [1, L5, t5_dim], clip [1, Lc, clip_dim], note) for the empty prompt."""
    from engine.models.text_encoders import ClipTextConfig, ClipTextEncoder, T5Encoder, T5EncoderConfig

    t5_path, clip_path = folder / OPTIONAL["t5"], folder / OPTIONAL["clip"]
    if t5_path.is_file() and clip_path.is_file():
        t5, _ = _load(t5_path, T5Encoder, T5EncoderConfig, "t5_encoder", dtype, device)
        clip, ccfg = _load(clip_path, ClipTextEncoder, ClipTextConfig, "clip_text", dtype, device)
        ids5 = torch.tensor([T5_EMPTY_PROMPT], device=device)
        idsc = torch.tensor([[ccfg.eos_token_id - 1, ccfg.eos_token_id]], device=device)  # <bos>, <eos>
        return t5(ids5), clip(idsc)[0], "empty-prompt text context (T5 + CLIP)"
    zeros5 = torch.zeros(1, 1, tcfg.t5_dim, device=device, dtype=dtype)
    zerosc = torch.zeros(1, 1, tcfg.clip_dim, device=device, dtype=dtype)
    return zeros5, zerosc, "zero text context (no T5/CLIP weights in the folder)"


def _to_vae(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1] -> [B, 3, size, size] in [-1, 1]."""
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x * 2.0 - 1.0


@torch.inference_mode()
def texturegen_views(mesh: TriMesh, rgba: np.ndarray, folder: str, preset: str, device: str,
                     seed: int = 0, view_size: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, TriMesh, str]:
    """Generate the 10 rig views of ``mesh`` (with uvs, tangents, normal map where present).

    Returns (views uint8 [K, R, R, 3], masks bool [K, R, R], the mesh scaled into the rig sphere (the frame
    of the views), note). R = 768 (flash) or 1024 (default) unless ``view_size`` is given (a multiple of
    the VAE's 16), x2 after super-resolution when enabled.
    """
    from engine.models.image_vae import ImageVAE, ImageVAEConfig
    from engine.models.texturegen_dit import TextureGenConfig, TextureGenDiT
    from engine.sampling.texturegen_sampler import TextureSamplerConfig, sample_texture_views
    from engine.texture.render_conditions import render_views
    from engine.texture.views import camera_rig, normalize_to_sphere

    root = Path(folder)
    if not has_texturegen(folder):
        missing = [f for f in REQUIRED.values() if not (root / f).is_file()]
        raise WeightsError(f"TextureGen weights folder '{folder}' lacks {', '.join(missing)}",
                           "convert the checkpoints with save_engine_checkpoint, or drop --weights")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    dit, tcfg = _load(root / REQUIRED["texturegen"], TextureGenDiT, TextureGenConfig, "texturegen", dtype,
                      device)
    vae, _ = _load(root / REQUIRED["image_vae"], ImageVAE, ImageVAEConfig, "image_vae", dtype, device)
    size = view_size or (768 if preset == "flash" else 1024)
    cams = camera_rig()
    rig_mesh = mesh.copy(vertices=normalize_to_sphere(mesh.vertices)[0])
    if torch.device(device).type == "cuda":      # the GPU renderer, all views in one launch set
        from engine.texture.render_conditions_gpu import render_views_gpu

        renders = render_views_gpu(rig_mesh, cams, size)
        mask_np = renders.mask.cpu().numpy()
        mask, normal, position = renders.mask[..., None], renders.normal, renders.position
    else:
        renders = render_views(rig_mesh, cams, size)
        mask_np = renders.mask
        mask = torch.from_numpy(renders.mask).to(device)[..., None]                    # [K, R, R, 1]
        normal, position = torch.from_numpy(renders.normal), torch.from_numpy(renders.position)
    normals = normal.to(device) * 0.5 + 0.5
    positions = position.to(device) * 0.5 + 0.5
    normals = torch.where(mask, normals, torch.ones_like(normals))                      # white background
    positions = torch.where(mask, positions, torch.full_like(positions, 0.5))           # origin
    ref = picture_on_white(rgba).to(device)[None].float() / 255.0                      # [1, S, S, 3]
    ref = _to_vae(ref, size)
    maps = _to_vae(torch.cat([normals, positions]), size)
    enc = vae.encode(torch.cat([ref, torch.ones_like(ref), maps]).to(dtype))          # [2 + 2K, C, h, w]
    k = len(cams)
    ref_lat, white_lat = enc[0:1].float(), enc[1].float()
    geometry = torch.cat([enc[2:2 + k], enc[2 + k:]], dim=1)[None]                    # [1, K, 2C, h, w]
    t5, clip, text_note = _text_context(root, tcfg, dtype, device)
    sampler = TextureSamplerConfig.from_name("flash" if preset == "flash" else "default")
    cfg_branches = 1 if preset == "flash" else 2
    request = dit.prepare(geometry, t5, clip, repeat=cfg_branches)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((1, k) + tuple(ref_lat.shape[1:]), generator=gen).to(device)
    latents = sample_texture_views(dit.velocity_fn(request), noise, ref_lat, sampler, white_lat)
    views = (vae.decode(latents[0].to(dtype)).float().clamp(-1, 1) + 1.0) * 0.5         # [K, 3, R, R]
    masks, note = mask_np, f"TextureGen {preset} ({folder}), {k} views at {size} px, {text_note}"
    if preset != "flash" and (root / OPTIONAL["sr"]).is_file():
        from engine.models.super_resolution import SuperResolution, SuperResolutionConfig

        sr, _ = _load(root / OPTIONAL["sr"], SuperResolution, SuperResolutionConfig, "super_resolution",
                      dtype, device)
        views = sr.upscale(views.to(dtype)).float().clamp(0, 1)
        scale = views.shape[-1] // size
        masks = np.repeat(np.repeat(masks, scale, axis=1), scale, axis=2)
        note += f", super-resolved x{scale}"
    out = (views.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return out, masks, rig_mesh, note


def texturegen_atlas(mesh: TriMesh, rgba: np.ndarray, folder: str, preset: str, device: str,
                     atlas_size: int, seed: int = 0, view_size: int | None = None) -> tuple[np.ndarray, str]:
    """TextureGen views fused onto ``mesh``'s atlas: (atlas uint8 [H, W, 3], note)."""
    from engine.texture.fusion_gpu import fuse_views_device
    from engine.texture.views import camera_rig

    views, masks, rig_mesh, note = texturegen_views(mesh, rgba, folder, preset, device, seed, view_size)
    atlas, stats = fuse_views_device(rig_mesh, camera_rig(), views, atlas_size, device=device, masks=masks)
    return atlas, f"{note}; fused, {stats.get('inpaint_unfilled', 0)} unfilled texels"
