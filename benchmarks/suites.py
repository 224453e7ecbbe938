"""Named GPU suites: the GPU tests and benchmarks that belong together, run as one device call.

    python3 -m benchmarks.suites engine-1 --out "$OUT"      # then engine-2, engine-3

Each step runs as a child process with a time limit; its log and tables land in ``--out`` (the device
tool's $OUT), the CSV rows in ``--out``/h100.csv. A suite is a list here, not a shell script that grows: add
a step to the list that owns it. ``--list`` prints the suites.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
GPU_TESTS = ["tests/test_engine.py", "tests/test_shape_networks.py", "tests/test_texture_networks.py",
             "tests/test_gpu_simplify.py", "tests/test_gpu_marching_cubes.py", "tests/test_gpu_floaters.py",
             "tests/test_gpu_hidden_faces.py", "tests/test_gpu_normal_bake.py", "tests/test_cuda_graph.py"]
ENGINE_GPU_TESTS = ["tests/test_engine.py",
                    "tests/test_gpu_simplify.py::test_cuda_graph_passes_equal_eager_launches"]


def pytest_gpu(*paths: str) -> list[str]:
    return [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *paths]


def e2e(suite: str, *extra: str) -> list[str]:
    """benchmarks/end_to_end_gpu.py: its tables in {out}, CSV rows in {out}/h100.csv."""
    return [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", suite, *extra, "--out-dir", "{out}",
            "--csv", "{out}/h100.csv"]


def service_gpu(preset: str, *extra: str) -> list[str]:
    """benchmarks/service_gpu.py: its table and the server's log in {out}, CSV rows in {out}/h100.csv."""
    return [PY, "-m", "benchmarks.service_gpu", "--preset", preset, "--pictures", "10", "--concurrent", "6",
            "--budget-s", "380", *extra, "--out-dir", "{out}", "--csv", "{out}/h100.csv"]


def exports(preset: str, *extra: str) -> list[str]:
    """benchmarks/models/exports.py: its table in {out}, CSV rows in {out}/h100.csv, within 520 s."""
    return [PY, "-m", "benchmarks.models.exports", "--preset", preset, "--device", "cuda",
            "--budget-s", "520", *extra, "--out-dir", "{out}", "--csv", "{out}/h100.csv"]


def analyse(network: str, *extra: str) -> list[str]:
    """quant.analyse: the recipe into the device's quant/recipes, the per-layer table into {out}."""
    return [PY, "-m", "quant.analyse", "--network", network, *extra,
            "--report", f"{{out}}/quant_{network}_h100.md"]


def bench_quant(*extra: str) -> list[str]:
    return [PY, "-m", "benchmarks.models.quant", "--out", "{out}/quant_h100.md", "--csv", "{out}/h100.csv",
            "--repeats", "3", *extra]


def quant_tests(limit: int = 60) -> tuple[str, int, list[str]]:
    return ("quant_gpu_tests", limit, pytest_gpu("tests/test_quant_gpu.py"))


QUANT_TESTS = quant_tests()
COPY_RECIPES = ("copy_recipes", 10, ["cp", "-r", "quant/recipes", "{out}/recipes"])

# GPU tests of what landed on the CPU without a GPU run (fourth session of 2026-12-07): the harmonic fill
# in torch on CUDA (parity, the fusion, the weight-free generate), the harmonised fusion, the host escape
# check after the GPU hidden-face passes
LANDED_GPU_TESTS = ["tests/test_harmonic_fill_gpu.py", "tests/test_fusion_gpu.py",
                    "tests/test_gpu_hidden_faces.py",
                    "tests/test_engine.py::test_generate_cuda_weight_free_end_to_end"]

