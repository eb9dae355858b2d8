#!/usr/bin/env bash
# OGKD's ablation study: named variants and one-parameter sweeps (config files) × datasets × shots × seeds, then
# the ablation table.
#
#   bash scripts/run_ablation.sh [--datasets synthlesion_clinical …] [--variants "coop full"] [--sweeps "gamma"]
#                                [--keep-going] [--wait]
#
# Variants: configs/ablations/OGKD/<variant>.yaml (coop +sccm +kd +gad +lgd full), each merged after the dataset's
# OGKD few-shot config. Sweeps: configs/ablations/OGKD/sweeps/<name>.yaml (KEY and VALUES: gamma alpha top_k_ratio
# lambda_gad lambda_lgd), each value on the full config; a sweep adds the full variant (its default point) and never
# reruns the default value. "all" names every variant / sweep, "none" none. Environment knobs:
#   VARIANTS ("all")  SWEEPS ("none")  (the flags --variants / --sweeps win)
#   DATA_ROOT (data)  OUTPUT_ROOT (output)  SHOTS ("1 4 16")  SEEDS ("1 2 3")  BACKBONE (BiomedCLIP)
#   EXTRA (extra KEY VALUE config pairs, after the variant's)  PYTHON (python)
#   GPUS ("0 1 …")  WORKERS_PER_GPU (1)  WORKERS (1; without GPUS)  LAUNCHER (local | slurm)  SLURM_* (see
#   python scripts/grid_runner.py --help); --wait follows a SLURM job array to its end.
# Runs land in OUTPUT_ROOT/ablation/<dataset>/OGKD/<variant or sweep=value>/shots<K>/seed<S>/ and record their point
# in ABLATION.NAME (metrics.json "ablation"). Resume, locks, --keep-going: as scripts/run_fewshot.sh (docs/grid.md).
# An unknown variant or sweep, or a sweep value of the wrong type: one error line, exit 2, before any run.
# At the end: python scripts/summarize.py OUTPUT_ROOT/ablation --layout ablation (docs/ablation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" -h "* | *" --help "*) sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;; esac
# the points, cells, run directories and checks: engine/ablation.py through engine/cells.py (docs/ablation.md)
exec "${PYTHON:-python}" -m engine.cells ablation "$@"
