"""AOTInductor packages (``.pt2``) of the engine's networks, one per network and shape bucket.

    python -m trt_builds.aoti --preset tiny --out DIR [--precision fp32|bf16] [--networks a,b] [--jobs 2]

Each network of ``trt_builds.export_spec`` is traced with ``torch.export`` (its tensor-only module from
``export_modules``, static shapes of the preset) and compiled by ``torch._inductor.aoti_compile_and_package``
for the device the bundle lives on (CPU here; CUDA on a GPU machine). Artifact names encode everything
that makes a package unique:
    <network>.<preset>.<precision>.<recipe>.torch<version>.<arch>.pt2
    e.g. meshgen_coarse.tiny.fp32.norecipe.torch2.13.0.cpu.pt2,
         texturegen.default.bf16.norecipe.torch2.13.0.sm90.pt2
Beside them, ``assetgen.<preset>.<precision>.<recipe>.manifest`` (plain "key value" lines a C++ host reads:
the bucket's sampler settings from ``PresetPlan.scalars`` and one "package <network> <file>" line each)
and a ``.json`` twin with every package's tensor names and shapes and its build times.

Precision: "fp32" (the parity oracle: packages match eager within 1e-3 relative) and "bf16" (what ships on
a GPU). Recipe: "norecipe", or a quantisation family ("fp8") whose per-network recipe files
``quant/recipes/<network>.<family>.<arch>.json`` (``quant.analyse``) are applied to the bundle before
export, exactly as the engine's ``--precision fp8`` does (``QuantLinear`` layers, ``torch._scaled_mm``).
A network whose module holds a quantised layer carries the family in its name; the rest stay "norecipe".
With a family but no recipe file for any requested network the build fails naming the command that makes
one, instead of building unquantised packages under a quantised name.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from trt_builds.export_spec import (
    CHAIN,
    PRESETS,
    ExportSpec,
    export_module,
    export_specs,
    preset_plan,
    side_of,
)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
NO_RECIPE = "norecipe"
RECIPE_NETWORKS = ("meshgen_coarse", "meshgen_refine", "texturegen")  # the networks quant.analyse measures


def torch_tag() -> str:
    return "torch" + torch.__version__.split("+")[0]


def arch_tag(device: torch.device | str) -> str:
    """'cpu', or the CUDA compute capability as 'sm90'."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def artifact_name(network: str, preset: str, precision: str, arch: str, recipe: str = NO_RECIPE) -> str:
    return f"{network}.{preset}.{precision}.{recipe}.{torch_tag()}.{arch}.pt2"


def manifest_stem(preset: str, precision: str, recipe: str = NO_RECIPE) -> str:
    return f"assetgen.{preset}.{precision}.{recipe}"


@dataclass(frozen=True)
class BuildResult:
    network: str
    file: str
    export_s: float
    compile_s: float


# where a package keeps its weights: "so" inside the compiled library (appended to it and memory-mapped
# when over 2 GB), "blob" a separate weights file beside the library in the package (memory-mapped by the
# AOTInductor runtime, C++ loader included)
WEIGHT_LAYOUTS = {
    "so": {},
    "blob": {"aot_inductor.package_constants_in_so": False,
             "aot_inductor.package_constants_on_disk_format": "binary_blob"},
}


def export_sdpa_backends():
    """The attention kernels a CUDA package may call (Inductor picks one when it lowers each attention):
    FlashAttention-2, memory-efficient, math. cuDNN's is left out on a suspicion not yet confirmed: the
    first paper-size CUDA packages failed to load or run (export-1 segfaulted, 2026-12-07) and cuDNN
    attention, first in the engine's order, is the op least exercised by packaged wrappers;
    tests/test_export_aoti.py's GPU test of each backend (suite ``export-diag``) settles it."""
    from torch.nn.attention import SDPBackend

    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def build_package(module: torch.nn.Module, spec: ExportSpec, model_dtype: torch.dtype, path: Path,
                  wrapper_opt: str = "O1", layout: str = "so") -> BuildResult:
    """Trace ``module`` on the spec's sample inputs and compile it into ``path`` (.pt2). The package's
    metadata names its network and its input / output tensors (``AOTIModelPackageLoader::get_metadata``).
    ``layout``: where the weights go (``WEIGHT_LAYOUTS``)."""
    from torch._inductor import aoti_compile_and_package
    from torch.nn.attention import sdpa_kernel

    device = next(module.parameters()).device
    inputs = tuple(x.to(device) for x in spec.sample_inputs(model_dtype))
    t0 = time.perf_counter()
    with torch.no_grad(), sdpa_kernel(export_sdpa_backends()):
        program = torch.export.export(module, inputs, strict=False)
    t1 = time.perf_counter()
    metadata = {"assetgen.network": spec.network, "assetgen.preset": spec.preset,
                "assetgen.inputs": ",".join(t.name for t in spec.inputs),
                "assetgen.outputs": ",".join(t.name for t in spec.outputs)}
    configs = {"aot_inductor.metadata": metadata, "aot_inductor.compile_wrapper_opt_level": wrapper_opt,
               **WEIGHT_LAYOUTS[layout]}
    with sdpa_kernel(export_sdpa_backends()):
        aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    return BuildResult(spec.network, path.name, t1 - t0, time.perf_counter() - t1)


