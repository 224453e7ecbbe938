"""The sensitivity analysis on a small MeshGen DiT with planted outliers (CPU, real FP8/INT8 codes).

Two layers get a function-preserving outlier channel: channel c of their input is multiplied by 1e6 (by
scaling the producing weight rows) and the layer's weight column c divided by 1e6, so the network computes
the same function while an 8-bit activation scale set by the outlier flushes every other channel to zero.
The analysis must keep exactly those two (and the protected layers) in bf16 and quantise the rest.
"""

from __future__ import annotations

import pytest
import torch

from engine.models.dit_layers import init_random
from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT
from engine.sampling.ddim_vpred import DDIMConfig
from engine.sampling.guidance import GuidanceConfig, GuidedSampler
from quant.calibrate import Calibrator
from quant.formats import Format
from quant.recipe import Recipe, apply_recipe
from quant.sensitivity import Budget, Probe, analyse, unit_of

OUTLIER = 1e6
BUDGET = 0.10  # latent relative error: a 6-block random DiT amplifies each block's FP8 noise to ~2.5 %


@torch.no_grad()
def plant(model: MeshGenDiT, channel: int = 5) -> list[str]:
    """Outlier channel in blocks.2.ffn.out (via the 'up' half of gate_up) and blocks.3.attn.out (via v)."""
    ffn = model.blocks[2].ffn
    ffn.gate_up.weight[ffn.hidden + channel] *= OUTLIER
    ffn.out.weight[:, channel] /= OUTLIER
    attn, w = model.blocks[3].attn, model.cfg.width
    attn.qkv.weight[2 * w + channel] *= OUTLIER
    attn.qkv.bias[2 * w + channel] *= OUTLIER
    attn.out.weight[:, channel] /= OUTLIER
    return ["blocks.2.ffn.out", "blocks.3.attn.out"]


def _setup(seed: int = 0):
    cfg = MeshGenConfig.tiny()
    model = init_random(MeshGenDiT(cfg), seed).eval()
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, 20, cfg.context_dim, generator=gen)
    z = torch.randn(1, cfg.n_tokens, cfg.latent_dim, generator=gen)
    sampler = GuidedSampler(model, DDIMConfig(steps=5), GuidanceConfig(), use_graph=False)
    probe = Probe(run=lambda: sampler(cond, z),
                  score=lambda ref, out: float((out - ref).norm() / ref.norm()) / BUDGET,
                  describe=lambda ref, out: {"latent_rel_err": float((out - ref).norm() / ref.norm())})
    return model, sampler, cond, z, probe


def test_planted_outliers_stay_in_bf16_and_the_rest_is_quantised():
    model, sampler, cond, z, probe = _setup()
    planted = plant(model)
    with Calibrator(model) as cal:
        sampler(cond, z)
    budget = Budget(min_rows=16)
    result = analyse(model, cal.stats, probe, (Format.FP8_ROW,), budget)
    kept = {n for n, r in result.layers.items() if r.final is Format.BF16}
    middle = {n for n in result.layers if unit_of(n) in {f"blocks.{i}" for i in range(1, 5)}
              and not n.endswith((".cross.kv", ".ada.1"))}
    assert kept & middle == set(planted)
    for n in planted:
        assert result.layers[n].sqnr["fp8_row"] < 10.0 < 25.0 < min(
            r.sqnr["fp8_row"] for m, r in result.layers.items() if m in middle and m not in planted)
    assert all(result.layers[n].final is Format.BF16 for n in result.layers
               if unit_of(n) in ("blocks.0", "blocks.5") or n in ("x_in", "x_out"))
    assert result.stage["latent_rel_err"] <= BUDGET


def test_a_recipe_round_trips_and_runs(tmp_path):
    model, sampler, cond, z, probe = _setup(seed=1)
    reference = sampler(cond, z).clone()
    with Calibrator(model) as cal:
        sampler(cond, z)
    result = analyse(model, cal.stats, probe, (Format.FP8_TENSOR, Format.INT8), Budget(min_rows=16))
    layers = {n: {"format": r.final.value, "act_amax": result.act_amax[n]} for n, r in result.layers.items()}
    amax = {n: cal.stats[n].channel_amax for n, r in result.layers.items() if r.final is Format.INT8}
    path = Recipe("meshgen_tiny", "fp8", "cpu", "random tiny seed 1", {}, layers, result.stage, amax).save(
        tmp_path / "r.json")
    done = apply_recipe(model, Recipe.load(path))
    assert sum(done.values()) == sum(1 for r in result.layers.values() if r.final is not Format.BF16) > 0
    out = GuidedSampler(model, DDIMConfig(steps=5), GuidanceConfig(), use_graph=False)(cond, z)
    assert float((out - reference).norm() / reference.norm()) <= BUDGET


def test_unreadable_recipe_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        Recipe.load(bad)
