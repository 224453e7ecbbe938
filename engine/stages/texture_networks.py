"""TextureGen stage networks: reference picture + mesh -> K generated rig views (paper 7.1-7.3).

The engine loads a bundle ONCE (``load_texturegen`` from engine-format checkpoints, ``random_texturegen``
for benchmarks and tests) and keeps it resident: the TextureGen DiT, the image VAE, the optional T5-XXL /
CLIP-L text encoders and super-resolution network, and the EMPTY-PROMPT text context, computed at load
(the CLI takes no prompt): T5 on the ids [</s>] and CLIP on [<bos>, <eos>] (what the tokenizers give for
""), or zeros when the encoders are absent (``text_note`` says which). Requests never run the text
encoders.

A request, ``texturegen_views(nets, mesh, rgba, cfg, device, seed)``, reads ``TextureConfig``:
  1. the mesh is scaled into the rig sphere and rendered from the ``num_views`` rig views at
     ``view_resolution`` px (normals with the baked normal map, world positions): ``render_views_gpu``
     on CUDA, the CPU reference ``render_views`` elsewhere;
  2. the image VAE encodes the reference (the picture on white) and every view's normal map
     (n * 0.5 + 0.5 -> [-1, 1]) and position map; the uniform-white latent (CFG's unconditional
     reference) is encoded once per resolution and cached in the bundle;
  3. flow-matching Euler for ``steps`` steps: ``guidance`` CFG runs two branches a step (the
     white-reference unconditional branch batched with the conditional one), DISTILLED one;
     each step's DiT call runs through a ``CudaGraphStep`` kept in ``nets.runners`` (one per shape
     bucket: grid shape, dtype, branch count, context shapes), built at the bucket's first request;
  4. the image VAE decodes the views; with ``super_resolution`` they are upscaled by the SR network's
     factor (x2) when the bundle holds it -- when it does not, the views stay at ``view_resolution``
     and the note says so.
Views come out uint8 [K, R, R, 3] with masks bool [K, R, R] (R = view_resolution x upscale), in the rig
order of ``engine.texture.views.camera_rig``, with the rig-frame mesh they were rendered from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import TextureConfig, TextureGuidance
from engine.errors import ConfigError, WeightsError
from engine.geometry.mesh import TriMesh
from engine.stages.shape_networks import picture_on_white
from profiling.stage_timer import substep

REQUIRED = {"texturegen": "texturegen.safetensors", "image_vae": "image_vae.safetensors"}
OPTIONAL = {"t5": "t5_xxl.safetensors", "clip": "clip_l.safetensors", "sr": "super_resolution.safetensors"}
T5_EMPTY_PROMPT = (1,)  # "</s>"
SCALES = ("paper", "tiny")


def has_texturegen(folder: str | None) -> bool:
    """True when ``folder`` holds the two files TextureGen needs."""
    return folder is not None and all((Path(folder) / f).is_file() for f in REQUIRED.values())


@dataclass(eq=False)
class TextureNetworks:
    """TextureGen's networks and per-engine constants, resident across requests.

    text_context: (t5 [1, L5, t5_dim], clip [1, Lc, clip_dim]) in the model dtype on the device."""

    dit: nn.Module  # TextureGenDiT
    dit_cfg: object  # TextureGenConfig
    vae: nn.Module  # ImageVAE
    t5: nn.Module | None
    clip: nn.Module | None
    sr: nn.Module | None
    text_context: tuple[torch.Tensor, torch.Tensor]
    text_note: str
    source: str
    runners: dict = field(default_factory=dict)
    white_latents: dict = field(default_factory=dict)  # view resolution -> [1, C, h, w] fp32

    kind = "TextureGen"

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.dit.parameters()).dtype

    def upscale(self, cfg: TextureConfig) -> int:
        """Factor the views grow by before fusion: the SR net's scale when enabled and loaded, else 1."""
        return self.sr.cfg.scale if (cfg.super_resolution and self.sr is not None) else 1

    def network_names(self) -> list[str]:
        named = [("texturegen", self.dit), ("image_vae", self.vae), ("t5_encoder", self.t5),
                 ("clip_text", self.clip), ("super_resolution", self.sr)]
        return [name for name, m in named if m is not None]

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.dit, self.vae, self.t5, self.clip, self.sr) if m is not None]


