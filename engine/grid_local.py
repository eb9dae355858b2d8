"""Local grid workers: processes that build the backbone once and run cell after cell on it.

A worker process runs jobs through the entry point's ``main(argv, backbones=cache)`` (``train:main``); each cell
writes the run directory a standalone ``train.py`` writes, and its console output goes to the run directory's
``console.log``. The coordinator (:func:`run_local`) hands out jobs, prints the progress (:mod:`engine.progress`),
stops at the first failure unless ``keep_going``, and on Ctrl-C / an error stops the workers (SIGTERM: each unwinds
its cell, releasing its lock; the cell resumes from its last epoch next time). Workers are not daemonic (a cell's
data loader starts processes of its own); an idle worker whose coordinator died ends by itself.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import queue
import signal
import socket
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.grid_jobs import GridError, Job, resolve, run_job
from engine.locks import DEFAULT_STALE_AFTER_S, remove_lock_of
from engine.progress import Progress

logger = logging.getLogger(__name__)

#: how often (s) an idle worker checks that its coordinator is still alive
WORKER_POLL_S = 2.0


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
