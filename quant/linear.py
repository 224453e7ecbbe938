"""``QuantLinear``: an ``nn.Linear`` that runs a real low-precision GEMM (quant/formats.py).

forward(x [..., K]) -> [..., N] in the layer's original dtype:
  1. the activation rows are quantised in one pass (``triton_kernels.quant_rows`` on CUDA, its reference
     elsewhere and inside ``torch.compile``, where Inductor fuses it into the op that makes the
     activation): dynamic per-row scales (FP8_ROW, INT8) or the calibrated static scale (FP8_TENSOR),
     divided by the SmoothQuant factors first (INT8);
  2. the GEMM: ``torch._scaled_mm`` (FP8, fast accumulation) or ``torch._int_mm`` then the two scales
     (INT8), plus the bias.
The bias joins the GEMM's epilogue (``_scaled_mm``'s ``bias`` where the device's kernel takes one, probed
once per device and format by ``epilogue_bias``; INT8: before the one cast), not a pass of its own. A
kernel that makes the activation may quantise it in the same pass (``input_spec`` says how;
``engine.models.dit_layers``' fused kernels): forward then takes that ``QuantInput`` instead of a tensor.
Execution is chosen once per layer (``Execution``): ``NATIVE`` runs the real low-precision kernels (an
FP8 GPU: compute capability >= 8.9; any CUDA GPU for INT8; PyTorch's CPU kernels), ``EMULATE`` runs the
same codes and scales through a float32 GEMM of the dequantised operands (a GPU without FP8 units, or a
check of the native path): both see exactly the same rounding of their inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import nn

from quant.formats import FP8_MAX, Format, quantize_weight, smoothing


class Execution(enum.Enum):
    NATIVE = "native"
    EMULATE = "emulate"


def fp8_supported(device: torch.device) -> bool:
    """True when ``torch._scaled_mm`` runs natively on ``device`` (CUDA compute capability >= 8.9, or the
    CPU kernels of PyTorch >= 2.5)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return device.type == "cpu" and hasattr(torch, "_scaled_mm")


_EPILOGUE_BIAS: dict[tuple[str, str], bool] = {}


def epilogue_bias(device: torch.device, fmt: Format) -> bool:
    """Whether ``torch._scaled_mm`` on ``device`` adds a bias in its epilogue for ``fmt``'s scales (a
    16 x 32 x 16 GEMM tried once per device and format): the kernels behind it differ by GPU generation
    and PyTorch version, and a layer whose kernel takes none adds its bias after the GEMM."""
    key = (str(device), fmt.value)
    if key not in _EPILOGUE_BIAS:
        out = torch.bfloat16 if device.type == "cuda" else torch.float32
        a = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        b = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        row = fmt is Format.FP8_ROW
        sa = torch.ones((16, 1) if row else (), device=device)
        sb = torch.ones((1, 16) if row else (), device=device)
        try:
            y = torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, bias=torch.ones(16, device=device,
                                 dtype=out), out_dtype=out, use_fast_accum=True)
            _EPILOGUE_BIAS[key] = bool((y.float() == 33.0).all())
        except (RuntimeError, NotImplementedError):
            _EPILOGUE_BIAS[key] = False
    return _EPILOGUE_BIAS[key]


@dataclass(frozen=True)
class QuantInput:
    """An activation already quantised for a ``QuantLinear`` by the kernel that made it: codes [M, K] and
    scale ([M, 1] or the static scalar) as ``quantize_input`` would return them, ``lead`` the leading
    shape (prod(lead) = M). ``shape`` is the activation's, so modules that read ``x.shape`` pass it on."""

    codes: torch.Tensor
    scale: torch.Tensor
    lead: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.lead, self.codes.shape[1])


