#!/usr/bin/env python
"""Summarise every run under OUTPUT_ROOT from its metrics.json (never from logs).

    python scripts/summarize.py OUTPUT_ROOT [--seeds 1 2 3] [--metrics accuracy macro_f1 ece]
                                [--layout datasets|trainers] [--order OGKD BiomedCoOp …]

Runs are classified by the content of metrics.json, not by their path: ``"subsample": "all"`` is a few-shot run,
``"base"`` / ``"new"`` are the two halves of a base-to-novel run. One table per protocol and metric:

* Few-shot: rows = datasets, columns = trainer × K (``CoOp K=16``; ``K=all`` for the full training set).
  Cell = mean ± std over seeds. The Average row is the mean over datasets of the per-dataset means.
* Base-to-novel (one table per K): rows = datasets, three columns per trainer. base / novel = mean ± std over seeds
  of the ``base`` / ``new`` runs; HM = 2·B·N/(B+N) of the two seed-means, not the mean of per-seed HMs (SPEC §3.2).
  A seed counts only when both its base and its new run exist. The Average row is the mean over datasets of the
  dataset base-means and novel-means, and the HM of those two averages, not the mean of the dataset HMs.

Std is the population std (numpy's default, ddof=0), as in the released OGKD result scripts. All metrics are in %.

Expected seeds are ``--seeds`` if given (runs with other seeds are left out, with a note), else every seed found
for that protocol. Incomplete cells are never averaged silently:

* ``63.10 ± 0.40 †(missing 3)``: seed 3 has no run; the value is over the seeds present only.
* ``—``: no run at all.
* ``61.20* (10/11 datasets)`` in the Average row: only the 10 datasets whose cell has every expected seed are
  averaged; the others are left out.

Output: the Markdown tables on stdout and in OUTPUT_ROOT/summary.md; per table a CSV with plain numbers
(``fewshot_<metric>.csv``, ``base2novel_<metric>.csv``; shots as in metrics.json with -1 = all; mean and std in
separate columns, n_seeds, missing_seeds, for base-to-novel missing_base / missing_new (which half of each missing
seed is absent), and for Average rows n_datasets / missing_datasets); and ``summary.csv``, all of those rows in one
long file with ``protocol`` and ``metric`` columns. Only tables with data are written. An unreadable or malformed
metrics.json is skipped with a warning naming the file.

Exit status: 0 tables written; 1 no metrics.json (or no usable run) under OUTPUT_ROOT; 2 OUTPUT_ROOT is not a folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tabulate import tabulate

METRICS = ("accuracy", "macro_f1", "ece")
SUBSAMPLES = ("all", "base", "new")
ALL_SHOTS = -1  # metrics.json "shots" < 1: the full training set
NO_RUN = "—"


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


@dataclass
class Table:
    """One rendered table: a Markdown title, header and rows, the footnote lines and the CSV rows."""

    protocol: str  # "fewshot" or "base2novel"
    metric: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]
    csv_rows: list[dict[str, object]] = field(default_factory=list)

    def markdown(self) -> str:
        table = tabulate(self.rows, headers=self.header, tablefmt="github", disable_numparse=True)
        return "\n".join([f"## {self.title}", "", table, "", *(f"- {n}" for n in self.notes)])


# ---------------------------------------------------------------------------------------------------- loading
def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_run(path: Path, metrics: Sequence[str]) -> tuple[Run | None, list[str]]:
    """A Run from one metrics.json, or None; plus the problems found (each becomes a warning)."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"unreadable ({type(e).__name__}: {e})"]
    if not isinstance(m, dict):
        return None, [f"not a JSON object but {type(m).__name__}"]
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
              values=values)
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
        key = (run.dataset, run.trainer, run.backbone, run.shots, run.subsample, run.seed)
        if key in runs:
            warnings.append(f"{path}: same dataset/trainer/backbone/shots/subsample/seed as {runs[key].path}; "
                            f"skipped (the first in path order is used)")
            continue
        runs[key] = run
    return list(runs.values()), warnings, len(paths)


