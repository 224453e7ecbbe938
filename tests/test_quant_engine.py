"""The engine's --precision: recipes applied once at engine build, named in the notes; clear errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.config import PipelineConfig
from engine.errors import ConfigError
from quant.analyse import main as analyse
from quant.formats import Format
from quant.linear import QuantLinear
from quant.recipe import Recipe


def _store(precision: str, recipes=None):
    from engine.runtime.models import ModelStore

    cfg = PipelineConfig.from_name("flash").with_overrides(random_networks="tiny", precision=precision)
    return ModelStore(replace(cfg, runtime=replace(cfg.runtime, recipes_dir=recipes and str(recipes))))


def test_fp8_recipe_is_applied_at_build_and_named(tmp_path):
    assert analyse(["--network", "meshgen_coarse", "--scale", "tiny", "--device", "cpu", "--steps", "5",
                    "--recipes", str(tmp_path)]) == 0
    store = _store("fp8", tmp_path)
    quantised = [m for m in store.shape.coarse.modules() if isinstance(m, QuantLinear)]
    assert store.precision["meshgen_coarse"].startswith("fp8 recipe meshgen_coarse.fp8.cpu.json")
    recipe = Recipe.load(tmp_path / "meshgen_coarse.fp8.cpu.json")
    assert len(quantised) == sum(1 for f in recipe.formats().values() if f is not Format.BF16) > 0
    assert store.precision["texturegen"].startswith("bf16 (no fp8 recipe")
    assert "meshgen_coarse fp8" in store.shape.source
    assert not any(isinstance(m, QuantLinear) for m in store.texture.dit.modules())


def test_auto_on_cpu_and_bf16_leave_the_networks_alone(tmp_path):
    for precision in ("auto", "bf16"):
        store = _store(precision, tmp_path)
        assert set(store.precision.values()) == {"float32"}
        assert not any(isinstance(m, QuantLinear) for m in store.shape.coarse.modules())


def test_explicit_precision_without_any_recipe_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="no int8 recipe .*quant.analyse"):
        _store("int8", tmp_path)
    with pytest.raises(ConfigError, match="unknown precision"):
        PipelineConfig.from_name("flash").with_overrides(precision="fp4")


@pytest.mark.parametrize("network", ["meshgen_coarse", "texturegen"])
def test_committed_recipes_match_the_engines_random_paper_weights(network):
    """``--precision auto`` applies a recipe only to the weights it was measured on (its ``weights`` field
    against the bundle's source): the committed Hopper recipes must name the engine's own random paper
    bundles (source built at tiny scale here, the scale word swapped), or auto leaves them in bf16."""
    import torch

    from engine.stages.shape_networks import random_meshgen
    from engine.stages.texture_networks import random_texturegen
    from quant.recipe import RECIPES

    if network == "texturegen":
        source = random_texturegen("tiny", "cpu", torch.float32, text=False, super_resolution=False).source
    else:
        source = random_meshgen("tiny", "cpu", torch.float32).source
    recipe = Recipe.load(RECIPES / f"{network}.fp8.sm90.json")
    assert recipe.weights == source.replace("random tiny networks", "random paper networks")
