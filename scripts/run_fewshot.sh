#!/usr/bin/env bash
# Few-shot grid: every dataset × trainer × backbone × shots × seed, then the summary tables.
#
#   bash scripts/run_fewshot.sh [--datasets btmri covid …] [--keep-going] [--wait]
#
# Datasets: lower-case names (default: the 11 benchmark datasets). Environment knobs:
#   DATA_ROOT (data)  OUTPUT_ROOT (output)  TRAINERS ("OGKD")  SHOTS ("1 2 4 8 16")  SEEDS ("1 2 3")
#   BACKBONE (BiomedCLIP; several separated by spaces: the cross product, see docs/grid.md)
#   EXTRA (extra KEY VALUE config pairs, e.g. "OPTIM.MAX_EPOCH 10")  PYTHON (python)
#   GPUS ("0 1 …": one worker per GPU)  WORKERS_PER_GPU (1)  WORKERS (1; without GPUS)  LAUNCHER (local | slurm)
#   SLURM_* (see python scripts/grid_runner.py --help); --wait follows a SLURM job array to its end.
# Trainer config: configs/trainers/<T>/few_shot/<dataset>.yaml, else configs/trainers/<T>/few_shot.yaml.
# Runs land in OUTPUT_ROOT/few_shot/<dataset>/<trainer>/shots<K>/seed<S>/ (several backbones:
# …/<trainer>/<backbone folder>/shots<K>/seed<S>/). A run whose metrics.json is readable is skipped (an unreadable
# one is kept as metrics.json.bad and redone); an interrupted one resumes from its last epoch; a run another grid
# command is running (its grid.lock) is skipped. The first failure stops the grid (its log's last lines are shown)
# unless --keep-going. At the end: python scripts/summarize.py OUTPUT_ROOT/few_shot.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" -h "* | *" --help "*) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;; esac
# the cells, their run directories and configs, the checks, the run and the tables: engine/cells.py (docs/grid.md)
exec "${PYTHON:-python}" -m engine.cells few_shot "$@"
