"""norm_modulate (Triton, interpreted on the CPU) against norm_modulate_ref, the eager ops it fuses."""

from __future__ import annotations

import pytest
import torch

from triton_kernels.errors import ConfigError
from triton_kernels.norm_modulate import norm_modulate, norm_modulate_ref


def _inputs(items: int, rows: int, w: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(items * rows, w, generator=g) * 3 + torch.randn(items * rows, 1, generator=g)).to(dtype)
    ada = (torch.randn(items, 2 * w, generator=g) * 0.5).to(dtype)
    shift, scale = ada.chunk(2, dim=-1)                       # strided rows, as the AdaLN chunks are
    return x, shift, scale


def _ulps(a: torch.Tensor, b: torch.Tensor, x, rows, shift, scale, dtype) -> torch.Tensor:
    """|a - b| in units of the last place of ``dtype`` at the size of the modulation's operands
    (|shift| + |LayerNorm(x)| |1 + scale|): where they cancel, the result's own last place is no measure."""
    ln = torch.nn.functional.layer_norm(x.float(), (x.shape[1],)).abs()
    ln = ln.view(shift.shape[0], rows, -1)
    mag = shift.float().abs()[:, None] + ln * (1 + scale.float()).abs()[:, None]
    return (a.float() - b.float()).abs() / (mag.reshape(a.shape) * torch.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("items,rows,w", [(1, 5, 16), (2, 3, 100), (3, 4, 256)])
def test_modulated_rows_match_the_eager_ops(dtype, items, rows, w):
    x, shift, scale = _inputs(items, rows, w, dtype)
    out = norm_modulate(x, rows, shift, scale)
    ref = norm_modulate_ref(x, rows, shift, scale)
    assert out.dtype == dtype and out.shape == ref.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        return
    ulps = _ulps(out, ref, x, rows, shift, scale, dtype)
    assert float(ulps.max()) <= 4.0    # one place of the LayerNorm, scaled by 1 + scale, then the rounding
    assert float((out != ref).float().mean()) <= 0.05  # the row sums' order alone: few elements move


def test_affine_layernorm_without_modulation():
    x, _, _ = _inputs(2, 4, 64, torch.float32, seed=1)
    g = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(64, generator=g), torch.randn(64, generator=g)
    out = norm_modulate(x, 4, None, None, weight, bias)
    torch.testing.assert_close(out, norm_modulate_ref(x, 4, None, None, weight, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
def test_quantised_rows_match_the_eager_ops_then_quant_rows(fmt):
    x, shift, scale = _inputs(2, 8, 128, torch.bfloat16, seed=2)
    q, s = norm_modulate(x, 8, shift, scale, fmt=fmt)
    q_ref, s_ref = norm_modulate_ref(x, 8, shift, scale, fmt=fmt)
    assert q.dtype == q_ref.dtype and s.shape == s_ref.shape == (16, 1)
    torch.testing.assert_close(s, s_ref, rtol=2 * torch.finfo(torch.bfloat16).eps, atol=0)
    step = 2.0 ** -3 if fmt == "fp8" else 1.0 / 127        # one code step relative to the row's amax
    err = (q.float() * s - q_ref.float() * s_ref).abs() / (s_ref * (448.0 if fmt == "fp8" else 127.0))
    assert float(err.max()) <= step
    assert float((q.float() != q_ref.float()).float().mean()) <= 0.02


def test_static_scale_and_smoothing():
    x, shift, scale = _inputs(1, 6, 32, torch.float32, seed=3)
    smooth = torch.rand(32, generator=torch.Generator().manual_seed(4)) + 0.5
    static = torch.tensor(0.02)
    q, s = norm_modulate(x, 6, shift, scale, fmt="int8", smooth=smooth, static_scale=static)
    q_ref, s_ref = norm_modulate_ref(x, 6, shift, scale, fmt="int8", smooth=smooth, static_scale=static)
    assert float(s) == float(s_ref) == pytest.approx(0.02)
    assert float((q.float() - q_ref.float()).abs().max()) <= 1.0


def test_bad_input_is_named():
    x = torch.zeros(4, 16)
    with pytest.raises(ConfigError, match="contiguous"):
        norm_modulate(x.t(), 4, None, None)
    with pytest.raises(ConfigError, match="unknown quantisation format"):
        norm_modulate(x, 4, None, None, fmt="int4")
    with pytest.raises(ValueError, match="whole items"):
        norm_modulate(x, 3, None, None)
    with pytest.raises(ValueError, match="shift must be"):
        norm_modulate(x, 2, torch.zeros(3, 16), torch.zeros(3, 16))
