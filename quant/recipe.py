"""Quantisation recipes: which format each linear layer of a network runs in, and how that was decided.

A recipe is a data file, one per network and GPU architecture family (``recipe_name``), written by
``python -m quant.analyse`` and read by the engine:
  {"network": "texturegen", "arch": "sm90", "weights": "<fingerprint of the weights it was measured on>",
   "made_with": {...how: inputs, budget, torch version, date, device...},
   "layers": {"blocks.3.ffn.out": {"format": "fp8_row", "sqnr_db": 27.1, "act_amax": 3.2, ...}, ...},
   "stage": {...the whole recipe's measured effect on the stage output...}}
Layers absent from ``layers`` or with format "bf16" stay in the network's precision. INT8 layers carry
their per-channel activation amax in a sidecar ``<recipe>.int8.safetensors`` (SmoothQuant factors are
derived from it and the weight when the recipe is applied).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from quant.formats import Format
from quant.linear import Execution, QuantLinear, fp8_supported

RECIPES = Path(__file__).resolve().parent / "recipes"


def arch_family(device: torch.device) -> str:
    """'sm90' (Hopper), 'sm89' (Ada), 'sm80'/'sm86' (Ampere)...; 'cpu' off CUDA."""
    if device.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def recipe_name(network: str, precision: str, arch: str) -> str:
    """File stem of a recipe, e.g. 'texturegen.fp8.sm90'."""
    return f"{network}.{precision}.{arch}"


@dataclass
class Recipe:
    network: str
    precision: str                       # "fp8" or "int8": the family of formats it may use
    arch: str
    weights: str
    made_with: dict
    layers: dict[str, dict]
    stage: dict = field(default_factory=dict)
    channel_amax: dict[str, torch.Tensor] = field(default_factory=dict)   # INT8 layers only

    def formats(self) -> dict[str, Format]:
        return {name: Format(entry["format"]) for name, entry in self.layers.items()}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fmt in self.formats().values():
            out[fmt.value] = out.get(fmt.value, 0) + 1
        return out

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {k: getattr(self, k) for k in ("network", "precision", "arch", "weights", "made_with",
                                               "layers", "stage")}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")
        tmp.replace(path)
        if self.channel_amax:
            from safetensors.torch import save_file

            save_file({k: v.float().cpu().contiguous() for k, v in self.channel_amax.items()},
                      str(path.with_suffix(".int8.safetensors")))
        return path

    @staticmethod
    def load(path: Path) -> Recipe:
        try:
            body = json.loads(Path(path).read_text())
            recipe = Recipe(**body)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"quantisation recipe '{path}' is unreadable ({err})") from None
        side = Path(path).with_suffix(".int8.safetensors")
        if side.is_file():
            from safetensors.torch import load_file

            recipe.channel_amax = load_file(str(side))
        return recipe


def apply_recipe(model: nn.Module, recipe: Recipe, execution: Execution | None = None) -> dict[str, int]:
    """Replace the recipe's quantised layers of ``model`` by ``QuantLinear`` in place; returns the count
    per format. ``execution`` None: native where the device runs the format, else emulated."""
    done: dict[str, int] = {}
    for name, fmt in recipe.formats().items():
        if fmt is Format.BF16:
            continue
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"recipe layer '{name}' is not a linear layer of this {recipe.network} network")
        dev = linear.weight.device
        ex = execution or (Execution.NATIVE if (not fmt.is_fp8 or fp8_supported(dev)) else Execution.EMULATE)
        entry = recipe.layers[name]
        swap(model, name, QuantLinear(linear, fmt, act_amax=entry.get("act_amax"),
                                      channel_amax=recipe.channel_amax.get(name), execution=ex))
        done[fmt.value] = done.get(fmt.value, 0) + 1
    return done


def swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``name`` in ``model``; returns what was there."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old
