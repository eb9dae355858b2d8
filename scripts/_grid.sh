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
DATASETS=()
FAILED=()
N_DONE=0
N_SKIPPED=0

grid_usage() {
  sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

grid_parse_args() {  # --datasets a b … [--keep-going]
  while [ $# -gt 0 ]; do
    case "$1" in
      --datasets) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do DATASETS+=("$1"); shift; done ;;
      --keep-going) KEEP_GOING=1; shift ;;
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

# grid_run LABEL OUT_DIR FLAGS… [KEY VALUE…] — run train.py unless OUT_DIR/metrics.json exists (complete runs are skipped;
# anything else is resumed by train.py from its checkpoints, or started from scratch).
grid_run() {
  local label=$1 out=$2; shift 2
  if [ -f "$out/metrics.json" ]; then
    local why
    if why=$(grid_metrics_ok "$out/metrics.json" 2>&1); then
      N_SKIPPED=$((N_SKIPPED + 1)); echo "skip   $label (done)"; return 0
    fi
    # an unreadable, truncated or damaged result is not a finished run: keep it aside and redo (resumes from checkpoints)
    mv -f "$out/metrics.json" "$out/metrics.json.bad"
    echo "redo   $label: its metrics.json was unreadable (kept as metrics.json.bad): ${why#error: }"
  fi
  mkdir -p "$out"
  local start=$SECONDS extra=()
  read -r -a extra <<< "$EXTRA"
  echo "run    $label"
  if "$PYTHON" train.py --root "$DATA_ROOT" --output-dir "$out" "$@" MODEL.BACKBONE.NAME "$BACKBONE" VERBOSE False \
       "${extra[@]}" > "$out/console.log" 2>&1 && [ -f "$out/metrics.json" ]; then
    N_DONE=$((N_DONE + 1))
    echo "done   $label: $("$PYTHON" -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"accuracy {m['accuracy']:.2f}%\")" "$out/metrics.json") ($((SECONDS - start)) s)"
    return 0
  fi
  FAILED+=("$label")
  echo "FAILED $label — last lines of $out/console.log:" >&2
  tail -n 15 "$out/console.log" | sed 's/^/    /' >&2
  if [ "$KEEP_GOING" -eq 0 ]; then
    echo "stopping at the first failure (use --keep-going to continue past failures)" >&2
    exit 1
  fi
  return 1
}

grid_metrics_ok() {  # metrics.json → status 0 if engine.results accepts it (JSON, checksum, finite accuracy)
  "$PYTHON" -m engine.results "$1"
}

grid_finish() {  # $1 = protocol folder to summarise
  echo
  echo "runs: $N_DONE done, $N_SKIPPED already complete, ${#FAILED[@]} failed"
  if [ -d "$1" ]; then
    # shellcheck disable=SC2086
    "$PYTHON" scripts/summarize.py "$1" --seeds $SEEDS || true
  fi
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${FAILED[@]}" >&2
    exit 1
  fi
}
