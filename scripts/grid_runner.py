#!/usr/bin/env python
"""Run the cells of a grid from a cells file (``python -m engine.cells … --cells-file F`` writes one; the grid
scripts call ``python -m engine.cells``, which runs its cells the same way without a file).

    python scripts/grid_runner.py --cells CELLS.tsv --output-root OUTPUT_ROOT [--keep-going] [--wait]

CELLS.tsv: one cell per line, tab-separated ``JOB LABEL RUN_DIR TRAIN.PY-ARG…`` (cells with the same JOB run in order
in one process; a failure skips the rest of its job). Complete cells (a valid metrics.json) are skipped; an
unreadable metrics.json is kept as metrics.json.bad and its run redone; interrupted runs resume from their last
epoch. Knobs (environment):

  LAUNCHER          local (default) | slurm
  GPUS              "0 1 …": one worker per listed GPU (each sees only its device through CUDA_VISIBLE_DEVICES)
  WORKERS_PER_GPU   workers per listed GPU (1)
  WORKERS           workers when GPUS is empty (1): CPU runs, or all on the default device
  LOCK_TIMEOUT      seconds after which another host's lock without heartbeat counts as dead (600)
  SLURM_PARTITION, SLURM_ACCOUNT, SLURM_GPUS_PER_TASK (1), SLURM_CPUS_PER_TASK, SLURM_TIME (minutes, 1440),
  SLURM_ARRAY_PARALLELISM (tasks at once; no limit), SLURM_CELLS_PER_TASK (8), SLURM_EXTRA ("key=value …" sbatch
  options), SLURM_LOG_DIR (OUTPUT_ROOT/slurm_logs), SLURM_EXECUTOR (slurm; "local": submitit's local executor)

Exit status: 0 when every cell is complete or held by another grid command, 1 when a cell failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.grid import GridError, launch, read_cells  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", required=True, help="the cells file")
    p.add_argument("--output-root", required=True, help="OUTPUT_ROOT (checked for writing before anything starts)")
    p.add_argument("--keep-going", action="store_true", help="continue past failed cells")
    p.add_argument("--wait", action="store_true", help="LAUNCHER=slurm: follow the job array, then summarise")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return launch(read_cells(args.cells), args.output_root, repo=str(REPO), keep_going=args.keep_going,
                      wait=args.wait)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
