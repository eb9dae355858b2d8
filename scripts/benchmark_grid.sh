#!/usr/bin/env bash
# Wall time of one small grid three ways: one train.py process per cell (the grid scripts before the grid runner),
# the grid runner with one worker, and with WORKERS (default 2) workers. CPU, generated SynthMed data, a warm
# feature cache for all three.
#
#   bash scripts/benchmark_grid.sh [OUT_DIR]
#
# Knobs: TRAINERS ("CoOp BiomedCoOp")  SHOTS ("1 2 4")  SEEDS ("1 2 3")  BACKBONE (tiny-biomedclip)
#   EPOCHS (2)  WORKERS (2)  PYTHON (python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/grid-bench.XXXXXX")}
TRAINERS=${TRAINERS:-"CoOp BiomedCoOp"}
SHOTS=${SHOTS:-"1 2 4"}
SEEDS=${SEEDS:-"1 2 3"}
BACKBONE=${BACKBONE:-tiny-biomedclip}
EPOCHS=${EPOCHS:-2}
WORKERS=${WORKERS:-2}
export OGKD_CACHE_DIR="$OUT/cache"
mkdir -p "$OUT"
[ -d "$OUT/data/SynthMed" ] || "$PYTHON" scripts/make_synthetic_data.py --dataset synthmed --root "$OUT/data" >/dev/null
EXTRA_OPTS=(OPTIM.MAX_EPOCH "$EPOCHS" DATALOADER.NUM_WORKERS 0 USE_CUDA False)

one_process_per_cell() {  # $1 = output root — the grid's own cells (engine/cells.py), one train.py process each
  local cells="$1.cells" out
  local -a argv
  DATA_ROOT="$OUT/data" OUTPUT_ROOT="$1" BACKBONE="$BACKBONE" TRAINERS="$TRAINERS" SHOTS="$SHOTS" SEEDS="$SEEDS" \
    EXTRA="${EXTRA_OPTS[*]}" "$PYTHON" -m engine.cells few_shot --datasets synthmed --cells-file "$cells"
  while IFS=$'\t' read -r -a argv; do  # JOB LABEL RUN_DIR ARG…
    out=${argv[2]}
    mkdir -p "$out"
    "$PYTHON" train.py "${argv[@]:3}" < /dev/null > "$out/console.log" 2>&1
  done < "$cells"
}

grid() {  # $1 = output root, $2 = workers
  DATA_ROOT="$OUT/data" OUTPUT_ROOT="$1" BACKBONE="$BACKBONE" TRAINERS="$TRAINERS" SHOTS="$SHOTS" SEEDS="$SEEDS" \
    EXTRA="${EXTRA_OPTS[*]}" WORKERS="$2" bash scripts/run_fewshot.sh --datasets synthmed > "$1.log" 2>&1
}

echo "warm-up (feature cache) …"
rm -rf "$OUT/warm"; SHOTS=1 SEEDS=1 one_process_per_cell "$OUT/warm"
n=$(( $(wc -w <<< "$TRAINERS") * $(wc -w <<< "$SHOTS") * $(wc -w <<< "$SEEDS") ))
echo "grid: $n cells ($TRAINERS × K $SHOTS × seeds $SEEDS, $BACKBONE, $EPOCHS epochs), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for variant in per-cell workers1 "workers$WORKERS"; do
  rm -rf "${OUT:?}/$variant"
  t0=$(date +%s.%N)
  case $variant in
    per-cell) one_process_per_cell "$OUT/$variant" ;;
    workers1) grid "$OUT/$variant" 1 ;;
    *) grid "$OUT/$variant" "$WORKERS" ;;
  esac
  t1=$(date +%s.%N)
  done_runs=$(find "$OUT/$variant" -name metrics.json | wc -l)
  printf '%-10s %7.1f s  (%d runs complete; load after: %s)\n' "$variant" "$(echo "$t1 - $t0" | bc)" "$done_runs" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
done
