#!/usr/bin/env bash
# The CUDA check, one prepared script (about 6–8 minutes on one GPU). Run it when you have a GPU:
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # default: $OUT if set, else gpu_check_out
#
# Needs a Python with a CUDA build of torch (no network is used) and either the project's environment or, on a
# machine without one, the wheels of `bash scripts/device_wheels.sh` in .whl/ (made where PyPI is reachable; they
# are installed into the work folder and put first on PYTHONPATH). OUT_DIR receives at most 8 small files: the logs
# and JSON named below; the bulky work (model, data, feature cache, grid runs) goes to WORK_DIR (default: a new
# temporary folder, removed at the end unless KEEP_WORK=1). A failing step is reported with its last lines and the
# next one still runs; the exit status is 1 if any step failed. Steps:
#   1. tests/test_cuda.py — runs on CUDA vs the CPU, no host sync inside a step (CUDA sync debug mode), bf16 frozen
#      features within tolerance of fp32, pinned memory, cache entries per device (cuda_tests.log);
#   2. scripts/benchmark.py on the full-size BiomedCLIP architecture (random weights), frozen towers in fp32 (one
#      warm run), then in bf16 (two warm runs) with the projected OGKD paper grid (bench_fp32.log / .json,
#      bench_bf16.log / .json);
#   3. a reduced OGKD grid (K = 1, 4, 16; seed 1; the config's 100 epochs) on synthetic images with BTMRI's test
#      split size, on the same full-size model, three grid-runner workers on GPU 0, timed per run; then a GPUS
#      entry that does not exist must be a one-line error (grid.log: all three, with the grid's summary table).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ogkd-gpu-check.XXXXXX")}
mkdir -p "$WORK"
[ "${KEEP_WORK:-0}" = 1 ] || [ -n "${WORK_DIR:-}" ] || trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OGKD_CACHE_DIR="$WORK/cache"
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3  # a bare torch image may have python3 only
export PYTHON="$PY"  # for the grid scripts
if [ -d .whl ]; then  # a machine without the project's environment: the wheels of scripts/device_wheels.sh
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    || { echo "gpu_check: installing .whl/*.whl failed"; exit 1; }
  export PYTHONPATH="$(realpath "$WORK/site")${PYTHONPATH:+:$PYTHONPATH}"
fi
failed=()
step() {  # step NAME LOGFILE COMMAND...  (LOGFILE is appended to)
  local name=$1 log=$2
  shift 2
  echo "== $name ($(date +%H:%M:%S))" | tee -a "$log"
  local t0=$SECONDS
  if "$@" >>"$log" 2>&1; then
    echo "   ok ($((SECONDS - t0)) s) — $log"
  else
    echo "   FAILED ($((SECONDS - t0)) s) — last lines of $log:"
    tail -n 15 "$log" | sed 's/^/     /'
    failed+=("$name")
  fi
}

"$PY" - <<'EOF' | tee "$OUT_DIR/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: scripts/gpu_check.sh is for a CUDA machine"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

step "CUDA-path tests" "$OUT_DIR/cuda_tests.log" "$PY" -m pytest -q tests/test_cuda.py tests/test_frozen_paths.py
step "benchmark, fp32 frozen towers" "$OUT_DIR/bench_fp32.log" \
  "$PY" scripts/benchmark.py --size full --device cuda --prec fp32 --epochs 2 --repeats 1 --keep-model "$WORK/model" \
  --json "$OUT_DIR/bench_fp32.json"
step "benchmark, bf16 frozen towers + projected paper grid" "$OUT_DIR/bench_bf16.log" \
  "$PY" scripts/benchmark.py --size full --device cuda --prec bf16 --epochs 2 --repeats 2 --keep-model "$WORK/model" \
  --project-grid --json "$OUT_DIR/bench_bf16.json"
grep -A3 "projected OGKD paper grid" "$OUT_DIR/bench_bf16.log"

n_test=$("$PY" -c "from datasets.catalogue import get_info; i = get_info('BTMRI'); print(round(i.sizes[2] / 6))")
step "synthetic data with BTMRI's test size" "$OUT_DIR/grid.log" \
  "$PY" scripts/make_synthetic_data.py --dataset synthmed --root "$WORK/data" --n-train 16 --n-val 4 \
  --n-test "$n_test" --allow-new-data
model="local-dir:$(realpath "$WORK/model/biomedclip-architecture")"
step "reduced OGKD grid (K 1 4 16, seed 1, 100 epochs; 3 grid-runner workers on GPU 0)" "$OUT_DIR/grid.log" \
  env DATA_ROOT="$WORK/data" OUTPUT_ROOT="$WORK/grid" BACKBONE="$model" TRAINERS=OGKD SHOTS="1 4 16" \
  SEEDS=1 EXTRA="USE_CUDA True" GPUS=0 WORKERS_PER_GPU=3 bash scripts/run_fewshot.sh --datasets synthmed
grep -E "\] done|\] FAILED|^runs:" "$OUT_DIR/grid.log" | tail -n 8
step "GPUS naming a device that does not exist: one-line error" "$OUT_DIR/grid.log" \
  bash -c "GPUS='0 99' DATA_ROOT='$WORK/data' OUTPUT_ROOT='$WORK/grid_bad' SEEDS=1 SHOTS=1 \
    bash scripts/run_fewshot.sh --datasets synthmed >'$WORK/bad_gpus.log' 2>&1; rc=\$?; cat '$WORK/bad_gpus.log'; \
    test \$rc -eq 2 && grep -q 'does not exist' '$WORK/bad_gpus.log'"

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: ${#failed[@]} step(s) failed: ${failed[*]}"
  exit 1
fi
echo "gpu_check: all steps passed — logs and JSON in $OUT_DIR"
