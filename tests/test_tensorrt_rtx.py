"""TensorRT-RTX plans from the tiny ONNX exports (trt_builds/tensorrt_build.py) and the runtime interface
(trt_builds/tensorrt_runtime.py). CI has no GPU: building proves the graphs parse and compile for RTX
targets; running a plan needs an RTX GPU (compute capability 7.5-12.x) and is skipped with that reason.
"""

from __future__ import annotations

import onnx_cases as cases
import pytest
import torch

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip tensorrt-rtx) not installed")

from trt_builds.onnx_export import compare, reference  # noqa: E402
from trt_builds.tensorrt_build import build_plan, import_toolkit  # noqa: E402
from trt_builds.tensorrt_runtime import (  # noqa: E402
    TensorRTRTXEngine,
    TorchEngine,
    open_engine,
    rtx_refusal,
)

BUILDS = [(name, None) for name in cases.FLOAT_NETWORKS] + [("meshgen_coarse", "fp8_tensor"),
                                                           ("texturegen", "mixed")]


def _onnx(name: str, mode: str | None):
    return cases.exported(name) if mode is None else cases.qdq_exported(name, mode)


@pytest.mark.parametrize(("name", "mode"), BUILDS)
def test_rtx_plan_builds(name: str, mode: str | None, tmp_path) -> None:
    done = _onnx(name, mode)
    plan = build_plan(done.path, tmp_path, "trt-rtx", "sm89")
    assert plan.path.stat().st_size > 0
    parts = plan.path.name
    assert parts.startswith(f"{name}.tiny-")
    assert f".{done.precision}.{done.recipe}." in parts
    assert parts.endswith(f".trt-rtx-{trt.__version__}.sm89.plan")


def test_rtx_plan_builds_for_blackwell_and_turing(tmp_path) -> None:
    """Blackwell takes the fp32 graph; Turing (sm75) has no fp32 GEMMs in TensorRT-RTX: it refuses the fp32
    graph and builds the fp16 export."""
    from trt_builds.onnx_export import export_onnx

    exp = cases.exports()["shape_vae_query"]
    fp32 = cases.exported("shape_vae_query").path
    blackwell = build_plan(fp32, tmp_path, "trt-rtx", "sm120").path.name
    assert blackwell.endswith(f".fp32.norecipe.trt-rtx-{trt.__version__}.sm120.plan")
    with pytest.raises(RuntimeError, match="refused"):
        build_plan(fp32, tmp_path, "trt-rtx", "sm75")
    fp16 = export_onnx(exp, tmp_path, precision="fp16")
    assert ".fp16.norecipe." in build_plan(fp16.path, tmp_path, "trt-rtx", "sm75").path.name


def test_fp8_plan_is_refused_without_fp8_units(tmp_path) -> None:
    with pytest.raises(ValueError, match="no FP8 units"):
        build_plan(cases.qdq_exported("meshgen_coarse", "fp8_tensor").path, tmp_path, "trt-rtx", "sm86")


def test_tensorrt_proper_names_what_is_missing() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorrt"):
            import_toolkit("trt")
        return
    pytest.skip("tensorrt imports here: its build path needs a GPU (none in CI)")


def test_open_engine_falls_back_to_pytorch_without_an_rtx_gpu(tmp_path) -> None:
    exp = cases.exports()["shape_vae_query"]
    build_plan(cases.exported("shape_vae_query").path, tmp_path, "trt-rtx", "sm89")
    fallback = TorchEngine(exp.name, exp.module, tuple(exp.inputs), exp.outputs, "cpu")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if rtx_refusal(torch.device(device)) is None:
        pytest.skip("this machine has an RTX GPU: the fallback is not taken")
    choice = open_engine(exp.name, tmp_path, fallback, device)
    assert isinstance(choice.engine, TorchEngine), choice.reason
    assert "PyTorch fallback" in choice.reason and "TensorRT-RTX" in choice.reason
    out = choice.engine.infer(exp.inputs)
    assert list(out) == list(exp.outputs)
    assert compare(reference(exp.module, exp.inputs), list(out.values()))["rel_err"] == 0.0
    choice.engine.unload()
    with pytest.raises(RuntimeError, match="before load"):
        choice.engine.infer(exp.inputs)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["meshgen_coarse", "shape_vae_query", "texturegen"])
def test_rtx_plan_runs_like_pytorch(name: str, tmp_path) -> None:
    """Load, allocate, infer, unload on an RTX GPU: the fp32 plan against PyTorch (relative error <= 1e-2:
    TensorRT may run fp32 GEMMs as TF32)."""
    why = rtx_refusal(torch.device("cuda")) if torch.cuda.is_available() else "no CUDA device"
    if why is not None:
        pytest.skip(f"running TensorRT-RTX plans needs an RTX GPU (compute capability 7.5-12.x): {why}")
    major, minor = torch.cuda.get_device_capability()
    exp = cases.exports()[name]
    plan = build_plan(cases.exported(name).path, tmp_path, "trt-rtx", f"sm{major}{minor}")
    engine = TensorRTRTXEngine(name, plan.path, "cuda")
    engine.load()
    engine.allocate()
    out = engine.infer({k: v.cuda() for k, v in exp.inputs.items()})
    torch.cuda.synchronize()
    got = [out[n].float().cpu() for n in exp.outputs]
    assert compare(reference(exp.module, exp.inputs), got)["rel_err"] <= 1e-2
    engine.unload()