SUITES: dict[str, list[tuple[str, int, list[str]]]] = {
    # every GPU test of the stages and networks (not the engine's end-to-end runs)
    "gpu-tests": [("gpu_tests", 400, pytest_gpu(*GPU_TESTS))],
    # first GPU run of the code that landed without one, then the torch harmonic fill's CUDA rows
    "landed-gpu": [
        ("landed_gpu_tests", 240, pytest_gpu(*LANDED_GPU_TESTS)),
        ("harmonic_fill_bench", 120, [PY, "-m", "benchmarks.texture.harmonic_fill_gpu", "--csv",
                                      "{out}/h100.csv"]),
    ],
    # issue 14.5 on the GPU path: simplify_qem_gpu to 5K / 10K / 20K on every shared asset's dense remesh
    # (the same meshes as the CPU table's, whose MeshLab columns they sit beside: no pymeshlab there)
    "budget-gpu": [("simplify_budget_gpu", 280, [
        PY, "-m", "benchmarks.simplify_budget", "--device", "cuda", "--points", "50000",
        "--out", "{out}/simplify_budget_h100.md", "--csv", "{out}/h100.csv"]),
        ("simplify_gpu_tests", 120, pytest_gpu("tests/test_gpu_simplify.py"))],
    # resident engine (issue 10): one device call on a fresh machine (its first step starts with empty JIT
    # caches, the next find them warm): the weight-free path on 20 pictures, flash at the paper's network
    # sizes on 20 with its serial profile and pipelined throughput, the engine's GPU tests; then default
    "engine-1": [
        ("e2e_weightfree", 80, e2e("weightfree")),
        ("e2e_flash", 250, e2e("flash", "--throughput-pictures", "6")),
        ("engine_gpu_tests", 110, pytest_gpu(*ENGINE_GPU_TESTS)),
    ],
    # the smallest call that still measures the headline rows (when device time is short): weight-free on
    # 20 pictures, flash on 10 with its profile and a 4-picture pipelined batch, the weight-free GPU test
    "engine-min": [
        ("e2e_weightfree", 70, e2e("weightfree")),
        # 220 s: ran 147 s on 2026-12-07; a fresh machine now also draws the live adaLN weights serially once
        ("e2e_flash", 220, e2e("flash", "--pictures", "10", "--throughput-pictures", "4")),
        ("engine_gpu_tests", 120,
         pytest_gpu("tests/test_engine.py::test_generate_cuda_weight_free_end_to_end",
                    "tests/test_engine.py::test_generate_cuda_tiny_networks_end_to_end[flash]",
                    "tests/test_texture_networks.py::test_early_condition_encoding_gives_the_same_views")),
    ],
    # the last resort when device time is nearly spent: flash on 6 pictures with its serial profile, then
    # the weight-free path on 8 (warm caches)
    "engine-last": [
        ("e2e_flash", 150, e2e("flash", "--pictures", "6", "--throughput-pictures", "0")),
        ("e2e_weightfree", 45, e2e("weightfree", "--pictures", "8")),
    ],
    "engine-2": [
        ("e2e_default", 420, e2e("default")),
        ("e2e_cold_weightfree", 150, e2e("cold-weightfree")),
    ],
    # quantisation (issue 11): GPU parity tests, the per-layer analyses that write the FP8 recipes (into the
    # device's quant/recipes, copied to {out}/recipes), then bf16 vs FP8/INT8 GEMMs and samplers
    "quant-1": [
        quant_tests(90),
        ("analyse_meshgen", 120, analyse("meshgen_coarse")),
        ("analyse_refine", 150, analyse("meshgen_refine", "--pictures", "1")),
        ("analyse_texturegen", 240, analyse("texturegen", "--meshes", "1", "--pictures", "1")),
        COPY_RECIPES,
        ("bench_quant", 200, bench_quant()),
    ],
    # one call when device time is short: GPU tests, the coarse and TextureGen analyses (recipes into the
    # device's quant/recipes and {out}/recipes), bf16 vs recipe / FP8 samplers, flash end to end in FP8
    "quant-one": [
        QUANT_TESTS,
        ("analyse_meshgen", 90, analyse("meshgen_coarse")),
        ("analyse_texturegen", 170, analyse("texturegen", "--meshes", "1", "--pictures", "1")),
        COPY_RECIPES,
        ("bench_quant", 130, bench_quant("--networks", "meshgen_coarse,texturegen", "--formats", "fp8_row")),
        ("e2e_flash_fp8", 130, e2e("flash", "--pictures", "4", "--throughput-pictures", "0",
                                   "--precision", "fp8")),
    ],
    # after quant-1's recipes are committed: bf16 vs FP8/INT8 speed, then the engine end to end in FP8
    "quant-2": [
        ("bench_quant", 200, bench_quant()),
        ("e2e_flash_fp8", 220, e2e("flash", "--pictures", "6", "--throughput-pictures", "4",
                                   "--precision", "fp8")),
        ("e2e_weightfree", 60, e2e("weightfree", "--pictures", "8")),
    ],
    # the service (issue 13's "done when"): assetgen serve on loopback with the paper-size flash engine;
    # start -> ready, per-job latency through the API vs the engine's critical path, M jobs at once
    # (assets/hour), status p99 under that load, GPU memory from /metrics (~3-4 min; bounded at 380 s).
    # Needs fastapi, uvicorn, python-multipart, pydantic(-core), opentelemetry-api there (carried wheels)
    "service-gpu": [("service_flash", 420, service_gpu("flash"))],
    "service-gpu-fp8": [("service_flash_fp8", 420, service_gpu("flash", "--precision", "fp8"))],
    # exported engines (issue 12): per network .pt2 vs eager vs torch.compile, package build and load to
    # first inference, the network chain (Python engine / PackagedNetworks / C++ host), the C++ runtime's
    # clean build on 2 pinned cores, the FP8 packages; packages built by 2 worker processes beside
    # torch.compile, artifacts in /tmp; rows as they come, phases that would not fit skipped at 520 s
    # why CUDA packages failed (export-1's first run segfaulted, 2026-12-07): trt_builds.diagnose (versions,
    # a tiny package per loader, embedded kernels, engine layers, shape_vae_query in both layouts; every
    # child's log in {out}/aoti_diagnose), then the engine's attention packaged with each SDPA backend and
    # paper-size packages (so / blob layouts) loaded in fresh processes
    "export-diag": [
        ("aoti_diagnose", 240, [PY, "-m", "trt_builds.diagnose", "--out", "{out}/aoti_diagnose",
                                "--networks", "shape_vae_query", "--timeout", "90"]),
        ("export_gpu_tests", 300, pytest_gpu(
            "-rA", "tests/test_export_aoti.py::test_cuda_attention_package_per_backend",
            "tests/test_export_aoti.py::test_flash_package_loads_and_runs_on_cuda"))],
    "export-1": [("exports_flash", 560, exports("flash"))],
    # the two DiT steps in bf16 and FP8 (recipe packages vs eager / torch.compile FP8), no chain
    "export-fp8": [("exports_fp8", 560, exports("flash", "--networks", "meshgen_coarse,texturegen",
                                                 "--no-chain"))],
    # the default bucket's chain (CFG texture at 1024 px), the two DiT steps compared, no FP8
    "export-default": [("exports_default", 560, exports("default", "--networks", "meshgen_coarse,texturegen",
                                                        "--recipe", "none", "--chain-repeats", "2"))],
    # cold start in child processes and the optimisation ladder (when device time allows)
    "engine-3": [
        ("e2e_cold", 330, e2e("cold")),
        ("e2e_ladder", 240, e2e("ladder", "--pictures", "6")),
    ],
    # regional torch.compile of the DiTs (engine --compile): the GPU quant tests, bf16 / recipe samplers
    # with and without compile in one run (the baseline beside them), then flash end to end FP8 + compile
    "compile-1": [
        quant_tests(60),
        ("bench_quant_compile", 300, bench_quant("--no-gemm", "--networks", "meshgen_coarse,texturegen",
                                                 "--formats", "", "--compile")),
        ("e2e_flash_fp8_compiled", 200, e2e("flash", "--pictures", "4", "--throughput-pictures", "0",
                                            "--precision", "fp8", "--compile")),
    ],
    # issue 11's "both presets in FP8 end to end", compiled (DiTs + image VAE), then flash with pipelining
    "compile-2": [
        ("e2e_default_fp8_compiled", 330, e2e("default", "--pictures", "3", "--precision", "fp8",
                                              "--compile")),
        ("e2e_flash_fp8_compiled", 240, e2e("flash", "--pictures", "6", "--throughput-pictures", "4",
                                            "--precision", "fp8", "--compile")),
    ],
    # the same comparison end to end on one card (when the call may land on another kind than the
    # committed tables): flash FP8 plain, then compiled (DiTs + image VAE)
    "compile-e2e": [
        quant_tests(60),
        ("e2e_flash_fp8", 160, e2e("flash", "--pictures", "4", "--throughput-pictures", "0",
                                   "--precision", "fp8")),
        ("e2e_flash_fp8_compiled", 260, e2e("flash", "--pictures", "4", "--throughput-pictures", "0",
                                            "--precision", "fp8", "--compile")),
    ],
}
# the fused Triton kernels (norm_modulate, swiglu_rows, bias in the FP8 epilogue; on by default on CUDA):
# GPU tests, TextureGen's sampler bf16 / recipe each eager, fused and compiled (same run), then flash end to
# end as the engine runs it by default (auto precision, fused kernels) on 4 pictures; fused-2: after the
# capture-mode fix, the GPU tests, then flash by default and compiled on 3 pictures each
SUITES["fused-2"] = [
    quant_tests(60),
    ("e2e_flash", 130, e2e("flash", "--pictures", "3", "--throughput-pictures", "0")),
    ("e2e_flash_compiled", 170, e2e("flash", "--pictures", "3", "--throughput-pictures", "0", "--compile")),
]
SUITES["fused-1"] = [
    quant_tests(90),
    ("bench_quant_fused", 300, bench_quant("--no-gemm", "--networks", "texturegen", "--formats", "",
                                           "--compile")),
    ("e2e_flash", 170, e2e("flash", "--pictures", "4", "--throughput-pictures", "0")),
]
# smaller quant calls for short device budgets: quant-one without its end-to-end step; without the
# TextureGen analysis (its sampler is still measured, all eligible layers FP8); the GPU tests with the
# speed table alone; the least: GPU tests, GEMMs, TextureGen bf16 vs all-eligible FP8
SUITES["quant-min"] = [step for step in SUITES["quant-one"] if step[0] != "e2e_flash_fp8"]
SUITES["quant-small"] = [step for step in SUITES["quant-min"] if step[0] != "analyse_texturegen"]
SUITES["quant-speed"] = [QUANT_TESTS, *(s for s in SUITES["quant-min"] if s[0] == "bench_quant")]
SUITES["quant-texture-speed"] = [
    QUANT_TESTS, ("bench_quant", 170, bench_quant("--networks", "texturegen", "--formats", "fp8_row"))]


def run_suite(name: str, out: Path, only: list[str] | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for step, limit, argv in SUITES[name]:
        if only and step not in only:
            continue
        cmd = [a.replace("{out}", str(out)) for a in argv]
        print(f"=== {step} (limit {limit} s) {time.strftime('%H:%M:%S')}", flush=True)
        t0 = time.perf_counter()
        with open(out / f"{step}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1",
                                         "PYTHONFAULTHANDLER": "1"}).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        failures += rc != 0
        print(f"=== {step} rc={rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        print("".join((out / f"{step}.log").read_text().splitlines(keepends=True)[-30:]), flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", nargs="?", choices=sorted(SUITES))
    ap.add_argument("--out", default="benchmarks/results/latest")
    ap.add_argument("--only", nargs="*", default=None, help="run only these steps of the suite")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list or args.suite is None:
        for name, steps in SUITES.items():
            print(name + ": " + ", ".join(s for s, _, _ in steps))
        return 0
    return 1 if run_suite(args.suite, Path(args.out), args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
