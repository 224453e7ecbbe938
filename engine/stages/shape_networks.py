"""Shape stage networks: picture -> dense mesh through MeshGen (paper 5.2-5.3) or a Hunyuan3D-2 snapshot.

The engine loads a bundle ONCE (``load_meshgen``, ``random_meshgen``, ``load_hunyuan``) and keeps it
resident; a request is ``meshgen_shape(nets, rgba, cfg, device, seed)`` (or ``hunyuan_shape``), a
function of the picture, the typed ``ShapeConfig`` and the bundle. Nothing here opens a checkpoint per
request or reads a preset name.

MeshGen request (every count and size from ``ShapeConfig``):
  1. DINOv2 tokens of the picture on white at ``dino_resolution_coarse`` px (518: 1374 tokens);
  2. coarse DiT, ``coarse_steps`` DDIM v-prediction steps (zero-SNR, trailing; CFG folded: one pass a
     step) from Gaussian noise [1, N, D] (N, D: the network's, 4096 x 64 in the paper);
  3. coarse VAE -> hierarchical SDF decoding on ``grid_resolution``^3 over [-bounds, bounds]^3 ->
     marching cubes -> the coarse mesh;
  4. when ``cfg.refine`` and the bundle holds the refine DiT + refine VAE: ``refine_tokens`` anchor
     voxels from area-weighted surface samples of the coarse mesh (``refine_token_positions``, 128^3
     lattice over the same box, seeded), DINOv2 at ``dino_resolution_refine`` (1022 px: the 37 x 37
     position table is interpolated to 73 x 73 by ``dinov2``), the refine DiT with 3D RoPE on the anchor
     voxels for ``refine_steps`` steps, the refine VAE, hierarchical decoding -> the final mesh.
     What the refine sampler starts from: pure Gaussian noise at the zero-SNR terminal step, over the
     full trailing schedule of ``refine_steps`` steps (the same DDIM v-prediction family as the coarse
     stage). The paper (5.2, 5.3) conditions the refine stage on the coarse geometry THROUGH the token
     positions (RoPE anchors) and distils it from 20 to 5 steps; it describes no partial-noise start, and
     none is possible here: the refine latents live in a different VAE's space (16384 anchored tokens),
     and no encoder maps the coarse mesh into it. "Converges in fewer steps" is the distilled step count.
     ``cfg.refine`` with no refine networks loaded uses the coarse mesh, and the source text says so.
Meshes come out in the decoder's frame: world units in [-bounds, bounds]^3, +Y up (glTF), float32
vertices [V, 3] and int32 faces [F, 3] on the decoding device.

CUDA graphs: each denoising step runs through a ``CudaGraphStep`` kept in ``nets.runners`` (one per
shape bucket: stage, steps, token and context shapes), built at the first request of its bucket and
then only fed the new context (``set_constants``) and replayed; DDIM tables are built once per
(stage, steps) in ``nets.samplers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import ShapeConfig
from engine.errors import ConfigError, MeshError, WeightsError
from profiling.stage_timer import substep

MESHGEN_FILES = {"dinov2": "dinov2.safetensors", "meshgen": "meshgen_coarse.safetensors",
                 "vae": "shape_vae.safetensors"}
REFINE_FILES = {"meshgen_refine": "meshgen_refine.safetensors", "vae_refine": "shape_vae_refine.safetensors"}
SCALES = ("paper", "tiny")
REFINE_GRID = 128  # lattice of the refine anchors (paper 5.2 does not give it)


def has_meshgen(folder: str | None) -> bool:
    """True when ``folder`` holds the three coarse MeshGen files."""
    return folder is not None and all((Path(folder) / f).is_file() for f in MESHGEN_FILES.values())


def has_refine(folder: str | None) -> bool:
    """True when ``folder`` holds both refine files (the refine stage needs the DiT and its VAE)."""
    return folder is not None and all((Path(folder) / f).is_file() for f in REFINE_FILES.values())


@dataclass
class ShapeResult:
    """verts float32 [V, 3] and faces int32 [F, 3] (torch, on the decoding device); ``source`` names the
    backbone, its files and the stages that ran; ``queries`` counts the SDF evaluations."""

    verts: torch.Tensor
    faces: torch.Tensor
    source: str
    queries: int


def picture_on_white(rgba: np.ndarray) -> torch.Tensor:
    """uint8 [S, S, 4] straight-alpha picture -> uint8 [S, S, 3] composited on white (the conditioners'
    input convention), on the CPU."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return torch.from_numpy(np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8))