# ---------------------------------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, numpy's default, as in the released OGKD result scripts)."""
    a = np.asarray(list(values), dtype=float)
    return float(a.mean()), float(a.std())


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2·B·N/(B+N) (SPEC §3.2); 0 when B + N = 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(seeds)))


def _shots(k: int) -> str:
    return "all" if k == ALL_SHOTS else str(k)


def _missing_mark(missing: Sequence[int]) -> str:
    return f" †(missing {_seeds(missing)})" if missing else ""


def _average_text(value: float | None, n_used: int, n_total: int) -> str:
    """``70.00``; ``70.00* (1/2 datasets)`` when only some datasets are complete; ``—* (0/2 datasets)``."""
    text = NO_RUN if value is None else f"{value:.2f}"
    return text if n_used == n_total else f"{text}* ({n_used}/{n_total} datasets)"


def _csv_number(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _sort_key(column: tuple[str, str | None, int]) -> tuple:
    trainer, backbone, shots = column
    return trainer, backbone or "", math.inf if shots == ALL_SHOTS else shots


def _label(trainer: str, backbone: str | None, show_backbone: bool) -> str:
    return f"{trainer} ({backbone or 'unknown backbone'})" if show_backbone else trainer


def _seed_note(expected: Sequence[int], from_cli: bool) -> str:
    return f"seeds {_seeds(expected)}" + (" (--seeds)" if from_cli else " (every seed found)")


# ---------------------------------------------------------------------------------------------------- few-shot
def fewshot_table(runs: Sequence[Run], metric: str, expected: Sequence[int], *, from_cli: bool = False,
                  show_backbone: bool = False) -> Table | None:
    """Rows = datasets, columns = trainer × K, cells mean ± std over ``expected`` seeds; None without data."""
    runs = [r for r in runs if r.subsample == "all"]
    if not any(metric in r.values for r in runs):
        return None
    datasets = sorted({r.dataset for r in runs})
    columns = sorted({(r.trainer, r.backbone, r.shots) for r in runs}, key=_sort_key)
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if metric in r.values:
            values[(r.dataset, r.trainer, r.backbone, r.shots)][r.seed] = r.values[metric]

    header = ["dataset", *(f"{_label(t, b, show_backbone)} K={_shots(k)}" for t, b, k in columns)]
    rows, csv_rows = [], []
    complete_means: dict[tuple, dict[str, float]] = defaultdict(dict)  # column → dataset → mean
    any_missing = any_empty = False
    for dataset in datasets:
        row = [dataset]
        for t, b, k in columns:
            per_seed = values.get((dataset, t, b, k), {})
            present = [s for s in expected if s in per_seed]
            missing = [s for s in expected if s not in per_seed]
            mean = std = None
            if present:
                mean, std = mean_std(per_seed[s] for s in present)
                row.append(f"{mean:.2f} ± {std:.2f}{_missing_mark(missing)}")
                any_missing |= bool(missing)
                if not missing:
                    complete_means[(t, b, k)][dataset] = mean
            else:
                row.append(NO_RUN)
                any_empty = True
            csv_rows.append({"dataset": dataset, "trainer": t, "backbone": b or "", "shots": k,
                             "mean": _csv_number(mean), "std": _csv_number(std), "n_seeds": len(present),
                             "missing_seeds": " ".join(map(str, missing))})
        rows.append(row)

    average = ["Average"]
    any_partial = False
    for t, b, k in columns:
        means = complete_means[(t, b, k)]
        value = float(np.mean(list(means.values()))) if means else None
        any_partial |= len(means) < len(datasets)
        average.append(_average_text(value, len(means), len(datasets)))
        csv_rows.append({"dataset": "Average", "trainer": t, "backbone": b or "", "shots": k,
                         "mean": _csv_number(value), "n_datasets": len(means),
                         "missing_datasets": " ".join(d for d in datasets if d not in means)})
    rows.append(average)

    notes = [f"Cells: mean ± population std (numpy, ddof=0) over {_seed_note(expected, from_cli)}, in %."]
    if any_missing:
        notes.append("†(missing s): no run for those expected seeds; the value is over the seeds present only.")
    if any_empty:
        notes.append(f"{NO_RUN}: no run.")
    notes.append("Average: mean over datasets of the per-dataset means."
                 + (" X* (n/N datasets): only the n of N datasets whose cell has every expected seed are averaged."
                    if any_partial else ""))
    return Table("fewshot", metric, f"Few-shot: {metric} (%)", header, rows, notes, csv_rows)


# ---------------------------------------------------------------------------------------------------- base-to-novel
def base2novel_tables(runs: Sequence[Run], metric: str, expected: Sequence[int], *, from_cli: bool = False,
                      show_backbone: bool = False) -> list[Table]:
    """One table per K: rows = datasets, base / novel / HM per trainer (HM of the seed-means)."""
    runs = [r for r in runs if r.subsample in ("base", "new")]
    tables = []
    for k in sorted({r.shots for r in runs}, key=lambda s: math.inf if s == ALL_SHOTS else s):
        table = _base2novel_table([r for r in runs if r.shots == k], metric, k, expected, from_cli, show_backbone)
        if table is not None:
            tables.append(table)
    return tables


def _base2novel_table(runs: Sequence[Run], metric: str, k: int, expected: Sequence[int], from_cli: bool,
                      show_backbone: bool) -> Table | None:
    if not any(metric in r.values for r in runs):
        return None
    datasets = sorted({r.dataset for r in runs})
    trainers = sorted({(r.trainer, r.backbone) for r in runs}, key=lambda tb: (tb[0], tb[1] or ""))
    halves: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: {"base": {}, "new": {}})
    for r in runs:
        if metric in r.values:
            halves[(r.dataset, r.trainer, r.backbone)][r.subsample][r.seed] = r.values[metric]

    header = ["dataset"]
    for t, b in trainers:
        label = _label(t, b, show_backbone)
        header += [f"{label} base", f"{label} novel", f"{label} HM"]
    rows, csv_rows = [], []
    complete: dict[tuple, dict[str, tuple[float, float]]] = defaultdict(dict)  # trainer → dataset → (B, N)
    any_missing = any_empty = False
    for dataset in datasets:
        row = [dataset]
        for t, b in trainers:
            cell = halves.get((dataset, t, b), {"base": {}, "new": {}})
            base, new = cell["base"], cell["new"]
            paired = [s for s in expected if s in base and s in new]
            missing = [s for s in expected if s not in paired]
            record: dict[str, object] = {"dataset": dataset, "trainer": t, "backbone": b or "", "shots": k}
            if paired:
                (bm, bs), (nm, ns) = mean_std(base[s] for s in paired), mean_std(new[s] for s in paired)
                hm = harmonic_mean(bm, nm)
                mark = _missing_mark(missing)
                row += [f"{bm:.2f} ± {bs:.2f}{mark}", f"{nm:.2f} ± {ns:.2f}{mark}", f"{hm:.2f}{mark}"]
                record.update(base_mean=_csv_number(bm), base_std=_csv_number(bs), novel_mean=_csv_number(nm),
                              novel_std=_csv_number(ns), hm=_csv_number(hm))
                any_missing |= bool(missing)
                if not missing:
                    complete[(t, b)][dataset] = (bm, nm)
            else:
                row += [NO_RUN] * 3
                any_empty = True
            record.update(n_seeds=len(paired), missing_seeds=" ".join(map(str, missing)),
                          missing_base=" ".join(str(s) for s in expected if s not in base),
                          missing_new=" ".join(str(s) for s in expected if s not in new))
            csv_rows.append(record)
        rows.append(row)

    average = ["Average"]
    any_partial = False
    for t, b in trainers:
        pairs = complete[(t, b)]
        n_used = len(pairs)
        any_partial |= n_used < len(datasets)
        record = {"dataset": "Average", "trainer": t, "backbone": b or "", "shots": k, "n_datasets": n_used,
                  "missing_datasets": " ".join(d for d in datasets if d not in pairs)}
        if pairs:
            avg_base = float(np.mean([bn[0] for bn in pairs.values()]))
            avg_novel = float(np.mean([bn[1] for bn in pairs.values()]))
            avg_hm = harmonic_mean(avg_base, avg_novel)
            average += [_average_text(x, n_used, len(datasets)) for x in (avg_base, avg_novel, avg_hm)]
            record.update(base_mean=_csv_number(avg_base), novel_mean=_csv_number(avg_novel), hm=_csv_number(avg_hm))
        else:
            average += [_average_text(None, 0, len(datasets))] * 3
        csv_rows.append(record)
    rows.append(average)

    notes = [f"base / novel: mean ± population std (numpy, ddof=0) over {_seed_note(expected, from_cli)} of the "
             f"base-class and new-class test runs, in %. HM = 2·B·N/(B+N) of the seed-means (not the mean of "
             f"per-seed HMs). A seed counts only when both its base and its new run exist."]
    if any_missing:
        notes.append("†(missing s): those expected seeds lack a base or a new run (the CSV says which); the values "
                     "are over the complete seeds only.")
    if any_empty:
        notes.append(f"{NO_RUN}: no seed with both runs.")
    notes.append("Average: base and novel = mean over datasets of the dataset means; HM = HM of those two averages "
                 "(not the mean of the dataset HMs)."
                 + (" X* (n/N datasets): only the n of N datasets whose cell has every expected seed are averaged."
                    if any_partial else ""))
    title = f"Base-to-novel: {metric} (%), K={_shots(k)}"
    return Table("base2novel", metric, title, header, rows, notes, csv_rows)


