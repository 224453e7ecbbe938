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
