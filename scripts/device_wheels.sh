#!/usr/bin/env bash
# Wheels for running scripts/gpu_check.sh on a GPU machine that has a CUDA build of torch but no network.
#
#   bash scripts/device_wheels.sh [PYTHON_VERSION] [DEST]     # defaults: 3.12, .whl (git-ignored)
#
# Run it where PyPI is reachable, after `pip install -r requirements-dev.txt`. It downloads, for CPython
# PYTHON_VERSION on manylinux x86-64:
#   * requirements.txt's pinned packages, except torch and torchvision (the GPU machine's own CUDA build is used) and
#     those gpu_check.sh never imports (gdown, matplotlib, scikit-learn, tensorboard: downloads, figures,
#     LinearProbe, tensorboard scalars — the run writes no scalars without tensorboard);
#   * what those wheels import that a torch image may lack or hold too old (open_clip → ftfy → wcwidth;
#     huggingface-hub 2 → httpx2, httpcore2, truststore, click ≥ 8.4.2, hf-xet ≥ 1.6), at the versions installed
#     here, i.e. the ones the test suite ran with.
# ~45 MB in all. Then, on the GPU machine, from the repository root:
#
#   bash scripts/gpu_check.sh      # installs .whl/*.whl into a private folder first (PYTHONPATH), if .whl exists
#
# (with this workplace's device tool: run it with carry [".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
DEST=${2:-.whl}
SKIP='^(torch|torchvision|gdown|matplotlib|scikit-learn|tensorboard)$'
mapfile -t pins < <(grep -E '^[A-Za-z0-9_.-]+==' requirements.txt | sed 's/[[:space:]]*#.*//' |
                    while read -r pin; do [[ ${pin%%==*} =~ $SKIP ]] || echo "$pin"; done)
extra=(ftfy wcwidth httpx2 httpcore2 truststore click hf-xet)
pinned_extra=$(python -c '
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"device_wheels: {name} is not installed here; run pip install -r requirements-dev.txt first")
' "${extra[@]}")
mapfile -t -O "${#pins[@]}" pins <<<"$pinned_extra"
mkdir -p "$DEST"
echo "device_wheels: ${#pins[@]} packages for CPython $PYV (manylinux x86-64) into $DEST: ${pins[*]}"
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${pins[@]}"
du -ch "$DEST"/*.whl | tail -n 1 | sed 's/total/in all/'
