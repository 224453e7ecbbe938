"""Where a model's weights come from: safetensors checkpoints (sharded, memory-mapped), strict loading,
the engine's converted-weights format, and seeded random weights for latency runs (no AssetGen weights
are public; speed does not depend on the values)."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.checkpoints.materialise import materialise_, skeleton
from engine.models.checkpoints.safetensors_io import (
    ENGINE_FORMAT,
    check_state_dict,
    check_strict,
    config_from_dict,
    config_to_json,
    load_engine_checkpoint,
    load_state_dict,
    load_strict,
    read_engine_metadata,
    resolve_checkpoint_files,
    save_engine_checkpoint,
)

__all__ = ["ENGINE_FORMAT", "check_state_dict", "check_strict", "config_from_dict", "config_to_json",
           "init_random", "load_engine_checkpoint", "load_state_dict", "load_strict", "materialise_",
           "read_engine_metadata", "resolve_checkpoint_files", "save_engine_checkpoint", "skeleton"]

_UNIT_NAMES = ("norm", "lambda1", "scale")


@torch.no_grad()
def init_random(module: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Overwrite every parameter with seeded values, deterministic for a seed on a given device type:
    normal(0, std) for tensors of rank >= 2 (and embeddings), ones for norm weights / layer scales
    (names containing 'norm', 'lambda1' or 'scale'), normal(0, std) for other rank-1 weights and tokens,
    zeros for biases. Runs on the parameters' own device (a CUDA generator for CUDA weights)."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in module.named_parameters():
        gen = generators.get(param.device)
        if gen is None:
            gen = generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            param.zero_()
        elif param.dim() == 1 and any(s in name.lower() for s in _UNIT_NAMES):
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=gen)
    return module
