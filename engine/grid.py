"""The grid runner, one import for what it offers: many runs (cells) per process, several processes, or a SLURM job
array.

* :mod:`engine.cells`: the grid's rules (protocols, the cell list, run directories, trainer configs, checks);
* :mod:`engine.grid_jobs`: cells and jobs, the cells file, completeness, running cells in one process;
* :mod:`engine.grid_local`: local worker processes; :mod:`engine.progress`: their progress lines;
* :mod:`engine.grid_slurm`: SLURM through submitit; :mod:`engine.grid_launch`: the environment knobs → one of them.

``scripts/run_fewshot.sh``, ``scripts/run_base2novel.sh`` and ``scripts/demo.sh`` call ``python -m engine.cells``;
``scripts/grid_runner.py`` runs a cells file.
"""

from __future__ import annotations

from engine.grid_jobs import (
    TAIL_LINES,
    Cell,
    GridError,
    Job,
    check_output_root,
    output_to,
    pending_jobs,
    read_cells,
    resolve,
    run_cell,
    run_job,
    tail,
    write_cells,
)
from engine.grid_launch import int_env, launch, launcher, slurm_options
from engine.grid_local import WORKER_POLL_S, cuda_devices, run_local
from engine.grid_slurm import SlurmOptions, SlurmTask, submit_slurm, submitit_executor
from engine.locks import DEFAULT_STALE_AFTER_S
from engine.progress import Progress
from engine.results import run_is_complete

__all__ = [
    "DEFAULT_STALE_AFTER_S", "TAIL_LINES", "WORKER_POLL_S", "Cell", "GridError", "Job", "Progress", "SlurmOptions",
    "SlurmTask", "check_output_root", "cuda_devices", "int_env", "launch", "launcher", "output_to", "pending_jobs",
    "read_cells", "resolve", "run_cell", "run_is_complete", "run_job", "run_local", "slurm_options", "submit_slurm",
    "submitit_executor", "tail", "write_cells",
]
