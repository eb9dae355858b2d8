"""The grid's environment knobs → a local run or a SLURM job array: what ``scripts/grid_runner.py`` and the grid
commands of :mod:`engine.cells` share.

Knobs: ``LAUNCHER`` (local | slurm), ``GPUS`` ("0 1 …"), ``WORKERS_PER_GPU`` (1), ``WORKERS`` (1),
``LOCK_TIMEOUT`` (s, 600), ``SLURM_PARTITION``, ``SLURM_ACCOUNT``, ``SLURM_GPUS_PER_TASK`` (1), ``SLURM_CPUS_PER_TASK``,
``SLURM_TIME`` (minutes, 1440), ``SLURM_ARRAY_PARALLELISM``, ``SLURM_CELLS_PER_TASK`` (8), ``SLURM_EXTRA``
("key=value …"), ``SLURM_LOG_DIR`` (OUTPUT_ROOT/slurm_logs), ``SLURM_EXECUTOR`` (slurm | local).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from engine.grid_jobs import GridError, Job, check_output_root, pending_jobs
from engine.grid_local import run_local
from engine.grid_slurm import SlurmOptions, submit_slurm, submitit_executor
from engine.locks import DEFAULT_STALE_AFTER_S
from engine.progress import Progress


def int_env(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """A whole-number knob ≥ 0 (``default`` when unset or empty); :class:`GridError` otherwise."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GridError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise GridError(f"{name} must be ≥ 0, got {value}")
    return value


def slurm_options(output_root: str, env: Mapping[str, str] | None = None) -> SlurmOptions:
    """The SLURM_* knobs as :class:`~engine.grid_slurm.SlurmOptions`."""
    env = os.environ if env is None else env
    return SlurmOptions(
        folder=env.get("SLURM_LOG_DIR") or str(Path(output_root) / "slurm_logs"),
        partition=env.get("SLURM_PARTITION", ""),
        gpus_per_task=int_env("SLURM_GPUS_PER_TASK", 1, env),
        cpus_per_task=int_env("SLURM_CPUS_PER_TASK", 0, env),
        time_min=int_env("SLURM_TIME", 24 * 60, env),
        account=env.get("SLURM_ACCOUNT", ""),
        array_parallelism=int_env("SLURM_ARRAY_PARALLELISM", 0, env),
        cells_per_task=max(1, int_env("SLURM_CELLS_PER_TASK", 8, env)),
        extra=tuple(env.get("SLURM_EXTRA", "").split()),
        executor=env.get("SLURM_EXECUTOR", "slurm"),
    )


def launcher(env: Mapping[str, str] | None = None) -> str:
    """``LAUNCHER``: local (default) or slurm; :class:`GridError` otherwise."""
    value = (os.environ if env is None else env).get("LAUNCHER", "local") or "local"
    if value not in ("local", "slurm"):
        raise GridError(f"LAUNCHER must be local or slurm, got {value!r}")
    return value


def launch(jobs: Sequence[Job], output_root: str, *, repo: str, keep_going: bool = False, wait: bool = False,
           fn_spec: str = "train:main", say: Callable[[str], None] = lambda line: print(line, flush=True),
           env: Mapping[str, str] | None = None) -> int:
    """Run ``jobs`` as the knobs in ``env`` (default: the environment) say: check everything first (one-line
    :class:`GridError`), skip complete cells, then :func:`~engine.grid_local.run_local` or
    :func:`~engine.grid_slurm.submit_slurm`. Returns 0, or 1 when a cell failed."""
    env = os.environ if env is None else env
    how = launcher(env)
    stale = float(env.get("LOCK_TIMEOUT") or DEFAULT_STALE_AFTER_S)
    gpus = env.get("GPUS", "").replace(",", " ").split()
    per_gpu, workers = int_env("WORKERS_PER_GPU", 1, env), int_env("WORKERS", 1, env)
    if per_gpu < 1 or workers < 1:
        raise GridError("WORKERS and WORKERS_PER_GPU must be ≥ 1")
    if wait and how != "slurm":
        raise GridError("--wait is for LAUNCHER=slurm (a local grid always runs to the end)")
    check_output_root(output_root)
    if how == "slurm":
        opts = slurm_options(output_root, env)
        submitit_executor(opts)  # one-line error without submitit / sbatch, before anything else
    todo, complete = pending_jobs(jobs, say)
    if how == "slurm":
        return submit_slurm(todo, opts, fn_spec=fn_spec, repo=repo, stale_after_s=stale, wait=wait,
                            progress=Progress(sum(len(j.cells) for j in todo), complete))
    return run_local(todo, fn_spec=fn_spec, gpus=gpus, workers_per_gpu=per_gpu, workers=workers,
                     keep_going=keep_going, complete=complete, stale_after_s=stale)
