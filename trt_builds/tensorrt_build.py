"""TensorRT plans from the ONNX exports (trt_builds/onnx_export.py): TensorRT for RTX and TensorRT proper.

  python -m trt_builds.tensorrt_build --onnx build/onnx --out build/plans --arch sm89 --arch sm120

Toolkits (``TOOLKITS``; each imported where used):
  * "trt-rtx": TensorRT for RTX (``tensorrt_rtx``, pip ``tensorrt-rtx``). It builds on a machine without a
    GPU, for the compute capabilities named (``ARCHS``: Turing 7.5 to Blackwell 12.x, the GPUs of game
    PCs); its runtime refuses others (the H100, 9.0). Networks are strongly typed: the precision is the
    ONNX file's (fp32/bf16/fp16 tensors, FP8/INT8 Q/DQ), so there is no precision flag. FP8 needs sm89+:
    an FP8 Q/DQ graph for sm75/sm80/sm86 is refused before building; Turing (sm75) has no fp32 GEMMs in
    TensorRT-RTX either (the builder refuses fp32 graphs for it: export fp16).
  * "trt": TensorRT proper (``tensorrt``). Not installable here (every ``tensorrt-cu1x-libs`` on PyPI is a
    stub that downloads from elsewhere), so this path is written against its public API and untested in
    CI: strongly typed network, the build runs on (and targets) the local GPU, whose arch names the plan.
Plan name: the ONNX artifact's network, preset and shape, precision and recipe, then the toolkit and its
version and the target arch: ``meshgen_coarse.tiny-1x32x8.fp32.norecipe.trt-rtx-1.7.1.116.sm89.plan``.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path

TOOLKITS = {"trt-rtx": "tensorrt_rtx", "trt": "tensorrt"}
ARCHS = {"sm75": "SM75", "sm80": "SM80", "sm86": "SM86", "sm89": "SM89", "sm120": "SM120", "sm121": "SM121"}
FP8_ARCHS = ("sm89", "sm120", "sm121")
_ONNX_TAIL = re.compile(r"\.torch[^-]+-opset\d+\.onnx$")


@dataclass
class PlanBuild:
    path: Path
    seconds: float
    toolkit: str
    arch: str

    @property
    def megabytes(self) -> float:
        return self.path.stat().st_size / 1e6


def import_toolkit(toolkit: str):
    """The Python module of ``toolkit``; ImportError naming what to install."""
    if toolkit not in TOOLKITS:
        raise ValueError(f"unknown TensorRT toolkit '{toolkit}'; choose one of {sorted(TOOLKITS)}")
    import importlib

    try:
        return importlib.import_module(TOOLKITS[toolkit])
    except ImportError:
        hint = ("pip install -e '.[trt]' (tensorrt-rtx)" if toolkit == "trt-rtx" else
                "NVIDIA's tensorrt wheel with its libraries (not installable from PyPI here)")
        raise ImportError(f"the '{toolkit}' toolkit needs the {TOOLKITS[toolkit]} module: {hint}") from None


def plan_name(onnx_path: Path, toolkit: str, version: str, arch: str) -> str:
    stem = _ONNX_TAIL.sub("", Path(onnx_path).name)
    if stem == Path(onnx_path).name:
        stem = Path(onnx_path).stem
    return f"{stem}.{toolkit}-{version}.{arch}.plan"


def has_fp8(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    fp8 = onnx.TensorProto.FLOAT8E4M3FN
    consts = [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    return any(t.data_type == fp8 for t in [*model.graph.initializer, *consts])


def _parse(trt, onnx_path: Path, strongly_typed: bool):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return builder, network, parser


def build_plan(onnx_path: Path, out_dir: Path, toolkit: str = "trt-rtx", arch: str = "sm89",
               workspace_mib: int = 1024) -> PlanBuild:
    """Build and write one plan; raises with the builder's reason when it refuses."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    trt = import_toolkit(toolkit)
    if toolkit == "trt-rtx":
        if arch not in ARCHS:
            raise ValueError(f"TensorRT-RTX targets {sorted(ARCHS)}, not '{arch}'")
        if arch not in FP8_ARCHS and has_fp8(onnx_path):
            raise ValueError(f"{onnx_path.name} has FP8 Q/DQ: {arch} has no FP8 units "
                             f"(use one of {FP8_ARCHS})")
    else:
        arch = local_arch()
    t0 = time.perf_counter()
    builder, network, _parser = _parse(trt, onnx_path, strongly_typed=toolkit == "trt")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if toolkit == "trt-rtx":
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, ARCHS[arch]), 0)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{toolkit} refused to build {onnx_path.name} for {arch} (see the log above)")
    path = out_dir / plan_name(onnx_path, toolkit, trt.__version__, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(plan))
    return PlanBuild(path, time.perf_counter() - t0, toolkit, arch)


def local_arch() -> str:
    """'sm90' etc. of CUDA device 0 (TensorRT proper builds for the GPU it runs on)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT proper builds on the GPU it targets: no CUDA device here "
                           "(TensorRT-RTX, --toolkit trt-rtx, builds without one)")
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm{major}{minor}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trt_builds.tensorrt_build",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", type=Path, required=True, help="an ONNX file or a folder of them")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--toolkit", choices=tuple(TOOLKITS), default="trt-rtx")
    ap.add_argument("--arch", action="append", choices=tuple(ARCHS),
                    help="TensorRT-RTX target (repeatable; default sm89); TensorRT proper: the local GPU")
    args = ap.parse_args(argv)
    files = sorted(args.onnx.glob("*.onnx")) if args.onnx.is_dir() else [args.onnx]
    archs = (args.arch or ["sm89"]) if args.toolkit == "trt-rtx" else ["local"]
    failed = 0
    for f in files:
        for arch in archs:
            try:
                done = build_plan(f, args.out, args.toolkit, arch)
                print(f"{done.path.name}: {done.seconds:.1f} s, {done.megabytes:.2f} MB", flush=True)
            except (RuntimeError, ValueError) as err:
                failed += 1
                print(f"{f.name} [{arch}]: {err}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
