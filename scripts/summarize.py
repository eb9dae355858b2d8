#!/usr/bin/env python
"""Summarise every run under OUTPUT_ROOT from its metrics.json (never from logs).

    python scripts/summarize.py OUTPUT_ROOT

Rows are (dataset, trainer, shots, classes); each metric is shown as mean ± std over the seeds found, with
the population standard deviation (numpy's default, as in the released OGKD result scripts). The table is
printed and written to OUTPUT_ROOT/summary.md and OUTPUT_ROOT/summary.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tabulate import tabulate

METRICS = ("accuracy", "macro_f1", "ece")


def load_runs(root: Path) -> list[dict]:
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        m["_path"] = str(path.parent)
        runs.append(m)
    return runs


def summarize(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        groups[(m["dataset"], m["trainer"], m["shots"], m["subsample"])].append(m)
    header = ["dataset", "trainer", "shots", "classes", "seeds", *METRICS]
    rows = []
    for (dataset, trainer, shots, subsample), ms in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        seeds = sorted(m["seed"] for m in ms)
        cells = []
        for key in METRICS:
            values = np.array([m[key] for m in ms], dtype=float)
            cells.append(f"{values.mean():.2f} ± {values.std():.2f}")
        rows.append([dataset, trainer, "all" if shots < 1 else str(shots), subsample,
                     " ".join(map(str, seeds)), *cells])
    return header, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path)
    args = p.parse_args(argv)
    if not args.output_root.is_dir():
        print(f"error: {args.output_root} is not a folder", file=sys.stderr)
        return 2
    runs = load_runs(args.output_root)
    if not runs:
        print(f"error: no metrics.json under {args.output_root}", file=sys.stderr)
        return 1
    header, rows = summarize(runs)
    table = tabulate(rows, headers=header, tablefmt="github")
    (args.output_root / "summary.md").write_text(table + "\n", encoding="utf-8")
    with open(args.output_root / "summary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    print(table)
    print(f"\n{len(runs)} runs; mean ± population std over seeds; accuracy, macro_f1 and ece in %. "
          f"Written to {args.output_root}/summary.md and summary.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
