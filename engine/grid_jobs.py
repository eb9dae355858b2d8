"""Cells and jobs of a grid, the cells file, completeness, and running cells in one process.

A *cell* is one ``train.py`` run (its arguments and run directory); a *job* is a sequence of cells that run in order
in one process (base-to-novel: train on the base classes, then evaluate that checkpoint on the new ones), the rest
of a job being skipped when one of its cells fails. :mod:`engine.cells` builds them; :mod:`engine.grid_local` and
:mod:`engine.grid_slurm` run them (through :func:`run_job`).

Cells are claimed with a lock file in their run directory (:mod:`engine.locks`), so two grid commands on one output
folder never run a cell twice; a live lock of someone else makes the cell be skipped with a line naming its holder.

The engine stays independent of its plugins: the cell function is named as ``module:function`` and imported where
the cell runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.locks import DEFAULT_STALE_AFTER_S, CellLock, claim, describe_holder
from engine.results import METRICS_FILE, MetricsError, read_metrics, run_is_complete

logger = logging.getLogger(__name__)

#: how many lines of a failed cell's console.log are shown
TAIL_LINES = 15


class GridError(RuntimeError):
    """Bad input to the grid runner (one line, reported before any cell starts)."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run: a label for people, its run directory and its ``train.py`` arguments."""

    label: str
    out: str
    argv: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Job:
    """Cells that run in this order in one process; a cell that fails skips the rest."""

    cells: tuple[Cell, ...]