@torch.inference_mode()
def empty_prompt_context(t5: nn.Module | None, clip: nn.Module | None, dit_cfg, device: torch.device,
                         dtype: torch.dtype) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """((t5 [1, L5, t5_dim], clip [1, Lc, clip_dim]), note) for the empty prompt; zeros [1, 1, dim]
    when either encoder is missing."""
    if t5 is not None and clip is not None:
        ids5 = torch.tensor([T5_EMPTY_PROMPT], device=device)
        eos = clip.cfg.eos_token_id
        idsc = torch.tensor([[eos - 1, eos]], device=device)                          # <bos>, <eos>
        return (t5(ids5).to(dtype), clip(idsc)[0].to(dtype)), "empty-prompt text context (T5 + CLIP)"
    zeros5 = torch.zeros(1, 1, dit_cfg.t5_dim, device=device, dtype=dtype)
    zerosc = torch.zeros(1, 1, dit_cfg.clip_dim, device=device, dtype=dtype)
    return (zeros5, zerosc), "zero text context (no T5/CLIP weights)"


def _bundle(dit, dit_cfg, vae, t5, clip, sr, source: str) -> TextureNetworks:
    p = next(dit.parameters())
    if torch.device(p.device).type == "cuda":  # the conv nets run channels-last (cuDNN's fast layout)
        vae = vae.to(memory_format=torch.channels_last)
        sr = sr.to(memory_format=torch.channels_last) if sr is not None else None
    context, note = empty_prompt_context(t5, clip, dit_cfg, p.device, p.dtype)
    return TextureNetworks(dit.eval(), dit_cfg, vae.eval(), t5, clip, sr, context, note, source)


def load_texturegen(folder: str | Path, device: str | torch.device, dtype: torch.dtype) -> TextureNetworks:
    """TextureGen from engine-format checkpoints in ``folder`` (``REQUIRED``; the optional text encoders
    when both are present, SR when present), memory-mapped straight onto ``device`` in ``dtype``."""
    from engine.models.checkpoints import load_engine_checkpoint
    from engine.models.image_vae import ImageVAE, ImageVAEConfig
    from engine.models.super_resolution import SuperResolution, SuperResolutionConfig
    from engine.models.text_encoders import ClipTextConfig, ClipTextEncoder, T5Encoder, T5EncoderConfig
    from engine.models.texturegen_dit import TextureGenConfig, TextureGenDiT

    root = Path(folder)
    if not has_texturegen(str(root)):
        missing = [f for f in REQUIRED.values() if not (root / f).is_file()]
        raise WeightsError(f"TextureGen weights folder '{root}' lacks {', '.join(missing)}",
                           "convert the checkpoints with save_engine_checkpoint, or drop --weights")

    def load(file: str, make, cfg_cls, name: str):
        return load_engine_checkpoint(root / file, make, cfg_cls, model_name=name, dtype=dtype, device=device)

    dit, tcfg = load(REQUIRED["texturegen"], TextureGenDiT, TextureGenConfig, "texturegen")
    vae, _ = load(REQUIRED["image_vae"], ImageVAE, ImageVAEConfig, "image_vae")
    t5 = clip = sr = None
    if (root / OPTIONAL["t5"]).is_file() and (root / OPTIONAL["clip"]).is_file():
        t5, _ = load(OPTIONAL["t5"], T5Encoder, T5EncoderConfig, "t5_encoder")
        clip, _ = load(OPTIONAL["clip"], ClipTextEncoder, ClipTextConfig, "clip_text")
    if (root / OPTIONAL["sr"]).is_file():
        sr, _ = load(OPTIONAL["sr"], SuperResolution, SuperResolutionConfig, "super_resolution")
    return _bundle(dit, tcfg, vae, t5, clip, sr, f"weights {root}")


