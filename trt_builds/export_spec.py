"""One place that lists every exported network: tensor names, static shapes per preset, dtypes, sample
inputs, and the tensor-only module (``trt_builds.export_modules``) each one traces.

Presets are the engine's shape buckets (static shapes: one package per network and bucket):
  "flash"    PipelineConfig.from_name("flash"): coarse MeshGen only (DINOv2 518 px, 4096 tokens, 25 DDIM
             steps), TextureGen at 768 px guidance-distilled (one branch), no super-resolution;
  "default"  PipelineConfig.from_name("default"): coarse + refine MeshGen (DINOv2 1022 px, 16384 anchored
             tokens, 5 steps), TextureGen at 1024 px with CFG (two branches), super-resolution x2;
  "tiny"     the tiny random networks of the tests (CI): every network of both presets, CFG, SR.
Paper-size networks for flash/default (``meshgen_configs("paper")``, ``texturegen_configs("paper")``).

Dtypes: "float32" boundary tensors a host makes or reads; "model" tensors that only pass between packages
(tokens, K/V, rotary tables, TextureGen base), in the package's precision; "int64" lattice indices.
Batch is 1 (one request); TextureGen rows B' = branches (2 CFG, 1 distilled); ``query_batch`` points per
shape-decoder call (a multiple of the top-k ``chunk``: a host pads the last batch by repeating its last
point, which is what ``topk_attention`` itself does, so padding never changes a value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from engine.config import PipelineConfig, ShapeConfig, TextureConfig, TextureGuidance

PRESETS = ("tiny", "flash", "default")
SHAPE_CHAIN = ("dinov2", "meshgen_coarse_context", "meshgen_coarse", "shape_vae_kv", "shape_vae_query")
TEXTURE_CHAIN = ("image_vae_encode", "texturegen_prepare", "texturegen", "image_vae_decode")
REFINE = ("dinov2_refine", "meshgen_refine_context", "meshgen_refine", "shape_vae_refine_kv",
          "shape_vae_refine_query")
CHAIN = SHAPE_CHAIN + TEXTURE_CHAIN  # what the C++ runtime runs


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32" | "model" | "int64"

    def torch_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        return {"float32": torch.float32, "model": model_dtype, "int64": torch.int64}[self.dtype]


@dataclass(frozen=True)
class ExportSpec:
    """One network in one bucket. ``sample`` maps an input name to how its sample values are drawn:
    "normal" N(0, 1), "unit" U(-1, 1), "timestep" U(0, 999), "time" U(0, 1), "lattice" U{0..127}."""

    network: str
    preset: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample: tuple[tuple[str, str], ...] = ()

    def sample_inputs(self, model_dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Seeded sample inputs (CPU) with the spec's shapes and dtypes."""
        gen = torch.Generator().manual_seed(seed)
        kinds = dict(self.sample)
        out = []
        for t in self.inputs:
            kind, dtype = kinds.get(t.name, "normal"), t.torch_dtype(model_dtype)
            if kind == "lattice":
                out.append(torch.randint(0, 128, t.shape, generator=gen, dtype=torch.int64))
                continue
            draw = torch.randn if kind == "normal" else torch.rand
            x = draw(t.shape, generator=gen)
            x = {"unit": 2 * x - 1, "timestep": 999 * x, "time": x}.get(kind, x)
            out.append(x.to(dtype))
        return tuple(out)

    def shapes(self) -> dict[str, list]:
        """Names -> [shape, dtype] of inputs and outputs (the manifest's record)."""
        return {"inputs": [[t.name, list(t.shape), t.dtype] for t in self.inputs],
                "outputs": [[t.name, list(t.shape), t.dtype] for t in self.outputs]}


@dataclass(frozen=True)
class PresetPlan:
    """The request settings a preset fixes (shapes) and the sampler settings a host needs."""

    preset: str
    scale: str  # network scale of the random bundles: "paper" | "tiny"
    shape: ShapeConfig
    texture: TextureConfig
    query_batch: int
    chunk: int
    guidance_scale: float = 3.0

    @property
    def branches(self) -> int:
        return 2 if self.texture.guidance is TextureGuidance.CFG else 1

    def scalars(self, shape_nets, texture_nets) -> dict[str, str]:
        """Key = value settings of the bucket for a host (``engine.txt``)."""
        from engine.sampling.ddim_vpred import DDIMConfig

        ddim, s, t = DDIMConfig(), self.shape, self.texture
        mc, tc = shape_nets.coarse_cfg, texture_nets.dit_cfg
        vals = dict(preset=self.preset, dino_resolution=s.dino_resolution_coarse, coarse_steps=s.coarse_steps,
                    n_tokens=mc.n_tokens, latent_dim=mc.latent_dim, dit_depth=mc.depth,
                    ddim_train_steps=ddim.train_steps, ddim_beta_start=repr(ddim.beta_start),
                    ddim_beta_end=repr(ddim.beta_end), ddim_rescale_zero_snr=int(ddim.rescale_zero_snr),
                    grid_resolution=s.grid_resolution, bounds=repr(s.bounds), query_batch=self.query_batch,
                    num_views=t.num_views, view_resolution=t.view_resolution, texture_steps=t.steps,
                    branches=self.branches, guidance_scale=repr(self.guidance_scale),
                    latent_channels=tc.latent_channels, texture_depth=tc.depth,
                    latent_downsample=texture_nets.vae.cfg.downsample)
        return {k: str(v) for k, v in vals.items()}


