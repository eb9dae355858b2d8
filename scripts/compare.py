#!/usr/bin/env python
"""Paired comparison of two trainers on the runs under OUTPUT_ROOT (from their metrics.json, never from logs).

    python scripts/compare.py OUTPUT_ROOT --a OGKD --b BiomedCoOp [--format md,latex,json] [--metric accuracy]
                              [--seeds 1 2 3] [--backbone NAME] [--no-figure]
    python scripts/compare.py OUTPUT_ROOT --all --b BiomedCoOp      # every other trainer against BiomedCoOp

On the cells both trainers have (dataset × K × seed, the same seeds; base-to-novel: seeds with both halves), per K
and over all K, for few-shot and for base-to-novel base / novel / HM: the per-dataset mean difference Δ = A − B with
its 95 % interval over seeds, the overall Δ (mean over datasets) with a 95 % hierarchical bootstrap interval
(datasets, then seeds within datasets; numpy, seeded: the same runs give the same intervals), the Wilcoxon
signed-rank test over the per-dataset Δ (scipy.stats; not run with fewer than 2 paired datasets, and the report says
so) and win / tie / loss counts. See reporting/compare.py and docs/comparing.md.

Writes OUTPUT_ROOT/compare_<A>_vs_<B>.{md,tex,json} (``--format``, default md,json; the Markdown also on stdout) and
the figure OUTPUT_ROOT/figures/compare_<A>_vs_<B>.{png,pdf} (per-dataset Δ with intervals, one panel per setting).

A trainer name may also be a published name of a reference's trainer map (``Standard LP`` → LinearProbe). A name
with no run is listed once (with the trainers that have runs); the other comparisons go on.

Exit status: 0 written; 1 nothing to compare (no run, no trainer name with runs, no paired cell); 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reporting.compare import compare, figure, json_record, latex, markdown  # noqa: E402
from reporting.references import ReferenceFileError, available, load_reference  # noqa: E402
from reporting.runs import METRICS, load_runs  # noqa: E402
from reporting.tables import write_json  # noqa: E402

FORMATS = ("md", "latex", "json")


def _formats(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(map(repr, bad)) or '(none)'}; allowed: a "
                                         f"comma-separated subset of {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def resolve(name: str, trainers: set[str]) -> tuple[str | None, str]:
    """The trainer with runs that ``name`` means (itself, or a published name in a reference's trainer map), and a
    note when mapped; (None, how to name ``name`` in an error) when no trainer with runs matches."""
    if name in trainers:
        return name, ""
    known = []
    for ref_name in available():
        try:
            ref = load_reference(ref_name)
        except ReferenceFileError:
            continue  # a broken reference file is reported by summarize.py --reference, not here
        mapped = ref.trainers.get(name)
        if mapped in trainers:
            return mapped, f"note: {name!r} is {mapped} (trainer map of {ref.name})"
        if mapped:
            known.append(f"{mapped} in {ref.name}'s trainer map")
    return None, f"{name!r} (= {', '.join(known)})" if known else repr(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_root", type=Path, help="folder searched recursively for metrics.json")
    p.add_argument("--a", metavar="TRAINER", help="the trainer compared (Δ = A − B)")
    p.add_argument("--b", metavar="TRAINER", required=True, help="the trainer compared against (the reference)")
    p.add_argument("--all", action="store_true", help="compare every other trainer with runs against --b")
    p.add_argument("--format", type=_formats, default=["md", "json"], dest="formats", metavar="FMT[,FMT]",
                   help=f"comma-separated subset of {', '.join(FORMATS)} (default md,json)")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="metric compared (default accuracy)")
    p.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: every seed both trainers have)")
    p.add_argument("--backbone", help="only runs on this backbone (needed when a trainer ran on several)")
    p.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    args = p.parse_args(argv)
    if bool(args.a) == args.all:
        p.error("give --a TRAINER or --all (not both)")
    root: Path = args.output_root
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    runs, warnings, n_files = load_runs(root, [args.metric])
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not runs:
        print(f"error: no usable metrics.json with {args.metric} under {root} ({n_files} found)", file=sys.stderr)
        return 1
    trainers = {r.trainer for r in runs}
    names = [args.b] if args.all else [args.a, args.b]
    resolved, unknown = {}, []
    for name in dict.fromkeys(names):
        got, note = resolve(name, trainers)
        if got is None:
            unknown.append(note)
        else:
            resolved[name] = got
            if note:
                print(note, file=sys.stderr)
    if unknown:
        print(f"error: no run of trainer {', '.join(unknown)} under {root}; trainers with runs: "
              f"{', '.join(sorted(trainers))}", file=sys.stderr)
        return 1
    b = resolved[args.b]
    pairs = [(t, b) for t in sorted(trainers - {b})] if args.all else [(resolved[args.a], b)]
    if any(a == b for a, _ in pairs):
        print(f"error: --a and --b are the same trainer ({b})", file=sys.stderr)
        return 2
    written, shown = [], 0
    for a, b in pairs:
        try:
            cmp = compare(runs, a, b, args.metric, seeds=args.seeds, backbone=args.backbone)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if not cmp.blocks:
            print(f"note: {a} vs {b}: no paired cell (no run of both on the same dataset, K and seed)",
                  file=sys.stderr)
            if not args.all:
                return 1
            continue
        text = markdown(cmp)
        if "md" in args.formats:
            (root / f"{cmp.stem()}.md").write_text(text, encoding="utf-8")
            written.append(f"{cmp.stem()}.md")
            print(text)
        if "latex" in args.formats:
            (root / f"{cmp.stem()}.tex").write_text(latex(cmp), encoding="utf-8")
            written.append(f"{cmp.stem()}.tex")
        if "json" in args.formats:
            write_json(root / f"{cmp.stem()}.json", json_record(cmp))
            written.append(f"{cmp.stem()}.json")
        if not args.no_figure:
            try:
                files = figure(cmp, root / "figures")
                written += [f"figures/{f.name}" for f in files]
            except Exception as e:  # a figure that cannot be drawn is a warning; the tables are written
                print(f"warning: figure {cmp.stem()}: {type(e).__name__}: {e}", file=sys.stderr)
        shown += 1
    if not shown:
        print("error: no pair of trainers has a paired cell", file=sys.stderr)
        return 1
    print(f"{len(runs)} runs; wrote {', '.join(written)} to {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
