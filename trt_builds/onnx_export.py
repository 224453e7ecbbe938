"""ONNX export of the engine's networks, float or with Q/DQ nodes from a quantisation recipe
(trt_builds/onnx_qdq.py), checked in onnxruntime.

  python -m trt_builds.onnx_export --out build/onnx                       # every tiny network, fp32
  python -m trt_builds.onnx_export --network meshgen_coarse --recipe quant/recipes/x.json --out build/onnx

What is exported is the export spec's (trt_builds/export_spec.py): per preset bucket, each network's
tensor-only module (trt_builds/export_modules.py: one denoising step with the per-request context as
inputs, a VAE decode, DINOv2...), its input/output names, static shapes and seeded sample inputs. The
networks are the engine's seeded random bundles at the preset's scale ("tiny": CPU tests; "flash",
"default": paper-size, random weights); the tiny DiTs get live adaLN weights
(``engine.models.texturegen_dit.live_adaln``, which the random TextureGen has already: a random adaLN-Zero
DiT would gate every block off and its export check would test nothing).

Export: ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript's translation and optimiser;
needs ``onnxscript``), opset 21 by default (>= 19: FP8 Q/DQ), static shapes (one engine bucket per file),
input and output names from the step's spec. Precisions: "fp32"; "bf16" and "fp16" cast the module and
its float inputs (for TensorRT plans; onnxruntime's CPU provider lacks most bf16 kernels, so those are
not checked here); a recipe gives "fp8" or "int8" Q/DQ graphs on a float32 base.
Check: onnxruntime (CPU provider, basic graph optimisations: Q/DQ nodes run as written; the extended
level's QDQ fusions of ORT 1.32 reject INT8 Q/DQ before a 3-D MatMul) against the PyTorch module on the
same inputs: relative error max|ort - ref| / max|ref| and SQNR in dB.
Artifact name: <network>.<input shapes>.<precision>.<recipe stem or 'norecipe'>.torch<version>-opset<N>.onnx
(ONNX files are not tied to a GPU architecture; TensorRT plans built from them add it).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from quant.formats import sqnr_db
from quant.recipe import Recipe

OPSET = 21
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RECIPE_NETWORK = {"meshgen_coarse": "meshgen_coarse", "meshgen_refine": "meshgen_refine",
                  "texturegen": "texturegen"}   # exported network -> the quant.analyse network of its recipes


@dataclass
class NetworkExport:
    """One exportable network of a bucket: ``module(*inputs.values())`` -> outputs in ``outputs`` order;
    ``inner``: the engine module inside it that recipe layer names are relative to."""

    name: str
    preset: str
    module: torch.nn.Module
    inner: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]

    @property
    def prefix(self) -> str:
        """Path of ``inner`` in ``module`` plus '.', e.g. 'dit.'."""
        return next(n for n, m in self.module.named_modules() if m is self.inner) + "."


@torch.no_grad()
def network_exports(preset: str = "tiny", names: tuple[str, ...] | None = None, seed: int = 0
                    ) -> dict[str, NetworkExport]:
    """The preset's networks (all, or ``names``) as ``NetworkExport`` with the spec's sample inputs."""
    from engine.models.texturegen_dit import live_adaln
    from trt_builds.export_spec import export_module, export_specs, preset_plan, random_bundles

    plan = preset_plan(preset)
    shape, texture = random_bundles(plan, torch.float32, seed)
    if plan.scale == "tiny":
        for dit in (shape.coarse, shape.refine, texture.dit):
            if dit is not None:
                live_adaln(dit, seed)
    specs = export_specs(plan, shape, texture)
    unknown = set(names or ()) - set(specs)
    if unknown:
        raise ValueError(f"networks {sorted(unknown)} are not in preset '{preset}': {', '.join(specs)}")
    inner = {"meshgen_coarse": shape.coarse, "meshgen_refine": shape.refine, "texturegen": texture.dit}
    out = {}
    for name in names or tuple(specs):
        spec, module = specs[name], export_module(name, plan, shape, texture)
        values = spec.sample_inputs(torch.float32, seed)
        out[name] = NetworkExport(name, preset, module, inner.get(name, module),
                                  {t.name: v for t, v in zip(spec.inputs, values, strict=True)},
                                  tuple(t.name for t in spec.outputs))
    return out


@dataclass
class Exported:
    path: Path
    network: str
    precision: str
    recipe: str
    seconds: float
    qdq: dict[str, int]


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({err.name} missing): "
                          "pip install -e '.[dev]'") from None


def artifact_name(exp: NetworkExport, precision: str, recipe: str | None, opset: int = OPSET) -> str:
    """e.g. 'meshgen_coarse.tiny-1x32x8.fp8.meshgen_coarse.fp8.cpu.torch2.13.0-opset21.onnx': network,
    preset and the shape of its first input, precision, recipe, toolchain."""
    first = "x".join(str(d) for d in next(iter(exp.inputs.values())).shape)
    torch_v = torch.__version__.split("+")[0]
    return (f"{exp.name}.{exp.preset}-{first}.{precision}.{recipe or 'norecipe'}"
            f".torch{torch_v}-opset{opset}.onnx")


def export_onnx(exp: NetworkExport, out_dir: Path, precision: str = "fp32", recipe: Recipe | None = None,
                recipe_stem: str | None = None, opset: int = OPSET) -> Exported:
    """Write ``exp`` as ONNX into ``out_dir`` (file name: ``artifact_name``). With ``recipe``: Q/DQ on
    exactly the recipe's quantised layers (float32 base; ``precision`` is then the recipe's)."""
    _require_onnx()
    import onnx

    from trt_builds.onnx_qdq import TRANSLATIONS, qdq_placement

    if opset < 19:
        raise ValueError(f"opset {opset} < 19: FP8 Q/DQ and the engine's ops need opset >= 19")
    module, inputs = qdq_module(exp, recipe) if recipe is not None else cast(exp, precision)
    if recipe is not None:
        precision = recipe.precision
        recipe_stem = recipe_stem or f"{recipe.network}.{recipe.precision}.{recipe.arch}"
    path = Path(out_dir) / artifact_name(exp, precision, recipe_stem, opset)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(module, tuple(inputs.values()), dynamo=True, opset_version=opset,
                                    input_names=list(inputs), output_names=list(exp.outputs),
                                    custom_translation_table=TRANSLATIONS if recipe is not None else None,
                                    verbose=False)
    program.save(str(path))
    seconds = time.perf_counter() - t0
    counts = qdq_placement(onnx.load(str(path), load_external_data=False).graph)["counts"]
    return Exported(path, exp.name, precision, recipe_stem or "norecipe", seconds, counts)


def cast(exp: NetworkExport, precision: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The step module and its inputs in ``precision`` (float inputs only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {sorted(PRECISIONS)} or a recipe")
    dt = PRECISIONS[precision]
    module = exp.module if dt == torch.float32 else _copy(exp.module).to(dt)
    return module, {k: v.to(dt) if v.is_floating_point() else v for k, v in exp.inputs.items()}


def qdq_module(exp: NetworkExport, recipe: Recipe) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The step module with the recipe's layers as ``QDQLinear`` (float32) and float32 inputs."""
    from trt_builds.onnx_qdq import apply_qdq

    expected = RECIPE_NETWORK.get(exp.name)
    if expected != recipe.network:
        raise ValueError(f"recipe for '{recipe.network}' does not fit network '{exp.name}'"
                         + (f" (it takes '{expected}' recipes)" if expected else " (no recipe network)"))
    return apply_qdq(exp.module, recipe, prefix=exp.prefix), {k: v.float() for k, v in exp.inputs.items()}


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


