"""Progress lines of a grid: ``[i/N]`` per finished cell with its worker, running / failed counts, elapsed time,
ETA, and the closing summary. Used by the local workers (:mod:`engine.grid_local`) and by ``LAUNCHER=slurm --wait``
(:mod:`engine.grid_slurm`)."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.grid_jobs import Cell


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
