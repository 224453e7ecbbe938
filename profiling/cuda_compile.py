"""Compile every numba-cuda kernel of ``triton_kernels/`` for a GPU architecture on a machine without one:
the typing and code-generation errors that the CUDA simulator cannot show (it runs the kernels as Python),
found before device time is spent.

    python -m profiling.cuda_compile --toolchain .cuda-toolchain            # sm_90 (H100 / H200)
    python -m profiling.cuda_compile --toolchain .cuda-toolchain --cc 89 --tests tests/test_gpu_simplify.py

Two phases, each in its own process:
  1. record: the kernels' simulator tests (``tests/test_<module>.py`` of each kernel module and
     ``tests/test_gpu_*.py``, or ``--tests``) run with ``NUMBA_ENABLE_CUDASIM=1`` and
     ``ASSETGEN_RECORD_LAUNCHES`` set, so that ``triton_kernels.numba_cuda.launch`` writes each kernel's
     argument types (numba's ``typeof`` of what it was given) to a JSON-lines file;
  2. compile: with numba-cuda and CUDA's NVVM from ``--toolchain``, each recorded signature of each kernel
     is compiled to PTX for ``--cc`` (no driver: the device functions see that compute capability).
Kernels that no recorded test launched are listed (not compiled: their argument types are unknown).
Exit status 1 when a kernel fails to compile.

The toolchain (about 390 MB; a pip ``--target`` folder, not the project's environment, whose numba keeps
its own simulator):

    python -m pip install --target .cuda-toolchain numba-cuda==0.30.4 "cuda-bindings==13.*" \\
        cuda-pathfinder cuda-core "cuda-toolkit[nvrtc,nvvm,cudart]==13.*"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kernel_modules() -> list[str]:
    """The ``triton_kernels`` modules that define numba-cuda kernels."""
    return sorted(p.stem for p in (ROOT / "triton_kernels").glob("*.py") if "cuda.jit" in p.read_text())


# kernel modules whose simulator test is not named after them nor one of tests/test_gpu_*.py
OTHER_TESTS = {"anisotropic_sample": "tests/test_anisotropic.py"}


def default_tests() -> list[str]:
    """Per kernel module ``tests/test_<module>.py`` (or its ``OTHER_TESTS`` file), then every
    ``tests/test_gpu_*.py``."""
    own = [f"tests/test_{m}.py" for m in kernel_modules() if (ROOT / "tests" / f"test_{m}.py").is_file()]
    gpu = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_gpu_*.py"))
    return list(dict.fromkeys(own + list(OTHER_TESTS.values()) + gpu))


def record(tests: list[str], out: Path) -> int:
    """Phase 1 in a child pytest: the launches' signatures into ``out``; pytest's exit status."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "ASSETGEN_RECORD_LAUNCHES": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu",
                          *tests], cwd=ROOT, env=env, capture_output=True, text=True)
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:], flush=True)
    return run.returncode


_COMPILE = r'''
import json, re, site, sys, types as pytypes
site.addsitedir(sys.argv[1])                     # numba-cuda's redirector takes over numba.cuda
cc = tuple(int(c) for c in sys.argv[2].split(","))
import numba.cuda.dispatcher as dispatcher
dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)
import importlib
from numba import cuda, types
SCALARS = {n: getattr(types, n) for n in ("float64", "float32", "int64", "int32", "int16", "int8", "uint8",
                                         "uint32", "uint64", "boolean")}
SCALARS["bool"] = types.boolean
def parse(name):
    m = re.fullmatch(r"(readonly )?array\((\w+), (\d)d, (\w)\)", name)
    if m:
        return types.Array(SCALARS[m.group(2)], int(m.group(3)), m.group(4), readonly=bool(m.group(1)))
    return SCALARS[name]
signatures = {}
for line in open(sys.argv[3]):
    rec = json.loads(line)
    signatures.setdefault((rec["module"], rec["kernel"]), set()).add(tuple(rec["args"]))
report = {"compiled": [], "failed": [], "not_launched": []}
for module in sys.argv[4:]:
    mod = importlib.import_module(f"triton_kernels.{module}")
    for name, obj in sorted(vars(mod).items()):
        if not isinstance(obj, dispatcher.CUDADispatcher) or obj.targetoptions.get("device"):
            continue
        sigs = signatures.get((mod.__name__, name))
        if not sigs:
            report["not_launched"].append(f"{module}.{name}")
            continue
        for args in sorted(sigs):
            try:
                cuda.compile_ptx(obj.py_func, types.void(*map(parse, args)), cc=cc)
                report["compiled"].append(f"{module}.{name}")
            except Exception as err:  # noqa: BLE001 -- every failure is the report's content
                first = next((ln for ln in str(err).splitlines() if ln.strip()), "")
                report["failed"].append(f"{module}.{name}{list(args)}: {type(err).__name__}: {first[:400]}")
print(json.dumps(report))
'''


def compile_all(toolchain: Path, cc: str, launches: Path) -> dict:
    """Phase 2 in a child with the toolchain: {"compiled", "failed", "not_launched"} kernel lists."""
    libs = toolchain / "nvidia" / "cu13" / "lib"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
           "CUDA_HOME": str(libs.parent), "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    ccs = ",".join(re.fullmatch(r"(\d+)(\d)", cc).groups())
    run = subprocess.run([sys.executable, "-c", _COMPILE, str(toolchain), ccs, str(launches),
                          *kernel_modules()], cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit("compile phase failed (is the toolchain installed? see --help):\n"
                         + run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m profiling.cuda_compile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toolchain", type=Path, required=True, help="pip --target folder (module docstring)")
    ap.add_argument("--cc", default="90", help="compute capability, e.g. 90 (Hopper), 89 (Ada), 80")
    ap.add_argument("--tests", nargs="*", default=None, help="the simulator tests that record the launches")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"\d{2,3}", args.cc):
        raise SystemExit(f"--cc {args.cc!r}: give the compute capability as digits, e.g. 90")
    if not (args.toolchain / "numba_cuda").is_dir():
        raise SystemExit(f"--toolchain {args.toolchain}: no numba_cuda there; install it (see --help)")
    with tempfile.TemporaryDirectory() as tmp:
        launches = Path(tmp) / "launches.jsonl"
        launches.touch()
        record(args.tests or default_tests(), launches)
        report = compile_all(args.toolchain.resolve(), args.cc, launches)
    for k in sorted(set(report["compiled"])):
        print(f"ok           {k}")
    for k in report["not_launched"]:
        print(f"not launched {k}")
    for k in report["failed"]:
        print(f"FAILED       {k}")
    compiled, failed = len(set(report["compiled"])), len(report["failed"])
    print(f"{compiled} kernels compiled for sm_{args.cc}, {failed} failures, "
          f"{len(report['not_launched'])} not launched by the recorded tests")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
