#!/usr/bin/env python
"""Summarise every run under OUTPUT_ROOT from its metrics.json (never from logs).

    python scripts/summarize.py OUTPUT_ROOT [--seeds 1 2 3] [--metrics accuracy macro_f1 ece]
                                [--layout datasets|trainers|paper|backbones|ablation] [--order OGKD BiomedCoOp …]
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
  novel / HM per backbone (``reporting/backbones.py``).

* ``ablation``: OGKD's ablation study (``scripts/run_ablation.sh``, ``reporting/ablation.py``, docs/ablation.md):
  runs are grouped by their metrics.json ``"ablation"`` point; per dataset one table of the variants and one per
  sweep, rows = variants (or the sweep's values, its default being the ``full`` runs), columns = K, cells
  ``mean ± std (Δ d)`` with Δ = mean − the full model's mean. The CSV / JSON rows gain ``ablation`` and
  ``difference_to_full``. In the other layouts each ablation point is shown as a trainer of its own.

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

``--reference NAME`` holds the runs against published numbers (references/NAME.yaml, e.g. ``biomedcoop-cvpr25``, or
a path to such a file; reporting/references.py, docs/comparing.md). Every table gains, beside each cell the reference
has (and only those), ``[pub X; Δ d]``: the published value and Δ = measured − published, with ``!`` where |Δ| exceeds
2 × the population std over seeds of the measured value (recomputed per seed as the cell is computed; not judged with
one seed). Average rows are compared only when the runs cover the reference's datasets, each with every expected seed
(else ``[pub X; other datasets]`` or ``[pub X; incomplete]``). Base-to-novel HM of the Average row: compared with the
mean of the dataset HMs when the reference's HM average was made that way (``vs mean of dataset HMs …``), else with
the cell. Footnotes name the source and the rule; the CSV / JSON rows gain ``published``, ``difference``,
``noise_std``, ``beyond_noise`` (base-to-novel: prefixed ``base_`` / ``novel_`` / ``hm_``). With ``--plots``,
report.md gains a reproduction section: per trainer how far the runs are from the published numbers and the cells
to look at first.

Only tables with data are written. An unreadable or malformed metrics.json is skipped with a warning naming the file.

Exit status: 0 tables written; 1 no metrics.json (or no usable run) under OUTPUT_ROOT; 2 OUTPUT_ROOT is not a folder
(or a bad option).

The code lives in the ``reporting`` package (runs, aggregate, tables, figures, report); this is its command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The names this script always exported (tests and other tools import them from here).
from reporting.ablation import annotate_rows, as_points  # noqa: E402
from reporting.aggregate import (  # noqa: E402, F401
    AVERAGE,
    IDENTICAL,
    LOWER_IS_BETTER,
    NO_TRAINING,
    PARTS,
    Cell,
    Grid,
    base2novel_grids,
    build_grids,
    fewshot_grid,
    harmonic_mean,
    mean_std,
    training_free,
)
from reporting.references import (  # noqa: E402
    ReferenceFileError,
    annotate,
    coverage,
    load_reference,
    reproduction_section,
)
from reporting.report import write_report  # noqa: E402
from reporting.runs import ALL_SHOTS, METRICS, SUBSAMPLES, Run, load_runs  # noqa: E402, F401
from reporting.tables import (  # noqa: E402, F401
    FORMATS,
    LAYOUTS,
    Table,
    build_tables,
    datasets_table,
    json_records,
    latex_document,
    layout_tables,
    markdown_document,
    paper_tables,
    trainer_tables,
    write_tables,
)
from reporting.text import NO_RUN, _label, _ranker, _seed_span, _seeds, _shot_key, _shots, _tex  # noqa: E402, F401


def _formats(text: str) -> list[str]:
    """``--format``: a comma-separated subset of FORMATS."""
    names = [s.strip() for s in text.split(",")]
    bad = [n for n in names if n not in FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(map(repr, bad))}; allowed: a comma-separated "
                                         f"subset of {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path, help="folder searched recursively for metrics.json")
    p.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found, per protocol)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS), help="metrics to tabulate")
    p.add_argument("--layout", choices=list(LAYOUTS), default="datasets",
                   help="Markdown/LaTeX layout: rows = datasets (default); trainers = rows = trainers, one table per "
                        "dataset (columns K, or base / novel / HM); paper = few-shot one table per K with rows = "
                        "datasets and columns = trainers (base-to-novel as datasets); backbones = rows = trainers, "
                        "columns = backbones, per K and dataset (+ Average); ablation = rows = ablation variants "
                        "(or a sweep's values), columns = K, mean ± std and the difference to the full model "
                        "(docs/ablation.md). The CSV/JSON files are the same")
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
    p.add_argument("--reference", metavar="NAME",
                   help="published numbers to hold the runs against: references/NAME.yaml (e.g. biomedcoop-cvpr25) "
                        "or a path to such a file. Every table gains '[pub X; Δ d]' beside the cells the reference "
                        "has, '!' where |Δ| exceeds 2 × the std over seeds; with --plots, report.md gains a "
                        "reproduction section (docs/comparing.md)")
    args = p.parse_args(argv)
    root: Path = args.output_root
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    reference = None
    if args.reference:
        try:
            reference = load_reference(args.reference)
        except ReferenceFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    metrics = list(dict.fromkeys(args.metrics))
    seeds = sorted(set(args.seeds)) if args.seeds else None

    runs, warnings, n_files = load_runs(root, metrics)
    trainer_of: dict[str, str] = {}
    if args.layout == "ablation" or any(r.ablation for r in runs):  # each ablation point is a row of its own
        runs, more, trainer_of = as_points(runs, keep_plain=args.layout != "ablation")
        warnings += more
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
    annotate_rows(grids, trainer_of)
    if not grids:
        print(f"error: no usable run under {root} ({n_files} metrics.json found, none with the requested "
              f"metrics{' and seeds' if seeds else ''})", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    unknown = [t for t in args.order if t not in {r.trainer for r in runs}]
    if unknown:
        print(f"warning: --order names trainers with no run: {', '.join(unknown)}", file=sys.stderr)

    sections = []
    if reference is not None:
        grids, comparisons = annotate(grids, runs, reference, seeds)
        unknown, unrun = coverage(reference, runs)
        if unknown:
            print(f"note: no published value in {reference.name} for: {', '.join(unknown)}", file=sys.stderr)
        if unrun:
            print(f"note: {reference.name} methods with no run here: {', '.join(unrun)}", file=sys.stderr)
        if not comparisons:
            print(f"note: no cell of these runs ({', '.join(metrics)}) has a published value in {reference.name} "
                  f"({reference.metric}; {', '.join(reference.protocols)})", file=sys.stderr)
        sections.append(reproduction_section(reference, comparisons, runs))
    shown = layout_tables(grids, args.layout, args.order)
    text = markdown_document(shown)
    written = write_tables(root, grids, shown, args.formats)
    if args.plots:
        names, problems = write_report(root, runs, text, order=args.order, seeds=seeds, sections=sections)
        for w in problems:
            print(f"warning: {w}", file=sys.stderr)
        written += names
    if "md" in args.formats:
        print(text, end="")
    print(f"\n{len(runs)} runs; wrote {', '.join(written)} to {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
