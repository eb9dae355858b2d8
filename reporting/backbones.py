"""``summarize.py --layout backbones``: rows = trainers, columns = backbones (BiomedCoOp's backbone comparison).

Self-contained: it reads only the public parts of a summarize ``Grid`` (``protocol``, ``metric``, ``title``,
``datasets``, ``notes``, ``seed_note``, ``free``, ``columns``, ``cell()``, ``trainers()``, ``shots()``) and builds its
tables through the ``make_table`` callable it is given (``reporting.tables.Table``), which keeps it free of an import
circle with ``reporting.tables``.

* Few-shot: one table per K and dataset — cells mean ± std over seeds — and one per K for the Average over
  datasets (unless there is a single dataset); a training-free trainer (ZeroshotCLIP) shows its one value in every
  K table, labelled ``(no training)``.
* Base-to-novel (the grid is already one K): one table per dataset and one for the Average, three columns per
  backbone: base / novel / HM (HM of the seed-means; the Average's HM is the HM of the averages, as in the other
  layouts).

The backbone of a run is the ``backbone`` field of its metrics.json (never its path). Columns follow BiomedCoOp's
order of the four families — CLIP, PubMedCLIP, PMC-CLIP, BiomedCLIP (then their tiny twins in the same order) —
and any other backbone after them, alphabetically. Bold (LaTeX): in each column, the best trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reporting.aggregate import AVERAGE, NO_TRAINING, PARTS

UNKNOWN = "unknown backbone"
FAMILY_ORDER = ("ViT-B/16", "ViT-B/32", "PubMedCLIP", "PMC-CLIP", "BiomedCLIP",
                "tiny-clip", "tiny-pubmedclip", "tiny-pmc-clip", "tiny-biomedclip")


def backbone_order(backbones: Sequence[str | None]) -> list[str | None]:
    """The column order: the families in BiomedCoOp's order, then the other backbones alphabetically, then runs
    without a backbone field (None)."""
    rank = {b: i for i, b in enumerate(FAMILY_ORDER)}
    return sorted(set(backbones), key=lambda b: (b is None, rank.get(b or "", len(rank)), b or ""))


def _ranker(order: Sequence[str]) -> Callable[[str], int]:
    rank: dict[str, int] = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return lambda trainer: rank.get(trainer, len(rank))


def _shots(k: int) -> str:
    return "all" if k < 1 else str(k)


def backbone_tables(grid: Any, order: Sequence[str] = (), *, make_table: Callable[..., Any]) -> list[Any]:
    """The tables of one grid in the backbones layout (see the module docstring); ``order``: trainers shown first."""
    pairs = grid.trainers(order)
    backbones = backbone_order([b for _, b in pairs])
    rank = _ranker(order)
    trainers = sorted({t for t, _ in pairs}, key=lambda t: (rank(t), t))
    free = {t for t in trainers if all((t, b) in grid.free for tt, b in pairs if tt == t)}
    labels = [f"{t} ({NO_TRAINING})" if t in free else t for t in trainers]
    names = [b or UNKNOWN for b in backbones]
    rows = [*grid.datasets, AVERAGE] if len(grid.datasets) > 1 else list(grid.datasets)

    tables = []
    if grid.protocol == "fewshot":
        for k in grid.shots():
            for row in rows:
                cells = [[grid.cell(row, t, b, k) for b in backbones] for t in trainers]  # no run: —
                tables.append(_table(grid, make_table, f"{grid.title}, K={_shots(k)} — {row}", ["trainer", *names],
                                     labels, cells, [[(i, j) for i in range(len(trainers))] for j in range(len(names))],
                                     f"Rows: trainers; columns: backbones; K={_shots(k)}; {_where(row)}", None))
        return tables
    for row in rows:
        keys = [(b, part) for b in backbones for part in PARTS]
        cells = [[grid.cell(row, t, b, part) for b, part in keys] for t in trainers]
        groups = [(b or UNKNOWN, part) for b, part in keys]
        tables.append(_table(grid, make_table, f"{grid.title} — {row}",
                             ["trainer", *(f"{b or UNKNOWN} {part}" for b, part in keys)], labels, cells,
                             [[(i, j) for i in range(len(trainers))] for j in range(len(keys))],
                             f"Rows: trainers; columns: base / novel / HM per backbone; {_where(row)}", groups))
    return tables


def _where(row: str) -> str:
    return "the Average over datasets" if row == AVERAGE else f"dataset {row}"


def _table(grid: Any, make_table: Callable[..., Any], title: str, header: list[str], labels: list[str],
           cells: list[list[Any]], contests: list[list[tuple[int, int]]], layout: str,
           groups: list[tuple[str, str]] | None) -> Any:
    notes = [*grid.notes, "Backbone: the `backbone` field of each run's metrics.json."]
    return make_table(protocol=grid.protocol, metric=grid.metric, title=title, header=header, labels=labels,
                      cells=cells, notes=notes, contests=contests, layout=layout, seed_note=grid.seed_note,
                      bold_rule="in each column among the trainers", groups=groups)
