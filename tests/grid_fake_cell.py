"""A stand-in for ``train:main`` in the grid runner's tests (no torch): writes a metrics.json, fails, dies or starts a
process of its own (as a data loader with workers does)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any


def main(argv: list[str], *, backbones: dict[Any, Any]) -> int:
    out = Path(argv[argv.index("--output-dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    backbones["calls"] = backbones.get("calls", 0) + 1  # what this worker process has run before
    print(f"cell {out.name}: call {backbones['calls']} in process {os.getpid()}")
    if "--sleep" in argv:
        time.sleep(float(argv[argv.index("--sleep") + 1]))
    if "--fail" in argv:
        print("error: something went wrong")
        return 1
    if "--child" in argv:
        child = multiprocessing.Process(target=os.getpid)
        child.start()
        child.join()
        print(f"child process exit code {child.exitcode}")
    if "--die" in argv:
        os.kill(os.getpid(), signal.SIGKILL)
    (out / "metrics.json").write_text(f'{{"accuracy": {backbones["calls"]}.0}}')
    return 0