def load_bundles(preset: str, precision: str, seed: int = 0, weights: str | None = None, device: str = "cpu",
                 sides: tuple[str, ...] = ("shape", "texture")):
    """(plan, (shape bundle, texture bundle)) of a bucket; a side not in ``sides`` is None."""
    from engine.stages.shape_networks import load_meshgen
    from engine.stages.texture_networks import load_texturegen
    from trt_builds.export_spec import random_bundles

    plan, dtype = preset_plan(preset), PRECISIONS[precision]
    if weights is None:
        return plan, random_bundles(plan, dtype, seed=seed, device=device, sides=sides)
    return plan, (load_meshgen(weights, device, dtype) if "shape" in sides else None,
                  load_texturegen(weights, device, dtype) if "texture" in sides else None)


def recipe_path(network: str, family: str, arch: str, folder: Path | None = None) -> Path:
    """``quant/recipes/<network>.<family>.<arch>.json`` (or in ``folder``)."""
    from quant.recipe import RECIPES, recipe_name

    return (folder or RECIPES) / f"{recipe_name(network, family, arch)}.json"


def quantise_bundles(shape_nets, texture_nets, family: str, arch: str,
                     networks: tuple[str, ...] = RECIPE_NETWORKS, folder: Path | None = None
                     ) -> dict[str, str]:
    """Apply ``<network>.<family>.<arch>.json`` to each of ``networks`` (of ``RECIPE_NETWORKS``) that has
    one, in place (every network built from that module then runs it quantised, as in the engine);
    returns network -> what was done."""
    from quant.recipe import Recipe, apply_recipe

    sn, tn = shape_nets, texture_nets
    modules = {"meshgen_coarse": sn and sn.coarse, "meshgen_refine": sn and sn.refine,
               "texturegen": tn and tn.dit}
    done = {}
    for net in networks:
        path = recipe_path(net, family, arch, folder)
        if modules.get(net) is None:
            continue
        if not path.is_file():
            done[net] = f"no recipe {path.name}"
            continue
        done[net] = f"{path.name}: {apply_recipe(modules[net], Recipe.load(path))}"
    return done


def recipe_tag(module: torch.nn.Module, family: str | None) -> str:
    """The recipe field of an artifact name: ``family`` when ``module`` runs a quantised layer."""
    from quant.linear import QuantLinear

    quantised = family not in (None, NO_RECIPE) and any(isinstance(m, QuantLinear) for m in module.modules())
    return family if quantised else NO_RECIPE


def _build_some(job: tuple) -> list[BuildResult]:
    """Worker: build ``networks`` of one bucket into ``out`` (own seeded bundles of the sides it needs,
    identical per worker)."""
    preset, precision, networks, out, seed, weights, device, wrapper_opt, recipe, layout = job
    torch.set_num_threads(1)
    sides = tuple(sorted({side_of(n) for n in networks}))
    plan, (shape_nets, texture_nets) = load_bundles(preset, precision, seed, weights, device, sides)
    arch = arch_tag(device)
    if recipe is not None:
        quantise_bundles(shape_nets, texture_nets, recipe, arch)
    specs = export_specs(plan, shape_nets, texture_nets)
    results = []
    for net in networks:
        module = export_module(net, plan, shape_nets, texture_nets)
        path = Path(out) / artifact_name(net, preset, precision, arch, recipe_tag(module, recipe))
        results.append(build_package(module, specs[net], PRECISIONS[precision], path, wrapper_opt, layout))
    return results