@dataclass(eq=False)
class MeshGenNetworks:
    """AssetGen's shape networks, resident across requests. ``refine``/``refine_vae`` are None when the
    refine stage is not loaded; ``runners`` and ``samplers`` are filled by requests (module docstring)."""

    dino: nn.Module
    dino_cfg: object  # Dinov2Config
    coarse: nn.Module  # MeshGenDiT
    coarse_cfg: object  # MeshGenConfig
    coarse_vae: nn.Module  # ShapeVaeDecoder
    refine: nn.Module | None
    refine_cfg: object | None
    refine_vae: nn.Module | None
    source: str
    runners: dict = field(default_factory=dict)
    samplers: dict = field(default_factory=dict)

    kind = "MeshGen"

    @property
    def has_refine(self) -> bool:
        return self.refine is not None and self.refine_vae is not None

    @property
    def device(self) -> torch.device:
        return next(self.coarse.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.coarse.parameters()).dtype

    def network_names(self) -> list[str]:
        names = ["dinov2", "meshgen_coarse", "shape_vae"]
        return names + (["meshgen_refine", "shape_vae_refine"] if self.has_refine else [])

    def modules(self) -> list[nn.Module]:
        mods = [self.dino, self.coarse, self.coarse_vae]
        return mods + ([self.refine, self.refine_vae] if self.has_refine else [])  # type: ignore[list-item]

    def sampler(self, stage: str, steps: int):
        """The GuidedSampler of ``stage`` ("coarse" | "refine") for ``steps`` (built once, cached)."""
        from engine.sampling.ddim_vpred import DDIMConfig
        from engine.sampling.guidance import GuidanceConfig, GuidanceMode, GuidedSampler

        key = (stage, steps)
        if key not in self.samplers:
            model = self.coarse if stage == "coarse" else self.refine
            self.samplers[key] = GuidedSampler(model, DDIMConfig(steps=steps),
                                               GuidanceConfig(GuidanceMode.FOLDED), runners=self.runners,
                                               name=stage)
        return self.samplers[key]


@dataclass(eq=False)
class HunyuanNetworks:
    """A resident Hunyuan3D-2 snapshot (``engine.models.hunyuan3d.Hunyuan3DShapeModel``)."""

    model: nn.Module
    source: str

    kind = "Hunyuan3D-2"

    def network_names(self) -> list[str]:
        return ["hunyuan3d"]

    def modules(self) -> list[nn.Module]:
        return [self.model]


