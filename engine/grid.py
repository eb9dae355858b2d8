"""The grid runner: many runs (cells) per process, several processes, or a SLURM job array.

A *cell* is one ``train.py`` run (its arguments and run directory); a *job* is a sequence of cells that run in order
in one process (base-to-novel: train on the base classes, then evaluate that checkpoint on the new ones), the rest
of a job being skipped when one of its cells fails. ``scripts/run_fewshot.sh`` and ``scripts/run_base2novel.sh``
enumerate the cells and hand them to ``scripts/grid_runner.py``, which calls :func:`run_local` or
:func:`submit_slurm`.

A worker process builds the backbone once and runs cell after cell on it, through the entry point's
``main(argv, backbones=cache)`` (``train:main``); each cell writes the run directory a standalone ``train.py``
writes, and its console output goes to the run directory's ``console.log``.

Cells are claimed with a lock file in their run directory (:mod:`engine.locks`), so two grid commands on one output
folder never run a cell twice; a live lock of someone else makes the cell be skipped with a line naming its holder.

The engine stays independent of its plugins: the cell function is named as ``module:function`` and imported in
the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import importlib
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import queue
import shutil
import signal
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine.locks import DEFAULT_STALE_AFTER_S, CellLock, claim, describe_holder, remove_lock_of
from engine.results import METRICS_FILE, MetricsError, read_metrics, run_is_complete

logger = logging.getLogger(__name__)

#: how many lines of a failed cell's console.log are shown
TAIL_LINES = 15
#: how often (s) an idle worker checks that its coordinator is still alive
WORKER_POLL_S = 2.0


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


# ----------------------------------------------------------------------------------------------------------------
# Local workers
# ----------------------------------------------------------------------------------------------------------------
def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the cell: its lock is released, its checkpoints stay


def _worker(wid: int, fn_spec: str, tasks: Any, events: Any, owner: str, stale_after_s: float,
            threads: int) -> None:
    """A worker process: run the jobs that come on ``tasks`` (its own queue) until None; report on ``events``, the
    sending end of its own pipe (nothing shared with the other workers: a worker killed in the middle of a message
    can only break its own channel, never block the others)."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the coordinator stops the workers (SIGTERM)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    fn = resolve(fn_spec)
    cache: dict[Any, Any] = {}
    coordinator = mp.parent_process()
    while True:
        try:
            job = tasks.get(timeout=WORKER_POLL_S)
        except queue.Empty:  # not daemonic (see run_local): a worker whose coordinator is gone ends by itself
            if coordinator is not None and not coordinator.is_alive():
                return
            continue
        if job is None:
            return
        run_job(job, fn, cache, f"{owner}/w{wid}", stale_after_s=stale_after_s,
                report=lambda kind, cell, res: events.send((kind, wid, cell, res)))
        events.send(("idle", wid, None, None))


def _stop(procs: Iterable[Any]) -> None:
    """Terminate the live worker processes (SIGTERM: each unwinds its cell, releasing the lock) and reap them."""
    procs = list(procs)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def _fmt_s(s: float) -> str:
    return str(datetime.timedelta(seconds=round(s)))


