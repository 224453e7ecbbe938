"""ONNX exports of the tiny bucket (trt_builds/onnx_export.py) against PyTorch in onnxruntime, and the Q/DQ
form of quantisation recipes (trt_builds/onnx_qdq.py): parity and placement.

Tolerances: float32 graphs relative error <= 1e-3 (max |ort - torch| / max |torch|; measured ~1e-6).
Q/DQ graphs: against ``QuantLinear`` emulation (quant.linear, Execution.EMULATE) of the same recipe:
  * FP8_TENSOR-only recipes compute the same codes and scales: relative error <= 1e-3 (measured ~3e-7);
  * mixed recipes (fp8_tensor, fp8_row, int8, bf16): FP8_ROW and INT8 use the calibrated static activation
    scale in ONNX (TensorRT Q/DQ needs constant scales) where the engine uses dynamic per-row scales, so
    the check is that the ONNX graph loses at most 3 dB of SQNR against the float network relative to
    the emulation (measured ~1 dB), and that it matches its own PyTorch mirror (``QDQLinear``) >= 60 dB.
"""

from __future__ import annotations

import copy

import onnx_cases as cases
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from quant.formats import Format  # noqa: E402
from quant.linear import Execution  # noqa: E402
from quant.recipe import apply_recipe  # noqa: E402
from trt_builds.onnx_export import compare, qdq_module, reference, run_onnxruntime  # noqa: E402
from trt_builds.onnx_qdq import qdq_placement, quantised_layers  # noqa: E402


@pytest.mark.parametrize("name", cases.FLOAT_NETWORKS)
def test_float32_export_matches_pytorch(name: str) -> None:
    exp, done = cases.exports()[name], cases.exported(name)
    model = onnx.load(str(done.path))
    assert model.opset_import[0].version >= 19
    assert [i.name for i in model.graph.input] == list(exp.inputs)
    assert [o.name for o in model.graph.output] == list(exp.outputs)
    assert done.qdq == {"QuantizeLinear": 0, "DequantizeLinear": 0}
    cmp = compare(reference(exp.module, exp.inputs), run_onnxruntime(done.path, exp.inputs))
    assert cmp["rel_err"] <= 1e-3, cmp


def _emulated(name: str, recipe) -> torch.nn.Module:
    exp = cases.exports()[name]
    module = copy.deepcopy(exp.module)
    apply_recipe(module.get_submodule(exp.prefix[:-1]), recipe, Execution.EMULATE)
    return module


@pytest.mark.parametrize("name", ["meshgen_coarse", "texturegen"])
def test_fp8_tensor_qdq_matches_quantlinear_emulation(name: str) -> None:
    exp, recipe = cases.exports()[name], cases.calibrated_recipe(name, "fp8_tensor")
    done = cases.qdq_exported(name, "fp8_tensor")
    out = run_onnxruntime(done.path, exp.inputs)
    cmp = compare(reference(_emulated(name, recipe), exp.inputs), out)
    assert cmp["rel_err"] <= 1e-3, cmp
    # and the quantisation is real: the graph differs from the float network
    assert compare(reference(exp.module, exp.inputs), out)["sqnr_db"] < 60


@pytest.mark.parametrize("name", ["meshgen_coarse", "texturegen"])
def test_mixed_recipe_qdq_against_emulation(name: str) -> None:
    exp, recipe = cases.exports()[name], cases.calibrated_recipe(name, "mixed")
    assert {Format.FP8_TENSOR, Format.FP8_ROW, Format.INT8} <= set(quantised_layers(recipe).values())
    done = cases.qdq_exported(name, "mixed")
    out = run_onnxruntime(done.path, exp.inputs)
    mirror, inputs = qdq_module(exp, recipe)
    assert compare(reference(mirror, inputs), out)["sqnr_db"] >= 60
    float_ref = reference(exp.module, exp.inputs)
    emulated = compare(float_ref, reference(_emulated(name, recipe), exp.inputs))["sqnr_db"]
    onnx_q = compare(float_ref, out)["sqnr_db"]
    assert onnx_q >= emulated - 3.0, (onnx_q, emulated)


@pytest.mark.parametrize("mode", ["fp8_tensor", "mixed"])
def test_qdq_placement_follows_the_recipe(mode: str) -> None:
    """bf16 (sensitive) layers carry no Q/DQ; each quantised layer exactly one Q->DQ pair on its activation
    input and one DQ on its 8-bit weight, of the recipe's type."""
    recipe = cases.calibrated_recipe("meshgen_coarse", mode)
    done = cases.qdq_exported("meshgen_coarse", mode)
    prefix = cases.exports()["meshgen_coarse"].prefix
    place = qdq_placement(onnx.load(str(done.path)).graph, prefix)
    quantised = quantised_layers(recipe)
    sensitive = {n for n, f in recipe.formats().items() if f is Format.BF16}
    assert sensitive and quantised
    assert set(place["owners"]) == set(quantised)
    assert all(c == {"QuantizeLinear": 1, "DequantizeLinear": 2} for c in place["owners"].values())
    assert place["counts"] == {"QuantizeLinear": len(quantised), "DequantizeLinear": 2 * len(quantised)}
    assert set(place["matmuls"]) == set(quantised)
    for layer, fmt in quantised.items():
        want = "FLOAT8E4M3FN" if fmt.is_fp8 else "INT8"
        assert place["matmuls"][layer] == {"weight_type": want, "activation_pairs": 1}, layer


def test_analysed_recipe_exports(tmp_path) -> None:
    """A recipe written by ``python -m quant.analyse`` (tiny MeshGen, 5 steps) exports with Q/DQ on exactly
    its quantised layers."""
    from quant.analyse import main as analyse
    from quant.analyse import shared_root
    from quant.recipe import Recipe
    from trt_builds.onnx_export import export_onnx

    if not (shared_root() / "images" / "typical_misc_crate.png").is_file():
        pytest.skip(f"calibration pictures not found under {shared_root()}/images")
    assert analyse(["--network", "meshgen_coarse", "--scale", "tiny", "--device", "cpu", "--steps", "5",
                    "--pictures", "1", "--recipes", str(tmp_path)]) == 0
    path = next(tmp_path.glob("meshgen_coarse.*.json"))
    recipe = Recipe.load(path)
    exp = cases.exports()["meshgen_coarse"]
    done = export_onnx(exp, tmp_path, recipe=recipe, recipe_stem=path.stem)
    assert path.stem in done.path.name
    place = qdq_placement(onnx.load(str(done.path)).graph, exp.prefix)
    assert set(place["owners"]) == set(quantised_layers(recipe))
    cmp = compare(reference(_emulated("meshgen_coarse", recipe), exp.inputs),
                  run_onnxruntime(done.path, exp.inputs))
    assert cmp["sqnr_db"] >= 20, cmp


def test_recipe_of_another_network_is_refused() -> None:
    from trt_builds.onnx_export import qdq_module

    with pytest.raises(ValueError, match="does not fit"):
        qdq_module(cases.exports()["texturegen"], cases.calibrated_recipe("meshgen_coarse", "mixed"))
