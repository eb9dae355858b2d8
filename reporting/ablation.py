"""The ablation study's tables and figures (``summarize.py --layout ablation``, ``plot.py --ablation``).

An ablation run records its point in metrics.json ``"ablation"`` (config ``ABLATION.NAME``, engine/ablation.py): a
variant (``coop``, ``+sccm``, ``+kd``, ``+gad``, ``+lgd``, ``full``) or a sweep value ``<sweep>=<value>``. The
tables group by that field, never by the run's path: :func:`as_points` makes each point a row of its own (the
aggregation sees it as the trainer), and gives every sweep present its default point, the ``full`` runs, named
``<sweep>=<default> (full)`` with the default read from the full runs' ``config.yaml``
(``TRAINER.<T>.<SWEEP in upper case>``).

Layout ``ablation`` (:func:`ablation_tables`): per dataset (and the Average over datasets when there are several),
one table of the variants and one per sweep; rows = variants (or the sweep's values, in increasing order),
columns = K; a cell is ``mean ± std (Δ d)`` with Δ = its mean − the ``full`` mean at the same K (no Δ on the full
row, ``Δ —`` when full has no run there). The CSV / JSON rows gain ``ablation`` (the point), ``trainer`` (the
trainer the runs trained) and ``difference_to_full``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from reporting.aggregate import AVERAGE, Cell, Grid
from reporting.runs import Run
from reporting.text import _shots

if TYPE_CHECKING:
    from reporting.tables import Table

logger = logging.getLogger(__name__)

FULL = "full"
#: the variants' order (engine/ablation.py ORDER; others follow, sorted)
ORDER = ("coop", "+sccm", "+kd", "+gad", "+lgd", FULL)
DEFAULT_MARK = f" ({FULL})"


def sweep_of(point: str) -> str:
    """The sweep of a point (``gamma=0.1`` → ``gamma``), ``""`` for a variant."""
    return point.split("=", 1)[0] if "=" in point else ""


def sweep_value(point: str) -> float | str:
    """The value of a sweep point (``gamma=0.1`` → 0.1, ``gamma=0.3 (full)`` → 0.3); a non-number stays text."""
    text = point.split("=", 1)[1].removesuffix(DEFAULT_MARK)
    try:
        return float(text)
    except ValueError:
        return text


def _value_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


def default_value(run: Run, sweep: str) -> object | None:
    """The value of ``TRAINER.<T>.<SWEEP>`` in a run's ``config.yaml`` (next to its metrics.json); None when the
    file or the key is absent."""
    path = Path(run.path).parent / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cfg["TRAINER"][run.trainer][sweep.upper()]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def as_points(runs: Sequence[Run], keep_plain: bool = False) -> tuple[list[Run], list[str], dict[str, str]]:
    """The ablation runs with the point as the trainer (for the aggregation), the full runs copied as each
    sweep's default point; the warnings; and ``{point: trainer}``. Runs without an ablation point are left out (a
    warning counts them), or kept as they are with ``keep_plain``."""
    points = [r for r in runs if r.ablation]
    plain = [r for r in runs if not r.ablation]
    warnings = []
    if plain and not keep_plain:
        warnings.append(f"{len(runs) - len(points)} runs without an ablation point (metrics.json 'ablation') left "
                        f"out of the ablation tables")
    trainer_of = {r.ablation: r.trainer for r in points}
    out = [dataclasses.replace(r, trainer=r.ablation) for r in points]
    sweeps = sorted({sweep_of(r.ablation) for r in points} - {""})
    full = [r for r in points if r.ablation == FULL]
    for sweep in sweeps:
        defaults = {}
        for r in full:
            value = default_value(r, sweep)
            if value is None:
                warnings.append(f"{r.path}: no config.yaml with TRAINER.{r.trainer}.{sweep.upper()} beside it: not "
                                f"shown as the default of sweep {sweep}")
                continue
            defaults.setdefault(_value_text(value), []).append(r)
        for text, group in defaults.items():
            name = f"{sweep}={text}{DEFAULT_MARK}"
            trainer_of[name] = group[0].trainer
            out += [dataclasses.replace(r, trainer=name) for r in group]
    return (plain if keep_plain else []) + out, warnings, trainer_of


def annotate_rows(grids: Sequence[Grid], trainer_of: dict[str, str]) -> None:
    """Give the grids' CSV / JSON rows ``ablation`` (the point), ``trainer`` and ``difference_to_full``."""
    for grid in grids:
        full = {(r["dataset"], r["backbone"], r["shots"]): r.get("mean") for r in grid.csv_rows
                if r["trainer"] == FULL}
        for row in grid.csv_rows:
            point = row["trainer"]
            ref = full.get((row["dataset"], row["backbone"], row["shots"]))
            mean = row.get("mean")
            if point not in trainer_of:
                continue  # a run outside the study
            row["ablation"] = point
            row["trainer"] = trainer_of[point]
            row["difference_to_full"] = (None if point == FULL or mean is None or ref is None
                                         else float(mean) - float(ref))


