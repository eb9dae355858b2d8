"""Collecting runs: every metrics.json under a folder, read the way the tables need it (never from logs).

Runs are classified by the content of metrics.json, not by their path: ``"subsample": "all"`` is a few-shot run,
``"base"`` / ``"new"`` are the two halves of a base-to-novel run. An unreadable or malformed file is a warning naming
it; of two runs with the same dataset / trainer / backbone / shots / subsample / seed the first in path order is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.results import MetricsError, read_metrics  # no torch: reading needs the standard library
from engine.runfiles import nonfinite_results

METRICS = ("accuracy", "macro_f1", "ece")
SUBSAMPLES = ("all", "base", "new")
ALL_SHOTS = -1  # metrics.json "shots" < 1: the full training set


@dataclass(frozen=True)
class Run:
    """One metrics.json: the identifying fields and the requested metrics it holds (finite numbers only)."""

    path: Path
    dataset: str
    trainer: str
    backbone: str | None
    shots: int  # ALL_SHOTS for the full training set
    seed: int
    subsample: str  # "all" (few-shot), "base" or "new" (base-to-novel)
    values: dict[str, float]
    epochs: int | None = None  # metrics.json "epochs" (0: nothing trained); None when absent
    ablation: str | None = None  # metrics.json "ablation": the ablation point (engine/ablation.py); None when absent


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_run(path: Path, metrics: Sequence[str]) -> tuple[Run | None, list[str]]:
    """A Run from one metrics.json, or None; plus the problems found (each becomes a warning)."""
    try:
        m = read_metrics(path, require_accuracy=False)  # a JSON object whose checksum matches
    except MetricsError as e:
        return None, [str(e).removeprefix(f"{path}: ")]
    diverged = nonfinite_results(m.as_dict())
    if diverged:  # a diverged run is no result in any table (not only in the tables of its non-finite metric)
        return None, [f"non-finite {', '.join(diverged)} (a diverged run): skipped"]
    bad = [k for k in ("dataset", "trainer") if not isinstance(m.get(k), str) or not m[k]]
    bad += [k for k in ("seed", "shots") if not _is_int(m.get(k))]
    if m.get("subsample") not in SUBSAMPLES:
        bad.append("subsample")
    if bad:
        return None, [f"missing or invalid {', '.join(bad)} (need dataset, trainer, seed, shots, "
                      f"subsample ∈ {'/'.join(SUBSAMPLES)})"]
    if m.get("split", "test") != "test":
        return None, [f"split is {m['split']!r}, not 'test'"]
    values, problems = {}, []
    for key in metrics:
        v = m.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            values[key] = float(v)
        else:
            problems.append(f"no finite {key} ({'absent' if v is None else repr(v)}): counted as missing for {key}")
    if not values:
        return None, [f"none of {', '.join(metrics)} is a finite number"]
    backbone = m.get("backbone")
    run = Run(path=path, dataset=m["dataset"], trainer=m["trainer"],
              backbone=str(backbone) if backbone is not None else None,
              shots=m["shots"] if m["shots"] >= 1 else ALL_SHOTS, seed=m["seed"], subsample=m["subsample"],
              values=values, epochs=m["epochs"] if _is_int(m.get("epochs")) else None,
              ablation=m["ablation"] if isinstance(m.get("ablation"), str) and m["ablation"] else None)
    return run, problems


def load_runs(root: Path, metrics: Sequence[str] = METRICS) -> tuple[list[Run], list[str], int]:
    """Every usable metrics.json under ``root``; the warnings (one per problem, naming the file); the file count."""
    paths = sorted(root.rglob("metrics.json"))
    runs: dict[tuple, Run] = {}
    warnings = []
    for path in paths:
        run, problems = _parse_run(path, metrics)
        warnings += [f"{path}: {p}" + ("" if run else "; skipped") for p in problems]
        if run is None:
            continue
        key = (run.dataset, run.trainer, run.backbone, run.shots, run.subsample, run.seed, run.ablation)
        if key in runs:
            warnings.append(f"{path}: same dataset/trainer/backbone/shots/subsample/seed/ablation as {runs[key].path}; "
                            f"skipped (the first in path order is used)")
            continue
        runs[key] = run
    return list(runs.values()), warnings, len(paths)
