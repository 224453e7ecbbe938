"""The engine's one owner of loaded networks (nano-vllm's ModelRunner role).

``ModelStore(config)`` loads every network the configuration names, once, when the engine is built, and
keeps them resident for every request: AssetGen engine checkpoints (``--weights DIR``), a Hunyuan3D-2
snapshot (``--shape-model PATH``), or networks built in memory with random weights
(``RuntimeConfig.random_networks``: benchmarks and tests). Weights go straight to the device in the run
dtype (bf16 on CUDA, float32 on CPU). ``loads`` counts every network built or read, by name: a test reads
it to prove that requests do not reload anything.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from engine.config import Device, PipelineConfig, RandomNetworks
from engine.errors import WeightsError


class ModelStore:
    """Loads the configured networks once; ``shape`` and ``texture`` are the resident bundles (or None)."""

    def __init__(self, config: PipelineConfig) -> None:
        import torch

        self.device = config.runtime.device.value
        self.dtype = torch.bfloat16 if config.runtime.device is Device.CUDA else torch.float32
        self.loads: Counter[str] = Counter()
        shape, runtime = config.shape, config.runtime
        _check_weights(shape.weights)
        live = self._live_adaln(config)          # the random TextureGen's draws, beside every build
        self.shape = self._shape(config)
        self.texture = self._texture(config, live)
        if runtime.random_networks is not None and (shape.weights or shape.shape_model):
            raise WeightsError("random networks and a weights path were both configured",
                               "drop --weights/--shape-model, or random_networks")
        self.precision: dict[str, str] = self._quantise(config)
        self.compiled: list[str] = self._compile(config) if runtime.compile_networks else []
        self.fused: list[str] = self._fuse() if runtime.fused_kernels and self.device == "cuda" else []

    def _count(self, bundle):
        if bundle is not None:
            for name in bundle.network_names():
                self.loads[name] += 1
        return bundle

    def _shape(self, config: PipelineConfig):
        shape, runtime = config.shape, config.runtime
        if runtime.random_networks is None and not shape.shape_model and not shape.weights:
            return None
        from engine.stages import shape_networks as sn

        if runtime.random_networks is not None:
            paper = runtime.random_networks is RandomNetworks.PAPER   # smooth fields: realistic mesh sizes
            return self._count(sn.random_meshgen(runtime.random_networks.value, self.device, self.dtype,
                                                 seed=runtime.seed, refine=shape.refine, smooth=paper))
        if shape.shape_model:
            return self._count(sn.load_hunyuan(shape.shape_model, self.device, self.dtype))
        if sn.has_meshgen(shape.weights):
            return self._count(sn.load_meshgen(shape.weights, self.device, self.dtype))
        return None

    def _live_adaln(self, config: PipelineConfig):
        """A random TextureGen's ``live_adaln`` draws, started now (states kept in the cache folder)."""
        runtime = config.runtime
        if runtime.random_networks is None:
            return None
        from engine.stages.texture_networks import live_adaln_draws
        from triton_kernels.jit_cache import default_cache_dir

        cache = Path(runtime.cache_dir) if runtime.cache_dir else default_cache_dir()
        return live_adaln_draws(runtime.random_networks.value, self.dtype, runtime.seed, cache)

    def _texture(self, config: PipelineConfig, live=None):
        shape, runtime, texture = config.shape, config.runtime, config.texture
        if runtime.random_networks is None and not shape.weights:
            return None
        from engine.stages import texture_networks as tn

        if runtime.random_networks is not None:
            return self._count(tn.random_texturegen(runtime.random_networks.value, self.device, self.dtype,
                                                    seed=runtime.seed, text=True,
                                                    super_resolution=texture.super_resolution, live=live))
        if tn.has_texturegen(shape.weights):
            return self._count(tn.load_texturegen(shape.weights, self.device, self.dtype))
        return None

    def _quantise(self, config: PipelineConfig) -> dict[str, str]:
        """Apply the quantisation recipes the config asks for (``Precision``); {network: what it runs in}.
        The bundles' ``source`` gains the same words, so the stage notes say which precision ran."""
        from engine.config import Precision

        prec = config.runtime.precision
        nets = self._diffusion_transformers()
        if prec is Precision.BF16 or not nets or (prec is Precision.AUTO and self.device == "cpu"):
            return {name: str(self.dtype).removeprefix("torch.") for name, _, _ in nets}
        return _apply_recipes(nets, prec, config.runtime.recipes_dir)

    def _diffusion_transformers(self) -> list[tuple[str, object, object]]:
        """(name, module, bundle) of every resident DiT (the networks the recipes and compilation touch)."""
        nets = []
        if self.shape is not None and hasattr(self.shape, "coarse"):
            nets.append(("meshgen_coarse", self.shape.coarse, self.shape))
            if self.shape.refine is not None:
                nets.append(("meshgen_refine", self.shape.refine, self.shape))
        if self.texture is not None:
            nets.append(("texturegen", self.texture.dit, self.texture))
        return nets

    def _compile(self, config: PipelineConfig) -> list[str]:
        """Regional compilation of every resident DiT, after any quantisation (``compile_blocks``), and of
        the image VAE's residual blocks (``compile_vae``)."""
        nets = self._diffusion_transformers()
        for name, module, bundle in nets:
            compile_blocks(module)
            bundle.source += f"; {name} compiled ({len(module.blocks)} blocks)"
        names = [name for name, _, _ in nets]
        if self.texture is not None and getattr(self.texture, "vae", None) is not None:
            count = compile_vae(self.texture.vae)
            self.texture.source += f"; image VAE compiled ({count} residual blocks)"
            names.append("image_vae")
        return names

    def _fuse(self) -> list[str]:
        """Every resident DiT's norms, modulation and SwiGLU through the fused Triton kernels
        (``engine.models.dit_layers.set_fused``; compiled blocks run the eager ops for Inductor)."""
        from engine.models.dit_layers import set_fused

        return [name for name, module, _ in self._diffusion_transformers() if set_fused(module, True)]

    def memory_gib(self) -> float:
        """Bytes of every resident network's parameters and buffers, GiB."""
        total = 0
        for bundle in (self.shape, self.texture):
            if bundle is not None:
                for module in bundle.modules():
                    total += sum(t.numel() * t.element_size()
                                 for t in list(module.parameters()) + list(module.buffers()))
        return total / 2**30


