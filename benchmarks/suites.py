"""Named GPU suites: the GPU tests and benchmarks that belong together, run as one device call.

    python3 -m benchmarks.suites engine-a --out "$OUT"      # then engine-b in a second call

Each step runs as a child process with a time limit; its log and tables land in ``--out`` (the device
tool's $OUT), the CSV rows in ``--out``/h100.csv. A suite is a list here, not a shell script that grows: add
a step to the list that owns it. ``--list`` prints the suites.
"""

from __future__ import annotations

import argparse
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

SUITES: dict[str, list[tuple[str, int, list[str]]]] = {
    # resident engine (issue 10): GPU tests, weight-free and flash end to end with throughput
    "engine-a": [
        ("gpu_tests", 200, [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *GPU_TESTS]),
        ("e2e_weightfree_flash", 330, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "weightfree",
                                       "flash", "--out-dir", "{out}", "--csv", "{out}/h100.csv"]),
    ],
    # default preset end to end, the ladder and cold start
    "engine-b": [
        ("e2e_default", 260, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "default",
                              "--out-dir", "{out}", "--csv", "{out}/h100.csv"]),
        ("e2e_ladder_cold", 300, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "ladder", "cold",
                                  "--pictures", "6", "--out-dir", "{out}", "--csv", "{out}/h100.csv"]),
    ],
    # one call: the simplify graph test, weight-free and flash end to end, weight-free cold start
    "engine-d": [
        ("graph_test", 60, [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                            ENGINE_GPU_TESTS[1]]),
        ("e2e_weightfree_flash", 480, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "weightfree",
                                       "cold-weightfree", "flash", "--out-dir", "{out}", "--csv",
                                       "{out}/h100.csv"]),
    ],
    "engine-e": [
        ("e2e_default", 420, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "default",
                              "--out-dir", "{out}", "--csv", "{out}/h100.csv"]),
        ("engine_gpu_tests", 150, [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                   ENGINE_GPU_TESTS[0]]),
    ],
    # the engine's own GPU tests (a short re-check after a fix) then weight-free and flash end to end
    "engine-c": [
        ("engine_gpu_tests", 150, [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                   *ENGINE_GPU_TESTS]),
        ("e2e_weightfree_flash", 400, [PY, "-m", "benchmarks.end_to_end_gpu", "--suite", "weightfree",
                                       "flash", "--out-dir", "{out}", "--csv", "{out}/h100.csv"]),
    ],
}


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
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit).returncode
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