def run_onnxruntime(path: Path, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of the ONNX file at ``path`` on ``inputs`` (onnxruntime CPU, basic optimisations)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("checking exports needs onnxruntime: pip install -e '.[onnx]'") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def compare(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict[str, float]:
    """Worst relative error max|out - ref| / max|ref| and lowest SQNR (dB) over the outputs."""
    rel, sq = 0.0, math.inf
    for ref, out in zip(reference, outputs, strict=True):
        if ref.shape != out.shape:
            raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
        ref, out = ref.float(), out.float()
        rel = max(rel, float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)))
        sq = min(sq, sqnr_db(ref, out))
    return {"rel_err": rel, "sqnr_db": sq}


@torch.no_grad()
def reference(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    out = module(*inputs.values())
    return list(out) if isinstance(out, tuple) else [out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trt_builds.onnx_export", description=__doc__.split("\n")[0])
    ap.add_argument("--network", action="append", help="repeatable; default: every network of the preset")
    ap.add_argument("--preset", choices=("tiny", "flash", "default"), default="tiny",
                    help="bucket (export_spec); flash/default are paper-size random networks")
    ap.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    ap.add_argument("--recipe", type=Path, help="quantisation recipe JSON (Q/DQ export of its network)")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    args = ap.parse_args(argv)
    recipe = Recipe.load(args.recipe) if args.recipe else None
    names = tuple(args.network) if args.network else (
        tuple(k for k, v in RECIPE_NETWORK.items() if v == recipe.network) if recipe else None)
    for name, exp in network_exports(args.preset, names).items():
        done = export_onnx(exp, args.out, args.precision, recipe,
                           args.recipe.stem if args.recipe else None, args.opset)
        line = f"{done.path.name}: {done.seconds:.1f} s, {done.path.stat().st_size / 1e6:.2f} MB, {done.qdq}"
        if not args.no_check and done.precision in ("fp32", "fp8", "int8"):
            module, inputs = qdq_module(exp, recipe) if recipe else cast(exp, "fp32")
            cmp = compare(reference(module, inputs), run_onnxruntime(done.path, inputs))
            what = "its PyTorch Q/DQ mirror (QDQLinear)" if recipe else "PyTorch"
            line += f"; onnxruntime vs {what}: rel err {cmp['rel_err']:.2e}, SQNR {cmp['sqnr_db']:.1f} dB"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