def texturegen_configs(scale: str) -> dict[str, object]:
    """Network configs of a random bundle: "paper" (7.4 B DiT, T5-XXL, CLIP-L, the paper VAE and SR) or
    "tiny" (CPU tests)."""
    from dataclasses import replace

    from engine.models.image_vae import ImageVAEConfig
    from engine.models.super_resolution import SuperResolutionConfig
    from engine.models.text_encoders import ClipTextConfig, T5EncoderConfig
    from engine.models.texturegen_dit import TextureGenConfig

    if scale not in SCALES:
        raise ConfigError(f"unknown network scale '{scale}'", f"use one of {', '.join(SCALES)}")
    if scale == "paper":
        return {"dit": TextureGenConfig.paper(), "vae": ImageVAEConfig.paper(), "t5": T5EncoderConfig(),
                "clip": ClipTextConfig.vit_l14(), "sr": SuperResolutionConfig.paper()}
    t5, clip = T5EncoderConfig.tiny(), ClipTextConfig.tiny()
    return {"dit": replace(TextureGenConfig.tiny(), t5_dim=t5.d_model, clip_dim=clip.width),
            "vae": ImageVAEConfig.tiny(), "t5": t5, "clip": clip, "sr": SuperResolutionConfig.tiny()}


def live_adaln_draws(scale: str, dtype: torch.dtype, seed: int = 0, cache_dir: Path | None = None):
    """Start drawing the random TextureGen's ``live_adaln`` weights (``LiveAdalnDraws``, a background
    thread); ``cache_dir`` keeps the draw's generator states so later builds draw in parallel."""
    from engine.models.texturegen_dit import LiveAdalnDraws

    states = None if cache_dir is None else Path(cache_dir) / "live_adaln" / f"texturegen_{scale}_{seed}.pt"
    return LiveAdalnDraws(texturegen_configs(scale)["dit"], seed, dtype, states=states)


def random_texturegen(scale: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0,
                      text: bool = True, super_resolution: bool = True, live=None) -> TextureNetworks:
    """A bundle with seeded random weights built directly on ``device`` in ``dtype`` (no float32 host
    copy); ``text``/``super_resolution`` choose whether the optional networks are built. The DiT's
    adaLN-Zero linears get ``live_adaln`` weights (every block contributes, as trained blocks do; the
    weights the quantisation recipes are measured on, so ``--precision auto`` applies them): ``live``, from
    ``live_adaln_draws`` started earlier (the engine starts it before any network builds), else drawn
    while this bundle builds."""
    from engine.models.checkpoints import init_random as normal_init
    from engine.models.dit_layers import build_on
    from engine.models.image_vae import ImageVAE
    from engine.models.super_resolution import SuperResolution
    from engine.models.text_encoders import ClipTextEncoder, T5Encoder
    from engine.models.texturegen_dit import LIVE_ADALN, TextureGenDiT
    from engine.models.texturegen_dit import init_random as dit_init

    cfgs = texturegen_configs(scale)
    live = live or live_adaln_draws(scale, dtype, seed)
    dit = build_on(device, dtype, TextureGenDiT, cfgs["dit"], seed=seed, init=dit_init)
    vae = build_on(device, dtype, ImageVAE, cfgs["vae"], seed=seed + 1, init=normal_init)
    t5 = clip = sr = None
    if text:
        t5 = build_on(device, dtype, T5Encoder, cfgs["t5"], seed=seed + 2, init=normal_init).eval()
        clip = build_on(device, dtype, ClipTextEncoder, cfgs["clip"], seed=seed + 3, init=normal_init).eval()
    if super_resolution:
        sr = build_on(device, dtype, SuperResolution, cfgs["sr"], seed=seed + 4,  # std 0.15: O(1) outputs
                      init=lambda m, s: normal_init(m, s, std=0.15)).eval()
    live.apply(dit)
    return _bundle(dit, cfgs["dit"], vae, t5, clip, sr, f"random {scale} networks, seed {seed}; {LIVE_ADALN}")


