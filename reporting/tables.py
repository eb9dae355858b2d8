"""Table formats: the layouts (rows and columns of the Markdown / LaTeX tables), CSV, JSON and LaTeX output.

A layout is a function ``(grid, order) -> list[Table]`` registered in ``LAYOUTS``; adding one is adding an entry."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from reporting.ablation import ablation_tables
from reporting.aggregate import AVERAGE, LOWER_IS_BETTER, NO_TRAINING, PARTS, Cell, Grid, build_grids
from reporting.backbones import backbone_tables
from reporting.runs import Run
from reporting.text import _label, _ranker, _shot_key, _shots, _tex

FORMATS = ("md", "csv", "latex", "json")


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
    return Cell(r(cell.mean), r(cell.std), cell.missing, cell.partial, cell.published)


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


Layout = Callable[[Grid, Sequence[str]], list[Table]]

LAYOUTS: dict[str, Layout] = {
    "datasets": lambda grid, order: [datasets_table(grid, order)],
    "trainers": trainer_tables,
    "paper": paper_tables,
    "backbones": lambda grid, order: backbone_tables(grid, order, make_table=Table),
    "ablation": ablation_tables,
}
"""The Markdown / LaTeX layouts by name (``--layout``): each turns one grid into its tables. Add a layout here."""


def layout_tables(grids: Sequence[Grid], layout: str = "datasets", order: Sequence[str] = ()) -> list[Table]:
    """The Markdown/LaTeX tables of ``grids`` in ``layout`` (a name in ``LAYOUTS``)."""
    return [t for g in grids for t in LAYOUTS[layout](g, order)]


def build_tables(runs: Sequence[Run], metrics: Sequence[str], seeds: Sequence[int] | None = None,
                 layout: str = "datasets", order: Sequence[str] = ()) -> list[Table]:
    """The tables of ``build_grids`` in ``layout``."""
    return layout_tables(build_grids(runs, metrics, seeds)[0], layout, order)


# ---------------------------------------------------------------------------------------------------- files
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


def write_tables(root: Path, grids: Sequence[Grid], shown: Sequence[Table], formats: Sequence[str]) -> list[str]:
    """Write the ``formats`` (a subset of FORMATS) of ``grids`` (CSV, JSON) and ``shown`` (their tables in a layout:
    Markdown, LaTeX) into ``root``; returns the file names written, in order."""
    written = []
    if "md" in formats:
        (root / "summary.md").write_text(markdown_document(shown), encoding="utf-8")
        written.append("summary.md")
    if "csv" in formats:
        by_file: dict[str, list[dict[str, object]]] = defaultdict(list)
        for g in grids:
            by_file[f"{g.protocol}_{g.metric}.csv"] += g.csv_rows
        for name, rows in by_file.items():
            _write_csv(root / name, rows)
            written.append(name)
        _write_csv(root / "summary.csv", [{"protocol": g.protocol, "metric": g.metric, **r}
                                          for g in grids for r in g.csv_rows])
        written.append("summary.csv")
    if "latex" in formats:
        (root / "summary.tex").write_text(latex_document(shown), encoding="utf-8")
        written.append("summary.tex")
    if "json" in formats:
        write_json(root / "summary.json", json_records(grids))
        written.append("summary.json")
    return written


def markdown_document(tables: Sequence[Table]) -> str:
    """The Markdown tables one after the other (summary.md, stdout)."""
    return "\n\n".join(t.markdown() for t in tables) + "\n"


def write_json(path: Path, records: object) -> None:
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