# ---------------------------------------------------------------------------------------------------- layouts
def _csv_cell(value: object, std: object = "", missing: object = "") -> str:
    """A Markdown cell from CSV strings: ``70.00 ± 1.00 †(missing 3)``, ``70.00``, or ``—``."""
    if value in ("", None):
        return NO_RUN
    text = f"{float(value):.2f}" + (f" ± {float(std):.2f}" if std not in ("", None) else "")
    return text + (_missing_mark([int(x) for x in str(missing).split()]) if missing else "")


def by_trainer(table: Table, order: Sequence[str] = ()) -> list[Table]:
    """The same cells with trainers as rows: one table per dataset (and one for the Average row).

    Few-shot: columns = K; base-to-novel: columns = base / novel / HM. Rows follow ``order`` (trainer names), then
    the others alphabetically. Built from ``table.csv_rows``, so the numbers are those of ``table``."""
    show_backbone = len({r["backbone"] for r in table.csv_rows}) > 1

    def label(row: dict[str, object]) -> str:
        return _label(str(row["trainer"]), str(row["backbone"]) or None, show_backbone)

    datasets = list(dict.fromkeys(str(r["dataset"]) for r in table.csv_rows))
    if len(datasets) == 2 and "Average" in datasets:  # one dataset: its Average row repeats it
        datasets.remove("Average")
    rank = {name: i for i, name in enumerate(order)}
    tables = []
    for dataset in datasets:
        by_label: dict[str, list[dict[str, object]]] = defaultdict(list)
        for r in table.csv_rows:
            if r["dataset"] == dataset:
                by_label[label(r)].append(r)
        labels = sorted(by_label, key=lambda lab: (rank.get(lab.split(" (")[0], len(rank)), lab))
        if table.protocol == "fewshot":
            shots = sorted({int(r["shots"]) for rs in by_label.values() for r in rs},
                           key=lambda k: math.inf if k == ALL_SHOTS else k)
            header = ["trainer", *(f"K={_shots(k)}" for k in shots)]
            rows = []
            for lab in labels:
                cells = {int(r["shots"]): _csv_cell(r.get("mean"), r.get("std"), r.get("missing_seeds"))
                         for r in by_label[lab]}
                rows.append([lab, *(cells.get(k, NO_RUN) for k in shots)])
        else:
            header = ["trainer", "base", "novel", "HM"]
            rows = []
            for lab in labels:
                r = by_label[lab][0]
                miss = r.get("missing_seeds", "")
                rows.append([lab, _csv_cell(r.get("base_mean"), r.get("base_std"), miss),
                             _csv_cell(r.get("novel_mean"), r.get("novel_std"), miss),
                             _csv_cell(r.get("hm"), "", miss)])
        tables.append(Table(table.protocol, table.metric, f"{table.title} — {dataset}", header, rows,
                            table.notes, []))
    return tables


