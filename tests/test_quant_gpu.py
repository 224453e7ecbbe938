"""quant on the GPU: the row-quantisation kernel against its reference, native FP8/INT8 GEMMs against
the emulation path and bf16, and a CUDA-graph capture of a quantised layer (marker ``gpu``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quant.formats import Format, sqnr_db
from quant.linear import Execution, QuantLinear
from triton_kernels.quant_rows import quant_rows, quant_rows_ref

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("m,k", [(1, 16), (333, 3072), (64, 12288)])
def test_quant_rows_cuda_matches_reference(fmt, m, k):
    x = (torch.randn(m, k, device="cuda") * torch.logspace(-2, 2, k, device="cuda")).to(torch.bfloat16)
    q, s = quant_rows(x, fmt)
    q_ref, s_ref = quant_rows_ref(x, fmt)
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
    assert torch.equal(q.float(), q_ref.float())


@pytest.mark.parametrize("fmt", [Format.FP8_TENSOR, Format.FP8_ROW, Format.INT8])
def test_native_gemm_matches_emulation_and_bf16(fmt):
    torch.manual_seed(0)
    lin = nn.Linear(1024, 768, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(2, 333, 1024, device="cuda", dtype=torch.bfloat16)
    kw = dict(act_amax=float(x.abs().max()), channel_amax=x.abs().amax(dim=(0, 1)).float())
    native = QuantLinear(lin, fmt, execution=Execution.NATIVE, **kw)(x)
    emulated = QuantLinear(lin, fmt, execution=Execution.EMULATE, **kw)(x)
    assert native.shape == (2, 333, 768) and native.dtype == torch.bfloat16
    assert sqnr_db(emulated, native) >= 40.0           # same codes; accumulation order and bf16 output
    assert sqnr_db(lin(x), native) >= 25.0


def test_quantised_layer_replays_in_a_cuda_graph():
    from engine.runtime.cuda_graph import CudaGraphStep

    lin = nn.Linear(512, 512, device="cuda", dtype=torch.bfloat16)
    ql = QuantLinear(lin, Format.FP8_ROW)
    x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
    step = CudaGraphStep(lambda a: ql(a), [x], n_dynamic=1)
    assert step.mode == "graph", step.reason
    y = torch.randn_like(x)
    torch.testing.assert_close(step(y).clone(), ql(y), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", [Format.FP8_ROW, Format.FP8_TENSOR])
def test_bias_joins_the_fp8_epilogue_or_is_added_after(fmt):
    from quant.linear import epilogue_bias

    lin = nn.Linear(256, 128, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    ql = QuantLinear(lin, fmt, act_amax=float(x.abs().max()))
    assert ql.bias_in_gemm == epilogue_bias(torch.device("cuda", torch.cuda.current_device()), fmt)
    print(f"{fmt.value}: bias in the _scaled_mm epilogue: {ql.bias_in_gemm}")
    q, s = ql.quantize_input(x)
    no_bias = torch._scaled_mm(q, ql.weight_q.t(), scale_a=s, scale_b=ql.weight_scale,
                               out_dtype=torch.bfloat16, use_fast_accum=True)
    torch.testing.assert_close(ql(x), no_bias + ql.bias, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("fmt", [None, "fp8"])
def test_fused_kernels_at_texturegen_sizes_match_the_eager_ops(fmt):
    from triton_kernels.norm_modulate import norm_modulate, norm_modulate_ref
    from triton_kernels.swiglu_rows import swiglu_rows, swiglu_rows_ref

    torch.manual_seed(0)
    x = torch.randn(2 * 2304, 3072, device="cuda", dtype=torch.bfloat16) * 3
    shift, scale = (torch.randn(2, 2 * 3072, device="cuda", dtype=torch.bfloat16) * 0.3).chunk(2, dim=-1)
    gu = torch.randn(2 * 2304, 2 * 12288, device="cuda", dtype=torch.bfloat16) * 3
    for out, ref in ((norm_modulate(x, 2304, shift, scale, fmt=fmt), norm_modulate_ref(x, 2304, shift, scale,
                                                                                          fmt=fmt)),
                     (swiglu_rows(gu, fmt), swiglu_rows_ref(gu, fmt))):
        if fmt is None:
            assert float((out != ref).float().mean()) <= 0.01
            assert sqnr_db(ref, out) >= 50.0
        else:
            torch.testing.assert_close(out[1], ref[1], rtol=1e-2, atol=0)
            assert float((out[0].float() != ref[0].float()).float().mean()) <= 0.01


def test_paper_width_block_fused_equals_eager_in_fp8():
    from engine.models.dit_layers import DiTBlock, DiTBlockConfig, init_random, set_fused
    from quant.recipe import swap

    torch.manual_seed(0)
    cfg = DiTBlockConfig(width=3072, heads=24, mlp_hidden=12288, context_dim=3072, modulate=("self", "ffn"))
    block = init_random(DiTBlock(cfg).to("cuda", torch.bfloat16), 0)
    with torch.no_grad():
        block.ada[1].weight.normal_(0, 0.02)
        for name in ("attn.qkv", "attn.out", "cross.q", "cross.out", "ffn.gate_up", "ffn.out"):
            swap(block, name, QuantLinear(block.get_submodule(name), Format.FP8_ROW))
        x = torch.randn(1, 4096, 3072, device="cuda", dtype=torch.bfloat16)
        cond = torch.randn(1, 3072, device="cuda", dtype=torch.bfloat16)
        kv = block.cross.context_kv(torch.randn(1, 77, 3072, device="cuda", dtype=torch.bfloat16))
        times, outs = {}, {}
        for fused in (False, True):
            set_fused(block, fused)
            outs[fused] = block(x, cond, kv)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                block(x, cond, kv)
            end.record()
            torch.cuda.synchronize()
            times[fused] = start.elapsed_time(end) / 10
    assert sqnr_db(outs[False], outs[True]) >= 35.0
    print(f"paper-width FP8 block, 4096 tokens: eager {times[False]:.3f} ms, fused {times[True]:.3f} ms")
