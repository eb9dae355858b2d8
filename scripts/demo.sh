#!/usr/bin/env bash
# Offline demo on the embedded default: render SynthLesion (if absent) and, with the shipped pre-trained tiny CLIP
# (synthlesion-clip) on the CPU, run zero-shot, CoOp, BiomedCoOp and OGKD few-shot plus a base-to-novel row, then
# print the results tables from the metrics.json files.
#
#   bash scripts/demo.sh [--trainers "ZeroshotCLIP CoOp BiomedCoOp OGKD"] [--b2n-trainers "ZeroshotCLIP OGKD"]
#
# Knobs (environment): DATA_ROOT (data), OUTPUT_ROOT (output/demo), DATASET (synthlesion; or synthmed),
# BACKBONE (synthlesion-clip for synthlesion, tiny-biomedclip for synthmed), SHOTS (4), SEEDS ("1 2"),
# EPOCHS (the trainer config's), LOADER_WORKERS (data-loader workers; the config's). SynthLesion's test images are
# in a shifted acquisition domain where zero-shot falls; the prompt learners' gain over it is real learning. On
# SynthMed with a random tiny backbone the numbers sit near chance and only show that the pipeline runs.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAINERS=${TRAINERS:-"ZeroshotCLIP CoOp BiomedCoOp OGKD"}
B2N_TRAINERS=${B2N_TRAINERS:-"ZeroshotCLIP OGKD"}
while [ $# -gt 0 ]; do
  case "$1" in
    --trainers) TRAINERS="$2"; shift 2 ;;
    --b2n-trainers) B2N_TRAINERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/demo}
DATASET=${DATASET:-synthlesion}
case "$DATASET" in
  synthlesion) NAME=SynthLesion; BACKBONE=${BACKBONE:-synthlesion-clip} ;;
  synthmed) NAME=SynthMed; BACKBONE=${BACKBONE:-tiny-biomedclip} ;;
  *) echo "error: DATASET must be synthlesion or synthmed, got '$DATASET'" >&2; exit 2 ;;
esac
SHOTS=${SHOTS:-4}
SEEDS=${SEEDS:-"1 2"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

start=$(date +%s)
if [ ! -f "$DATA_ROOT/$NAME/split_$NAME.json" ]; then
  python scripts/make_synthetic_data.py --dataset "$DATASET" --root "$DATA_ROOT"
fi
# the demo owns its output folder: start from a clean one so the tables show this call's runs only
if [ -f "$OUTPUT_ROOT/.demo" ]; then rm -rf "$OUTPUT_ROOT"; fi
mkdir -p "$OUTPUT_ROOT" && touch "$OUTPUT_ROOT/.demo"

opts=(MODEL.BACKBONE.NAME "$BACKBONE" USE_CUDA False VERBOSE False)
[ -n "${EPOCHS:-}" ] && opts+=(OPTIM.MAX_EPOCH "$EPOCHS")
[ -n "${LOADER_WORKERS:-}" ] && opts+=(DATALOADER.NUM_WORKERS "$LOADER_WORKERS")

# grid_trainer_config (the grids' config lookup); sourced after the demo's own defaults, which it keeps
source scripts/_grid.sh
config_for() { grid_trainer_config "$1" "$2" "$DATASET"; }

run() {  # label out flags… — one train.py run; its console output goes to out/console.log
  local label=$1 out=$2; shift 2
  local t0=$SECONDS
  mkdir -p "$out"
  printf '>>> %-48s' "$label"
  if python train.py --root "$DATA_ROOT" --output-dir "$out" "$@" > "$out/console.log" 2>&1; then
    python -c "import json,sys; print(f\"accuracy {json.load(open(sys.argv[1]))['accuracy']:6.2f} %\", end='')" \
      "$out/metrics.json"
    echo "  ($((SECONDS - t0)) s)"
  else
    echo; echo "run failed: see $out/console.log" >&2; tail -n 15 "$out/console.log" >&2; exit 1
  fi
}

for trainer in $TRAINERS; do
  for seed in $SEEDS; do
    run "$trainer few-shot K=$SHOTS seed $seed" "$OUTPUT_ROOT/few_shot/$DATASET/$trainer/shots$SHOTS/seed$seed" \
      --seed "$seed" --trainer "$trainer" --dataset-config-file "configs/datasets/$DATASET.yaml" \
      --config-file "$(config_for "$trainer" few_shot)" DATASET.NUM_SHOTS "$SHOTS" "${opts[@]}"
  done
done
seed=${SEEDS%% *}
for trainer in $B2N_TRAINERS; do
  out="$OUTPUT_ROOT/base_to_novel/$DATASET/$trainer/shots16/seed$seed"
  common=(--seed "$seed" --trainer "$trainer" --dataset-config-file "configs/datasets/$DATASET.yaml"
          --config-file "$(config_for "$trainer" base_to_novel)")
  run "$trainer base-to-novel K=16 seed $seed: base" "$out/base" "${common[@]}" \
    DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base "${opts[@]}"
  # the novel classes are evaluated with the base run's final checkpoint, as run_base2novel.sh does
  run "$trainer base-to-novel K=16 seed $seed: novel" "$out/new" "${common[@]}" --eval-only --model-dir "$out/base" \
    DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES new "${opts[@]}"
done

echo
# shellcheck disable=SC2086
python scripts/summarize.py "$OUTPUT_ROOT" --metrics accuracy --layout trainers --order $TRAINERS $B2N_TRAINERS --plots
echo "demo finished in $(( $(date +%s) - start )) s"
