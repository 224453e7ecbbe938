"""Q/DQ form of a quantisation recipe for ONNX export: the recipe's quantised linear layers become
``QDQLinear`` modules whose export is QuantizeLinear/DequantizeLinear nodes (TensorRT's explicit
quantisation), the recipe's bf16 (sensitive) layers stay plain ``nn.Linear`` and carry none.

One quantised layer y = x W^T + b, x [..., K], W [N, K], becomes in the graph
    x --(Div smooth, INT8 only)--> QuantizeLinear(s_x) -> DequantizeLinear(s_x) --\
    W_q [K, N] (FP8 e4m3 or INT8 initializer) -> DequantizeLinear(s_w, axis=1) --> MatMul -> Add(b)
i.e. one Q->DQ pair on the activation input and one DQ on the weight input (the weight's Q was done at
export: it is stored in 8 bits). Scales (float32, zero points 0, symmetric):
  * weights exactly as ``quant.formats.quantize_weight`` makes them (the engine's ``QuantLinear``):
    FP8_TENSOR one scale; FP8_ROW and INT8 one per output channel (axis 1 of W_q [K, N]); INT8 with the
    SmoothQuant factors folded into W first;
  * activations: one static per-tensor scale from the recipe's calibration: ``act_amax`` / 448 (FP8
    formats), max_k(channel_amax_k / smooth_k) / 127 (INT8, after the smoothing Div).
FP8_TENSOR is then the same computation as ``QuantLinear`` (``Execution.EMULATE``) code for code. FP8_ROW
and INT8 run with dynamic per-row activation scales in the engine; Q/DQ graphs for TensorRT need constant
scales, so the ONNX form uses the calibrated static one (a per-tensor scale >= every row's), which is the
one deliberate difference from the PyTorch path (its size is measured in tests/test_export_onnx.py).
Formats: FP8 needs opset >= 19 (FLOAT8E4M3FN), which is the exporter's floor anyway.
"""

from __future__ import annotations

import copy

import onnx
import torch
from onnx import TensorProto
from onnxscript import opset21 as op
from torch import nn

from quant.formats import FP8_MAX, INT8_MAX, Format, quantize_weight, smoothing
from quant.recipe import Recipe, swap


@torch.library.custom_op("assetgen_qdq::quantize_dequantize", mutates_args=())
def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """x float32 [...] -> DQ(Q(x)) with a per-tensor ``scale`` [] (fmt "fp8" e4m3 saturating, "int8")."""
    y = x / scale
    if fmt == "fp8":
        return y.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    return torch.round(y).clamp(-INT8_MAX - 1, INT8_MAX) * scale


@quantize_dequantize.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("assetgen_qdq::dequantize", mutates_args=())
def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes [K, N] (fp8 or int8) -> float32 codes * scale (scale [] or [N], along axis 1)."""
    return codes.float() * scale


@dequantize.register_fake
def _(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


def _zero_point(fmt: str):
    kind = TensorProto.FLOAT8E4M3FN if fmt == "fp8" else TensorProto.INT8
    return op.Constant(value=onnx.helper.make_tensor("zero_point", kind, [], [0]))


def quantize_dequantize_onnx(x, scale, fmt: str):
    zp = _zero_point(fmt)
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp), scale, zp)


def dequantize_onnx(codes, scale):
    return op.DequantizeLinear(codes, scale, axis=1)


TRANSLATIONS = {torch.ops.assetgen_qdq.quantize_dequantize.default: quantize_dequantize_onnx,
                torch.ops.assetgen_qdq.dequantize.default: dequantize_onnx}


class QDQLinear(nn.Module):
    """An ``nn.Linear`` in the recipe format ``fmt`` (module docstring); float32 in and out. Buffers:
    weight_q [K, N] fp8/int8, weight_scale [] or [N], act_scale [], smooth [K] (INT8) or None."""

    def __init__(self, linear: nn.Linear, fmt: Format, act_amax: float | None,
                 channel_amax: torch.Tensor | None = None) -> None:
        super().__init__()
        if fmt is Format.BF16:
            raise ValueError("bf16 layers stay nn.Linear (they carry no Q/DQ)")
        w = linear.weight.detach().float()
        smooth = None
        if fmt is Format.INT8:
            if channel_amax is None:
                raise ValueError("an INT8 layer needs the recipe's per-channel activation amax (sidecar "
                                 "<recipe>.int8.safetensors)")
            smooth = smoothing(channel_amax.float().to(w.device), w)
            amax = float((channel_amax.float().to(w.device) / smooth).max())
            act_scale = max(amax, 1e-12) / INT8_MAX
        else:
            if act_amax is None:
                raise ValueError(f"a {fmt.value} layer needs the recipe's calibrated act_amax")
            act_scale = max(act_amax, 1e-12) / FP8_MAX
        codes, scale = quantize_weight(w, fmt, smooth)                       # [N, K], [] or [1, N]
        self.fmt, self.q = fmt, ("fp8" if fmt.is_fp8 else "int8")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_q", codes.t().contiguous())             # [K, N]
        self.register_buffer("weight_scale", scale.reshape(-1) if scale.dim() else scale)
        self.register_buffer("act_scale", torch.tensor(act_scale, dtype=torch.float32, device=w.device))
        self.register_buffer("smooth", smooth)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.fmt.value}, static activation scale"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / self.smooth
        xq = torch.ops.assetgen_qdq.quantize_dequantize(x, self.act_scale, self.q)  # [..., K]
        w = torch.ops.assetgen_qdq.dequantize(self.weight_q, self.weight_scale)     # [K, N]
        y = xq @ w                                                                   # [..., N]
        return y if self.bias is None else y + self.bias


def quantised_layers(recipe: Recipe) -> dict[str, Format]:
    """Layer name -> format of the recipe's layers that run in 8 bits."""
    return {n: f for n, f in recipe.formats().items() if f is not Format.BF16}


