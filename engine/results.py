"""A run's result file, ``metrics.json``: written atomically with a checksum of its own content, read back validated.

One definition of "this run is complete" for everything that decides whether to redo a run (the grid scripts, a
Python grid runner) and for everything that reads results (``scripts/summarize.py``):

* :func:`write_metrics` adds ``"checksum": "sha256:<hex>"``, the SHA-256 of the canonical JSON of every other
  key (sorted keys, compact separators, UTF-8), and writes the file atomically (temp file + rename);
* :func:`read_metrics` returns the dict or raises :class:`MetricsError` naming the file and what is wrong with it:
  unreadable, not JSON (e.g. truncated), not an object, a checksum that does not match (edited or damaged), no
  finite ``accuracy``. A file written before checksums existed (no ``"checksum"`` key) is accepted when the rest
  holds;
* :func:`run_is_complete` is ``read_metrics`` as a yes / no, and says why in the log when it is no.

``python -m engine.results RUN_DIR_OR_FILE …`` exits 0 when every argument is a complete run, else prints one
``error: …`` line per bad one and exits 1 (a check for shell scripts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CHECKSUM_KEY = "checksum"


class MetricsError(ValueError):
    """A ``metrics.json`` that cannot be trusted as a finished result (the message names the file and why)."""


def content_checksum(metrics: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over the canonical JSON of ``metrics`` without its ``checksum`` key."""
    body = {k: v for k, v in metrics.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``metrics`` (+ its checksum) to ``path`` atomically; returns what was written."""
    from engine.utils import atomic_write_text  # (lazy: reading needs no torch, so the grid's check is fast)

    record = {k: v for k, v in metrics.items() if k != CHECKSUM_KEY}
    record[CHECKSUM_KEY] = content_checksum(record)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def read_metrics(path: str | Path, *, require_accuracy: bool = True) -> dict[str, Any]:
    """The validated content of a ``metrics.json`` (a run folder is accepted too); :class:`MetricsError` if it
    cannot be trusted. ``require_accuracy`` False leaves the check of the metric values to the caller."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsError(f"{path}: no such file (the run did not finish)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetricsError(f"{path}: unreadable, not valid JSON ({e}): truncated or damaged") from None
    if not isinstance(m, dict):
        raise MetricsError(f"{path}: not a JSON object but {type(m).__name__}")
    if CHECKSUM_KEY in m and m[CHECKSUM_KEY] != content_checksum(m):
        raise MetricsError(f"{path}: checksum mismatch (the file was edited or damaged after it was written)")
    acc = m.get("accuracy")
    if require_accuracy and not (isinstance(acc, int | float) and not isinstance(acc, bool) and math.isfinite(acc)):
        raise MetricsError(f"{path}: no finite accuracy ({acc!r})")
    return m


def run_is_complete(run_dir: str | Path) -> bool:
    """True when ``run_dir/metrics.json`` exists and :func:`read_metrics` accepts it: the one "is this run
    complete" check (the grid runner's skip-if-complete). Callers that act on a bad file call :func:`read_metrics`
    for the reason."""
    try:
        read_metrics(Path(run_dir) / METRICS_FILE)
    except MetricsError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.results PATH …``: 0 if every PATH (run folder or metrics.json) is complete, else 1."""
    status = 0
    for arg in sys.argv[1:] if argv is None else argv:
        try:
            read_metrics(arg)
        except MetricsError as e:
            logger.error("error: %s", e)
            status = 1
    return status


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    sys.exit(main())
