"""Lock files that claim a run directory for one process (the grid runner's cells).

A lock (:data:`LOCK_NAME` in the run directory) records host, pid, the process's start time, an owner name and a
time stamp; it is created atomically (``O_EXCL``) and its time stamp is refreshed while held (the heartbeat). A lock
is dead when its process is gone (same host; a pid reused by another process does not count), when its heartbeat
is older than ``stale_after_s`` (another host), or when its owner is the claimant itself after a SLURM requeue;
a dead lock is taken over under a guard file, so two claimants never both win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = "grid.lock"
#: a lock from another host whose heartbeat is older than this is taken to be dead (seconds)
DEFAULT_STALE_AFTER_S = 600.0
HEARTBEAT_S = 30.0


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None (no /proc, no process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of process ``pid``, to tell it from a later process with its pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped (its parent died with it): dead
        return False
    now = fields[19] if fields and len(fields) > 19 else None
    return start is None or now is None or now == start


def describe_holder(record: dict[str, Any]) -> str:
    since = datetime.datetime.fromtimestamp(float(record.get("time", 0))).strftime("%Y-%m-%d %H:%M:%S")
    return f"{record.get('host', '?')} pid {record.get('pid', '?')} ({record.get('owner', '?')}) since {since}"


@dataclasses.dataclass
class CellLock:
    """A held lock (release it with :meth:`release`); a thread refreshes its time stamp (the heartbeat)."""

    path: Path
    token: str
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def start_heartbeat(self, every_s: float = HEARTBEAT_S) -> None:
        def beat() -> None:
            while not self._stop.wait(every_s):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        threading.Thread(target=beat, daemon=True, name=f"heartbeat {self.path.parent.name}").start()

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()


def claim(run_dir: str | Path, owner: str, *, stale_after_s: float = DEFAULT_STALE_AFTER_S
          ) -> CellLock | dict[str, Any]:
    """Claim ``run_dir`` for this process: a :class:`CellLock`, or the record of the live holder of its lock.

    ``owner`` names the claimant across restarts (a requeued SLURM task has the same owner and takes its own lock
    back at once)."""
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    record = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
              "owner": owner, "time": time.time(), "token": token}
    text = json.dumps(record)
    held: Any = None
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                raw = path.read_bytes()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            try:
                held = json.loads(raw)
            except ValueError:
                held = None
            if held is None:  # being written right now, or left half-written long ago
                if age < 10:
                    time.sleep(0.2)
                    continue
            elif _holder_alive(held, owner, age, stale_after_s):
                return held
            if _take_over(path, raw, text):
                logger.info("took over the stale lock of %s (%s)", run_dir,
                            describe_holder(held) if held else "unreadable")
                return CellLock(path, token)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return CellLock(path, token)
    return held if isinstance(held, dict) else {"host": "?", "pid": "?", "owner": "unreadable lock", "time": 0}


def _holder_alive(held: dict[str, Any], owner: str, age: float, stale_after_s: float) -> bool:
    if held.get("owner") == owner and owner.startswith("slurm:"):
        return False  # our own task before its requeue
    if held.get("host") == socket.gethostname():
        pid = held.get("pid")
        return isinstance(pid, int) and pid > 0 and _pid_alive(pid, held.get("proc_start"))
    return age < stale_after_s


def remove_lock_of(run_dir: Path, pid: int) -> None:
    """Remove ``run_dir``'s lock if process ``pid`` of this host (a worker that died) holds it."""
    path = run_dir / LOCK_NAME
    with contextlib.suppress(OSError, ValueError):
        held = json.loads(path.read_text())
        if held.get("pid") == pid and held.get("host") == socket.gethostname():
            path.unlink()


def _take_over(path: Path, seen: bytes, text: str) -> bool:
    """Replace the stale lock ``path`` (still holding ``seen``) by ours; one claimant at a time (a guard file)."""
    guard = path.with_name(LOCK_NAME + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - guard.stat().st_mtime > 60:  # a claimant died while taking over
                guard.unlink()
        return False
    try:
        if path.read_bytes() != seen:
            return False
        tmp = path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return True
    except FileNotFoundError:
        return False
    finally:
        guard.unlink(missing_ok=True)
