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
        self.shape = self._shape(config)
        self.texture = self._texture(config)
        if runtime.random_networks is not None and (shape.weights or shape.shape_model):
            raise WeightsError("random networks and a weights path were both configured",
                               "drop --weights/--shape-model, or random_networks")

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

    def _texture(self, config: PipelineConfig):
        shape, runtime, texture = config.shape, config.runtime, config.texture
        if runtime.random_networks is None and not shape.weights:
            return None
        from engine.stages import texture_networks as tn

        if runtime.random_networks is not None:
            return self._count(tn.random_texturegen(runtime.random_networks.value, self.device, self.dtype,
                                                    seed=runtime.seed, text=True,
                                                    super_resolution=texture.super_resolution))
        if tn.has_texturegen(shape.weights):
            return self._count(tn.load_texturegen(shape.weights, self.device, self.dtype))
        return None

    def memory_gib(self) -> float:
        """Bytes of every resident network's parameters and buffers, GiB."""
        total = 0
        for bundle in (self.shape, self.texture):
            if bundle is not None:
                for module in bundle.modules():
                    total += sum(t.numel() * t.element_size()
                                 for t in list(module.parameters()) + list(module.buffers()))
        return total / 2**30


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
