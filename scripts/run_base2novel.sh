#!/usr/bin/env bash
# Base-to-novel grid: train on the base classes (16 shots), evaluate the same checkpoint on the new classes.
#
#   bash scripts/run_base2novel.sh [--datasets btmri covid …] [--keep-going] [--wait]
#
# Datasets: lower-case names (default: the 10 base-to-novel datasets, i.e. without BUSI). Environment knobs:
#   DATA_ROOT (data)  OUTPUT_ROOT (output)  TRAINERS ("OGKD")  SHOTS ("16")  SEEDS ("1 2 3")
#   BACKBONE (BiomedCLIP; several separated by spaces: the cross product, see docs/grid.md)
#   EXTRA (extra KEY VALUE config pairs)  PYTHON (python)
#   GPUS, WORKERS_PER_GPU, WORKERS, LAUNCHER, SLURM_* as in run_fewshot.sh (the new-class evaluation runs after its
#   base run, in the same worker / array task)
# Trainer config: configs/trainers/<T>/base_to_novel/<dataset>.yaml, else configs/trainers/<T>/base_to_novel.yaml.
# Runs land in OUTPUT_ROOT/base_to_novel/<dataset>/<trainer>[/<backbone folder>]/shots<K>/seed<S>/
# {base,new}/ (new = evaluation-only run of base's final checkpoint with DATASET.SUBSAMPLE_CLASSES new). Complete
# runs are skipped; the first failure stops the grid unless --keep-going. At the end: python scripts/summarize.py OUTPUT_ROOT/base_to_novel.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" -h "* | *" --help "*) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;; esac
# the cells, their run directories and configs, the checks, the run and the tables: engine/cells.py (docs/grid.md)
exec "${PYTHON:-python}" -m engine.cells base_to_novel "$@"