def _to_vae(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1] -> [B, 3, size, size] in [-1, 1]."""
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x * 2.0 - 1.0


def _reference(rgba: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """The reference picture on white as the image VAE's input: [1, 3, size, size] in [-1, 1]."""
    return _to_vae(picture_on_white(rgba).to(device)[None].float() / 255.0, size)


def _white_latent(nets: TextureNetworks, size: int) -> torch.Tensor:
    """[1, C, size/16, size/16] fp32 latent of a uniform-white image (cached per resolution)."""
    if size not in nets.white_latents:
        white = torch.ones(1, 3, size, size, device=nets.device, dtype=nets.dtype)
        nets.white_latents[size] = nets.vae.encode(white).float()
    return nets.white_latents[size]


def _render(rig_mesh: TriMesh, cams, size: int, device: torch.device):
    """(mask bool [K, R, R, 1], normals [K, R, R, 3] in [0, 1], positions [K, R, R, 3] in [0, 1]) on
    ``device`` (backgrounds white / origin), and the mask as numpy [K, R, R]."""
    if device.type == "cuda":  # the GPU renderer, all views in one launch set
        from engine.texture.render_conditions_gpu import render_views_gpu

        renders = render_views_gpu(rig_mesh, cams, size)
        mask_np = renders.mask.cpu().numpy()
        mask, normal, position = renders.mask[..., None], renders.normal, renders.position
    else:
        from engine.texture.render_conditions import render_views

        renders = render_views(rig_mesh, cams, size)
        mask_np = renders.mask
        mask = torch.from_numpy(renders.mask).to(device)[..., None]
        normal, position = torch.from_numpy(renders.normal), torch.from_numpy(renders.position)
    normals = torch.where(mask, normal.to(device) * 0.5 + 0.5, 1.0)                    # white background
    positions = torch.where(mask, position.to(device) * 0.5 + 0.5, 0.5)                # origin
    return mask, normals, positions, mask_np


