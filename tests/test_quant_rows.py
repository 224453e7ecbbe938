"""quant_rows (Triton, interpreted on the CPU) against quant_rows_ref: exact codes and scales."""

from __future__ import annotations

import pytest
import torch

from triton_kernels.errors import ConfigError
from triton_kernels.quant_rows import quant_rows, quant_rows_ref


def _x(m: int, k: int, dtype=torch.bfloat16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.logspace(-3, 2, k)[torch.randperm(k, generator=g)]
    return x.to(dtype)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("m,k", [(1, 16), (7, 100), (33, 256), (5, 3072)])
def test_dynamic_rows_match_the_reference(fmt, m, k):
    x = _x(m, k)
    q, s = quant_rows(x, fmt)
    q_ref, s_ref = quant_rows_ref(x, fmt)
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
    assert q.dtype == q_ref.dtype and torch.equal(q.float(), q_ref.float())


def test_fp8_rounding_carries_into_the_exponent_and_keeps_subnormals():
    # 124.7 rounds up to 128 (the carry Triton's interpreter cast gets wrong); tiny values land on the
    # e4m3 subnormal grid (steps of 2^-9), ties go to even
    row = torch.tensor([[448.0, 124.7, -124.7, 0.001953125 * 1.5, 0.001953125 * 2.5, 0.01, -3e-4, 0.0]])
    q, s = quant_rows(row, "fp8")
    assert float(s) == pytest.approx(1.0)
    assert torch.equal(q.float(), quant_rows_ref(row, "fp8")[0].float())
    assert q.float()[0, 1] == 128.0


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
def test_static_scale_and_smoothing(fmt):
    x = _x(9, 64, torch.float32, seed=1)
    smooth = torch.rand(64, generator=torch.Generator().manual_seed(2)) + 0.5
    static = torch.tensor(0.05)
    q, s = quant_rows(x, fmt, smooth=smooth, static_scale=static)
    q_ref, s_ref = quant_rows_ref(x, fmt, smooth=smooth, static_scale=static)
    assert float(s) == float(s_ref) == pytest.approx(0.05)
    assert torch.equal(q.float(), q_ref.float())


def test_codes_reconstruct_the_rows():
    x = _x(16, 512, torch.float32, seed=3)
    for fmt, bound in (("fp8", 2.0 ** -4), ("int8", 0.5 / 127)):
        q, s = quant_rows(x, fmt)
        err = (q.float() * s - x).abs() / x.abs().amax(dim=1, keepdim=True)
        assert float(err.max()) <= bound


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="unknown quantisation format"):
        quant_rows(torch.zeros(2, 16), "int4")
    with pytest.raises(ConfigError, match="contiguous"):
        quant_rows(torch.zeros(4, 16).t(), "fp8")
