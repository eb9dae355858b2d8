"""Is a run complete? One definition for everything that decides whether to redo a run (the grid scripts, the
Python grid runner) and for everything that reads results (``scripts/summarize.py``): its ``metrics.json`` reads
as a :class:`engine.runfiles.RunMetrics` (:func:`read_metrics`: a JSON object, its checksum matching, its keys of
the schema's types, a finite ``accuracy``, no NaN or infinite ``macro_f1`` / ``ece`` / per-class accuracy).

The file's schema, writer and reader live in :mod:`engine.runfiles`; they are re-exported here, where callers
have always imported them.

``python -m engine.results RUN_DIR_OR_FILE …`` exits 0 when every argument is a complete run, else prints one
``error: …`` line per bad one and exits 1 (a check for shell scripts).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from engine.runfiles import (
    CHECKSUM_KEY,
    METRICS_FILE,
    MetricsError,
    RunMetrics,
    content_checksum,
    read_metrics,
    write_metrics,
)

__all__ = ["CHECKSUM_KEY", "METRICS_FILE", "MetricsError", "RunMetrics", "content_checksum", "main", "read_metrics",
           "run_is_complete", "write_metrics"]

logger = logging.getLogger(__name__)


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