# ----------------------------------------------------------------------------------------------------------------
# Cells file and completeness
# ----------------------------------------------------------------------------------------------------------------
def read_cells(path: str | Path) -> list[Job]:
    """Jobs from a cells file: one cell per line, tab-separated ``JOB LABEL RUN_DIR ARG…``; lines with the same JOB
    key form one job, in file order."""
    jobs: dict[str, list[Cell]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if fields[-1] == "":  # the writer ends every field with a tab
            fields.pop()
        if len(fields) < 3 or not all(fields[:3]):
            raise GridError(f"{path}:{n}: a cell line is JOB<TAB>LABEL<TAB>RUN_DIR<TAB>ARG…, got {line!r}")
        jobs.setdefault(fields[0], []).append(Cell(fields[1], fields[2], tuple(fields[3:])))
    return [Job(tuple(cells)) for cells in jobs.values()]


def write_cells(jobs: Sequence[Job], path: str | Path) -> None:
    """The cells file :func:`read_cells` reads back (the job key is the first cell's run directory). A field may
    not hold a tab or a newline: :class:`GridError`."""
    lines = []
    for job in jobs:
        for cell in job.cells:
            fields = [job.cells[0].out, cell.label, cell.out, *cell.argv]
            bad = next((f for f in fields if "\t" in f or "\n" in f), None)
            if bad is not None:
                raise GridError(f"a cell field holds a tab or a newline, which a cells file cannot: {bad!r}")
            lines.append("\t".join(fields) + "\t\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def pending_jobs(jobs: Sequence[Job], say: Callable[[str], None]) -> tuple[list[Job], int]:
    """(the jobs with their complete leading cells dropped, the number of complete cells). An unreadable
    ``metrics.json`` is not a finished run: it is kept as ``metrics.json.bad`` and the run redone."""
    out, complete = [], 0
    for job in jobs:
        cells = list(job.cells)
        while cells and run_is_complete(cells[0].out):
            cells.pop(0)
            complete += 1
        for cell in cells:
            metrics = Path(cell.out) / METRICS_FILE
            if not metrics.exists():
                continue
            try:
                read_metrics(metrics)
            except MetricsError as e:
                metrics.replace(metrics.with_name(METRICS_FILE + ".bad"))
                why = str(e).removeprefix(f"{metrics}: ")
                say(f"redo   {cell.label}: its metrics.json was unreadable (kept as metrics.json.bad): {why}")
        if cells:
            out.append(Job(tuple(cells)))
    return out, complete


def check_output_root(root: str | Path) -> None:
    """:class:`GridError` unless ``root`` can be created and written."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".grid-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise GridError(f"OUTPUT_ROOT {root} is not writable ({e.strerror or e}): choose another folder") from None


# ----------------------------------------------------------------------------------------------------------------
# Running cells in one process
# ----------------------------------------------------------------------------------------------------------------
def resolve(spec: str) -> Callable[..., int]:
    """``"module:function"`` → the function (the cell function, imported where the cell runs)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python, C, subprocesses) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    f = open(path, "w", encoding="utf-8", buffering=1)  # closed below
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f  # also where sys.stdout / sys.stderr were replaced (pytest's capture, notebooks)
    try:
        yield
    finally:
        f.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        f.close()


def _forget_log_handlers() -> None:
    """Close the handlers a run attached to the root logger (its log.txt), so the next run starts clean."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_ogkd", False):
            root.removeHandler(h)
            h.close()


def tail(path: str | Path, n: int = TAIL_LINES) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def run_cell(cell: Cell, fn: Callable[..., int], cache: dict[Any, Any], owner: str, *,
             stale_after_s: float = DEFAULT_STALE_AFTER_S, on_start: Callable[[], None] | None = None
             ) -> dict[str, Any]:
    """Claim, run and release one cell in this process. Returns ``{"status": done | failed | complete | held,
    "seconds", "detail"}`` (detail: the accuracy line, the holder, or the log's last lines)."""
    if run_is_complete(cell.out):
        return {"status": "complete", "seconds": 0.0, "detail": ""}
    lock = claim(cell.out, owner, stale_after_s=stale_after_s)
    if not isinstance(lock, CellLock):
        return {"status": "held", "seconds": 0.0, "detail": describe_holder(lock)}
    t0 = time.perf_counter()
    try:
        lock.start_heartbeat()
        if run_is_complete(cell.out):  # finished by another command between our check and our claim
            return {"status": "complete", "seconds": 0.0, "detail": ""}
        if on_start is not None:
            on_start()
        console = Path(cell.out) / "console.log"
        with output_to(console), warnings.catch_warnings():  # (re-arms "once" warnings: each log gets its own)
            try:
                rc = fn(list(cell.argv), backbones=cache)
            except Exception:  # noqa: BLE001 - a crash is this cell's failure, not the worker's
                logging.getLogger("grid").exception("the run raised")
                rc = 1
            finally:
                _forget_log_handlers()
        seconds = time.perf_counter() - t0
        if rc == 0 and run_is_complete(cell.out):
            acc = read_metrics(Path(cell.out) / METRICS_FILE)["accuracy"]
            return {"status": "done", "seconds": seconds, "detail": f"accuracy {acc:.2f}%"}
        return {"status": "failed", "seconds": seconds, "detail": "\n".join(tail(console)), "rc": rc}
    finally:
        lock.release()
        gc.collect()  # the run's trainer, loaders (and their worker processes) go now, not at some later cell


def run_job(job: Job, fn: Callable[..., int], cache: dict[Any, Any], owner: str, *,
            stale_after_s: float = DEFAULT_STALE_AFTER_S,
            report: Callable[[str, Cell, dict[str, Any] | None], None] = lambda *_: None) -> list[dict[str, Any]]:
    """Run a job's cells in order; after a cell that is not done or complete, the rest are "skipped"."""
    results = []
    stop = ""
    for cell in job.cells:
        if stop:
            res = {"status": "skipped", "seconds": 0.0, "detail": stop}
        else:
            res = run_cell(cell, fn, cache, owner, stale_after_s=stale_after_s,
                           on_start=lambda c=cell: report("start", c, None))
            if res["status"] in ("failed", "held"):
                stop = f"it needs {cell.label}, which {'failed' if res['status'] == 'failed' else 'is held'}"
        report("end", cell, res)
        results.append(res)
    return results