class QuantLinear(nn.Module):
    """A quantised copy of ``linear`` (whose weight is not kept). ``act_amax``: calibrated per-tensor
    activation amax (FP8_TENSOR); ``channel_amax`` [K]: calibrated per-channel amax (INT8 smoothing)."""

    def __init__(self, linear: nn.Linear, fmt: Format, act_amax: float | None = None,
                 channel_amax: torch.Tensor | None = None, execution: Execution = Execution.NATIVE) -> None:
        super().__init__()
        if fmt is Format.BF16:
            raise ValueError("BF16 layers stay nn.Linear")
        w = linear.weight.detach()
        self.fmt, self.execution = fmt, execution
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = w.dtype
        smooth = None
        if fmt is Format.INT8:
            if channel_amax is None:
                raise ValueError("INT8 needs the calibrated per-channel activation amax (SmoothQuant)")
            smooth = smoothing(channel_amax.to(w.device), w)
        codes, scale = quantize_weight(w, fmt, smooth)
        self.register_buffer("weight_q", codes)                       # [N, K]
        self.register_buffer("weight_scale", scale)                   # [] or [1, N] fp32
        self.register_buffer("smooth", smooth)                        # [K] fp32 or None
        self.register_buffer("act_scale", None if act_amax is None else
                             torch.tensor(max(act_amax, 1e-12) / FP8_MAX, device=w.device))
        if fmt is Format.FP8_TENSOR and self.act_scale is None:
            raise ValueError("FP8_TENSOR needs the calibrated activation amax")
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.bias_in_gemm = True
        if execution is Execution.NATIVE:
            self._check_native(w.device)
            if fmt.is_fp8 and self.bias is not None:
                self.bias_in_gemm = epilogue_bias(w.device, fmt)

    def _check_native(self, device: torch.device) -> None:
        if self.fmt.is_fp8 and not fp8_supported(device):
            raise ValueError(f"FP8 GEMMs do not run natively on {device}: use Execution.EMULATE")
        if self.in_features % 16 or self.out_features % 16:
            raise ValueError(f"native low-precision GEMMs need K, N multiples of 16 (got {self.in_features}, "
                             f"{self.out_features})")

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.fmt.value}, {self.execution.value}"

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x2 [M, K] -> (codes [M, K], scale [M, 1] or [])."""
        fmt = "int8" if self.fmt is Format.INT8 else "fp8"
        static = self.act_scale if self.fmt is Format.FP8_TENSOR else None
        if x2.is_cuda and not torch.compiler.is_compiling():
            from triton_kernels.quant_rows import quant_rows

            return quant_rows(x2, fmt, self.smooth, static)
        from triton_kernels.quant_rows import quant_rows_ref

        return quant_rows_ref(x2, fmt, self.smooth, static)

    def _padded_rows(self, m: int, cuda: bool) -> int:
        """Rows the native CUDA GEMMs take: a multiple of 16, and > 16 for ``_int_mm``."""
        if self.execution is not Execution.NATIVE or not cuda:
            return m
        return max(-(-m // 16) * 16, 32 if self.fmt is Format.INT8 else 16)

    def input_spec(self, rows: int) -> tuple[str, torch.Tensor | None, torch.Tensor | None] | None:
        """How a producing kernel quantises this layer's input of ``rows`` rows in its own pass: (format,
        SmoothQuant divisor, static scale), the arguments of ``quant_rows`` after the matrix; None where
        this layer quantises it itself (emulated execution, rows the GEMM would pad)."""
        if self.execution is not Execution.NATIVE or self._padded_rows(rows, self.weight_q.is_cuda) != rows:
            return None
        return ("int8" if self.fmt is Format.INT8 else "fp8", self.smooth,
                self.act_scale if self.fmt is Format.FP8_TENSOR else None)

    def forward(self, x: torch.Tensor | QuantInput) -> torch.Tensor:
        if isinstance(x, QuantInput):
            q, s, lead, m = x.codes, x.scale, x.lead, x.codes.shape[0]
        else:
            lead = x.shape[:-1]
            x2 = x.reshape(-1, self.in_features).contiguous()                          # [M, K]
            m = x2.shape[0]
            rows = self._padded_rows(m, x2.is_cuda)
            if rows != m:
                x2 = torch.cat([x2, x2.new_zeros(rows - m, self.in_features)])
            q, s = self.quantize_input(x2)
        y = self._gemm(q, s)[:m]                                                       # [M, N]
        return y.reshape(*lead, self.out_features)

    def _gemm(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The GEMM of the codes with the bias in its epilogue: [M, N] in the output dtype."""
        out = self.out_dtype if q.is_cuda else torch.float32
        bias = self.bias
        if self.execution is Execution.EMULATE or self.fmt is Format.INT8:
            if self.execution is Execution.EMULATE:
                ws = self.weight_scale.t() if self.weight_scale.dim() else self.weight_scale  # [N, 1] or []
                acc = (q.float() * s) @ (self.weight_q.float() * ws).t()
            else:
                acc = torch._int_mm(q, self.weight_q.t()).float() * s * self.weight_scale   # [M, N]
            return (acc if bias is None else acc + bias.float()).to(out)
        if bias is not None and bias.dtype != out:
            bias = bias.to(out)
        y = torch._scaled_mm(q, self.weight_q.t(), scale_a=s, scale_b=self.weight_scale,
                             bias=bias if self.bias_in_gemm else None, out_dtype=out, use_fast_accum=True)
        return y if self.bias_in_gemm or bias is None else y + bias
