#!/usr/bin/env bash
# One device-machine session (the H100): GPU tests and GPU benchmarks together, tables and logs under $OUT.
# Carried (git-ignored) paths: .whl (xatlas wheel for the machine's Python 3.12), .gpu_inputs (a copy of
# ../shared/images/typical_misc_crate.png, since ../shared does not travel).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/assetgen_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_marching_cubes.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m benchmarks.geometry.marching_cubes_gpu --out "$OUT/marching_cubes_gpu.md" --csv "$OUT/h100.csv" 2>&1 \
  | tee "$OUT/marching_cubes_gpu.log"
if [ -f .gpu_inputs/typical_misc_crate.png ]; then
  python3 -m engine.cli generate .gpu_inputs/typical_misc_crate.png -o "$OUT/crate_cuda.glb" --device cuda \
    --timings 2>&1 | tee "$OUT/generate_cuda.log"
fi
