#!/usr/bin/env bash
# GPU tests and GPU benchmarks of the geometry stage on the device machine (one H100), in two parts that
# each fit one 10-minute device call:  bash benchmarks/gpu_run.sh tests | bench tables
# Carried (git-ignored) paths: .whl (xatlas wheel for the machine's Python 3.12), .gpu_inputs (shared/assets
# copy as .gpu_inputs/shared, the Table 4 low meshes as .gpu_inputs/bake_prep, the crate picture), since
# ../shared does not travel. Everything lands in $OUT: logs, tables, and results.tgz (CSV rows, JSON, meshes).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
[ $# -gt 0 ] || set -- tests
OUT=${OUT:-/tmp/assetgen_out}
RES=/tmp/assetgen_res
mkdir -p "$OUT" "$RES"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
export ASSETGEN_SHARED=$PWD/.gpu_inputs/shared
CORE="bunny armadillo spot duck trellis_T"
TABLE="bunny armadillo fox bob spot duck trellis_T camelhead"
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $RES/NAME.log
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1; echo "=== $name rc=$? ($(date +%T))"; tail -n 25 "$RES/$name.log"
  tar czf "$OUT/results_partial.tgz" -C "$RES" --exclude='*.glb' .   # what is done survives a killed call
}
oracle_half() {  # oracle_half TAG ASSET...: the texture oracle (ours vs baseline) on some assets
  local tag=$1; shift
  step "texture_oracle_$tag" 200 python3 -m benchmarks.texture.oracle --device cuda --atlas 2048 --view-px 1024 \
    --eval-px 512 --repeats 5 --methods ours baseline --cache .gpu_inputs/texture_oracle --assets "$@" \
    --out "$RES/texture_oracle_h100_$tag.md" --csv "$RES/h100.csv" --json "$RES/texture_oracle_h100_$tag.json"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$RES/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$RES/gpu.txt"
cat "$RES/gpu.txt"
DENSE="python3 -m benchmarks.geometry.dense_inputs --backend gpu --resolution 512 --assets"
for PART in "$@"; do
case "$PART" in
tests)
  step gpu_tests 220 python3 -m pytest -q -p no:cacheprovider tests/test_numba_cuda_plumbing.py \
    tests/test_gpu_bvh.py tests/test_gpu_normal_bake.py tests/test_gpu_rasterize_views.py \
    tests/test_gpu_hidden_faces.py tests/test_gpu_simplify.py tests/test_gpu_floaters.py \
    tests/test_gpu_watertight.py tests/test_gpu_marching_cubes_sparse.py tests/test_gpu_marching_cubes.py
  step dense_core 90 $DENSE $CORE
  step stage_latency 200 python3 -m benchmarks.geometry.stage_latency --assets $CORE \
    --out "$RES/geometry_stage_h100.md" --csv "$RES/h100.csv"
  step simplify_parts 90 python3 -m benchmarks.geometry.simplify_gpu --assets bunny --targets 20000 --no-serial \
    --placement bounded_optimal --out "$RES/geometry_simplify_gpu_h100.md" --csv "$RES/h100.csv"
  ;;
bench)
  step floaters_test 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_floaters.py
  step dense_table 120 $DENSE $TABLE
  step table2_gpu 120 python3 -m benchmarks.geometry.table2 --method qem_gpu --no-quality --assets $TABLE \
    --results "$RES/geometry_table2_qem_gpu.json" --meshes "$RES/t2meshes"
  step table2_gpu_bounded 120 python3 -m benchmarks.geometry.table2 --method qem_gpu_bounded --no-quality --assets $TABLE \
    --results "$RES/geometry_table2_qem_gpu_bounded.json" --meshes "$RES/t2meshes"
  step bake_gpu 90 python3 -m benchmarks.geometry.bake_table --method ours_gpu --prepared .gpu_inputs/bake_prep \
    --results "$RES/geometry_bake_ours_gpu.json"
  step hidden_faces 150 python3 -m benchmarks.geometry.hidden_faces_gpu --assets bunny armadillo bob \
    --out "$RES/geometry_hidden_faces_h100.md" --csv "$RES/h100.csv"
  ;;
