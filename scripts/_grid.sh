# Shared by run_fewshot.sh and run_base2novel.sh (sourced, not run). Knobs come from the environment.
# shellcheck shell=bash

PYTHON=${PYTHON:-python}
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_ROOT=${OUTPUT_ROOT:-output}
TRAINERS=${TRAINERS:-OGKD}
SEEDS=${SEEDS:-"1 2 3"}
BACKBONE=${BACKBONE:-BiomedCLIP}
EXTRA=${EXTRA:-}
KEEP_GOING=0
WAIT=0
DATASETS=()
CELLS=""

grid_usage() {
  sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

grid_parse_args() {  # --datasets a b … [--keep-going] [--wait]
  while [ $# -gt 0 ]; do
    case "$1" in
      --datasets) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do DATASETS+=("$1"); shift; done ;;
      --keep-going) KEEP_GOING=1; shift ;;
      --wait) WAIT=1; shift ;;
      -h|--help) grid_usage; exit 0 ;;
      *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
  done
}

grid_default_datasets() {  # $1 = few_shot | base_to_novel → lower-case names from the catalogue
  "$PYTHON" - "$1" <<'PY'
import sys
from datasets.catalogue import BENCHMARK
print(" ".join(r.config for r in BENCHMARK if sys.argv[1] == "few_shot" or r.base_to_novel))
PY
}

grid_check() {  # fail fast on unknown datasets / trainers / missing configs, before hours of runs
  local protocol=$1 ds t
  for ds in "${DATASETS[@]}"; do
    [ -f "configs/datasets/$ds.yaml" ] || {
      echo "error: no configs/datasets/$ds.yaml; known: $(cd configs/datasets && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
      exit 2; }
    for t in $TRAINERS; do grid_trainer_config "$t" "$protocol" "$ds" >/dev/null || exit 2; done
  done
}

grid_trainer_config() {  # trainer protocol dataset → the trainer YAML
  local t=$1 protocol=$2 ds=$3
  if [ -f "configs/trainers/$t/$protocol/$ds.yaml" ]; then echo "configs/trainers/$t/$protocol/$ds.yaml"
  elif [ -f "configs/trainers/$t/$protocol.yaml" ]; then echo "configs/trainers/$t/$protocol.yaml"
  else
    echo "error: no config for trainer '$t' ($protocol, $ds): expected configs/trainers/$t/$protocol/$ds.yaml or configs/trainers/$t/$protocol.yaml" >&2
    return 1
  fi
}

# grid_add JOB LABEL OUT_DIR FLAGS… [KEY VALUE…] — add one train.py run (a cell) to the grid. Cells with the same JOB
# key run in order in one process (a failure skips the rest of the job). grid_finish hands them to the grid runner,
# which skips complete runs and resumes interrupted ones.
grid_add() {
  local job=$1 label=$2 out=$3; shift 3
  local extra=()
  read -r -a extra <<< "$EXTRA"
  [ -n "$CELLS" ] || { CELLS=$(mktemp "${TMPDIR:-/tmp}/grid-cells.XXXXXX"); trap 'rm -f "$CELLS"' EXIT; }
  local IFS=$'\t'
  printf '%s\n' "$job	$label	$out	$(printf '%s\t' --root "$DATA_ROOT" --output-dir "$out" "$@" \
    MODEL.BACKBONE.NAME "$BACKBONE" VERBOSE False "${extra[@]}")" >> "$CELLS"
}

grid_finish() {  # $1 = protocol folder to summarise — run the cells (scripts/grid_runner.py), then the tables
  local status=0 flags=()
  [ "$KEEP_GOING" -eq 1 ] && flags+=(--keep-going)
  [ "$WAIT" -eq 1 ] && flags+=(--wait)
  [ -n "$CELLS" ] || CELLS=/dev/null
  "$PYTHON" scripts/grid_runner.py --cells "$CELLS" --output-root "$OUTPUT_ROOT" "${flags[@]}" || status=$?
  [ "$status" -eq 2 ] && exit 2
  if [ "${LAUNCHER:-local}" = slurm ] && [ "$WAIT" -eq 0 ]; then exit "$status"; fi
  if [ -d "$1" ]; then
    echo
    # shellcheck disable=SC2086
    "$PYTHON" scripts/summarize.py "$1" --seeds $SEEDS || true
  fi
  exit "$status"
}
