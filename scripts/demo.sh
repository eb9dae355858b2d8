#!/usr/bin/env bash
# Offline demo on the embedded default: generate SynthMed (if absent), run zero-shot, CoOp, BiomedCoOp and OGKD with the
# tiny random BiomedCLIP-architecture backbone on the CPU, then print a results table from the metrics.json files.
#
#   bash scripts/demo.sh [--trainers "ZeroshotCLIP CoOp BiomedCoOp OGKD"]
#
# Knobs (environment): DATA_ROOT (data), OUTPUT_ROOT (output/demo), BACKBONE (tiny-biomedclip), SHOTS (8),
# SEEDS ("1 2"), EPOCHS (20), WORKERS (2). The tiny backbone is randomly initialised: its numbers only show
# that the pipeline runs end to end; real numbers need BACKBONE=BiomedCLIP and the real datasets.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAINERS=${TRAINERS:-"ZeroshotCLIP CoOp BiomedCoOp OGKD"}
while [ $# -gt 0 ]; do
  case "$1" in
    --trainers) TRAINERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/demo}
BACKBONE=${BACKBONE:-tiny-biomedclip}
SHOTS=${SHOTS:-8}
SEEDS=${SEEDS:-"1 2"}
EPOCHS=${EPOCHS:-20}
WORKERS=${WORKERS:-2}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

start=$(date +%s)
if [ ! -f "$DATA_ROOT/SynthMed/split_SynthMed.json" ]; then
  python scripts/make_synthetic_data.py --root "$DATA_ROOT"
fi
# the demo owns its output folder: start from a clean one so the table shows this call's runs only
if [ -f "$OUTPUT_ROOT/.demo" ]; then rm -rf "$OUTPUT_ROOT"; fi
mkdir -p "$OUTPUT_ROOT" && touch "$OUTPUT_ROOT/.demo"

for trainer in $TRAINERS; do
  config="configs/trainers/$trainer/few_shot/synthmed.yaml"
  [ -f "$config" ] || config="configs/trainers/$trainer/few_shot.yaml"
  for seed in $SEEDS; do
    out="$OUTPUT_ROOT/synthmed/$trainer/shots$SHOTS/seed$seed"
    echo ">>> $trainer  shots=$SHOTS  seed=$seed  →  $out"
    python train.py --root "$DATA_ROOT" --seed "$seed" --trainer "$trainer" \
      --dataset-config-file configs/datasets/synthmed.yaml --config-file "$config" --output-dir "$out" \
      DATASET.NUM_SHOTS "$SHOTS" OPTIM.MAX_EPOCH "$EPOCHS" MODEL.BACKBONE.NAME "$BACKBONE" \
      DATALOADER.TRAIN_X.BATCH_SIZE 8 DATALOADER.NUM_WORKERS "$WORKERS" USE_CUDA False \
      || { echo "run failed: see $out/log.txt" >&2; exit 1; }
  done
done

echo
python scripts/summarize.py "$OUTPUT_ROOT"
echo "demo finished in $(( $(date +%s) - start )) s"
