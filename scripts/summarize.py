#!/usr/bin/env python
"""Summarise every run under OUTPUT_ROOT from its metrics.json (never from logs).

    python scripts/summarize.py OUTPUT_ROOT [--seeds 1 2 3] [--metrics accuracy macro_f1 ece]
                                [--layout datasets|trainers|paper] [--order OGKD BiomedCoOp …]
                                [--format md,csv,latex,json]

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

Training-free methods (few-shot). A trainer whose every few-shot run has ``"epochs": 0`` in metrics.json and, on
each dataset, the same value of every tabulated metric in all its runs (whatever K and seed; equal to 1e-4; at least
two runs on some dataset) learns nothing (ZeroshotCLIP): the Markdown and LaTeX tables show it once, without a fake
``± 0.00`` — one column ``ZeroshotCLIP (no training)`` in the datasets layout, one row with the value in every K
column in the trainers layout, one column in every K table of the paper layout — and a footnote says over how many
runs (which K, which seeds) the value is identical. Its Average is over the datasets with a run. A trainer with
0 epochs whose runs differ (LinearProbe and Tip-Adapter fit the shots without epochs) is shown per K like any
trainer. The CSV and JSON files keep one row per K, as for every trainer.

Layouts (``--layout``, Markdown and LaTeX only; the CSV and JSON files do not depend on it):

* ``datasets`` (default): the tables above.
* ``trainers``: the same cells with trainers as rows, one table per dataset (and one for the Average row, unless
  there is a single dataset, its incomplete averages marked ``X*`` as above); columns K, or base / novel / HM.
  Numbers as in the CSV (rounded to 4 decimals, then printed with 2).
* ``paper``: few-shot, one table per K with rows = datasets (+ Average) and columns = trainers; base-to-novel, as in
  ``datasets`` (already one table per K, each trainer's column split base / novel / HM).
* ``backbones``: rows = trainers, columns = backbones (the ``backbone`` field of metrics.json): few-shot, one table per
  K and dataset, and per K one for the Average over datasets; base-to-novel, per dataset (and the Average) base /
  novel / HM per backbone (``scripts/_layout_backbones.py``).

``--order T1 T2 …`` puts these trainers first, in that order, in every layout (columns or rows); the others follow
alphabetically. It never changes the CSV or JSON files.

Best values in LaTeX (``\\textbf{…}``): best = highest mean for accuracy and macro_f1, LOWEST for ece. Trainers
compete for the same dataset and setting: in the datasets layout, within each row, among the columns with the same
K (few-shot; a training-free column competes at every K and is bold where it is the best at some K) or the same
base / novel / HM part (base-to-novel); in the trainers layout, within each column (one K, or base / novel / HM) of
each per-dataset table; in the paper layout, within each row of each per-K table. The Average row competes like the
others. Compared are the printed means (2 decimals; ties are all bold); an Average over only some datasets
(``X*``) and ``—`` never compete, and a group with fewer than two contenders bolds nothing.

Output (``--format``, a comma-separated subset of md, csv, latex, json; default ``md,csv``):

* ``md``: the Markdown tables on stdout and in OUTPUT_ROOT/summary.md.
* ``csv``: per table a CSV with plain numbers (``fewshot_<metric>.csv``, ``base2novel_<metric>.csv``; shots as in
  metrics.json with -1 = all; mean and std in separate columns, n_seeds, missing_seeds, for base-to-novel
  missing_base / missing_new (which half of each missing seed is absent), and for Average rows n_datasets /
  missing_datasets); and ``summary.csv``, all of those rows in one long file with ``protocol`` and ``metric``
  columns.
* ``latex``: OUTPUT_ROOT/summary.tex, one booktabs ``table`` per Markdown table (needs ``\\usepackage{booktabs}``):
  ``\\caption`` with protocol, metric, layout, seeds and the bold rule; cells ``63.10 $\\pm$ 0.40``, missing seeds
  ``$^\\dagger$(missing 3)``, ``---`` for no run, ``61.20$^{*}$ (10/11 datasets)``; the footnotes under the tabular.
  Names are escaped (``_ % & # $ { } ~ ^ \\``).
* ``json``: OUTPUT_ROOT/summary.json, the rows of summary.csv as a list of records with the same keys (protocol,
  metric, dataset, trainer, backbone, shots, mean, std, n_seeds, missing_seeds, …): numbers as JSON numbers rounded
  as in the CSV, an empty CSV field as null (backbone too), missing_seeds / missing_base / missing_new as lists of
  seeds and missing_datasets as a list of names.

``--plots`` also draws the figures (``scripts/plot.py``: few-shot curves, base / novel / HM bars, reliability
diagrams, confusion matrices; PNG and PDF in OUTPUT_ROOT/figures) and writes OUTPUT_ROOT/report.md: the Markdown
tables followed by every PNG figure embedded (``![…](figures/….png)``). A figure that cannot be drawn is a warning;
the tables are written all the same.

Only tables with data are written. An unreadable or malformed metrics.json is skipped with a warning naming the file.

Exit status: 0 tables written; 1 no metrics.json (or no usable run) under OUTPUT_ROOT; 2 OUTPUT_ROOT is not a folder
(or a bad option).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from tabulate import tabulate

from engine.results import MetricsError, read_metrics  # noqa: E402  (no torch: reading needs the standard library)

METRICS = ("accuracy", "macro_f1", "ece")
LOWER_IS_BETTER = frozenset({"ece"})
SUBSAMPLES = ("all", "base", "new")
ALL_SHOTS = -1  # metrics.json "shots" < 1: the full training set
NO_RUN = "—"
AVERAGE = "Average"
FORMATS = ("md", "csv", "latex", "json")
LAYOUTS = ("datasets", "trainers", "paper", "backbones")
IDENTICAL = 1e-4  # a training-free trainer's runs agree to this (in %)
NO_TRAINING = "no training"
PARTS = ("base", "novel", "HM")


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


@dataclass(frozen=True)
class Cell:
    """One displayed number: a mean (None: no run), its std (None: shown without ±), the expected seeds it lacks,
    and for an Average over only some datasets (n_used, n_total)."""

    mean: float | None = None
    std: float | None = None
    missing: tuple[int, ...] = ()
    partial: tuple[int, int] | None = None

    def markdown(self) -> str:
        if self.partial is not None:
            return _average_text(self.mean, *self.partial)
        if self.mean is None:
            return NO_RUN
        text = f"{self.mean:.2f}" + ("" if self.std is None else f" ± {self.std:.2f}")
        return text + _missing_mark(self.missing)

    def latex(self, bold: bool = False) -> str:
        text = "---" if self.mean is None else f"{self.mean:.2f}"
        if bold and self.mean is not None:
            text = f"\\textbf{{{text}}}"
        if self.partial is not None:
            return f"{text}$^{{*}}$ ({self.partial[0]}/{self.partial[1]} datasets)"
        if self.mean is None:
            return text
        if self.std is not None:
            text += f" $\\pm$ {self.std:.2f}"
        return text + (f" $^\\dagger$(missing {_seeds(self.missing)})" if self.missing else "")

    def printed(self) -> float | None:
        """The mean as printed, when the cell competes for the best value (not ``—``, not a partial Average)."""
        return None if self.mean is None or self.partial is not None else float(f"{self.mean:.2f}")


@dataclass
class Table:
    """One rendered table: title, header, row labels and cells, the footnote lines, and what LaTeX needs (which
    cells compete for the best value, a two-level header, the caption's layout and bold rule)."""

    protocol: str  # "fewshot" or "base2novel"
    metric: str
    title: str
    header: list[str]
    labels: list[str]
    cells: list[list[Cell]]
    notes: list[str]
    contests: list[list[tuple[int, int]]] = field(default_factory=list)  # (row, column) groups compared for bold
    layout: str = ""  # caption: what rows and columns are
    seed_note: str = ""
    bold_rule: str = ""
    groups: list[tuple[str, str]] | None = None  # per data column (top header, sub header) for a two-level header
    average_row: bool = False  # the last row is the Average of the datasets above it

    @property
    def rows(self) -> list[list[str]]:
        return [[label, *(c.markdown() for c in row)] for label, row in zip(self.labels, self.cells)]

    def markdown(self) -> str:
        table = tabulate(self.rows, headers=self.header, tablefmt="github", disable_numparse=True)
        return "\n".join([f"## {self.title}", "", table, "", *(f"- {n}" for n in self.notes)])

    def best(self) -> set[tuple[int, int]]:
        """The cells printed bold: per contest, those whose printed mean is the best (lowest for ece)."""
        pick = min if self.metric in LOWER_IS_BETTER else max
        bold: set[tuple[int, int]] = set()
        for contest in self.contests:
            scored = [(pos, self.cells[pos[0]][pos[1]].printed()) for pos in contest]
            scored = [(pos, v) for pos, v in scored if v is not None]
            if len(scored) >= 2:
                top = pick(v for _, v in scored)
                bold |= {pos for pos, v in scored if v == top}
        return bold

    def latex(self, number: int = 1) -> str:
        bold = self.best()
        better = "lowest" if self.metric in LOWER_IS_BETTER else "highest"
        caption = (f"{self.title}. {self.layout}. Cells: mean ± population std over {self.seed_note}. "
                   f"Bold: the {better} mean {self.bold_rule}.")
        lines = ["\\begin{table}[htbp]", "\\centering", f"\\caption{{{_tex(caption)}}}",
                 f"\\label{{tab:summary-{number}}}", f"\\begin{{tabular}}{{l{'c' * (len(self.header) - 1)}}}",
                 "\\toprule"]
        header = self.header
        if self.groups:
            top, rules, col = [""], [], 2
            spans: list[list] = []
            for group, _ in self.groups:
                if spans and spans[-1][0] == group:
                    spans[-1][1] += 1
                else:
                    spans.append([group, 1])
            for group, span in spans:
                top.append(f"\\multicolumn{{{span}}}{{c}}{{{_tex(group)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
                col += span
            lines += [" & ".join(top) + " \\\\", " ".join(rules)]
            header = [self.header[0], *(sub for _, sub in self.groups)]
        lines += [" & ".join(_tex(h) for h in header) + " \\\\", "\\midrule"]
        for i, (label, row) in enumerate(zip(self.labels, self.cells)):
            if self.average_row and i == len(self.labels) - 1 and i > 0:
                lines.append("\\midrule")
            lines.append(" & ".join([_tex(label), *(c.latex((i, j) in bold) for j, c in enumerate(row))]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.notes:
            lines += ["\\par\\smallskip", "{\\footnotesize", *(f"{_tex(n)}\\par" for n in self.notes), "}"]
        lines.append("\\end{table}")
        return "\n".join(lines)


@dataclass
class Grid:
    """The numbers of one protocol × metric (× K for base-to-novel), before any layout.

    ``cells[(row, trainer, backbone, key)]`` with row = a dataset or ``AVERAGE`` and key = K (few-shot) or base /
    novel / HM (base-to-novel); ``free[(trainer, backbone)][row]``: the single cell of a training-free trainer."""

    protocol: str
    metric: str
    title: str
    datasets: list[str]
    columns: list[tuple]  # few-shot (trainer, backbone, K); base-to-novel (trainer, backbone); alphabetical
    cells: dict[tuple, Cell]
    notes: list[str]
    csv_rows: list[dict[str, object]]
    seed_note: str
    show_backbone: bool
    free: dict[tuple[str, str | None], dict[str, Cell]] = field(default_factory=dict)

    def cell(self, row: str, trainer: str, backbone: str | None, key: object) -> Cell:
        if (trainer, backbone) in self.free:
            return self.free[(trainer, backbone)].get(row, Cell())
        return self.cells.get((row, trainer, backbone, key), Cell())

    def trainers(self, order: Sequence[str] = ()) -> list[tuple[str, str | None]]:
        """The trainers (with backbone) in display order: ``order`` first, then alphabetically."""
        rank = _ranker(order)
        return sorted({c[:2] for c in self.columns}, key=lambda tb: (rank(tb[0]), tb[0], tb[1] or ""))

    def shots(self) -> list[int]:
        return sorted({c[2] for c in self.columns}, key=_shot_key)

    def label(self, trainer: str, backbone: str | None) -> str:
        return _label(trainer, backbone, self.show_backbone)


# ---------------------------------------------------------------------------------------------------- loading
def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_run(path: Path, metrics: Sequence[str]) -> tuple[Run | None, list[str]]:
    """A Run from one metrics.json, or None; plus the problems found (each becomes a warning)."""
    try:
        m = read_metrics(path, require_accuracy=False)  # a JSON object whose checksum matches
    except MetricsError as e:
        return None, [str(e).removeprefix(f"{path}: ")]
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
              values=values, epochs=m["epochs"] if _is_int(m.get("epochs")) else None)
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


def _seed_span(seeds: Iterable[int]) -> str:
    """``seed 1``, ``seeds 1–3`` (consecutive), ``seeds 1, 3``."""
    s = sorted(set(seeds))
    if len(s) == 1:
        return f"seed {s[0]}"
    if len(s) >= 3 and s == list(range(s[0], s[-1] + 1)):
        return f"seeds {s[0]}–{s[-1]}"
    return f"seeds {_seeds(s)}"


def _shots(k: int) -> str:
    return "all" if k == ALL_SHOTS else str(k)


def _shot_key(k: int) -> float:
    return math.inf if k == ALL_SHOTS else k


def _missing_mark(missing: Sequence[int]) -> str:
    return f" †(missing {_seeds(missing)})" if missing else ""


def _average_text(value: float | None, n_used: int, n_total: int) -> str:
    """``70.00``; ``70.00* (1/2 datasets)`` when only some datasets are complete; ``—* (0/2 datasets)``."""
    text = NO_RUN if value is None else f"{value:.2f}"
    return text if n_used == n_total else f"{text}* ({n_used}/{n_total} datasets)"


def _average_cell(value: float | None, n_used: int, n_total: int) -> Cell:
    return Cell(mean=value, partial=None if n_used == n_total else (n_used, n_total))


def _sort_key(column: tuple[str, str | None, int]) -> tuple:
    trainer, backbone, shots = column
    return trainer, backbone or "", _shot_key(shots)


def _ranker(order: Sequence[str]):
    """Sort key: a trainer's first position in ``order`` (a repeated name keeps its first), the others after it."""
    rank: dict[str, int] = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return lambda trainer: rank.get(trainer, len(rank))


def _label(trainer: str, backbone: str | None, show_backbone: bool) -> str:
    return f"{trainer} ({backbone or 'unknown backbone'})" if show_backbone else trainer


def _seed_note(expected: Sequence[int], from_cli: bool) -> str:
    return f"seeds {_seeds(expected)}" + (" (--seeds)" if from_cli else " (every seed found)")


_TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "%": r"\%", "#": r"\#",
        "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$",
        "±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "–": "--", "·": r"$\cdot$", "∈": r"$\in$", "…": r"\ldots{}",
        "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "§": r"\S{}"}


def _tex(text: str) -> str:
    """Plain text (names, titles, footnotes) as LaTeX text: specials escaped, the symbols used here as commands."""
    return "".join(_TEX.get(c, c) for c in text)


# ---------------------------------------------------------------------------------------------------- few-shot
def training_free(runs: Sequence[Run], metrics: Sequence[str],
                  show_backbone: bool = False) -> tuple[set[tuple[str, str | None]], list[str]]:
    """The few-shot trainers (with backbone) that learn nothing: every run has epochs 0 and, per dataset, the same
    value (to ``IDENTICAL``) of each of ``metrics`` in all runs, with at least two runs on some dataset. (A trainer
    with 0 epochs whose runs differ learns from the shots without epochs, e.g. LinearProbe: shown like any other.)
    The second value is kept for callers: no warnings are produced."""
    by_trainer: dict[tuple[str, str | None], list[Run]] = defaultdict(list)
    for r in runs:
        if r.subsample == "all":
            by_trainer[(r.trainer, r.backbone)].append(r)
    free, warnings = set(), []
    for (t, b), rs in sorted(by_trainer.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        if any(r.epochs != 0 for r in rs) or max(Counter(r.dataset for r in rs).values()) < 2:
            continue  # trained, or a single run per dataset: nothing shows that its results do not vary
        differ = any(max(vals) - min(vals) > IDENTICAL
                     for dataset in {r.dataset for r in rs} for m in metrics
                     if (vals := [r.values[m] for r in rs if r.dataset == dataset and m in r.values]))
        if not differ:
            free.add((t, b))
    return free, warnings


def _runs_text(got: Sequence[tuple[int, int]]) -> tuple[str, str]:
    """``("15 runs", "(K ∈ {1, 2, 4, 8, 16}, seeds 1–3)")`` for (K, seed) pairs."""
    ks = sorted({k for k, _ in got}, key=_shot_key)
    return (f"{len(got)} run{'s' if len(got) != 1 else ''}",
            f"(K ∈ {{{', '.join(map(_shots, ks))}}}, {_seed_span(s for _, s in got)})")


def _free_note(label: str, got: dict[str, list[tuple[int, int]]], n_datasets: int, partial: bool) -> str:
    """The footnote of a training-free trainer: over which runs its one value per dataset is identical."""
    texts = {d: _runs_text(g) for d, g in got.items()}
    note = f"{label} learns nothing (epochs 0 in every run): "
    if n_datasets == 1:
        count, detail = next(iter(texts.values()))
        note += f"one value, identical over its {count} {detail}."
    elif len(set(texts.values())) == 1 and not partial:
        count, detail = next(iter(texts.values()))
        note += f"one value per dataset, identical over its {count} on each dataset {detail}."
    else:
        note += "one value per dataset, identical over its runs on each: " + "; ".join(
            f"{d} {count} {detail}" for d, (count, detail) in texts.items()) + "."
    return note + (" Its Average is over the datasets with a run." if partial else "")


def fewshot_grid(runs: Sequence[Run], metric: str, expected: Sequence[int], *, from_cli: bool = False,
                 show_backbone: bool = False, free: Collection[tuple[str, str | None]] = ()) -> Grid | None:
    """Datasets × (trainer, K) cells, mean ± std over ``expected`` seeds, and the Average row; None without data.

    Trainers in ``free`` (see ``training_free``) also get one cell per dataset, shown instead of their K cells."""
    runs = [r for r in runs if r.subsample == "all"]
    if not any(metric in r.values for r in runs):
        return None
    datasets = sorted({r.dataset for r in runs})
    columns = sorted({(r.trainer, r.backbone, r.shots) for r in runs}, key=_sort_key)
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in runs:
        if metric in r.values:
            values[(r.dataset, r.trainer, r.backbone, r.shots)][r.seed] = r.values[metric]

    cells: dict[tuple, Cell] = {}
    csv_rows: list[dict[str, object]] = []
    complete_means: dict[tuple, dict[str, float]] = defaultdict(dict)  # column → dataset → mean
    for dataset in datasets:
        for t, b, k in columns:
            per_seed = values.get((dataset, t, b, k), {})
            present = [s for s in expected if s in per_seed]
            missing = [s for s in expected if s not in per_seed]
            mean = std = None
            if present:
                mean, std = mean_std(per_seed[s] for s in present)
                cells[(dataset, t, b, k)] = Cell(mean, std, tuple(missing))
                if not missing:
                    complete_means[(t, b, k)][dataset] = mean
            else:
                cells[(dataset, t, b, k)] = Cell()
            csv_rows.append({"dataset": dataset, "trainer": t, "backbone": b or "", "shots": k, "mean": mean,
                             "std": std, "n_seeds": len(present), "missing_seeds": missing})
    for t, b, k in columns:
        means = complete_means[(t, b, k)]
        value = float(np.mean(list(means.values()))) if means else None
        cells[(AVERAGE, t, b, k)] = _average_cell(value, len(means), len(datasets))
        csv_rows.append({"dataset": AVERAGE, "trainer": t, "backbone": b or "", "shots": k, "mean": value,
                         "n_datasets": len(means), "missing_datasets": [d for d in datasets if d not in means]})

    free_cells: dict[tuple[str, str | None], dict[str, Cell]] = {}
    free_notes = []
    for t, b in dict.fromkeys(c[:2] for c in columns):
        if (t, b) not in free:
            continue
        got: dict[str, list[tuple[int, int]]] = {}
        one: dict[str, Cell] = {}
        for dataset in datasets:
            pairs = [(k, s, v) for (d, tt, bb, k), per_seed in values.items() if (d, tt, bb) == (dataset, t, b)
                     for s, v in per_seed.items()]
            if pairs:
                got[dataset] = sorted((k, s) for k, s, _ in pairs)
                one[dataset] = Cell(mean=float(np.mean([v for _, _, v in pairs])))
            else:
                one[dataset] = Cell()
        if not got:  # no run with this metric: shown per K (all —) like any trainer
            continue
        with_run = [one[d].mean for d in got]
        one[AVERAGE] = _average_cell(float(np.mean(with_run)), len(with_run), len(datasets))
        free_cells[(t, b)] = one
        free_notes.append(_free_note(_label(t, b, show_backbone), got, len(datasets), len(got) < len(datasets)))

    shown = [(key[0], c) for key, c in cells.items() if key[1:3] not in free_cells]
    shown += [(row, c) for one in free_cells.values() for row, c in one.items()]
    any_missing = any(c.missing for row, c in shown if row != AVERAGE)
    any_empty = any(c.mean is None for row, c in shown if row != AVERAGE)
    any_partial = any(c.partial is not None for row, c in shown if row == AVERAGE)
    notes = [f"Cells: mean ± population std (numpy, ddof=0) over {_seed_note(expected, from_cli)}, in %."]
    if any_missing:
        notes.append("†(missing s): no run for those expected seeds; the value is over the seeds present only.")
    if any_empty:
        notes.append(f"{NO_RUN}: no run.")
    notes.append("Average: mean over datasets of the per-dataset means."
                 + (" X* (n/N datasets): only the n of N datasets whose cell has every expected seed are averaged."
                    if any_partial else ""))
    notes += free_notes
    return Grid("fewshot", metric, f"Few-shot: {metric} (%)", datasets, columns, cells, notes, csv_rows,
                _seed_note(expected, from_cli), show_backbone, free_cells)


# ---------------------------------------------------------------------------------------------------- base-to-novel
def base2novel_grids(runs: Sequence[Run], metric: str, expected: Sequence[int], *, from_cli: bool = False,
                     show_backbone: bool = False) -> list[Grid]:
    """One grid per K: datasets × trainers, base / novel / HM per trainer (HM of the seed-means)."""
    runs = [r for r in runs if r.subsample in ("base", "new")]
    grids = []
    for k in sorted({r.shots for r in runs}, key=_shot_key):
        grid = _base2novel_grid([r for r in runs if r.shots == k], metric, k, expected, from_cli, show_backbone)
        if grid is not None:
            grids.append(grid)
    return grids


def _base2novel_grid(runs: Sequence[Run], metric: str, k: int, expected: Sequence[int], from_cli: bool,
                     show_backbone: bool) -> Grid | None:
    if not any(metric in r.values for r in runs):
        return None
    datasets = sorted({r.dataset for r in runs})
    trainers = sorted({(r.trainer, r.backbone) for r in runs}, key=lambda tb: (tb[0], tb[1] or ""))
    halves: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: {"base": {}, "new": {}})
    for r in runs:
        if metric in r.values:
            halves[(r.dataset, r.trainer, r.backbone)][r.subsample][r.seed] = r.values[metric]

    cells: dict[tuple, Cell] = {}
    csv_rows: list[dict[str, object]] = []
    complete: dict[tuple, dict[str, tuple[float, float]]] = defaultdict(dict)  # trainer → dataset → (B, N)
    any_missing = any_empty = False
    for dataset in datasets:
        for t, b in trainers:
            cell = halves.get((dataset, t, b), {"base": {}, "new": {}})
            base, new = cell["base"], cell["new"]
            paired = [s for s in expected if s in base and s in new]
            missing = tuple(s for s in expected if s not in paired)
            record: dict[str, object] = {"dataset": dataset, "trainer": t, "backbone": b or "", "shots": k}
            if paired:
                (bm, bs), (nm, ns) = mean_std(base[s] for s in paired), mean_std(new[s] for s in paired)
                hm = harmonic_mean(bm, nm)
                for part, c in zip(PARTS, (Cell(bm, bs, missing), Cell(nm, ns, missing), Cell(hm, None, missing))):
                    cells[(dataset, t, b, part)] = c
                record.update(base_mean=bm, base_std=bs, novel_mean=nm, novel_std=ns, hm=hm)
                any_missing |= bool(missing)
                if not missing:
                    complete[(t, b)][dataset] = (bm, nm)
            else:
                for part in PARTS:
                    cells[(dataset, t, b, part)] = Cell()
                any_empty = True
            record.update(n_seeds=len(paired), missing_seeds=list(missing),
                          missing_base=[s for s in expected if s not in base],
                          missing_new=[s for s in expected if s not in new])
            csv_rows.append(record)

    any_partial = False
    for t, b in trainers:
        pairs = complete[(t, b)]
        n_used = len(pairs)
        any_partial |= n_used < len(datasets)
        record = {"dataset": AVERAGE, "trainer": t, "backbone": b or "", "shots": k, "n_datasets": n_used,
                  "missing_datasets": [d for d in datasets if d not in pairs]}
        averages: tuple[float | None, ...] = (None, None, None)
        if pairs:
            avg_base = float(np.mean([bn[0] for bn in pairs.values()]))
            avg_novel = float(np.mean([bn[1] for bn in pairs.values()]))
            averages = (avg_base, avg_novel, harmonic_mean(avg_base, avg_novel))
            record.update(base_mean=averages[0], novel_mean=averages[1], hm=averages[2])
        for part, value in zip(PARTS, averages):
            cells[(AVERAGE, t, b, part)] = _average_cell(value, n_used, len(datasets))
        csv_rows.append(record)

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
    return Grid("base2novel", metric, title, datasets, trainers, cells, notes, csv_rows,
                _seed_note(expected, from_cli), show_backbone)


# ---------------------------------------------------------------------------------------------------- layouts
def _free_label(grid: Grid, trainer: str, backbone: str | None) -> str:
    label = grid.label(trainer, backbone)
    return f"{label} ({NO_TRAINING})" if (trainer, backbone) in grid.free else label


def datasets_table(grid: Grid, order: Sequence[str] = ()) -> Table:
    """Rows = datasets (+ Average); columns = trainer × K (few-shot) or base / novel / HM per trainer."""
    rows = [*grid.datasets, AVERAGE]
    header, keys, groups, competes = ["dataset"], [], [], []
    if grid.protocol == "fewshot":
        parts: Sequence[object] = grid.shots()
        for t, b in grid.trainers(order):
            label = grid.label(t, b)
            if (t, b) in grid.free:
                header.append(_free_label(grid, t, b))
                keys.append((t, b, None))
                groups.append((label, NO_TRAINING))
                competes.append(set(parts))
                continue
            for k in sorted((c[2] for c in grid.columns if c[:2] == (t, b)), key=_shot_key):
                header.append(f"{label} K={_shots(k)}")
                keys.append((t, b, k))
                groups.append((label, f"K={_shots(k)}"))
                competes.append({k})
        layout = "Rows: datasets; columns: trainer × K"
        rule = "in each row among the trainers with the same K" + (
            " (a training-free column competes at every K)" if grid.free else "")
    else:
        parts = PARTS
        for t, b in grid.trainers(order):
            label = grid.label(t, b)
            for part in PARTS:
                header.append(f"{label} {part}")
                keys.append((t, b, part))
                groups.append((label, part))
                competes.append({part})
        layout = "Rows: datasets; columns: base / novel / HM per trainer"
        rule = "in each row among the trainers, for base, novel and HM separately"
    cells = [[grid.cell(row, *key) for key in keys] for row in rows]
    contests = [[(i, j) for j, c in enumerate(competes) if part in c] for i in range(len(rows)) for part in parts]
    return Table(grid.protocol, grid.metric, grid.title, header, rows, cells, grid.notes, contests, layout,
                 grid.seed_note, rule, groups, average_row=True)


def _csv_rounded(cell: Cell) -> Cell:
    """The cell with mean and std as in the CSV (4 decimals): this layout has always shown the CSV's numbers."""
    def r(x: float | None) -> float | None:
        return None if x is None else float(f"{x:.4f}")
    return Cell(r(cell.mean), r(cell.std), cell.missing, cell.partial)


def trainer_tables(grid: Grid, order: Sequence[str] = ()) -> list[Table]:
    """The same cells with trainers as rows: one table per dataset (and one for the Average row, unless there is a
    single dataset). Few-shot: columns = K (a training-free trainer shows its one value in every K column);
    base-to-novel: columns = base / novel / HM. Rows follow ``order``, then the others alphabetically. The numbers
    are those of the CSV (rounded to 4 decimals, then printed with 2), and the backbone is named when this table
    holds more than one."""
    rank = _ranker(order)
    show_backbone = len({b or "" for _, b in grid.trainers()}) > 1  # per table, as the rows are few

    def label(trainer: str, backbone: str | None) -> str:
        text = _label(trainer, backbone, show_backbone)
        return f"{text} ({NO_TRAINING})" if (trainer, backbone) in grid.free else text

    trainers = sorted(grid.trainers(), key=lambda tb: (rank(tb[0]), _label(*tb, show_backbone)))
    labels = [label(t, b) for t, b in trainers]
    if grid.protocol == "fewshot":
        keys: Sequence[object] = grid.shots()
        header = ["trainer", *(f"K={_shots(k)}" for k in grid.shots())]
        layout = "Rows: trainers; columns: K"
    else:
        keys, header, layout = PARTS, ["trainer", *PARTS], "Rows: trainers; columns: base / novel / HM"
    tables = []
    for dataset in [*grid.datasets, AVERAGE] if len(grid.datasets) > 1 else grid.datasets:
        cells = [[_csv_rounded(grid.cell(dataset, t, b, key)) for key in keys] for t, b in trainers]
        contests = [[(i, j) for i in range(len(trainers))] for j in range(len(keys))]
        where = "the Average over datasets" if dataset == AVERAGE else f"dataset {dataset}"
        tables.append(Table(grid.protocol, grid.metric, f"{grid.title} — {dataset}", header, labels, cells,
                            grid.notes, contests, f"{layout}; {where}", grid.seed_note,
                            "in each column among the trainers"))
    return tables


def paper_tables(grid: Grid, order: Sequence[str] = ()) -> list[Table]:
    """Few-shot: one table per K, rows = datasets (+ Average), columns = trainers (a training-free trainer in every
    K table). Base-to-novel: the datasets layout (already one table per K, base / novel / HM per trainer)."""
    if grid.protocol != "fewshot":
        return [datasets_table(grid, order)]
    rows = [*grid.datasets, AVERAGE]
    columns = set(grid.columns)
    tables = []
    for k in grid.shots():
        trainers = [tb for tb in grid.trainers(order) if tb in grid.free or (*tb, k) in columns]
        header = ["dataset", *(_free_label(grid, t, b) for t, b in trainers)]
        cells = [[grid.cell(row, t, b, k) for t, b in trainers] for row in rows]
        contests = [[(i, j) for j in range(len(trainers))] for i in range(len(rows))]
        tables.append(Table(grid.protocol, grid.metric, f"{grid.title}, K={_shots(k)}", header, rows, cells,
                            grid.notes, contests, f"Rows: datasets; columns: trainers; K={_shots(k)}",
                            grid.seed_note, "in each row among the trainers", average_row=True))
    return tables


def layout_tables(grids: Sequence[Grid], layout: str = "datasets", order: Sequence[str] = ()) -> list[Table]:
    """The Markdown/LaTeX tables of ``grids`` in ``layout`` (datasets, trainers or paper)."""
    if layout == "trainers":
        return [t for g in grids for t in trainer_tables(g, order)]
    if layout == "paper":
        return [t for g in grids for t in paper_tables(g, order)]
    if layout == "backbones":  # rows = trainers, columns = backbones: scripts/_layout_backbones.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _layout_backbones import backbone_tables

        return [t for g in grids for t in backbone_tables(g, order, make_table=Table)]
    return [datasets_table(g, order) for g in grids]


# ---------------------------------------------------------------------------------------------------- driver
def build_grids(runs: Sequence[Run], metrics: Sequence[str],
                seeds: Sequence[int] | None = None) -> tuple[list[Grid], list[str]]:
    """Every grid with data (few-shot first, then base-to-novel, each in ``metrics`` order) and the warnings."""
    show_backbone = len({r.backbone for r in runs}) > 1
    few = [r for r in runs if r.subsample == "all"]
    b2n = [r for r in runs if r.subsample != "all"]
    grids: list[Grid] = []
    warnings: list[str] = []
    if few:
        expected = sorted(seeds) if seeds else sorted({r.seed for r in few})
        free, warnings = training_free(few, metrics, show_backbone)
        for metric in metrics:
            g = fewshot_grid(few, metric, expected, from_cli=bool(seeds), show_backbone=show_backbone, free=free)
            grids += [g] if g else []
    if b2n:
        expected = sorted(seeds) if seeds else sorted({r.seed for r in b2n})
        for metric in metrics:
            grids += base2novel_grids(b2n, metric, expected, from_cli=bool(seeds), show_backbone=show_backbone)
    return grids, warnings


def build_tables(runs: Sequence[Run], metrics: Sequence[str], seeds: Sequence[int] | None = None,
                 layout: str = "datasets", order: Sequence[str] = ()) -> list[Table]:
    """The tables of ``build_grids`` in ``layout``."""
    return layout_tables(build_grids(runs, metrics, seeds)[0], layout, order)


def _csv_value(value: object) -> object:
    """A CSV field: floats with 4 decimals, lists space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return value


def _fields(rows: Sequence[dict[str, object]], leading: Sequence[str] = ()) -> list[str]:
    fields = list(leading)
    for row in rows:
        fields += [k for k in row if k not in fields]
    return fields


def _write_csv(path: Path, rows: Sequence[dict[str, object]], leading: Sequence[str] = ()) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_fields(rows, leading), restval="")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)


def _json_value(key: str, value: object) -> object:
    if value is None or (key == "backbone" and value == ""):
        return None
    if isinstance(value, float):
        return float(f"{value:.4f}") if math.isfinite(value) else None
    return list(value) if isinstance(value, tuple) else value


def json_records(grids: Sequence[Grid]) -> list[dict[str, object]]:
    """The rows of summary.csv as records with the same keys: numbers as numbers (rounded as in the CSV), empty
    fields as None, the missing_* fields as lists."""
    rows = [{"protocol": g.protocol, "metric": g.metric, **r} for g in grids for r in g.csv_rows]
    fields = _fields(rows)
    return [{k: _json_value(k, r.get(k)) for k in fields} for r in rows]


def latex_document(tables: Sequence[Table]) -> str:
    head = ["% Result tables written by scripts/summarize.py from the runs' metrics.json files.",
            "% Needs \\usepackage{booktabs} in the preamble (\\toprule, \\midrule, \\cmidrule, \\bottomrule).", ""]
    return "\n".join(head) + "\n\n".join(t.latex(i) for i, t in enumerate(tables, start=1)) + "\n"


def _formats(text: str) -> list[str]:
    """``--format``: a comma-separated subset of FORMATS."""
    names = [s.strip() for s in text.split(",")]
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(map(repr, bad))}; allowed: a comma-separated "
                                         f"subset of {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def write_report(root: Path, runs: Sequence[Run], tables_md: str, *, order: Sequence[str] = (),
                 seeds: Sequence[int] | None = None) -> list[str]:
    """Draw the figures (scripts/plot.py) into ``root/figures`` and write ``root/report.md``: the tables, then every
    PNG figure embedded. Returns the names written (relative to ``root``); plotting problems are warnings."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import plot  # matplotlib only when figures are asked for

    figures, warnings = plot.render(runs, root / "figures", order=order, seeds=seeds)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    pngs = [f for f in figures if f.suffix == ".png"]
    lines = ["# Results", "", f"From the metrics.json and predictions.npz of {len(runs)} runs under {root}.", "",
             tables_md.rstrip(), "", "# Figures", ""]
    for png in pngs:
        rel = png.relative_to(root).as_posix()
        lines += [f"## {png.stem}", "", f"![{png.stem}]({rel})", f"(PDF: [{png.stem}.pdf]({rel[:-4]}.pdf))"
                  if png.with_suffix(".pdf").is_file() else "", ""]
    if not pngs:
        lines += ["No figure could be drawn (see the warnings).", ""]
    (root / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return ["report.md", f"figures/ ({len(figures)} files)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path, help="folder searched recursively for metrics.json")
    p.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found, per protocol)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS), help="metrics to tabulate")
    p.add_argument("--layout", choices=LAYOUTS, default="datasets",
                   help="Markdown/LaTeX layout: rows = datasets (default); trainers = rows = trainers, one table per "
                        "dataset (columns K, or base / novel / HM); paper = few-shot one table per K with rows = "
                        "datasets and columns = trainers (base-to-novel as datasets); backbones = rows = trainers, "
                        "columns = backbones, per K and dataset (+ Average). The CSV/JSON files are the same")
    p.add_argument("--order", nargs="+", default=[], metavar="TRAINER",
                   help="trainers to show first, in this order, in every layout (columns, or rows with --layout "
                        "trainers); the others follow alphabetically")
    p.add_argument("--format", type=_formats, default=["md", "csv"], metavar="FMT[,FMT…]", dest="formats",
                   help=f"outputs, a comma-separated subset of {', '.join(FORMATS)} (default md,csv): md = Markdown "
                        f"on stdout and summary.md; csv = one CSV per table and summary.csv; latex = summary.tex "
                        f"(booktabs, best value bold); json = summary.json (the rows of summary.csv)")
    p.add_argument("--plots", action="store_true",
                   help="also draw the figures (scripts/plot.py; PNG + PDF in OUTPUT_ROOT/figures) and write "
                        "OUTPUT_ROOT/report.md, the tables with the figures embedded")
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
    grids, warnings = build_grids(runs, metrics, seeds)
    if not grids:
        print(f"error: no usable run under {root} ({n_files} metrics.json found, none with the requested "
              f"metrics{' and seeds' if seeds else ''})", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    unknown = [t for t in args.order if t not in {r.trainer for r in runs}]
    if unknown:
        print(f"warning: --order names trainers with no run: {', '.join(unknown)}", file=sys.stderr)

    shown = layout_tables(grids, args.layout, args.order)
    written = []
    text = "\n\n".join(t.markdown() for t in shown) + "\n"
    if "md" in args.formats:
        (root / "summary.md").write_text(text, encoding="utf-8")
        written.append("summary.md")
    if "csv" in args.formats:
        by_file: dict[str, list[dict[str, object]]] = defaultdict(list)
        for g in grids:
            by_file[f"{g.protocol}_{g.metric}.csv"] += g.csv_rows
        for name, rows in by_file.items():
            _write_csv(root / name, rows)
            written.append(name)
        _write_csv(root / "summary.csv", [{"protocol": g.protocol, "metric": g.metric, **r}
                                          for g in grids for r in g.csv_rows])
        written.append("summary.csv")
    if "latex" in args.formats:
        (root / "summary.tex").write_text(latex_document(shown), encoding="utf-8")
        written.append("summary.tex")
    if "json" in args.formats:
        records = json_records(grids)
        (root / "summary.json").write_text(json.dumps(records, indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                                           encoding="utf-8")
        written.append("summary.json")
    if args.plots:
        written += write_report(root, runs, text, order=args.order, seeds=seeds)
    if "md" in args.formats:
        print(text, end="")
    print(f"\n{len(runs)} runs; wrote {', '.join(written)} to {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