def apply_qdq(model: nn.Module, recipe: Recipe, prefix: str = "") -> nn.Module:
    """A float32 copy of ``model`` with the recipe's quantised layers as ``QDQLinear`` (``prefix``: where
    the recipe's network sits inside ``model``, e.g. "dit." for ``export_modules.MeshGenStep``)."""
    model = copy.deepcopy(model).float()
    for name, fmt in quantised_layers(recipe).items():
        linear = model.get_submodule(prefix + name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"recipe layer '{name}' is not a linear layer of this network")
        entry = recipe.layers[name]
        swap(model, prefix + name, QDQLinear(linear, fmt, entry.get("act_amax"),
                                             recipe.channel_amax.get(name)))
    return model


def qdq_placement(graph: onnx.GraphProto, prefix: str = "") -> dict[str, dict]:
    """Where the Q/DQ nodes of an exported graph are, two ways:
      "owners":  layer -> {"QuantizeLinear": n, "DequantizeLinear": n}, by the module each Q/DQ node was
                 exported from (the exporter's name scopes; ``prefix`` stripped);
      "matmuls": layer -> {"weight_type", "activation_pairs"} for every MatMul fed by a DequantizeLinear
                 of an 8-bit initializer '<prefix><layer>.weight_q': the initializer's type and the
                 number of Q->DQ pairs in a row on the MatMul's activation input;
      "counts":  Q and DQ nodes in the whole graph."""
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    owners: dict[str, dict[str, int]] = {}
    matmuls: dict[str, dict] = {}
    for node in graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
            scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
            owner = _strip(eval_scopes(scopes), prefix)
            slot = owners.setdefault(owner, {"QuantizeLinear": 0, "DequantizeLinear": 0})
            slot[node.op_type] += 1
        if node.op_type != "MatMul":
            continue
        a, b = (producers.get(i) for i in node.input)
        if b is None or b.op_type != "DequantizeLinear" or b.input[0] not in inits:
            continue
        pairs, cur = 0, a
        while cur is not None and cur.op_type == "DequantizeLinear":
            q = producers.get(cur.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                break
            pairs, cur = pairs + 1, producers.get(q.input[0])
        weight = inits[b.input[0]]
        layer = _strip(b.input[0].removesuffix(".weight_q"), prefix)
        matmuls[layer] = {"weight_type": TensorProto.DataType.Name(weight.data_type),
                          "activation_pairs": pairs}
    return {"owners": owners, "matmuls": matmuls, "counts": counts}


def eval_scopes(text: str) -> str:
    """The module path a node came from: the last but one entry of the exporter's name-scope list
    (the last is the op), e.g. "['', 'net', 'net.blocks.0', 'net.blocks.0.attn.qkv', 'matmul']"."""
    import ast

    scopes = ast.literal_eval(text) if text else []
    return scopes[-2] if len(scopes) >= 2 else ""


def _strip(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)
