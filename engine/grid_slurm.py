"""A grid as a SLURM job array through submitit: several jobs per array task, one backbone per task; a timeout or
pre-emption requeues the task, which skips what is complete and resumes its cell from the last epoch."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.grid_jobs import Cell, GridError, Job, resolve, run_job
from engine.locks import DEFAULT_STALE_AFTER_S
from engine.progress import Progress


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What ``LAUNCHER=slurm`` reads (:func:`engine.grid_launch.slurm_options` maps the environment knobs
    to these)."""

    folder: str  # submitit's log folder
    partition: str = ""
    gpus_per_task: int = 1
    cpus_per_task: int = 0  # 0: SLURM's default
    time_min: int = 24 * 60
    account: str = ""
    array_parallelism: int = 0  # 0: no limit
    cells_per_task: int = 8
    extra: tuple[str, ...] = ()  # extra sbatch options, "key=value" (e.g. "qos=high", "constraint=a100")
    executor: str = "slurm"  # "local": submitit's local executor (tests, no SLURM)


def submitit_executor(opts: SlurmOptions) -> Any:
    """The submitit executor for ``opts``; :class:`GridError` (one line) without submitit or ``sbatch``."""
    try:
        import submitit
    except ImportError:
        raise GridError("LAUNCHER=slurm needs submitit: pip install submitit (or pip install -r "
                        "requirements-slurm.txt)") from None
    if opts.executor == "local":
        ex = submitit.LocalExecutor(folder=opts.folder)
        ex.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_task)
        return ex
    if shutil.which("sbatch") is None:
        raise GridError("LAUNCHER=slurm needs SLURM's sbatch on the PATH (run from a cluster login node)")
    ex = submitit.AutoExecutor(folder=opts.folder, cluster="slurm")
    extra: dict[str, str] = {}
    for item in opts.extra:
        key, sep, value = item.lstrip("-").partition("=")
        if not sep or not key:
            raise GridError(f"SLURM_EXTRA items are key=value sbatch options (e.g. qos=high), got {item!r}")
        extra[key] = value
    if opts.account:
        extra["account"] = opts.account
    params: dict[str, Any] = {"timeout_min": opts.time_min, "gpus_per_node": opts.gpus_per_task,
                              "tasks_per_node": 1, "nodes": 1, "slurm_additional_parameters": extra}
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.array_parallelism:
        params["slurm_array_parallelism"] = opts.array_parallelism
    ex.update_parameters(**params)
    return ex


class SlurmTask:
    """One array task: several jobs run in one process (one backbone). On a timeout or pre-emption submitit calls
    :meth:`checkpoint` and requeues the task, which skips what is complete and resumes its cell from the last
    epoch (its own lock is taken back at once: the owner names the array task, stable across requeues)."""

    def __init__(self, jobs: Sequence[Job], fn_spec: str, repo: str, stale_after_s: float) -> None:
        self.jobs, self.fn_spec, self.repo, self.stale_after_s = list(jobs), fn_spec, repo, stale_after_s

    def __call__(self) -> list[dict[str, Any]]:
        import submitit

        if self.repo not in sys.path:
            sys.path.insert(0, self.repo)
        os.chdir(self.repo)
        env = submitit.JobEnvironment()
        owner = f"slurm:{env.job_id}"
        fn = resolve(self.fn_spec)
        cache: dict[Any, Any] = {}
        out = []

        def report(kind: str, cell: Cell, res: dict[str, Any] | None) -> None:  # into the task's log
            if kind == "start":
                sys.stdout.write(f"run    {cell.label}\n")
            else:
                detail = res["detail"] if res["status"] != "failed" else "(see its console.log)"
                sys.stdout.write(f"{res['status']:<6} {cell.label} {detail}\n")
                out.append({"label": cell.label, "out": cell.out, **res})
            sys.stdout.flush()

        for job in self.jobs:
            run_job(job, fn, cache, owner, stale_after_s=self.stale_after_s, report=report)
        return out

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # the run directories hold the state


def submit_slurm(jobs: Sequence[Job], opts: SlurmOptions, *, fn_spec: str = "train:main", repo: str = ".",
                 stale_after_s: float = DEFAULT_STALE_AFTER_S, wait: bool = False,
                 progress: Progress | None = None) -> int:
    """Submit ``jobs`` as one job array (``opts.cells_per_task`` cells per task); print the job id and the log
    folder; with ``wait``, follow the array and print the summary (exit status 1 if a cell failed)."""
    ex = submitit_executor(opts)
    total = sum(len(j.cells) for j in jobs)
    progress = progress or Progress(total, 0)
    if not jobs:
        progress.line("grid: nothing to submit (every cell is complete)")
        return 0
    chunks: list[list[Job]] = [[]]
    for job in jobs:
        if chunks[-1] and sum(len(j.cells) for j in chunks[-1]) + len(job.cells) > opts.cells_per_task:
            chunks.append([])
        chunks[-1].append(job)
    repo = str(Path(repo).resolve())
    with ex.batch():
        handles = [ex.submit(SlurmTask(chunk, fn_spec, repo, stale_after_s)) for chunk in chunks]
    array_id = str(handles[0].job_id).split("_")[0]
    progress.line(f"submitted job array {array_id}: {total} cells in {len(handles)} task(s); logs in {opts.folder}")
    if not wait:
        progress.line(f"follow it with squeue -j {array_id}; rerun the same command to submit only what is missing")
        return 0
    remaining = list(handles)
    while remaining:
        for h in list(remaining):
            if not h.done():
                continue
            remaining.remove(h)
            try:
                results = h.result()
            except Exception as e:  # noqa: BLE001 - a task that failed as a whole (its log says why)
                progress.line(f"task {h.job_id} failed: {str(e).strip().splitlines()[-1] if str(e) else e} "
                              f"(log: {h.paths.stderr})", err=True)
                progress.counts["failed"] += 1
                continue
            for r in results:
                cell = Cell(r["label"], r["out"], ())
                progress.end(cell, r, f"task {h.job_id}")
        time.sleep(1.0)
    progress.line(progress.summary())
    return 1 if progress.counts["failed"] else 0
