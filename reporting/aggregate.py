"""Aggregation: the numbers of one protocol × metric (× K) before any layout — means and population stds over seeds,
Average rows over datasets, base-to-novel HM, training-free trainers. See scripts/summarize.py for the rules."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from reporting.runs import Run
from reporting.text import (
    NO_RUN,
    _average_text,
    _label,
    _missing_mark,
    _ranker,
    _seed_note,
    _seed_span,
    _seeds,
    _shot_key,
    _shots,
    _tex,
    signed,
)

LOWER_IS_BETTER = frozenset({"ece"})
AVERAGE = "Average"
IDENTICAL = 1e-4  # a training-free trainer's runs agree to this (in %)
NO_TRAINING = "no training"
PARTS = ("base", "novel", "HM")


@dataclass(frozen=True)
class Published:
    """A published value shown beside a measured cell (``summarize.py --reference``): the value, and either the
    difference measured − published with whether it exceeds seed noise (None: not judged, e.g. one seed), or why the
    cell is not compared."""

    value: float
    difference: float | None = None
    beyond_noise: bool | None = None
    why_not: str = ""
    against: str = ""  # when the compared measured value is not the cell's (e.g. "mean of dataset HMs 66.10")

    def markdown(self) -> str:
        head = f" [pub {self.value:.2f}" + (f" vs {self.against}" if self.against else "")
        if self.difference is None:
            return f"{head}; {self.why_not or 'not compared'}]"
        return f"{head}; Δ {signed(self.difference)}{' !' if self.beyond_noise else ''}]"

    def latex(self) -> str:
        head = f" [pub.\\ {self.value:.2f}" + (f" vs {_tex(self.against)}" if self.against else "")
        if self.difference is None:
            return f"{head}; {_tex(self.why_not or 'not compared')}]"
        mark = " \\textbf{!}" if self.beyond_noise else ""
        return f"{head}; $\\Delta$ {signed(self.difference).replace('-', '$-$')}{mark}]"


@dataclass(frozen=True)
class Cell:
    """One displayed number: a mean (None: no run), its std (None: shown without ±), the expected seeds it lacks,
    for an Average over only some datasets (n_used, n_total), and a published value beside it (``--reference``)."""

    mean: float | None = None
    std: float | None = None
    missing: tuple[int, ...] = ()
    partial: tuple[int, int] | None = None
    published: Published | None = None

    def markdown(self) -> str:
        return self._markdown() + (self.published.markdown() if self.published else "")

    def _markdown(self) -> str:
        if self.partial is not None:
            return _average_text(self.mean, *self.partial)
        if self.mean is None:
            return NO_RUN
        text = f"{self.mean:.2f}" + ("" if self.std is None else f" ± {self.std:.2f}")
        return text + _missing_mark(self.missing)

    def latex(self, bold: bool = False) -> str:
        return self._latex(bold) + (self.published.latex() if self.published else "")

    def _latex(self, bold: bool = False) -> str:
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


# ---------------------------------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, numpy's default, as in the released OGKD result scripts)."""
    a = np.asarray(list(values), dtype=float)
    return float(a.mean()), float(a.std())


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2·B·N/(B+N) (SPEC §3.2); 0 when B + N = 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def _average_cell(value: float | None, n_used: int, n_total: int) -> Cell:
    return Cell(mean=value, partial=None if n_used == n_total else (n_used, n_total))


def _sort_key(column: tuple[str, str | None, int]) -> tuple:
    trainer, backbone, shots = column
    return trainer, backbone or "", _shot_key(shots)


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


SeedKey = tuple[str, str, str, "str | None", int, str]  # (protocol, dataset, trainer, backbone, K, part)


def seed_values(runs: Sequence[Run], metric: str,
                seeds: Collection[int] | None = None) -> dict[SeedKey, dict[int, float]]:
    """The per-seed values behind every cell: ``{(protocol, dataset, trainer, backbone, K, part): {seed: value}}``
    with part ``""`` for few-shot and base / novel / HM for base-to-novel (a seed counts only when both its base and
    its new run exist, as in the tables; its HM is the HM of that seed's base and novel). ``seeds``: only these."""
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    halves: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: {"base": {}, "new": {}})
    for r in runs:
        if metric not in r.values or (seeds is not None and r.seed not in seeds):
            continue
        if r.subsample == "all":
            out[("fewshot", r.dataset, r.trainer, r.backbone, r.shots, "")][r.seed] = r.values[metric]
        else:
            halves[(r.dataset, r.trainer, r.backbone, r.shots)][r.subsample][r.seed] = r.values[metric]
    for (dataset, t, b, k), h in halves.items():
        for s in sorted(set(h["base"]) & set(h["new"])):
            base, novel = h["base"][s], h["new"][s]
            for part, v in zip(PARTS, (base, novel, harmonic_mean(base, novel))):
                out[("base2novel", dataset, t, b, k, part)][s] = v
    return dict(out)