final)  # the last call of a session whose budget is nearly spent: the rows still missing
  step dense_final 60 $DENSE bunny armadillo fox bob
  step t2_bounded 150 python3 -m benchmarks.geometry.table2 --method qem_gpu_bounded --no-quality --repeats 1 \
    --assets bunny armadillo fox bob --results "$RES/geometry_table2_qem_gpu_bounded.json" --meshes "$RES/t2meshes"
  step uv 150 python3 -m benchmarks.geometry.uv_unwrap --assets armadillo bob bunny spot --repeats 1 \
    --cache .gpu_inputs/uv20k --workers 16 --out "$RES/geometry_uv_h100.md" --csv "$RES/h100.csv"
  step process_cuda 100 python3 -m engine.cli process .gpu_inputs/shared/assets/bunny/stanford-bunny.obj \
    -o "$RES/bunny_cuda.glb" --device cuda --timings
  ;;
close)  # issue 3's closing call: the rows still missing, most wanted first (each step's results survive a kill)
  step floaters_test 45 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_floaters.py
  step uv 150 python3 -m benchmarks.geometry.uv_unwrap --assets armadillo bob bunny spot duck fox helmet suzanne \
    --repeats 1 --cache .gpu_inputs/uv20k --workers 16 --out "$RES/geometry_uv_h100.md" --csv "$RES/h100.csv"
  step process_cuda 70 python3 -m engine.cli process .gpu_inputs/shared/assets/bunny/stanford-bunny.obj \
    -o "$RES/bunny_cuda.glb" --device cuda --timings
  step generate_cuda 80 python3 -m engine.cli generate .gpu_inputs/typical_misc_crate.png \
    -o "$RES/crate_cuda.glb" --device cuda --timings
  step hidden_faces 60 python3 -m benchmarks.geometry.hidden_faces_gpu --assets bunny armadillo --repeats 3 \
    --out "$RES/geometry_hidden_faces_h100.md" --csv "$RES/h100.csv"
  step dense_final 45 $DENSE bunny armadillo fox bob
  step t2_bounded 90 python3 -m benchmarks.geometry.table2 --method qem_gpu_bounded --no-quality --repeats 1 \
    --assets bunny armadillo fox bob --results "$RES/geometry_table2_qem_gpu_bounded.json" --meshes "$RES/t2meshes"
  ;;
models)  # issue 5: the networks at the paper's sizes, random weights, bf16 (most wanted first)
  step model_tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py tests/test_models_meshgen.py \
    tests/test_sampling_ddim.py tests/test_models_texturegen.py tests/test_models_shape_vae.py
  step meshgen 150 python3 -m benchmarks.models.meshgen --device cuda --preset paper --repeats 10 \
    --out "$RES/models_meshgen_h100.md" --csv "$RES/h100.csv"
  step shape_vae 120 python3 -m benchmarks.models.shape_vae --device cuda --preset paper --repeats 5 \
    --out "$RES/models_shape_vae_h100.md" --csv "$RES/h100.csv"
  step texturegen 150 python3 -m benchmarks.models.texturegen --device cuda --preset paper --repeats 3 \
    --out "$RES/models_texturegen_h100.md" --csv "$RES/h100.csv"
  step resident 60 python3 -m benchmarks.models.resident --device cuda --out "$RES/models_resident_h100.md" \
    --csv "$RES/h100.csv"
  ;;
models2)  # issue 5, second half: conditioning, Hunyuan3D-2 DiT, image VAE + super-resolution; generate on cuda
  [ -f .gpu_inputs/graph_probe.py ] && step graph_probe 60 python3 .gpu_inputs/graph_probe.py
  step dinov2 90 python3 -m benchmarks.models.dinov2 --device cuda --preset paper --repeats 10 \
    --out "$RES/models_conditioning_h100.md" --csv "$RES/h100.csv"
  step hunyuan3d 90 python3 -m benchmarks.models.hunyuan3d --device cuda --preset paper --repeats 10 \
    --out "$RES/models_hunyuan3d_h100.md" --csv "$RES/h100.csv"
  step image_vae 90 python3 -m benchmarks.models.image_vae --device cuda --preset paper --repeats 10 \
    --out "$RES/models_image_vae_h100.md" --csv "$RES/h100.csv"
  step generate_cuda 120 python3 -m engine.cli generate .gpu_inputs/typical_misc_crate.png \
    -o "$RES/crate_cuda.glb" --device cuda --timings
  step meshgen_compile 200 python3 -m benchmarks.models.meshgen --device cuda --preset paper --repeats 10 --compile \
    --out "$RES/models_meshgen_compile_h100.md" --csv "$RES/h100.csv"
  ;;
