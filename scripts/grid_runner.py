#!/usr/bin/env python
"""Run the cells of a grid (called by run_fewshot.sh / run_base2novel.sh, which enumerate them).

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
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.grid import (  # noqa: E402
    DEFAULT_STALE_AFTER_S,
    GridError,
    Progress,
    SlurmOptions,
    check_output_root,
    pending_jobs,
    read_cells,
    run_local,
    submit_slurm,
    submitit_executor,
)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GridError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise GridError(f"{name} must be ≥ 0, got {value}")
    return value


def slurm_options(output_root: str) -> SlurmOptions:
    return SlurmOptions(
        folder=os.environ.get("SLURM_LOG_DIR") or str(Path(output_root) / "slurm_logs"),
        partition=os.environ.get("SLURM_PARTITION", ""),
        gpus_per_task=_int_env("SLURM_GPUS_PER_TASK", 1),
        cpus_per_task=_int_env("SLURM_CPUS_PER_TASK", 0),
        time_min=_int_env("SLURM_TIME", 24 * 60),
        account=os.environ.get("SLURM_ACCOUNT", ""),
        array_parallelism=_int_env("SLURM_ARRAY_PARALLELISM", 0),
        cells_per_task=max(1, _int_env("SLURM_CELLS_PER_TASK", 8)),
        extra=tuple(os.environ.get("SLURM_EXTRA", "").split()),
        executor=os.environ.get("SLURM_EXECUTOR", "slurm"),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", required=True, help="the cells file")
    p.add_argument("--output-root", required=True, help="OUTPUT_ROOT (checked for writing before anything starts)")
    p.add_argument("--keep-going", action="store_true", help="continue past failed cells")
    p.add_argument("--wait", action="store_true", help="LAUNCHER=slurm: follow the job array, then summarise")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        launcher = os.environ.get("LAUNCHER", "local") or "local"
        if launcher not in ("local", "slurm"):
            raise GridError(f"LAUNCHER must be local or slurm, got {launcher!r}")
        stale = float(os.environ.get("LOCK_TIMEOUT") or DEFAULT_STALE_AFTER_S)
        gpus = os.environ.get("GPUS", "").replace(",", " ").split()
        per_gpu, workers = _int_env("WORKERS_PER_GPU", 1), _int_env("WORKERS", 1)
        if per_gpu < 1 or workers < 1:
            raise GridError("WORKERS and WORKERS_PER_GPU must be ≥ 1")
        check_output_root(args.output_root)
        jobs = read_cells(args.cells)
        if launcher == "slurm":
            opts = slurm_options(args.output_root)
            submitit_executor(opts)  # one-line error without submitit / sbatch, before anything else
        todo, complete = pending_jobs(jobs, lambda line: print(line, flush=True))
        if launcher == "slurm":
            return submit_slurm(todo, opts, repo=str(REPO), stale_after_s=stale, wait=args.wait,
                                progress=Progress(sum(len(j.cells) for j in todo), complete))
        if args.wait:
            raise GridError("--wait is for LAUNCHER=slurm (a local grid always runs to the end)")
        return run_local(todo, gpus=gpus, workers_per_gpu=per_gpu, workers=workers, keep_going=args.keep_going,
                         complete=complete, stale_after_s=stale)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