def preset_plan(preset: str) -> PresetPlan:
    if preset not in PRESETS:
        raise ValueError(f"unknown export preset {preset!r}; use one of {', '.join(PRESETS)}")
    if preset == "tiny":
        shape = ShapeConfig(coarse_tokens=32, coarse_steps=4, dino_resolution_coarse=28, refine_tokens=64,
                            refine_steps=2, dino_resolution_refine=56, grid_resolution=16)
        texture = TextureConfig(view_resolution=64, atlas_size=64, steps=4, guidance=TextureGuidance.CFG)
        return PresetPlan(preset, "tiny", shape, texture, query_batch=4096, chunk=4096)
    cfg = PipelineConfig.from_name(preset)
    return PresetPlan(preset, "paper", cfg.shape, cfg.texture, query_batch=131072, chunk=4096)


def _kv(prefix: str, depth: int, heads: int, tokens: int, head_dim: int, rows: int = 1) -> list[TensorSpec]:
    return [TensorSpec(f"{prefix}{kind}{i}", (rows, heads, tokens, head_dim), "model")
            for i in range(depth) for kind in ("k", "v")]


def _shape_specs(plan: PresetPlan, nets, refine: bool) -> list[ExportSpec]:
    p, s = plan.preset, plan.shape
    dino = nets.dino_cfg
    res = s.dino_resolution_refine if refine else s.dino_resolution_coarse
    m = 1 + dino.num_register_tokens + (res // dino.patch_size) ** 2
    dit_cfg = nets.refine_cfg if refine else nets.coarse_cfg
    vae_cfg = (nets.refine_vae if refine else nets.coarse_vae).cfg
    n = s.refine_tokens if refine else dit_cfg.n_tokens
    dh = dit_cfg.width // dit_cfg.heads
    stage = "refine" if refine else "coarse"
    vae = "shape_vae_refine" if refine else "shape_vae"
    ctx = _kv("", dit_cfg.depth, dit_cfg.heads, m, dh)
    if refine:
        ctx += [TensorSpec("rope_cos", (n, dh), "model"), TensorSpec("rope_sin", (n, dh), "model")]
    cond = TensorSpec("tokens", (1, m, dino.hidden_size), "model")
    pos = [TensorSpec("positions", (n, 3), "int64")] if refine else []
    lat = TensorSpec("latents", (1, n, dit_cfg.latent_dim), "float32")
    vh, vdh = vae_cfg.geo_heads, vae_cfg.geo_width // vae_cfg.geo_heads
    kv = (TensorSpec("k", (1, vh, n, vdh), "model"), TensorSpec("v", (1, vh, n, vdh), "model"))
    pts = TensorSpec("points", (1, plan.query_batch, 3), "float32")
    return [
        ExportSpec("dinov2_refine" if refine else "dinov2", p,
                   (TensorSpec("pixels", (1, 3, res, res), "float32"),), (cond,)),
        ExportSpec(f"meshgen_{stage}_context", p, (cond, *pos), tuple(ctx), (("positions", "lattice"),)),
        ExportSpec(f"meshgen_{stage}", p, (replace(lat, name="x"), TensorSpec("t", (1,), "float32"), *ctx),
                   (replace(lat, name="v"),), (("t", "timestep"),)),
        ExportSpec(f"{vae}_kv", p, (lat,), kv),
        ExportSpec(f"{vae}_query", p, (pts, *kv), (TensorSpec("field", (1, plan.query_batch), "float32"),),
                   (("points", "unit"),)),
    ]


def _texture_specs(plan: PresetPlan, nets) -> list[ExportSpec]:
    p, t, cfg = plan.preset, plan.texture, nets.dit_cfg
    r, c, k, b = t.view_resolution, cfg.latent_channels, cfg.num_views, plan.branches
    hw = r // nets.vae.cfg.downsample
    n_ctx = nets.text_context[0].shape[1] + nets.text_context[1].shape[1]
    tokens = cfg.num_slots * (hw // cfg.patch) ** 2
    kv = _kv("", cfg.depth, cfg.heads, n_ctx, cfg.width // cfg.heads, rows=b)
    base = TensorSpec("base", (b, tokens, cfg.width), "model")
    grid = (b, cfg.num_slots, c, hw, hw)
    img = TensorSpec("images", (1, 3, r, r), "float32")
    lat = TensorSpec("latents", (1, c, hw, hw), "float32")
    specs = [
        ExportSpec("image_vae_encode", p, (img,), (lat,), (("images", "unit"),)),
        ExportSpec("texturegen_prepare", p, (TensorSpec("geometry", (1, k, 2 * c, hw, hw), "float32"),),
                   (base, *kv)),
        ExportSpec("texturegen", p,
                   (TensorSpec("grid", grid, "float32"), TensorSpec("t", (b,), "float32"), base, *kv),
                   (TensorSpec("velocity", grid, "float32"),), (("t", "time"),)),
        ExportSpec("image_vae_decode", p, (lat,), (img,)),
    ]
    if t.super_resolution and nets.sr is not None:
        up = nets.sr.cfg.scale
        specs.append(ExportSpec("super_resolution", p, (TensorSpec("images", (1, 3, r, r), "float32"),),
                                (TensorSpec("upscaled", (1, 3, up * r, up * r), "float32"),),
                                (("images", "time"),)))
    return specs


def export_specs(plan: PresetPlan, shape_nets, texture_nets) -> dict[str, ExportSpec]:
    """Every network of the preset's bucket -> its spec (sizes read from the bundles' configs). A bundle
    passed as None leaves its side's networks out (a build worker that holds one side only)."""
    specs = [] if shape_nets is None else _shape_specs(plan, shape_nets, refine=False)
    if shape_nets is not None and plan.shape.refine and shape_nets.has_refine:
        specs += _shape_specs(plan, shape_nets, refine=True)
    if texture_nets is not None:
        specs += _texture_specs(plan, texture_nets)
    return {s.network: s for s in specs}


def side_of(network: str) -> str:
    """"shape" (MeshGen bundle) or "texture" (TextureGen bundle): the bundle ``network`` is built from."""
    return "shape" if network in SHAPE_CHAIN + REFINE else "texture"


def export_module(network: str, plan: PresetPlan, shape_nets, texture_nets) -> nn.Module:
    """The tensor-only module of ``network`` (``export_modules``), in eval mode."""
    from trt_builds import export_modules as em

    sn, tn = shape_nets, texture_nets
    vae_topk = lambda vae: vae.cfg.default_topk  # noqa: E731  (the engine's decode_mesh setting)
    hw = lambda: plan.texture.view_resolution // tn.vae.cfg.downsample  # noqa: E731
    makers: dict[str, Callable[[], nn.Module]] = {
        "dinov2": lambda: em.DinoTokens(sn.dino), "dinov2_refine": lambda: em.DinoTokens(sn.dino),
        "meshgen_coarse_context": lambda: em.MeshGenContextKV(sn.coarse),
        "meshgen_coarse": lambda: em.MeshGenStep(sn.coarse),
        "meshgen_refine_context": lambda: em.MeshGenContextKV(sn.refine),
        "meshgen_refine": lambda: em.MeshGenStep(sn.refine),
        "shape_vae_kv": lambda: em.ShapeLatentKV(sn.coarse_vae),
        "shape_vae_query": lambda: em.ShapeQuery(sn.coarse_vae, vae_topk(sn.coarse_vae), plan.chunk),
        "shape_vae_refine_kv": lambda: em.ShapeLatentKV(sn.refine_vae),
        "shape_vae_refine_query": lambda: em.ShapeQuery(sn.refine_vae, vae_topk(sn.refine_vae), plan.chunk),
        "image_vae_encode": lambda: em.ImageEncode(tn.vae),
        "texturegen_prepare": lambda: em.TexturePrepare(tn.dit, tn.text_context, plan.branches),
        "texturegen": lambda: em.TextureStep(tn.dit, (hw(), hw())),
        "image_vae_decode": lambda: em.ImageDecode(tn.vae),
        "super_resolution": lambda: em.Upscale(tn.sr),
    }
    if network not in makers:
        raise ValueError(f"unknown network {network!r}; exported networks: {', '.join(makers)}")
    return makers[network]().eval()


def random_bundles(plan: PresetPlan, dtype: torch.dtype, seed: int = 0, device: str = "cpu",
                   sides: tuple[str, ...] = ("shape", "texture")):
    """(MeshGenNetworks, TextureNetworks) with seeded random weights at the preset's scale; a side not in
    ``sides`` is None (each network is seeded on its own, so one side alone has the same weights)."""
    from engine.stages.shape_networks import random_meshgen
    from engine.stages.texture_networks import live_adaln_draws, random_texturegen
    from triton_kernels.jit_cache import default_cache_dir

    shape = texture = None
    live = live_adaln_draws(plan.scale, dtype, seed, default_cache_dir()) if "texture" in sides else None
    if "shape" in sides:
        shape = random_meshgen(plan.scale, device, dtype, seed=seed, refine=plan.shape.refine)
    if "texture" in sides:
        texture = random_texturegen(plan.scale, device, dtype, seed=seed,
                                    super_resolution=plan.texture.super_resolution, live=live)
    return shape, texture