texture)  # issue 4: GPU texture-fusion tests at GPU sizes, oracle benchmark on the first half of the assets
  step texture_gpu_tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_render_conditions.py \
    tests/test_fusion_precompute.py tests/test_anisotropic.py tests/test_gpu_blend.py tests/test_knn_grid.py \
    tests/test_gpu_inpaint.py tests/test_fusion_gpu.py
  step texture_oracle_a 300 python3 -m benchmarks.texture.oracle --device cuda --atlas 2048 --view-px 1024 \
    --eval-px 512 --repeats 5 --cache .gpu_inputs/texture_oracle --assets helmet duck milktruck fox \
    --out "$RES/texture_oracle_h100_a.md" --csv "$RES/h100.csv" --json "$RES/texture_oracle_h100_a.json"
  ;;
texture2)  # issue 4: the oracle on every textured asset (current code), then the GPU tests file by file
  step texture_oracle 330 python3 -m benchmarks.texture.oracle --device cuda --atlas 2048 --view-px 1024 \
    --eval-px 512 --repeats 5 --cache .gpu_inputs/texture_oracle \
    --out "$RES/texture_oracle_h100.md" --csv "$RES/h100.csv" --json "$RES/texture_oracle_h100.json"
  for T in test_gpu_render_conditions test_fusion_precompute test_anisotropic test_gpu_blend test_knn_grid \
           test_gpu_inpaint test_fusion_gpu; do
    step "gpu_$T" 45 python3 -m pytest -q -p no:cacheprovider -m gpu -rA --tb=short "tests/$T.py"
  done
  ;;
texture3)  # issue 4, final: the oracle on all 8 textured assets in two halves (ours vs baseline), 2 GPU tests
  oracle_half a helmet duck milktruck fox
  oracle_half b sofa suzanne spot bob
  for T in test_knn_grid test_fusion_gpu; do
    step "gpu_$T" 80 python3 -m pytest -q -p no:cacheprovider -m gpu -rA --tb=short "tests/$T.py"
  done
  ;;
check)  # end-to-end check of generate --device cuda (GPU fusion in the weight-free texture), knn grid on GPU
  step generate_cuda 150 python3 -m engine.cli generate .gpu_inputs/typical_misc_crate.png \
    -o "$RES/crate_cuda.glb" --device cuda --timings
  step gpu_test_knn_grid 200 python3 -m pytest -q -p no:cacheprovider -m gpu -rA --tb=short --durations=5 \
    tests/test_knn_grid.py
  ;;
verify)  # re-run on the GPU the tests whose fixes landed after their first GPU run
  step gpu_cuda_graph 120 python3 -m pytest -q -p no:cacheprovider -rA --tb=short tests/test_cuda_graph.py
  step gpu_fusion_precompute 90 python3 -m pytest -q -p no:cacheprovider -m gpu -rA --tb=short \
    tests/test_fusion_precompute.py
  ;;
oracle)  # issue 4: the oracle alone (both halves), e.g. after a fusion change
  oracle_half a helmet duck milktruck fox
  oracle_half b sofa suzanne spot bob
  ;;
tables)
  step uv 200 python3 -m benchmarks.geometry.uv_unwrap --assets armadillo bob bunny spot duck fox helmet suzanne \
    --cache .gpu_inputs/uv20k --workers 16 --out "$RES/geometry_uv_h100.md" --csv "$RES/h100.csv"
  step bvh_bake 120 python3 -m benchmarks.geometry.bvh_bake_gpu --assets bunny --resolution 512 \
    --out "$RES/geometry_bvh_bake_h100.md" --csv "$RES/h100.csv"
  step process_cuda 120 python3 -m engine.cli process .gpu_inputs/shared/assets/bunny/stanford-bunny.obj \
    -o "$RES/bunny_cuda.glb" --device cuda --timings
  step generate_cuda 150 python3 -m engine.cli generate .gpu_inputs/typical_misc_crate.png \
    -o "$RES/crate_cuda.glb" --device cuda --timings
  ;;
esac
done
cp "$RES"/*.md "$OUT"/ 2>/dev/null
tar czf "$OUT/results_$(IFS=_; echo "$*").tgz" -C "$RES" --exclude='*.glb' .
ls -la "$OUT"