def _velocity(nets: TextureNetworks, request, grid_shape: tuple[int, ...], graphs: bool = True):
    """The sampler's ``velocity_fn(grid, t)`` through the bucket's CUDA-graph runner (eager off CUDA, or
    with ``graphs`` False: a fresh eager runner nobody keeps, e.g. for calibration hooks)."""
    from engine.models.texturegen_dit import TextureGenRequest
    from engine.runtime.cuda_graph import CudaGraphStep

    consts = [request.base] + [t for pair in request.kv for t in pair]
    key = ("texturegen", grid_shape, tuple((tuple(c.shape), c.dtype) for c in consts))
    runner = nets.runners.get(key) if graphs else None
    if runner is None:
        dit, depth, hw, plan = nets.dit, len(request.kv), request.grid_hw, request.plan

        def step(grid: torch.Tensor, t: torch.Tensor, base: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:
            pairs = [(kv[2 * i], kv[2 * i + 1]) for i in range(depth)]
            return dit(grid, t, TextureGenRequest(base, pairs, hw, plan))

        grid0 = torch.zeros(grid_shape, device=nets.device)
        t0 = torch.zeros(grid_shape[0], device=nets.device)
        runner = CudaGraphStep(step, [grid0, t0, *consts], n_dynamic=2, enabled=graphs)
        if graphs:
            nets.runners[key] = runner
    else:
        runner.set_constants(consts)
    return runner


@dataclass
class ViewsJob:
    """A prepared TextureGen request: everything the sampler needs (``prepare_views``)."""

    request: object            # TextureGenRequest
    noise: torch.Tensor        # [1, K, C, h, w] fp32
    ref_lat: torch.Tensor      # [1, C, h, w] fp32
    sampler: object            # TextureSamplerConfig
    white: torch.Tensor | None
    grid_shape: tuple[int, ...]
    masks: np.ndarray          # bool [K, R, R]
    rig_mesh: TriMesh
    note: str


@dataclass(eq=False)
class ConditionEncoding:
    """Step 2's encodings that need only the mesh's geometry and the picture (``encode_conditions``): the
    reference and the views' position maps, made before the UV layout and the baked normal map exist
    (the engine runs it while the CPU unwraps). ``positions`` are the renders they were encoded from:
    ``prepare_views`` reuses the latents only when its own position renders are equal."""

    size: int
    positions: torch.Tensor    # [K, R, R, 3] in [0, 1]
    ref_lat: torch.Tensor      # [1, C, h, w] model dtype
    pos_lat: torch.Tensor      # [K, C, h, w] model dtype


def _check_request(nets: TextureNetworks, cfg: TextureConfig, device: str | torch.device) -> None:
    dev, tcfg = nets.device, nets.dit_cfg
    if torch.device(device).type != dev.type:
        raise ConfigError(f"the TextureGen networks live on {dev}, the request asked for {device}",
                          "run the request on the device the engine loaded the networks on")
    size, multiple = cfg.view_resolution, nets.vae.cfg.downsample * tcfg.patch
    if size % multiple:
        raise ConfigError(f"view resolution {size} is not a multiple of {multiple} (image VAE x DiT patch)",
                          f"use a multiple of {multiple}, e.g. 768 or 1024")
    if cfg.num_views != tcfg.num_views:
        raise ConfigError(f"{cfg.num_views} views requested, the TextureGen DiT was trained for "
                          f"{tcfg.num_views}", f"use num_views={tcfg.num_views}")


@torch.inference_mode()
def encode_conditions(nets: TextureNetworks, mesh: TriMesh, rgba: np.ndarray, cfg: TextureConfig,
                      device: str | torch.device) -> ConditionEncoding:
    """The reference and position-map latents of ``mesh`` (its geometry only: no UVs or normal map
    needed), for ``prepare_views(..., early=)``."""
    from engine.texture.views import camera_rig, rig_mesh

    _check_request(nets, cfg, device)
    size = cfg.view_resolution
    with substep("condition renders"):
        _, _, positions, _ = _render(rig_mesh(mesh), camera_rig(cfg.num_views), size, nets.device)
    with substep("image VAE encode (reference, positions)"):
        enc = nets.vae.encode(torch.cat([_reference(rgba, size, nets.device),
                                         _to_vae(positions, size)]).to(nets.dtype))
    return ConditionEncoding(size, positions, enc[0:1], enc[1:])


@torch.inference_mode()
def prepare_views(nets: TextureNetworks, mesh: TriMesh, rgba: np.ndarray, cfg: TextureConfig,
                  device: str | torch.device, seed: int = 0, early: ConditionEncoding | None = None
                  ) -> ViewsJob:
    """Steps 1-2 of the module docstring and the sampler's inputs. ``early``: ``encode_conditions`` of
    this mesh's geometry, whose reference and position latents are used when its position renders equal
    this call's (then only the normal maps are encoded here)."""
    from engine.sampling.texturegen_sampler import TextureSamplerConfig
    from engine.texture.views import camera_rig, rig_mesh

    _check_request(nets, cfg, device)
    dev, dtype, size = nets.device, nets.dtype, cfg.view_resolution
    cams = camera_rig(cfg.num_views)
    rig = rig_mesh(mesh)
    with substep("condition renders"):
        _, normals, positions, masks = _render(rig, cams, size, dev)
    k = len(cams)
    reuse = early is not None and early.size == size and torch.equal(early.positions, positions)
    with substep("image VAE encode"):
        if reuse:
            ref_enc, pos_enc, nrm_enc = early.ref_lat, early.pos_lat, nets.vae.encode(
                _to_vae(normals, size).to(dtype))
        else:
            enc = nets.vae.encode(torch.cat([_reference(rgba, size, dev),
                                             _to_vae(torch.cat([normals, positions]), size)]).to(dtype))
            ref_enc, nrm_enc, pos_enc = enc[0:1], enc[1:1 + k], enc[1 + k:]
    ref_lat = ref_enc.float()                                                          # [1, C, h, w]
    geometry = torch.cat([nrm_enc, pos_enc], dim=1)[None]                              # [1, K, 2C, h, w]
    sampler = TextureSamplerConfig.from_texture_config(cfg.steps, cfg.guidance)
    branches = 2 if cfg.guidance is TextureGuidance.CFG else 1
    request = nets.dit.prepare(geometry, *nets.text_context, repeat=branches)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((1, k) + tuple(ref_lat.shape[1:]), generator=gen).to(dev)      # [1, K, C, h, w]
    grid_shape = (branches, 1 + k) + tuple(ref_lat.shape[1:])                          # [B', S, C, h, w]
    white = _white_latent(nets, size)[0] if branches == 2 else None
    note = (f"TextureGen ({nets.source}), {k} views at {size} px, {cfg.steps} steps, "
            f"{'CFG (2 branches)' if branches == 2 else 'guidance-distilled (1 branch)'}, {nets.text_note}")
    if early is not None:
        note += ("; reference and position maps encoded while the UVs were made" if reuse else
                 "; the early position renders differed: all conditions encoded here")
    return ViewsJob(request, noise, ref_lat, sampler, white, grid_shape, masks, rig, note)


@torch.inference_mode()
def sample_latents(nets: TextureNetworks, job: ViewsJob, graphs: bool = True) -> torch.Tensor:
    """Step 3: the flow sampler -> view latents [1, K, C, h, w] fp32."""
    from engine.sampling.texturegen_sampler import sample_texture_views

    velocity = _velocity(nets, job.request, job.grid_shape, graphs)
    with substep("TextureGen DiT sampling"):
        return sample_texture_views(velocity, job.noise, job.ref_lat, job.sampler, job.white)


@torch.inference_mode()
def sample_views(nets: TextureNetworks, job: ViewsJob, graphs: bool = True) -> torch.Tensor:
    """Steps 3-4 without super-resolution: the decoded views [K, 3, R, R] fp32 in [0, 1] (unclamped)."""
    latents = sample_latents(nets, job, graphs)
    with substep("image VAE decode"):
        return (nets.vae.decode(latents[0].to(nets.dtype)).float() + 1.0) * 0.5


@torch.inference_mode()
def texturegen_views(nets: TextureNetworks, mesh: TriMesh, rgba: np.ndarray, cfg: TextureConfig,
                     device: str | torch.device, seed: int = 0, early: ConditionEncoding | None = None,
                     to_host: bool = True) -> tuple[np.ndarray | torch.Tensor, np.ndarray, TriMesh, str]:
    """Generate the rig views of ``mesh`` (with uvs, tangents, normal map where present); see the module
    docstring. Returns (views uint8 [K, R, R, 3], masks bool [K, R, R], the mesh scaled into the rig
    sphere (the views' frame), note). ``early``: see ``prepare_views``. ``to_host`` False: the views stay
    a uint8 tensor on the networks' device (the engine's fusion reads them there: no round trip through
    pageable host memory, 126 MB for default's 10 views at 2048 px)."""
    job = prepare_views(nets, mesh, rgba, cfg, device, seed, early)
    views, masks, note = sample_views(nets, job), job.masks, job.note
    scale = nets.upscale(cfg)
    if scale > 1:
        with substep("super-resolution"):
            views = nets.sr.upscale(views.to(nets.dtype)).float()                          # [K, 3, sR, sR]
        masks = np.repeat(np.repeat(masks, scale, axis=1), scale, axis=2)
        note += f", super-resolved x{scale}"
    elif cfg.super_resolution:
        note += (", super-resolution requested but no SR network is loaded: views kept at "
                 f"{cfg.view_resolution} px")
    out = (views.clamp(0, 1).permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8)     # [K, R, R, 3]
    if to_host:
        with substep("views to host"):
            out = out.cpu().numpy()
    return out, masks, job.rig_mesh, note
