#!/usr/bin/env bash
# Base-to-novel grid: train on the base classes (16 shots), evaluate the same checkpoint on the new classes.
#
#   bash scripts/run_base2novel.sh [--datasets btmri covid …] [--keep-going] [--wait]
#
# Datasets: lower-case names (default: the 10 base-to-novel datasets, i.e. without BUSI). Environment knobs:
#   DATA_ROOT (data)  OUTPUT_ROOT (output)  TRAINERS ("OGKD")  SHOTS ("16")  SEEDS ("1 2 3")
#   BACKBONE (BiomedCLIP)  EXTRA (extra KEY VALUE config pairs)  PYTHON (python)
#   GPUS, WORKERS_PER_GPU, WORKERS, LAUNCHER, SLURM_* as in run_fewshot.sh (the new-class evaluation runs after its
#   base run, in the same worker / array task)
# Trainer config: configs/trainers/<T>/base_to_novel/<dataset>.yaml, else configs/trainers/<T>/base_to_novel.yaml.
# Runs land in OUTPUT_ROOT/base_to_novel/<dataset>/<trainer>/shots<K>/seed<S>/{base,new}/ (new = evaluation-only
# run of base's final checkpoint with DATASET.SUBSAMPLE_CLASSES new). Complete runs are skipped; the first failure
# stops the grid unless --keep-going. At the end: python scripts/summarize.py OUTPUT_ROOT/base_to_novel.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_grid.sh
SHOTS=${SHOTS:-16}
grid_parse_args "$@"
[ ${#DATASETS[@]} -gt 0 ] || read -r -a DATASETS <<< "$(grid_default_datasets base_to_novel)"
grid_check base_to_novel

for ds in "${DATASETS[@]}"; do
  for t in $TRAINERS; do
    config=$(grid_trainer_config "$t" base_to_novel "$ds")
    for k in $SHOTS; do
      for s in $SEEDS; do
        run="$OUTPUT_ROOT/base_to_novel/$ds/$t/shots$k/seed$s"
        common=(--seed "$s" --trainer "$t" --dataset-config-file "configs/datasets/$ds.yaml" --config-file "$config")
        grid_add "$run" "$ds $t shots$k seed$s base" "$run/base" "${common[@]}" \
          DATASET.NUM_SHOTS "$k" DATASET.SUBSAMPLE_CLASSES base
        grid_add "$run" "$ds $t shots$k seed$s new" "$run/new" "${common[@]}" --eval-only --model-dir "$run/base" \
          DATASET.NUM_SHOTS "$k" DATASET.SUBSAMPLE_CLASSES new
      done
    done
  done
done
grid_finish "$OUTPUT_ROOT/base_to_novel"
