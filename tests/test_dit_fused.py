"""The DiT blocks through the fused Triton kernels (``dit_layers.set_fused``: norm_modulate, swiglu_rows,
interpreted on the CPU) against the eager ops, with plain and natively quantised linears, and the
QuantInput handoff between a kernel and its QuantLinear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.models.dit_layers import DiTBlock, DiTBlockConfig, set_fused
from engine.models.texturegen_dit import TextureGenConfig, build_texturegen
from quant.formats import Format, sqnr_db
from quant.linear import Execution, QuantInput, QuantLinear
from quant.recipe import swap

FIRST_GEMMS = ("attn.qkv", "cross.q", "ffn.gate_up", "ffn.out")


def _block(modulate: tuple[str, ...], seed: int = 0) -> DiTBlock:
    cfg = DiTBlockConfig(width=64, heads=4, mlp_hidden=128, context_dim=64, modulate=modulate)
    block = DiTBlock(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    return block.eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 24, 64, generator=g), torch.randn(2, 64, generator=g),
            torch.randn(2, 7, 64, generator=g))


def _run(block: DiTBlock, fused: bool):
    x, cond, ctx = _inputs()
    set_fused(block, fused)
    with torch.no_grad():
        return block(x, cond, block.cross.context_kv(ctx))


@pytest.mark.parametrize("modulate", [("self", "ffn"), ("self", "cross")])
def test_fused_block_equals_the_eager_block(modulate):
    block = _block(modulate)
    eager, fused = _run(block, False), _run(block, True)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", [Format.FP8_ROW, Format.INT8])
def test_quantised_gemms_take_the_kernels_codes(fmt, monkeypatch):
    block = _block(("self", "ffn"))
    x, _, _ = _inputs()
    for name in FIRST_GEMMS:
        lin = block.get_submodule(name)
        swap(block, name, QuantLinear(lin, fmt, channel_amax=torch.full((lin.in_features,), 4.0),
                                      execution=Execution.NATIVE))
    handed = []
    forward = QuantLinear.forward

    def spy(self, inp):
        handed.append(isinstance(inp, QuantInput))
        return forward(self, inp)

    monkeypatch.setattr(QuantLinear, "forward", spy)
    eager = _run(block, False)
    assert handed == [False] * 4
    handed.clear()
    fused = _run(block, True)
    assert handed == [True] * 4                 # each of the four GEMMs read a kernel's codes
    # same codes but for a row sum's last place: the outputs agree far beyond the format's own noise
    assert sqnr_db(eager, fused) >= 40.0


def test_rows_the_gemm_would_pad_are_quantised_by_the_layer():
    lin = QuantLinear(nn.Linear(64, 32), Format.FP8_ROW)
    assert lin.input_spec(48) == ("fp8", None, None)
    emulated = QuantLinear(nn.Linear(64, 32), Format.FP8_ROW, execution=Execution.EMULATE)
    assert emulated.input_spec(48) is None
    x = torch.randn(3, 16, 64)
    q, s = lin.quantize_input(x.reshape(48, 64))
    torch.testing.assert_close(lin(QuantInput(q, s, (3, 16))), lin(x))


def test_tiny_texturegen_forward_fused_equals_eager():
    cfg = TextureGenConfig.tiny()
    model = build_texturegen(cfg, "cpu", torch.float32, seed=0).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in model.blocks:               # live AdaLN (adaLN-Zero starts at zero: no modulation)
            blk.ada[1].weight.copy_(torch.randn(blk.ada[1].weight.shape, generator=g) * 0.05)
    k, c = cfg.num_views, cfg.latent_channels
    req = model.prepare(torch.randn(1, k, 2 * c, 4, 4, generator=g),
                        torch.randn(1, 5, cfg.t5_dim, generator=g),
                        torch.randn(1, 2, cfg.clip_dim, generator=g))
    grid, t = torch.randn(1, cfg.num_slots, c, 4, 4, generator=g), torch.tensor([0.5])
    assert set_fused(model, True) == 2 * cfg.depth           # each block and its SwiGLU
    with torch.no_grad():
        fused = model(grid, t, req)
        set_fused(model, False)
        eager = model(grid, t, req)
    torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-4)


def test_the_engine_fuses_on_cuda_only_and_the_flag_turns_it_off():
    from engine.config import PipelineConfig
    from engine.runtime.models import ModelStore

    cfg = PipelineConfig.from_name("flash")
    assert cfg.runtime.fused_kernels
    assert not cfg.with_overrides(fused_kernels=False).runtime.fused_kernels
    store = ModelStore(cfg.with_overrides(random_networks="tiny"))
    assert store.fused == []                                  # the CPU runs the eager ops
    assert not any(getattr(m, "fused", False) for m in store.texture.dit.modules())