# ---------------------------------------------------------------------------------------------------- driver
def build_tables(runs: Sequence[Run], metrics: Sequence[str], seeds: Sequence[int] | None = None) -> list[Table]:
    """Every table with data: few-shot tables first, then base-to-novel, each in ``metrics`` order."""
    show_backbone = len({r.backbone for r in runs}) > 1
    few = [r for r in runs if r.subsample == "all"]
    b2n = [r for r in runs if r.subsample != "all"]
    tables: list[Table] = []
    if few:
        expected = sorted(seeds) if seeds else sorted({r.seed for r in few})
        for metric in metrics:
            t = fewshot_table(few, metric, expected, from_cli=bool(seeds), show_backbone=show_backbone)
            tables += [t] if t else []
    if b2n:
        expected = sorted(seeds) if seeds else sorted({r.seed for r in b2n})
        for metric in metrics:
            tables += base2novel_tables(b2n, metric, expected, from_cli=bool(seeds), show_backbone=show_backbone)
    return tables


def _write_csv(path: Path, rows: Sequence[dict[str, object]], leading: Sequence[str] = ()) -> None:
    fields = list(leading)
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path, help="folder searched recursively for metrics.json")
    p.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found, per protocol)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS), help="metrics to tabulate")
    p.add_argument("--layout", choices=("datasets", "trainers"), default="datasets",
                   help="Markdown layout: rows = datasets (default), or rows = trainers with one table per dataset "
                        "(columns K, or base / novel / HM); the CSV files are the same")
    p.add_argument("--order", nargs="+", default=[], metavar="TRAINER",
                   help="with --layout trainers: row order of these trainers (the others follow alphabetically)")
    args = p.parse_args(argv)
    root: Path = args.output_root
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    metrics = list(dict.fromkeys(args.metrics))
    seeds = sorted(set(args.seeds)) if args.seeds else None

    runs, warnings, n_files = load_runs(root, metrics)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if n_files == 0:
        print(f"error: no metrics.json under {root}", file=sys.stderr)
        return 1
    if seeds:
        other = sorted({r.seed for r in runs} - set(seeds))
        if other:
            print(f"note: left out {sum(r.seed in other for r in runs)} runs with seeds {_seeds(other)} "
                  f"(not in --seeds)", file=sys.stderr)
        runs = [r for r in runs if r.seed in seeds]
    tables = build_tables(runs, metrics, seeds)
    if not tables:
        print(f"error: no usable run under {root} ({n_files} metrics.json found, none with the requested "
              f"metrics{' and seeds' if seeds else ''})", file=sys.stderr)
        return 1

    shown = tables
    if args.layout == "trainers":
        unknown = [t for t in args.order if t not in {r.trainer for r in runs}]
        if unknown:
            print(f"warning: --order names trainers with no run: {', '.join(unknown)}", file=sys.stderr)
        shown = [pivot for t in tables for pivot in by_trainer(t, args.order)]
    text = "\n\n".join(t.markdown() for t in shown) + "\n"
    (root / "summary.md").write_text(text, encoding="utf-8")
    written = ["summary.md"]
    by_file: dict[str, list[dict[str, object]]] = defaultdict(list)
    for t in tables:
        by_file[f"{t.protocol}_{t.metric}.csv"] += t.csv_rows
    for name, rows in by_file.items():
        _write_csv(root / name, rows)
        written.append(name)
    _write_csv(root / "summary.csv", [{"protocol": t.protocol, "metric": t.metric, **r}
                                      for t in tables for r in t.csv_rows])
    written.append("summary.csv")
    print(text, end="")
    print(f"\n{len(runs)} runs; wrote {', '.join(written)} to {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