def _require_files(folder: Path) -> dict[str, Path]:
    paths = {k: folder / v for k, v in MESHGEN_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsError(f"AssetGen weights folder '{folder}' lacks {', '.join(missing)}",
                           "convert the checkpoints with engine.models.checkpoints.save_engine_checkpoint, "
                           "or run without --weights (weight-free path)")
    return paths


def load_meshgen(folder: str | Path, device: str | torch.device, dtype: torch.dtype) -> MeshGenNetworks:
    """MeshGen from engine-format checkpoints in ``folder`` (``MESHGEN_FILES``, plus ``REFINE_FILES``
    when both are present), memory-mapped straight onto ``device`` in ``dtype`` (no float32 host copy:
    ``load_engine_checkpoint``)."""
    from engine.models.checkpoints import load_engine_checkpoint
    from engine.models.dinov2 import Dinov2Config, Dinov2Model
    from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
    from engine.models.shape_vae import ShapeVaeConfig, ShapeVaeDecoder

    root = Path(folder)
    paths = _require_files(root)

    def load(path: Path, make, cfg_cls, name: str):
        return load_engine_checkpoint(path, make, cfg_cls, model_name=name, dtype=dtype, device=device)

    dino, dcfg = load(paths["dinov2"], Dinov2Model, Dinov2Config, "dinov2")
    dit, mcfg = load(paths["meshgen"], MeshGenDiT, MeshGenConfig, "meshgen_dit")
    vae, _ = load(paths["vae"], ShapeVaeDecoder, ShapeVaeConfig, "shape_vae")
    refine = refine_cfg = refine_vae = None
    if has_refine(str(root)):
        refine, refine_cfg = load(root / REFINE_FILES["meshgen_refine"], MeshGenDiT, MeshGenConfig,
                                  "meshgen_dit")
        refine_vae, _ = load(root / REFINE_FILES["vae_refine"], ShapeVaeDecoder, ShapeVaeConfig, "shape_vae")
        if not refine_cfg.rope:
            raise WeightsError(f"'{root / REFINE_FILES['meshgen_refine']}' is not a refine DiT (no 3D RoPE)",
                               "convert the refine checkpoint with MeshGenConfig.refine()")
    nets = MeshGenNetworks(dino, dcfg, dit, mcfg, vae, refine, refine_cfg, refine_vae, f"weights {root}")
    _check_widths(nets)
    return nets


def _check_widths(nets: MeshGenNetworks) -> None:
    pairs = [(nets.coarse_cfg, nets.coarse_vae)] + ([(nets.refine_cfg, nets.refine_vae)] if nets.has_refine
                                                      else [])
    for dit_cfg, vae in pairs:
        if dit_cfg.context_dim != nets.dino_cfg.hidden_size or dit_cfg.latent_dim != vae.cfg.embed_dim:
            raise WeightsError(f"MeshGen {dit_cfg.name}: context {dit_cfg.context_dim} / latent "
                               f"{dit_cfg.latent_dim} do not match DINOv2 width {nets.dino_cfg.hidden_size} "
                               f"/ VAE latent {vae.cfg.embed_dim}", "use checkpoints of one model family")


def meshgen_configs(scale: str) -> dict[str, object]:
    """Network configs of a random bundle: "paper" (DINOv2-g/14 + registers, 2.3 B coarse and refine
    DiTs, 4096- and 16384-latent VAEs) or "tiny" (CPU tests)."""
    from dataclasses import replace

    from engine.models.dinov2 import Dinov2Config
    from engine.models.meshgen_dit import MeshGenConfig
    from engine.models.shape_vae import ShapeVaeConfig

    if scale not in SCALES:
        raise ConfigError(f"unknown network scale '{scale}'", f"use one of {', '.join(SCALES)}")
    if scale == "paper":
        vae = ShapeVaeConfig.assetgen()
        return {"dino": Dinov2Config.giant_registers(), "coarse": MeshGenConfig.coarse(),
                "refine": MeshGenConfig.refine(), "vae": vae,
                "vae_refine": vae.with_(name="assetgen_refine", num_latents=16384)}
    dino = Dinov2Config.tiny()
    coarse = replace(MeshGenConfig.tiny(), context_dim=dino.hidden_size)
    vae = ShapeVaeConfig.tiny().with_(embed_dim=coarse.latent_dim)
    return {"dino": dino, "coarse": coarse,
            "refine": replace(MeshGenConfig.tiny_refine(), context_dim=dino.hidden_size), "vae": vae,
            "vae_refine": vae.with_(name="tiny_refine", num_latents=64)}


def random_meshgen(scale: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0,
                   refine: bool = True, smooth: bool = False) -> MeshGenNetworks:
    """A bundle with seeded random weights built directly on ``device`` in ``dtype`` (benchmarks,
    tests). Each VAE's output bias is centred on the median of its field for one seeded latent, so that a
    random field has a surface to extract (``centre_field``). ``smooth``: the decoders' fields made smooth
    shells independent of the latents (``smooth_field``; paper-size latency runs, where a random field's
    noise would make a pathological mesh)."""
    from engine.models.checkpoints import init_random as normal_init
    from engine.models.dinov2 import Dinov2Model
    from engine.models.dit_layers import build_on
    from engine.models.meshgen_dit import MeshGenDiT
    from engine.models.shape_vae import ShapeVaeDecoder
    from engine.models.shape_vae import init_random as vae_init

    cfgs = meshgen_configs(scale)
    dino = build_on(device, dtype, Dinov2Model, cfgs["dino"], seed=seed, init=normal_init).eval()
    coarse = build_on(device, dtype, MeshGenDiT, cfgs["coarse"], seed=seed + 1).eval()
    vae = centre_field(build_on(device, dtype, ShapeVaeDecoder, cfgs["vae"], seed=seed + 2, init=vae_init),
                       cfgs["coarse"].n_tokens, seed, smooth=smooth)
    ref = ref_cfg = ref_vae = None
    if refine:
        ref_cfg = cfgs["refine"]
        ref = build_on(device, dtype, MeshGenDiT, ref_cfg, seed=seed + 3).eval()
        ref_vae = centre_field(build_on(device, dtype, ShapeVaeDecoder, cfgs["vae_refine"], seed=seed + 4,
                                        init=vae_init), ref_cfg.n_tokens, seed + 1, smooth=smooth)
    return MeshGenNetworks(dino, cfgs["dino"], coarse, cfgs["coarse"], vae, ref, ref_cfg, ref_vae,
                           f"random {scale} networks, seed {seed}")


SMOOTH_RADIUS = 0.65   # smooth_field: radius of the closed surface (object units; the grid spans +-1.01)
SMOOTH_SHARPNESS = 10.0  # smooth_field: gain of the radial coordinate in the query (clean, noise-free zero)
SMOOTH_LOGIT_SCALE = 12.0  # smooth_field: output gain: ~10-14 samples of the 0.95 band per crossing at 512^3


@torch.inference_mode()
@torch.no_grad()
def smooth_field(vae: nn.Module, seed: int = 0) -> nn.Module:
    """Make a random decoder's field one smooth closed surface, in place (paper-size latency runs).

    The query projection reads only s(p) = cos(w x) + cos(w y) + cos(w z) at the lowest Fourier frequency
    (w = 1 here: s ~ 3 - |p|^2 / 2, so its level sets are near-spheres): query = beta + k (s - s*) u with a
    seeded base ``beta``, u along one random direction with |u| = |beta|, k = SMOOTH_SHARPNESS and s* the
    value of s at radius SMOOTH_RADIUS. The cross-attention output (the latents' share) is zeroed, the
    output projection scaled by SMOOTH_LOGIT_SCALE and shifted so the field is 0 at radius SMOOTH_RADIUS
    on the x axis. Result (measured along lines on the paper-size decoder): one clean sign change per
    crossing (no bf16 jitter) and ~10 samples inside the hierarchical decoder's 0.95 band per crossing at
    512^3, a slightly thicker band than a trained decoder's sharp occupancy logits: a conservative
    latency input. Every layer still runs at its full size (speed does not depend on values); the
    surface no longer depends on the sampled latents, so this is for latency runs only. (A random field
    over every frequency gave marching cubes more than 2^24 faces at 512^3; the earlier shells of the
    median-centred field were open at the grid's faces and noisy in bf16.)"""
    geo = vae.geo_decoder
    f = max(vae.cfg.num_freqs, 1)
    w = geo.query_proj.weight
    cos0 = [3 + 3 * f + axis * f for axis in range(3)]                  # cos(w x), cos(w y), cos(w z)
    gen = torch.Generator(device="cpu").manual_seed(seed + 7)
    beta = torch.randn(w.shape[0], generator=gen)
    u = torch.randn(w.shape[0], generator=gen)
    u = (u / u.norm() * beta.norm()).to(w.device)
    beta = beta.to(w.device)
    w_min = float(geo.fourier_embedder.frequencies[0]) if vae.cfg.num_freqs else 1.0
    s_star = 2.0 + math.cos(w_min * SMOOTH_RADIUS)
    w.zero_()
    for c in cos0:
        w[:, c] = (SMOOTH_SHARPNESS * u).to(w.dtype)
    geo.query_proj.bias.copy_((beta - SMOOTH_SHARPNESS * s_star * u).to(w.dtype))
    attn = geo.cross_attn_decoder.attn.c_proj          # the latents' share: off, so the surface stays closed
    attn.weight.zero_()
    attn.bias.zero_()
    out = geo.output_proj
    out.weight.mul_(SMOOTH_LOGIT_SCALE)
    out.bias.mul_(SMOOTH_LOGIT_SCALE)
    return vae


@torch.no_grad()
def centre_field(vae: nn.Module, n_tokens: int, seed: int, res: int = 16, smooth: bool = False
                 ) -> nn.Module:
    """Shift ``vae``'s output bias so a random decoder has a zero level set, in place: by the median of the
    field (on a ``res``^3 lattice over [-1, 1]^3) for seeded N(0, 1) latents [1, n_tokens, E]; with
    ``smooth``, first ``smooth_field``, then by the field's value at radius SMOOTH_RADIUS on the x axis
    (the surface is the sphere-like level set through that point)."""
    from engine.models.shape_decoding import VaeField, dense_decode

    if smooth:
        smooth_field(vae, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dev = vae.post_kl.weight.device
    z = torch.randn((1, n_tokens, vae.cfg.embed_dim), generator=gen).to(dev)
    field = VaeField(vae, vae.decode_latents(z))
    if smooth:
        offset = field(torch.tensor([[SMOOTH_RADIUS, 0.0, 0.0]], device=dev)).flatten()[0]
    else:
        offset = dense_decode(field, res, 1.0).median()
    vae.geo_decoder.output_proj.bias.sub_(offset.to(vae.geo_decoder.output_proj.bias.dtype))
    return vae.eval()


def _coarse_resolution(final_res: int) -> int:
    """The hierarchy's first level: halve while the result stays >= 64 and even (512 -> 64, 192 -> 96)."""
    res = final_res
    while res % 2 == 0 and res // 2 >= 64:
        res //= 2
    return res


def decode_mesh(vae: nn.Module, latents: torch.Tensor, cfg: ShapeConfig, what: str
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """latents [1, N, E] -> (verts float32 [V, 3], faces int32 [F, 3], SDF queries) by hierarchical
    decoding on ``cfg.grid_resolution``^3 over [-cfg.bounds, cfg.bounds]^3."""
    from engine.models.shape_decoding import HierarchyConfig, VaeField, hierarchical_decode

    with substep(f"{what}: latents -> keys/values"):
        fld = VaeField(vae, vae.decode_latents(latents), topk=vae.cfg.default_topk)
    hcfg = HierarchyConfig(final_res=cfg.grid_resolution, coarse_res=_coarse_resolution(cfg.grid_resolution),
                           bound=cfg.bounds)
    with substep(f"{what}: hierarchical SDF decoding"):
        decoded = hierarchical_decode(fld, hcfg)
    with substep(f"{what}: marching cubes"):
        verts, faces = decoded.mesh()
    if faces.shape[0] == 0:
        raise MeshError(f"the {what} decoded no surface (the SDF has no sign change in the grid)",
                        "check that the weights belong to this model, or run without them (weight-free path)")
    return verts, faces, fld.num_queries


def _image_tokens(nets: MeshGenNetworks, picture: torch.Tensor, size: int) -> torch.Tensor:
    """picture uint8 [S, S, 3] on the device -> DINOv2 tokens [1, 1 + R + (size/14)^2, C] (model dtype)."""
    from engine.models.dinov2 import condition_tokens, prepare_pixels

    patch = nets.dino_cfg.patch_size
    if size % patch or size < patch:
        raise ConfigError(f"DINOv2 resolution {size} px is not a positive multiple of the {patch} px patch",
                          "use e.g. 518 (coarse) or 1022 (refine)")
    return condition_tokens(nets.dino(prepare_pixels(picture, size, nets.dtype)), nets.dino_cfg)


def _check_device(nets_device: torch.device, device: str | torch.device) -> None:
    if torch.device(device).type != nets_device.type:
        raise ConfigError(f"the shape networks live on {nets_device}, the request asked for {device}",
                          "run the request on the device the engine loaded the networks on")


@torch.inference_mode()
def meshgen_shape(nets: MeshGenNetworks, rgba: np.ndarray, cfg: ShapeConfig, device: str | torch.device,
                  seed: int = 0) -> ShapeResult:
    """One MeshGen request (module docstring). rgba uint8 [S, S, 4] square straight-alpha picture."""
    _check_device(nets.device, device)
    dev = nets.device
    picture = picture_on_white(rgba).to(dev)                                          # [S, S, 3] uint8
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mc = nets.coarse_cfg
    z_t = torch.randn((1, mc.n_tokens, mc.latent_dim), generator=gen).to(dev)        # [1, N, D] fp32
    with substep("DINOv2 (coarse)"):
        cond = _image_tokens(nets, picture, cfg.dino_resolution_coarse)               # [1, M, C]
    with substep("coarse DiT sampling"):
        latents = nets.sampler("coarse", cfg.coarse_steps)(cond, z_t)                 # [1, N, D] fp32
    verts, faces, queries = decode_mesh(nets.coarse_vae, latents, cfg, "coarse MeshGen")
    source = (f"AssetGen MeshGen ({nets.source}): coarse {mc.n_tokens} tokens, {cfg.coarse_steps} steps, "
              f"DINOv2 {cfg.dino_resolution_coarse} px")
    if not cfg.refine:
        return ShapeResult(verts, faces, source + "; refine off in the config", queries)
    if not nets.has_refine:
        return ShapeResult(verts, faces, source + "; refine requested but no refine networks are loaded "
                           f"({', '.join(REFINE_FILES.values())}): the coarse mesh is used", queries)
    verts, faces, refine_queries, note = _refine(nets, picture, verts, faces, cfg, gen, seed)
    return ShapeResult(verts, faces, f"{source}; {note}", queries + refine_queries)


def _refine(nets: MeshGenNetworks, picture: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
            cfg: ShapeConfig, gen: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """Coarse mesh -> refined mesh (module docstring, step 4)."""
    from engine.models.meshgen_dit import refine_token_positions

    dev, rc = nets.device, nets.refine_cfg
    with substep("refine anchors"):
        voxels, _ = refine_token_positions(verts, faces, n=cfg.refine_tokens, grid=REFINE_GRID,
                                           bounds=(-cfg.bounds, cfg.bounds), seed=seed)  # [N', 3] int64, CPU
    z_t = torch.randn((1, cfg.refine_tokens, rc.latent_dim), generator=gen).to(dev)  # [1, N', D] fp32
    with substep("DINOv2 (refine)"):
        cond = _image_tokens(nets, picture, cfg.dino_resolution_refine)               # [1, M', C]
    with substep("refine DiT sampling"):
        latents = nets.sampler("refine", cfg.refine_steps)(cond, z_t, voxels.to(dev))  # [1, N', D] fp32
    verts, faces, queries = decode_mesh(nets.refine_vae, latents, cfg, "refine MeshGen")
    return verts, faces, queries, (f"refine {cfg.refine_tokens} anchored tokens, {cfg.refine_steps} steps, "
                                   f"DINOv2 {cfg.dino_resolution_refine} px")


def load_hunyuan(path: str | Path, device: str | torch.device, dtype: torch.dtype) -> HunyuanNetworks:
    """A Hunyuan3D-2 / -2mini snapshot folder (``config.yaml`` + ``model.fp16.safetensors``), loaded
    strictly onto ``device`` in ``dtype``."""
    from engine.models.hunyuan3d import load_hunyuan3d_snapshot

    model = load_hunyuan3d_snapshot(path, device=device, dtype=dtype)
    return HunyuanNetworks(model, f"Hunyuan3D-2 snapshot {model.spec.name} ({path})")


@torch.inference_mode()
def hunyuan_shape(nets: HunyuanNetworks, rgba: np.ndarray, cfg: ShapeConfig, device: str | torch.device,
                  seed: int = 0) -> ShapeResult:
    """DINOv2 tokens of the picture on white -> the snapshot's flow-matching sampler (its own step count,
    schedule and conditioning size: ShapeConfig's step counts are MeshGen's) -> ShapeVAE -> hierarchical
    decoding on ``cfg.grid_resolution``^3 over ``cfg.bounds``."""
    model = nets.model
    _check_device(model.device, device)
    tokens = model.encode_image(picture_on_white(rgba).to(model.device))             # [1, L, C]
    latents = model.sample_latents(tokens, seed=seed)                                 # [1, N, 64] fp32
    verts, faces, queries = decode_mesh(model.vae, latents, cfg, "Hunyuan3D-2 model")
    return ShapeResult(verts, faces, nets.source, queries)


def run_shape(nets: MeshGenNetworks | HunyuanNetworks, rgba: np.ndarray, cfg: ShapeConfig,
              device: str | torch.device, seed: int = 0) -> ShapeResult:
    """The shape request of whichever bundle the engine holds."""
    run: Callable[..., ShapeResult] = hunyuan_shape if isinstance(nets, HunyuanNetworks) else meshgen_shape
    return run(nets, rgba, cfg, device, seed)