def compile_blocks(module, enabled: bool = True) -> None:
    """Each of ``module.blocks`` through ``torch.compile`` (Inductor, static shapes), or back to eager
    (``enabled`` False). The blocks share their code, so one compiled graph serves every block with the
    same layer formats (a recipe quantises some layers and not others: one graph per pattern, hence the
    raised recompile limit); Inductor fuses the norms, AdaLN modulation, gates, SwiGLU, rotary tables and
    the FP8 activation quantisation around the GEMMs, and attention stays the device's fused kernel
    (``engine.models.attention``). Compilation happens at the first call, inside the CUDA-graph runners'
    warm-up, and persists in the Inductor cache (``RuntimeConfig.cache_dir``)."""
    import torch._dynamo

    for block in module.blocks:
        if enabled:
            block.compile(dynamic=False)
        else:
            block._compiled_call_impl = None        # nn.Module.compile's own slot
    cfg = torch._dynamo.config
    limit = 4 * len(module.blocks) + 8
    cfg.recompile_limit = max(cfg.recompile_limit, limit)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 8 * limit)


def compile_vae(vae) -> int:
    """The image VAE's ``ResBlock``s through ``torch.compile`` (static shapes): each norm + SiLU becomes
    one pass over the feature map before its convolution (cuDNN's), the residual add joins the next norm.
    One graph per level's shape and batch; returns the number of blocks compiled."""
    from engine.models.image_vae import ResBlock

    blocks = [m for m in vae.modules() if isinstance(m, ResBlock)]
    for block in blocks:
        block.compile(dynamic=False)
    return len(blocks)


def _apply_recipes(nets: list, prec, recipes_dir: str | None) -> dict[str, str]:
    """Quantise each (name, module, bundle) whose recipe exists; AUTO only on the weights it was measured
    on. An explicit precision with no recipe for any network is an error naming the command that makes one."""
    import torch

    from engine.config import Precision
    from quant.linear import fp8_supported
    from quant.recipe import RECIPES, Recipe, apply_recipe, arch_family, recipe_name

    device = next(nets[0][1].parameters()).device
    arch = arch_family(device)
    family = prec.value if prec is not Precision.AUTO else ("fp8" if fp8_supported(device) else "int8")
    folder = Path(recipes_dir) if recipes_dir else RECIPES
    out, sources = {}, {}
    for name, module, bundle in nets:
        path = folder / f"{recipe_name(name, family, arch)}.json"
        fingerprint = sources.setdefault(id(bundle), bundle.source)
        recipe = Recipe.load(path) if path.is_file() else None
        if recipe is None or (prec is Precision.AUTO and recipe.weights != fingerprint):
            out[name] = f"bf16 (no {family} recipe {path.name} for these weights)"
            continue
        counts = apply_recipe(module, recipe)
        measured = "" if recipe.weights == fingerprint else f", measured on {recipe.weights}"
        out[name] = f"{family} recipe {path.name}: {counts} layers quantised{measured}"
        bundle.source += f"; {name} {family} ({sum(counts.values())} layers)"
    if prec is not Precision.AUTO and all(v.startswith("bf16") for v in out.values()):
        from engine.errors import ConfigError

        names = ", ".join(out)
        raise ConfigError(f"--precision {family}: no {family} recipe for {names} on {arch} in {folder}",
                          f"run python -m quant.analyse --network <{'|'.join(out)}> --precision {family}, "
                          "or use --precision bf16")
    if device.type == "cuda":
        torch.cuda.empty_cache()                    # the replaced bf16 weights
    return out


def _check_weights(folder: str | None) -> None:
    """--weights DIR must hold MeshGen's or TextureGen's files."""
    if folder is None:
        return
    from engine.stages.shape_networks import MESHGEN_FILES, has_meshgen
    from engine.stages.texture_networks import REQUIRED, has_texturegen

    if not Path(folder).is_dir():
        raise WeightsError(f"--weights folder '{folder}' does not exist", "point --weights at a folder of "
                           "engine checkpoints, or run without it (weight-free path)")
    if not has_meshgen(folder) and not has_texturegen(folder):
        names = ", ".join(sorted(set(MESHGEN_FILES.values()) | set(REQUIRED.values())))
        raise WeightsError(f"--weights folder '{folder}' holds neither MeshGen nor TextureGen checkpoints "
                           f"(looked for {names})", "point --weights at the converted engine checkpoints")