def build_packages(preset: str, out: str | Path, precision: str = "fp32",
                   networks: tuple[str, ...] | None = None, seed: int = 0, weights: str | None = None,
                   device: str = "cpu", jobs: int = 1, wrapper_opt: str = "O1",
                   recipe: str | None = None, layout: str = "so") -> Path:
    """Build the bucket's packages into ``out`` and write its manifest; returns the manifest path.
    ``networks`` None: every network of the preset. ``jobs`` > 1 compiles in that many processes.
    ``recipe``: a quantisation family ("fp8") applied where its recipe files exist (module docstring).
    ``layout``: where each package keeps its weights (``WEIGHT_LAYOUTS``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    recipe = None if recipe in (None, NO_RECIPE) else recipe
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan, (shape_nets, texture_nets) = load_bundles(preset, precision, seed, weights, device)
    specs = export_specs(plan, shape_nets, texture_nets)
    names = tuple(specs) if networks is None else tuple(networks)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"networks {unknown} are not in preset {preset!r}: {', '.join(specs)}")
    if recipe is not None:
        paths = [recipe_path(n, recipe, arch_tag(device)) for n in RECIPE_NETWORKS if n in names]
        if not any(p.is_file() for p in paths):
            files = ", ".join(p.name for p in paths) or "(no quantisable network requested)"
            raise ValueError(f"recipe family {recipe!r}: none of {files} exists; run python -m quant.analyse "
                             "--network <name> on that GPU, or build without --recipe")
    groups = [names[i::jobs] for i in range(max(1, jobs))]
    job_args = [(preset, precision, g, str(out), seed, weights, device, wrapper_opt, recipe, layout)
                for g in groups if g]
    if len(job_args) == 1:
        results = _build_some(job_args[0])
    else:
        with ProcessPoolExecutor(len(job_args), mp_context=get_context("spawn")) as pool:
            results = [r for part in pool.map(_build_some, job_args) for r in part]
    results.sort(key=lambda r: names.index(r.network))
    return write_manifest(out, plan, precision, shape_nets, texture_nets, specs, results, recipe or NO_RECIPE)


def write_manifest(out: Path, plan, precision: str, shape_nets, texture_nets, specs: dict,
                   results: list[BuildResult], recipe: str = NO_RECIPE) -> Path:
    """``assetgen.<preset>.<precision>.<recipe>.manifest`` and its ``.json`` twin for ``results``."""
    stem = manifest_stem(plan.preset, precision, recipe)
    scalars = {"precision": precision, "recipe": recipe, **plan.scalars(shape_nets, texture_nets)}
    lines = ["# AssetGen AOTInductor packages: key value; 'package <network> <file>' per package"]
    lines += [f"{k} {v}" for k, v in scalars.items()]
    lines += [f"package {r.network} {r.file}" for r in results]
    path = out / f"{stem}.manifest"
    path.write_text("\n".join(lines) + "\n")
    record = {"settings": scalars, "torch": torch.__version__,
              "packages": {r.network: {"file": r.file, "export_s": round(r.export_s, 2),
                                       "compile_s": round(r.compile_s, 2), **specs[r.network].shapes()}
                           for r in results}}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trt_builds.aoti", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", "--scale", dest="preset", choices=PRESETS, default="tiny",
                    help="shape bucket (tiny: the CI networks)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    ap.add_argument("--networks", default=None,
                    help=f"comma-separated subset, or 'chain' (the C++ runtime's: {','.join(CHAIN)})")
    ap.add_argument("--weights", default=None, help="engine-format checkpoint folder (default: random)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="compile processes")
    ap.add_argument("--recipe", default=None,
                    help="quantisation family, e.g. fp8: quant/recipes/<network>.fp8.<arch>.json applied")
    ap.add_argument("--layout", choices=tuple(WEIGHT_LAYOUTS), default="so",
                    help="where each package keeps its weights: so (the library) or blob (a file beside it)")
    args = ap.parse_args(argv)
    nets = None if args.networks is None else (CHAIN if args.networks == "chain" else
                                               tuple(args.networks.split(",")))
    t0 = time.perf_counter()
    manifest = build_packages(args.preset, args.out, args.precision, nets, args.seed, args.weights,
                              args.device, args.jobs, recipe=args.recipe, layout=args.layout)
    record = json.loads(manifest.with_suffix(".json").read_text())
    for name, rec in record["packages"].items():
        print(f"{name:26s} export {rec['export_s']:6.1f} s  compile {rec['compile_s']:6.1f} s  {rec['file']}")
    print(f"{manifest} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
