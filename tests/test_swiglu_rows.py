"""swiglu_rows (Triton, interpreted on the CPU) against swiglu_rows_ref, the eager ops it fuses."""

from __future__ import annotations

import pytest
import torch

from triton_kernels.errors import ConfigError
from triton_kernels.swiglu_rows import swiglu_rows, swiglu_rows_ref


def _gate_up(m: int, h: int, dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, 2 * h, generator=g) * 4).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,h", [(1, 16), (7, 100), (9, 512)])
def test_gated_rows_match_the_eager_ops(dtype, m, h):
    gu = _gate_up(m, h, dtype)
    out, ref = swiglu_rows(gu), swiglu_rows_ref(gu)
    assert out.dtype == dtype and out.shape == ref.shape == (m, h)
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    else:   # the same roundings as silu then mul: equal but for an exponential's last place
        assert float((out != ref).float().mean()) <= 0.01
        torch.testing.assert_close(out, ref, rtol=2 * torch.finfo(dtype).eps, atol=1e-6)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
def test_quantised_rows_match_the_eager_ops_then_quant_rows(fmt):
    gu = _gate_up(12, 384, torch.bfloat16, seed=1)
    q, s = swiglu_rows(gu, fmt)
    q_ref, s_ref = swiglu_rows_ref(gu, fmt)
    assert q.dtype == q_ref.dtype and s.shape == s_ref.shape == (12, 1)
    torch.testing.assert_close(s, s_ref, rtol=2 * torch.finfo(torch.bfloat16).eps, atol=0)
    assert float((q.float() != q_ref.float()).float().mean()) <= 0.01


def test_static_scale_and_smoothing():
    gu = _gate_up(5, 64, torch.float32, seed=2)
    smooth = torch.rand(64, generator=torch.Generator().manual_seed(3)) + 0.5
    static = torch.tensor(0.1)
    q, s = swiglu_rows(gu, "int8", smooth=smooth, static_scale=static)
    q_ref, s_ref = swiglu_rows_ref(gu, "int8", smooth=smooth, static_scale=static)
    assert float(s) == float(s_ref) == pytest.approx(0.1)
    assert float((q.float() - q_ref.float()).abs().max()) <= 1.0


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="contiguous"):
        swiglu_rows(torch.zeros(4, 15))
    with pytest.raises(ConfigError, match="unknown quantisation format"):
        swiglu_rows(torch.zeros(4, 16), "int4")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        swiglu_rows(torch.zeros(4, 16, dtype=torch.float16))
