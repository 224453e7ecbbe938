"""QuantLinear on the CPU: each quantised op against its float reference (SQNR, dB) and the native path
(PyTorch's CPU ``_scaled_mm`` / ``_int_mm``) against the emulation path (same codes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quant.formats import Format, quantize_weight, smoothing, sqnr_db
from quant.linear import Execution, QuantLinear

# e4m3 keeps 3 mantissa bits: ~29 dB per operand on Gaussian data, ~26 dB after the GEMM; INT8 per row
# ~40 dB. The floors leave a margin for the seeds below.
FLOOR_DB = {Format.FP8_TENSOR: 24.0, Format.FP8_ROW: 24.0, Format.INT8: 35.0}


def _case(seed: int = 0, k: int = 256, n: int = 96):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / k ** 0.5)
        lin.bias.copy_(torch.randn(n, generator=g))
    x = torch.randn(4, 50, k, generator=g)
    return lin, x, dict(act_amax=float(x.abs().max()), channel_amax=x.abs().amax(dim=(0, 1)))


@pytest.mark.parametrize("fmt", [Format.FP8_TENSOR, Format.FP8_ROW, Format.INT8])
def test_each_format_reaches_its_sqnr_floor_and_native_equals_emulation(fmt):
    lin, x, kw = _case()
    with torch.no_grad():
        ref = lin(x)
        native = QuantLinear(lin, fmt, execution=Execution.NATIVE, **kw)(x)
        emulated = QuantLinear(lin, fmt, execution=Execution.EMULATE, **kw)(x)
    assert native.shape == ref.shape
    assert sqnr_db(ref, native) >= FLOOR_DB[fmt]
    assert sqnr_db(emulated, native) >= 60.0


def test_smoothquant_rescues_an_outlier_channel_that_breaks_plain_int8():
    lin, x, kw = _case(seed=1)
    with torch.no_grad():
        x[..., 7] *= 1000.0                                # one activation channel 1000x the others
        lin.weight[:, 7] /= 1000.0                         # the same function
        kw["channel_amax"] = x.abs().amax(dim=(0, 1))
        ref = lin(x)
        smooth = QuantLinear(lin, Format.INT8, **kw)(x)
        w, s = quantize_weight(lin.weight, Format.INT8)      # INT8 without smoothing, for comparison
        xs = x.reshape(-1, x.shape[-1])
        sx = xs.abs().amax(1, keepdim=True) / 127
        plain = (torch.round(xs / sx) * sx) @ (w.float() * s.t()).t() + lin.bias
    assert sqnr_db(ref.reshape(-1, ref.shape[-1]), plain) < 20.0 < 30.0 < sqnr_db(ref, smooth)
    assert smoothing(kw["channel_amax"], lin.weight)[7] > 10 * smoothing(kw["channel_amax"], lin.weight)[0]


def test_missing_calibration_is_named():
    lin, _, _ = _case()
    with pytest.raises(ValueError, match="calibrated activation amax"):
        QuantLinear(lin, Format.FP8_TENSOR)
    with pytest.raises(ValueError, match="SmoothQuant"):
        QuantLinear(lin, Format.INT8)