class Progress:
    """Counts and lines across workers: ``[i/N]`` per finished cell with its worker, running / failed counts,
    elapsed time and ETA."""

    def __init__(self, total: int, complete: int, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.total, self.complete_before = total, complete
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.t0 = time.perf_counter()
        self.counts = {"done": 0, "failed": 0, "complete": 0, "held": 0, "skipped": 0}
        self.running: set[str] = set()
        self.failed: list[str] = []

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def line(self, text: str, *, err: bool = False) -> None:
        stream = self.err if err else self.out
        stream.write(text + "\n")
        stream.flush()

    def start(self, cell: Cell, worker: str) -> None:
        self.running.add(cell.out)
        self.line(f"run    {cell.label} (worker {worker})")

    def end(self, cell: Cell, res: dict[str, Any], worker: str) -> None:
        self.running.discard(cell.out)
        status = res["status"]
        self.counts[status] += 1
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.finished
        ran = self.counts["done"] + self.counts["failed"]
        eta = f", ETA {_fmt_s(elapsed / ran * left)}" if ran and left else ""
        state = (f"done {self.counts['done']}, running {len(self.running)}, failed {self.counts['failed']}, "
                 f"elapsed {_fmt_s(elapsed)}{eta}")
        head = f"[{self.finished}/{self.total}]"
        if status == "done":
            self.line(f"{head} done   {cell.label}: {res['detail']} ({res['seconds']:.0f} s, worker {worker}) "
                      f"| {state}")
        elif status == "failed":
            self.failed.append(cell.label)
            self.line(f"{head} FAILED {cell.label} (worker {worker}) | {state} — last lines of "
                      f"{Path(cell.out) / 'console.log'}:", err=True)
            for ln in res["detail"].splitlines():
                self.line(f"    {ln}", err=True)
        elif status == "complete":
            self.line(f"{head} skip   {cell.label} (done, by another grid command)")
        elif status == "held":
            self.line(f"{head} skip   {cell.label}: held by {res['detail']} (another grid command runs it)")
        else:
            self.line(f"{head} skip   {cell.label}: {res['detail']}", err=True)

    def summary(self) -> str:
        c = self.counts
        text = (f"runs: {c['done']} done, {self.complete_before + c['complete']} already complete, {c['failed']} "
                f"failed")
        if c["held"]:
            text += f", {c['held']} held by another grid command"
        if c["skipped"]:
            text += f", {c['skipped']} skipped"
        return text + f" ({_fmt_s(time.perf_counter() - self.t0)})"


def cuda_devices(gpus: Sequence[str]) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each requested GPU; :class:`GridError` for one that does not exist."""
    if not gpus:
        return []
    import torch

    count = torch.cuda.device_count()
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    out = []
    for g in gpus:
        if not g.isdigit() or int(g) >= count:
            have = f"0–{count - 1}" if count else "none"
            raise GridError(f"GPUS names device {g!r}, which does not exist (CUDA devices here: {have})")
        out.append(visible[int(g)] if visible else g)
    return out


def run_local(jobs: Sequence[Job], *, fn_spec: str = "train:main", gpus: Sequence[str] = (),
              workers_per_gpu: int = 1, workers: int = 1, keep_going: bool = False, complete: int = 0,
              stale_after_s: float = DEFAULT_STALE_AFTER_S, progress: Progress | None = None) -> int:
    """Run ``jobs`` on local worker processes pulling from one queue: ``workers_per_gpu`` per GPU in ``gpus`` (each
    sees only its device), else ``workers`` on the CPU or the default device. Returns the exit status: 0, or 1 if a
    cell failed (without ``keep_going`` no new cell starts after the first failure)."""
    devices = cuda_devices(gpus)
    slots: list[str | None] = [d for d in devices for _ in range(workers_per_gpu)] if devices else [None] * workers
    total = sum(len(j.cells) for j in jobs)
    progress = progress or Progress(total, complete)
    progress.line(f"grid: {total + complete} cells, {complete} already complete, {total} to run on "
                  f"{len(slots)} worker(s) ({', '.join(f'GPU {d}' for d in devices) if devices else 'no GPU pinned'})")
    if not jobs:
        progress.line(progress.summary())
        return 0
    threads = max(1, (os.cpu_count() or 1) // len(slots)) if not devices and len(slots) > 1 else 0
    ctx = mp.get_context("spawn")
    events: dict[int, Any] = {}  # worker → the receiving end of its pipe
    owner = f"grid:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    procs: dict[int, Any] = {}
    tasks: dict[int, Any] = {}
    busy: dict[int, tuple[Job, int]] = {}  # worker → (its job, cells of it reported finished)
    pending = list(jobs)
    stopping = False

    def start(wid: int) -> None:
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        if slots[wid] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = slots[wid]
        try:
            tasks[wid] = ctx.Queue()
            events[wid], send_end = ctx.Pipe(duplex=False)
            # not daemonic: a cell's data loader starts worker processes of its own (DATALOADER.NUM_WORKERS, 8 in
            # the paper configs), which a daemonic process may not; every way out of run_local stops the workers
            procs[wid] = ctx.Process(target=_worker, name=f"grid-worker-{wid}", daemon=False,
                                     args=(wid, fn_spec, tasks[wid], send_end, owner, stale_after_s, threads))
            procs[wid].start()
            send_end.close()  # the worker holds it: its death closes the pipe (EOF here)
        finally:
            if env_before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_before

    def name(wid: int) -> str:
        return f"{wid}" + (f" GPU {slots[wid]}" if slots[wid] is not None else "")

    for wid in range(len(slots)):
        start(wid)
    idle = list(range(len(slots)))
    try:
        while True:
            while idle and pending and not stopping:
                wid = idle.pop(0)
                job = pending.pop(0)
                busy[wid] = (job, 0)
                tasks[wid].put(job)
            if not busy:
                break
            message = None
            for conn in mp_connection.wait([events[w] for w in busy], timeout=1.0):
                wid = next(w for w in busy if events[w] is conn)
                try:
                    message = conn.recv()
                    break
                except (EOFError, OSError, pickle.UnpicklingError):  # the worker died, maybe mid-message
                    procs[wid].join(timeout=10)
            if message is None:
                for wid in [w for w in busy if not procs[w].is_alive()]:  # a worker died (killed, out of memory)
                    job, n = busy.pop(wid)
                    code = procs[wid].exitcode
                    if n < len(job.cells):  # its lock: a later claim would take it over; tidy it now
                        remove_lock_of(Path(job.cells[n].out), procs[wid].pid)
                    for i, cell in enumerate(job.cells[n:]):
                        why = f"its worker died (exit code {code})" if i == 0 else "its worker died"
                        progress.end(cell, {"status": "failed" if i == 0 else "skipped", "seconds": 0.0,
                                            "detail": why}, name(wid))
                    stopping = stopping or not keep_going
                    if pending and not stopping:
                        start(wid)
                        idle.append(wid)
                continue
            kind, wid, cell, res = message
            if kind == "start":
                progress.start(cell, name(wid))
            elif kind == "end":
                job, n = busy[wid]
                busy[wid] = (job, n + 1)
                progress.end(cell, res, name(wid))
                if res["status"] == "failed" and not keep_going and not stopping:
                    stopping = True
                    progress.line("stopping at the first failure (use --keep-going to continue past failures)",
                                  err=True)
            elif kind == "idle":
                busy.pop(wid, None)
                idle.append(wid)
    except KeyboardInterrupt:
        progress.line("interrupted: stopping the workers (the cells in flight resume from their last epoch "
                      "when the command is run again)", err=True)
        _stop(procs.values())
        progress.line(progress.summary())
        return 130
    except BaseException:
        _stop(procs.values())
        raise
    for wid, p in procs.items():
        if p.is_alive():
            tasks[wid].put(None)
    for p in procs.values():
        p.join(timeout=60)
    _stop(procs.values())  # one that did not end (workers are not daemonic: the interpreter would wait for it)
    progress.line(progress.summary())
    return 1 if progress.counts["failed"] else 0


# ----------------------------------------------------------------------------------------------------------------
# SLURM through submitit
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What ``LAUNCHER=slurm`` reads (``scripts/grid_runner.py`` maps the environment knobs to these)."""

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
