"""Regional compilation of the DiTs (engine --compile): each block through torch.compile, attention kept as
the opaque ``assetgen::attention`` op, FP8 activation quantisation fused by Inductor. CPU (Inductor's C++
backend); the CUDA numbers are in benchmarks/results (benchmarks/models/quant.py --compile)."""

from __future__ import annotations

import pytest
import torch

from engine.config import PipelineConfig
from engine.models.attention import attention
from engine.runtime.models import ModelStore, compile_blocks
from quant.formats import Format
from quant.linear import Execution, QuantLinear
from quant.sensitivity import swap


def _sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum().clamp_min(1e-30)))


def test_attention_inside_compile_is_the_same_kernel():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 48, 16, generator=gen) for _ in range(3))
    mask = torch.randn(1, 1, 48, 48, generator=gen)

    def f(q, k, v, mask):                                     # the callers' pattern: [B, N, H*Dh] next
        return attention(q, k, v, mask).transpose(1, 2).reshape(2, 48, 64) * 2.0

    torch._dynamo.reset()
    out = torch.compile(f, dynamic=False, fullgraph=True)(q, k, v, mask)    # fullgraph: no graph break
    torch.testing.assert_close(out, f(q, k, v, mask), rtol=0, atol=1e-6)


def test_compiled_blocks_match_eager_with_fp8_layers_and_share_graphs():
    store = ModelStore(PipelineConfig.from_name("flash").with_overrides(random_networks="tiny"))
    model = store.shape.coarse
    for i in range(0, len(model.blocks), 2):                  # two layer-format patterns across the blocks
        for name in ("attn.qkv", "ffn.out"):
            lin = model.get_submodule(f"blocks.{i}.{name}")
            swap(model, f"blocks.{i}.{name}", QuantLinear(lin, Format.FP8_ROW, execution=Execution.NATIVE))
    cfg = model.cfg
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.n_tokens, cfg.latent_dim, generator=gen)
    ctx = model.precompute_context(torch.randn(1, 12, cfg.context_dim, generator=gen))
    t = torch.tensor([500.0])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.inference_mode():
        eager = model(x, t, ctx)
        compile_blocks(model)
        compiled = model(x, t, ctx)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        compile_blocks(model, enabled=False)
        again = model(x, t, ctx)
    assert graphs == 2, f"{graphs} graphs for {len(model.blocks)} blocks of two patterns"
    # FP8 codes may round differently where Inductor reorders the norm's float32 arithmetic
    assert _sqnr_db(eager, compiled) > 30.0
    torch.testing.assert_close(again, eager, rtol=0, atol=0)


def test_engine_compiles_every_resident_dit_and_says_so():
    cfg = PipelineConfig.from_name("default").with_overrides(random_networks="tiny", compile_networks=True)
    store = ModelStore(cfg)
    assert store.compiled == ["meshgen_coarse", "meshgen_refine", "texturegen", "image_vae"]
    for module in (store.shape.coarse, store.shape.refine, store.texture.dit):
        assert all(block._compiled_call_impl is not None for block in module.blocks)
    assert "meshgen_coarse compiled" in store.shape.source and "texturegen compiled" in store.texture.source
    assert "image VAE compiled" in store.texture.source
    plain = ModelStore(PipelineConfig.from_name("flash").with_overrides(random_networks="tiny"))
    assert plain.compiled == [] and plain.texture.dit.blocks[0]._compiled_call_impl is None


def test_compiled_vae_decodes_and_encodes_the_same():
    from engine.runtime.models import compile_vae

    store = ModelStore(PipelineConfig.from_name("flash").with_overrides(random_networks="tiny"))
    vae = store.texture.vae
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch._dynamo.reset()
    with torch.inference_mode():
        eager = vae.encode(images), vae.decode(vae.encode(images))
        assert compile_vae(vae) > 0
        compiled = vae.encode(images), vae.decode(vae.encode(images))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flag, expected", [(["--compile"], True), (["--no-compile"], False), ([], False)])
def test_cli_compile_flag(flag, expected):
    from engine.cli import _config, build_parser

    args = build_parser().parse_args(["generate", "x.png", "-o", "x.glb", *flag])
    assert _config(args).runtime.compile_networks is expected
