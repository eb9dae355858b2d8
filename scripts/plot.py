#!/usr/bin/env python
"""Figures of every run under OUTPUT_ROOT, from its metrics.json and predictions.npz (never from logs).

    python scripts/plot.py OUTPUT_ROOT [--out DIR] [--formats png,pdf] [--order OGKD BiomedCoOp …]
                           [--seeds 1 2 3] [--metric accuracy] [--dataset NAME …] [--shots K] [--ablation]

Runs are found and grouped exactly as by ``scripts/summarize.py`` (same seeds, same means and population stds), so
a figure shows the numbers of the tables. Written to OUTPUT_ROOT/figures (or ``--out``), each as PNG and PDF:

* ``fewshot_<metric>``: one panel per dataset plus the Average: the metric vs K (log₂ axis), one line per trainer
  (mean over seeds) with a band of ± the population std over seeds; a training-free trainer (see summarize.py) is
  one dashed horizontal line. The Average panel shows only the points whose every dataset has every expected seed.
* ``base2novel_<metric>_K<k>``: one panel per dataset plus the Average: base, novel and HM bars per trainer
  (error bars: std over seeds for base and novel; HM of the seed-means, as in the tables).
* ``reliability_<dataset>_K<k>[_base|_new]``: one reliability diagram per trainer (accuracy vs confidence in the
  15 bins saved by the runs; the runs of all seeds pooled), the pooled ECE in each panel's title, bar area
  showing where the images fall. Default: every dataset at its largest K (``--dataset``, ``--shots`` choose).
* ``confusion_<dataset>_K<k>[_base|_new]``: one confusion matrix per trainer (counts summed over seeds, each row
  normalised to 100 %; rows = true class, columns = predicted).

* ``ablation_<sweep>_<metric>`` (``--ablation``, OGKD's ablation study: docs/ablation.md): one panel per dataset,
  the metric vs the swept parameter's value, one line per K, error bars = the population std over seeds; the
  default value (dotted line) is the ``full`` variant's runs. Only these figures are drawn with ``--ablation``.

The last two need the runs' ``predictions.npz`` (written at evaluation time since this version). Bad input never
stops the other figures: a corrupt or partial metrics.json, a run without plot data (made by an older version) or
with a damaged one, an ``--order`` name with no run — each gives one warning line naming the file or the name.

Exit status: 0 figures written; 1 nothing to plot; 2 OUTPUT_ROOT is not a folder.

The code lives in ``reporting.figures``; this is its command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The names this script always exported (tests and other tools import them from here).
from reporting.figures import (  # noqa: E402, F401
    FORMATS,
    HALF,
    _pooled,
    base2novel_figure,
    confusion_figure,
    fewshot_figure,
    load_plot_data,
    reliability_figure,
    render,
)
from reporting.runs import METRICS, load_runs  # noqa: E402


def _formats(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown figure format {', '.join(map(repr, bad)) or '(none)'}; "
                                         f"allowed: a comma-separated subset of {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path, help="folder searched recursively for metrics.json")
    p.add_argument("--out", type=Path, default=None, help="figure folder (default OUTPUT_ROOT/figures)")
    p.add_argument("--formats", type=_formats, default=list(FORMATS), metavar="FMT[,FMT]",
                   help="png, pdf or both (default png,pdf)")
    p.add_argument("--order", nargs="+", default=[], metavar="TRAINER", help="trainers first, in this order")
    p.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found)")
    p.add_argument("--metric", choices=METRICS, default="accuracy",
                   help="metric of the few-shot and base-to-novel figures (default accuracy)")
    p.add_argument("--dataset", nargs="+", default=[], metavar="NAME",
                   help="reliability / confusion figures for these datasets only (default: every dataset)")
    p.add_argument("--shots", type=int, default=None, metavar="K",
                   help="reliability / confusion figures at this K (default: each dataset's largest K)")
    p.add_argument("--ablation", action="store_true",
                   help="draw the ablation study's sweep figures (accuracy vs the parameter, one line per K) only")
    args = p.parse_args(argv)
    root: Path = args.output_root
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    runs, warnings, n_files = load_runs(root, [args.metric])
    if args.seeds:
        runs = [r for r in runs if r.seed in set(args.seeds)]
    if not runs:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"error: no usable metrics.json under {root} ({n_files} found)", file=sys.stderr)
        return 1
    if args.ablation:
        return _ablation(runs, warnings, args, root)
    written, more = render(runs, args.out or root / "figures", formats=args.formats, order=args.order,
                           seeds=sorted(set(args.seeds)) if args.seeds else None, metric=args.metric,
                           datasets=args.dataset, shots=args.shots)
    for w in [*warnings, *more]:
        print(f"warning: {w}", file=sys.stderr)
    if not written:
        print(f"error: nothing to plot under {root}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out or root / 'figures'}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


def _ablation(runs: list, warnings: list[str], args: argparse.Namespace, root: Path) -> int:
    """``--ablation``: one figure per sweep (reporting.ablation.sweep_figures), on the grids summarize.py builds."""
    from reporting.ablation import as_points, sweep_figures
    from reporting.aggregate import build_grids

    runs, more, _ = as_points(runs)
    grids, more2 = build_grids(runs, [args.metric], sorted(set(args.seeds)) if args.seeds else None)
    out = args.out or root / "figures"
    written = [p for g in grids if g.protocol == "fewshot" for p in sweep_figures(g, out, args.formats)]
    for w in [*warnings, *more, *more2]:
        print(f"warning: {w}", file=sys.stderr)
    if not written:
        print(f"error: no ablation sweep to plot under {root} (runs with metrics.json 'ablation' = "
              f"'<sweep>=<value>')", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {out}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
