#!/usr/bin/env bash
# Offline demo on the embedded default: render SynthLesion's clinical regime (if absent) and, with its shipped
# pre-trained tiny CLIP (synthlesion-clinical-clip) on the CPU, run zero-shot, CoOp, BiomedCoOp and OGKD few-shot
# plus a base-to-novel row, then print the results tables from the metrics.json files.
#
#   bash scripts/demo.sh [--trainers "ZeroshotCLIP CoOp BiomedCoOp OGKD"] [--b2n-trainers "ZeroshotCLIP OGKD"]
#
# Knobs (environment): DATA_ROOT (data), OUTPUT_ROOT (output/demo), DATASET (synthlesion_clinical; or synthlesion,
# synthmed), BACKBONE (synthlesion-clinical-clip, synthlesion-clip, tiny-biomedclip by dataset), SHOTS (4), SEEDS ("1 2"),
# EPOCHS (the trainer config's), LOADER_WORKERS (data-loader workers; the config's), WORKERS (grid workers, 1).
# The runs go through the grid runner (engine/cells.py, docs/grid.md): one process builds the backbone once and runs
# them all, each writing the run directory and console.log a train.py run writes. In the clinical regime the model
# reads the medical class names only weakly, so zero-shot is low and the prompt learners' gain over it is real
# learning (docs/synthlesion-clinical.md). On SynthMed with a random tiny backbone the numbers sit near chance and
# only show that the pipeline runs.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAINERS=${TRAINERS:-"ZeroshotCLIP CoOp BiomedCoOp OGKD"}
B2N_TRAINERS=${B2N_TRAINERS:-"ZeroshotCLIP OGKD"}
while [ $# -gt 0 ]; do
  case "$1" in
    --trainers) TRAINERS="$2"; shift 2 ;;
    --b2n-trainers) B2N_TRAINERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/demo}
DATASET=${DATASET:-synthlesion_clinical}
case "$DATASET" in
  synthlesion_clinical) NAME=SynthLesionClinical; BACKBONE=${BACKBONE:-synthlesion-clinical-clip} ;;
  synthlesion) NAME=SynthLesion; BACKBONE=${BACKBONE:-synthlesion-clip} ;;
  synthmed) NAME=SynthMed; BACKBONE=${BACKBONE:-tiny-biomedclip} ;;
  *) echo "error: DATASET must be one of synthlesion_clinical, synthlesion, synthmed, got '$DATASET'" >&2; exit 2 ;;
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

# the cells (few-shot trainers × seeds, then base-to-novel with the first seed) and their run directories come from
# engine/cells.py; the grid runner runs them on one worker process (WORKERS: more), which builds the backbone once
export DATA_ROOT OUTPUT_ROOT DATASET BACKBONE SHOTS SEEDS TRAINERS B2N_TRAINERS
python -m engine.cells demo
echo
# shellcheck disable=SC2086
python scripts/summarize.py "$OUTPUT_ROOT" --metrics accuracy --layout trainers --order $TRAINERS $B2N_TRAINERS --plots
echo "demo finished in $(( $(date +%s) - start )) s"