@dataclasses.dataclass(frozen=True)
class DeltaCell(Cell):
    """A cell with its difference to the full model beside it: ``62.10 ± 0.40 (Δ −1.20)``."""

    delta: float | None = None
    show_delta: bool = True

    def _suffix(self) -> str:
        if not self.show_delta or self.mean is None:
            return ""
        return " (Δ —)" if self.delta is None else f" (Δ {self.delta:+.2f})"

    def markdown(self) -> str:
        return super().markdown() + self._suffix()

    def latex(self, bold: bool = False) -> str:
        return super().latex(bold) + self._suffix().replace("Δ", "$\\Delta$")


def _ordered_points(names: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    rank = {n: i for i, n in enumerate(ORDER)}
    variants = sorted((n for n in names if not sweep_of(n)), key=lambda n: (rank.get(n, len(ORDER)), n))
    sweeps: dict[str, list[str]] = {}
    for n in names:
        if sweep_of(n):
            sweeps.setdefault(sweep_of(n), []).append(n)
    def key(n: str) -> tuple:
        v = sweep_value(n)
        return (1, 0.0, v) if isinstance(v, str) else (0, v, "")

    for pts in sweeps.values():
        pts.sort(key=key)
    return variants, dict(sorted(sweeps.items()))


def ablation_tables(grid: Grid, order: Sequence[str] = ()) -> list[Table]:
    """Per dataset (+ the Average with several): the variants' table and one table per sweep; rows = points,
    columns = K, cells mean ± std (Δ vs full). Few-shot grids only (an ablation is a few-shot study)."""
    from reporting.tables import Table, datasets_table

    if grid.protocol != "fewshot":
        return [datasets_table(grid, order)]
    backbones = sorted({b or "" for _, b in grid.trainers()})
    names = sorted({t for t, _ in grid.trainers()})
    variants, sweeps = _ordered_points(names)
    shots = grid.shots()
    header_k = [f"K={_shots(k)}" for k in shots]
    rows_of = [*grid.datasets, AVERAGE] if len(grid.datasets) > 1 else list(grid.datasets)
    tables = []
    for backbone in backbones:
        b = backbone or None
        for dataset in rows_of:
            full = {k: grid.cell(dataset, FULL, b, k) for k in shots}
            groups = ([("variants", variants)] if variants else []) + [(f"sweep {s}", pts) for s, pts in
                                                                        sweeps.items()]
            for what, pts in groups:
                cells = []
                for p in pts:
                    row = []
                    for k in shots:
                        c = grid.cell(dataset, p, b, k)
                        ref = full[k].mean if full[k].partial is None else None
                        delta = None if c.mean is None or ref is None else c.mean - ref
                        row.append(DeltaCell(c.mean, c.std, c.missing, c.partial, c.published, delta,
                                             show_delta=p != FULL and not p.endswith(DEFAULT_MARK)))
                    cells.append(row)
                where = "the Average over datasets" if dataset == AVERAGE else f"dataset {dataset}"
                title = f"{grid.title} — ablation, {what} — {dataset}" + (f" — {backbone}" if len(backbones) > 1
                                                                           else "")
                first = "variant" if what == "variants" else what.removeprefix("sweep ")
                notes = [*grid.notes, "Δ: the cell's mean minus the full model's mean at the same K (points)."]
                contests = [[(i, j) for i in range(len(pts))] for j in range(len(shots))]
                tables.append(Table(grid.protocol, grid.metric, title, [first, *header_k], list(pts), cells, notes,
                                    contests, f"Rows: ablation points ({what}); columns: K; {where}",
                                    grid.seed_note, "in each column among the points"))
    return tables


# ---------------------------------------------------------------------------------------------------- figures
def sweep_figures(grid: Grid, out: Path, formats: Sequence[str]) -> list[Path]:
    """One figure per sweep (``ablation_<sweep>_<metric>``): one panel per dataset, the metric vs the parameter's
    value, one line per K, error bars = the population std over seeds (the default point is the full runs')."""
    from reporting.figures import _panels, _pyplot, _save

    _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({t for t, _ in grid.trainers()})
    _, sweeps = _ordered_points(names)
    written: list[Path] = []
    for sweep, pts in sweeps.items():
        pts = [p for p in pts if not isinstance(sweep_value(p), str)]
        if not pts:
            continue
        fig, axes = _panels(len(grid.datasets))
        for ax, dataset in zip(axes, grid.datasets):
            for k in grid.shots():
                xs, ys, es = [], [], []
                for p in pts:
                    c = grid.cell(dataset, p, None, k)
                    if c.mean is not None:
                        xs.append(sweep_value(p))
                        ys.append(c.mean)
                        es.append(c.std or 0.0)
                if xs:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"K={_shots(k)}")
            defaults = [sweep_value(p) for p in pts if p.endswith(DEFAULT_MARK)]
            for d in defaults:
                ax.axvline(d, color="0.6", linestyle=":", linewidth=1)
            ax.set_title(dataset)
            ax.set_xlabel(f"{sweep} (dotted: default)")
            ax.set_ylabel(f"{grid.metric} (%)")
            ax.legend(fontsize=8)
        fig.suptitle(f"Ablation sweep: {sweep}")
        written += _save(fig, out, f"ablation_{sweep}_{grid.metric}", formats)
    return written
