"""Number formats of the quantised GEMMs and the weight side of each (the activation side is the kernel
``triton_kernels.quant_rows``).

``Format`` names what one linear layer runs in:
  * ``BF16``       the network's own precision (kept for sensitive or too-small layers);
  * ``FP8_TENSOR`` FP8 e4m3, one static activation scale (calibrated amax / 448) and one weight scale:
                   ``torch._scaled_mm`` tensorwise (cuBLASLt, fast accumulation);
  * ``FP8_ROW``    FP8 e4m3, one dynamic scale per activation row (token) and one per weight row
                   (output channel): ``torch._scaled_mm`` rowwise;
  * ``INT8``       INT8 with SmoothQuant (Xiao et al. 2023): per-channel smoothing s_k =
                   amax_x(k)^a / amax_w(k)^(1-a) folded into the weight, dynamic per-row activation scales,
                   per-output-channel weight scales: ``torch._int_mm`` (older and consumer GPUs).
Weights are quantised once, when a recipe is applied; ``sqnr_db`` is the accuracy measure everywhere
(signal-to-quantisation-noise ratio of a result against its high-precision reference, torchao's habit).
"""

from __future__ import annotations

import enum
import math

import torch

FP8_MAX = 448.0
INT8_MAX = 127.0
SMOOTH_ALPHA = 0.5  # SmoothQuant migration strength (the paper's default for most models)


class Format(enum.Enum):
    BF16 = "bf16"
    FP8_TENSOR = "fp8_tensor"
    FP8_ROW = "fp8_row"
    INT8 = "int8"

    @property
    def is_fp8(self) -> bool:
        return self in (Format.FP8_TENSOR, Format.FP8_ROW)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """10 log10(|ref|^2 / |ref - approx|^2) in dB (fp32); inf when they are equal."""
    ref, err = reference.float(), reference.float() - approx.float()
    noise = float(err.pow(2).sum())
    signal = float(ref.pow(2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def quantize_weight(weight: torch.Tensor, fmt: Format, smooth: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (codes [N, K], scale): FP8_TENSOR scale [] fp32; FP8_ROW / INT8 scale [1, N]
    fp32 (per output channel, the layout ``torch._scaled_mm`` wants for its B operand). ``smooth`` [K]
    multiplies the weight's input channels first (SmoothQuant)."""
    w = weight.float()
    if smooth is not None:
        w = w * smooth.float()[None, :]
    if fmt is Format.FP8_TENSOR:
        scale = w.abs().amax().clamp_min(1e-12) / FP8_MAX
        return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)                         # [N, 1]
    if fmt is Format.FP8_ROW:
        scale = amax / FP8_MAX
        return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale.t().contiguous()
    if fmt is Format.INT8:
        scale = amax / INT8_MAX
        return torch.round(w / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale.t().contiguous()
    raise ValueError(f"{fmt} has no quantised weight")


def smoothing(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors [K] (fp32) from the calibrated activation amax [K] and the
    weight [N, K]: s_k = amax_x(k)^alpha / amax_w(k)^(1 - alpha), clamped to [1e-5, 1e5]."""
    w_amax = weight.float().abs().amax(dim=0).clamp_min(1e-8)
    s = act_amax.float().clamp_min(1e-8).pow(alpha) / w_amax.pow(1.0 - alpha)
    return s.clamp(1e-5, 1e5)
