"""Figures from the runs: few-shot curves and base / novel / HM bars (from the tables' grids, so a figure shows the
numbers of the tables), reliability diagrams and confusion matrices (from the runs' predictions.npz). See
scripts/plot.py for what each figure shows. Bad input never stops the other figures: each problem is a warning."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.plotdata import PlotDataError, Predictions, load_predictions
from reporting.aggregate import AVERAGE, NO_TRAINING, PARTS, Grid, build_grids
from reporting.runs import ALL_SHOTS, Run
from reporting.text import _label, _ranker, _seed_span, _shot_key, _shots

FORMATS = ("png", "pdf")
HALF = {"all": "", "base": "_base", "new": "_new"}
MAX_ANNOTATED_CLASSES = 12  # confusion cells get their number printed up to this many classes
MAX_TICK_CHARS = 24


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(trainers: Sequence[str]) -> dict[str, tuple]:
    """One colour per trainer, the same in every figure (tab10, then tab20)."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(trainers) <= 10 else "tab20")
    return {t: cmap(i % cmap.N) for i, t in enumerate(trainers)}


def _panels(n: int, width: float = 4.0, height: float = 3.2, **kwargs):
    plt = _pyplot()
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    plt = _pyplot()
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        # no creation date in the file: the same runs give the same figure files
        meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths


def _short(name: str) -> str:
    return name if len(name) <= MAX_TICK_CHARS else name[:MAX_TICK_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------------------------- from tables
def fewshot_figure(grid: Grid, out: Path, formats: Sequence[str], order: Sequence[str],
                   colors: dict[str, tuple]) -> tuple[list[Path], list[str]]:
    """Metric vs K per dataset plus the Average (mean line, ± std band over seeds)."""
    warnings = []
    rows = _rows(grid)
    shots = [k for k in grid.shots() if k != ALL_SHOTS]
    if not shots:
        return [], [f"few-shot {grid.metric}: only full-training-set runs (K=all): no curve to draw"]
    fig, axes = _panels(len(rows))
    for ax, row in zip(axes, rows):
        for t, b in grid.trainers(order):
            label = grid.label(t, b)
            color = colors.get(t)
            if (t, b) in grid.free:
                cell = grid.cell(row, t, b, None)
                if cell.mean is not None and cell.partial is None:
                    ax.axhline(cell.mean, color=color, linestyle="--", linewidth=1.2,
                               label=f"{label} ({NO_TRAINING})")
                continue
            xs, ys, lo, hi = [], [], [], []
            for k in shots:
                cell = grid.cell(row, t, b, k)
                if cell.mean is None or cell.partial is not None:
                    if row == AVERAGE and cell.partial is not None:
                        warnings.append(f"few-shot {grid.metric}: Average of {label} at K={k} is over "
                                        f"{cell.partial[0]}/{cell.partial[1]} datasets: not plotted")
                    continue
                xs.append(k)
                ys.append(cell.mean)
                spread = cell.std or 0.0
                lo.append(cell.mean - spread)
                hi.append(cell.mean + spread)
            if not xs:
                continue
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color, label=label)
            if any(h > lo_ for h, lo_ in zip(hi, lo)):
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
        ax.set_title(row if row != AVERAGE else f"Average ({len(grid.datasets)} datasets)")
        ax.set_xlabel("shots per class (K)")
        ax.set_ylabel(f"{grid.metric} (%)")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"Few-shot {grid.metric}: mean over {grid.seed_note}; band ± population std", y=1.02)
    return _save(fig, out, f"fewshot_{grid.metric}", formats), warnings


def _rows(grid: Grid) -> list[str]:
    """The panels: every dataset, plus the Average when there is more than one."""
    return [*grid.datasets, AVERAGE] if len(grid.datasets) > 1 else list(grid.datasets)


def _legend(fig, axes) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    fig.tight_layout()
    if labels:
        fig.legend([handles[lb] for lb in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                   frameon=False)


def base2novel_figure(grid: Grid, k: int, out: Path, formats: Sequence[str], order: Sequence[str],
                      colors: dict[str, tuple]) -> tuple[list[Path], list[str]]:
    """Base / novel / HM bars per trainer, one panel per dataset plus the Average."""
    rows = _rows(grid)
    trainers = grid.trainers(order)
    width = 0.8 / max(len(trainers), 1)
    fig, axes = _panels(len(rows), width=max(4.0, 0.25 * len(trainers) * 3))
    for ax, row in zip(axes, rows):
        for i, (t, b) in enumerate(trainers):
            means, errs = [], []
            for part in PARTS:
                cell = grid.cell(row, t, b, part)
                ok = cell.mean is not None and cell.partial is None
                means.append(cell.mean if ok else np.nan)
                errs.append(cell.std if ok and cell.std is not None and part != "HM" else 0.0)
            xs = np.arange(len(PARTS)) + (i - (len(trainers) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=errs if any(errs) else None, capsize=2, color=colors.get(t),
                   label=grid.label(t, b), error_kw={"linewidth": 0.8})
        ax.set_xticks(range(len(PARTS)), PARTS)
        ax.set_title(row if row != AVERAGE else f"Average ({len(grid.datasets)} datasets)")
        ax.set_ylabel(f"{grid.metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"Base-to-novel {grid.metric}, K={_shots(k)}: mean over {grid.seed_note} "
                 f"(error bars ± std; HM of the seed-means)", y=1.02)
    return _save(fig, out, f"base2novel_{grid.metric}_K{_shots(k)}", formats), []


# ---------------------------------------------------------------------------------------------------- from predictions
def load_plot_data(run: Run) -> tuple[Predictions | None, str | None]:
    """The run's predictions.npz (checked against metrics.json's SHA-256), or None and a one-line warning."""
    try:
        m = json.loads(run.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{run.path}: unreadable ({type(e).__name__}); left out of the reliability / confusion figures"
    ref = m.get("predictions")
    if not isinstance(ref, dict) or not isinstance(ref.get("file"), str) or not isinstance(ref.get("sha256"), str):
        return None, (f"{run.path}: no plot data (no \"predictions\" entry: made by an older version; rerun it to "
                      f"get one); left out of the reliability / confusion figures")
    try:
        return load_predictions(run.path.parent / Path(ref["file"]).name, ref["sha256"]), None
    except PlotDataError as e:
        return None, f"{e}; left out of the reliability / confusion figures"


def _pooled(preds: Sequence[Predictions]) -> dict[str, np.ndarray | float | int] | None:
    """Reliability bins of several runs pooled (counts and sums added); None if their bins differ."""
    edges = preds[0].bin_edges
    if any(p.bin_edges.shape != edges.shape or not np.allclose(p.bin_edges, edges) for p in preds):
        return None
    count = sum(p.bin_count for p in preds)
    conf_sum = sum(p.bin_count * p.bin_confidence for p in preds)
    acc_sum = sum(p.bin_count * p.bin_accuracy for p in preds)
    n = int(count.sum())
    used = count > 0
    conf = np.where(used, conf_sum / np.maximum(count, 1), np.nan)
    acc = np.where(used, acc_sum / np.maximum(count, 1), np.nan)
    ece = 100.0 * float(np.sum(np.abs(acc_sum - conf_sum)) / n)
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc, "ece": ece, "n": n}


def reliability_figure(title: str, stem: str, groups: dict[str, list[tuple[int, Predictions]]], out: Path,
                       formats: Sequence[str], colors: dict[str, tuple]) -> tuple[list[Path], list[str]]:
    warnings = []
    pooled = {}
    for label, runs in groups.items():
        p = _pooled([pr for _, pr in runs])
        if p is None:
            warnings.append(f"{stem}: {label}'s runs used different reliability bins: left out")
            continue
        pooled[label] = (p, sorted(s for s, _ in runs))
    if not pooled:
        return [], warnings
    fig, axes = _panels(len(pooled), width=3.6, height=3.6)
    for ax, (label, (p, seeds)) in zip(axes, pooled.items()):
        edges = p["edges"]
        centers = (edges[:-1] + edges[1:]) / 2
        widths = np.diff(edges)
        ax.bar(centers, np.nan_to_num(p["accuracy"]), widths, color=colors.get(label.split(" (")[0]),
               edgecolor="black", linewidth=0.4, alpha=0.85, label="accuracy")
        gap_lo = np.minimum(np.nan_to_num(p["accuracy"]), np.nan_to_num(p["confidence"]))
        gap = np.abs(np.nan_to_num(p["accuracy"]) - np.nan_to_num(p["confidence"]))
        ax.bar(centers, gap, widths, bottom=gap_lo, facecolor="none", hatch="////", edgecolor="red",
               linewidth=0.6, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        share = p["count"] / p["n"]
        ax.plot(centers[p["count"] > 0], share[p["count"] > 0], "k.", markersize=4, label="share of images")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}\nECE {p['ece']:.2f}% ({_seed_span(seeds)}, n={p['n']})", fontsize=9)
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return _save(fig, out, stem, formats), warnings


def confusion_figure(title: str, stem: str, groups: dict[str, list[tuple[int, Predictions]]], out: Path,
                     formats: Sequence[str]) -> tuple[list[Path], list[str]]:
    warnings = []
    mats = {}
    for label, runs in groups.items():
        names = runs[0][1].classnames
        if any(p.classnames != names for _, p in runs):
            warnings.append(f"{stem}: {label}'s runs have different class names: left out")
            continue
        mats[label] = (sum(p.confusion_matrix for _, p in runs), names, sorted(s for s, _ in runs))
    if not mats:
        return [], warnings
    n_cls = max(len(m[1]) for m in mats.values())
    side = max(3.6, 0.32 * n_cls + 2.0)
    fig, axes = _panels(len(mats), width=side, height=side, layout="constrained")
    ncols = min(4, len(mats))
    for i_ax, (ax, (label, (cm, names, seeds))) in enumerate(zip(axes, mats.items())):
        rows = cm.sum(axis=1, keepdims=True)
        pct = 100.0 * cm / np.maximum(rows, 1)
        im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        ticks = [_short(n) for n in names]
        ax.set_xticks(range(len(names)), ticks, rotation=60, ha="right", fontsize=7)
        first = i_ax % ncols == 0 or any(m[1] != names for m in mats.values())
        ax.set_yticks(range(len(names)), ticks if first else [], fontsize=7)
        if len(names) <= MAX_ANNOTATED_CLASSES:
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if pct[i, j] > 60 else "black")
        ax.set_xlabel("predicted")
        if first:
            ax.set_ylabel("true")
        acc = 100.0 * np.trace(cm) / max(int(cm.sum()), 1)
        ax.set_title(f"{label}\naccuracy {acc:.2f}% ({_seed_span(seeds)}, n={int(cm.sum())})", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.6, label="% of the true class")
    fig.suptitle(title)
    return _save(fig, out, stem, formats), warnings


# ---------------------------------------------------------------------------------------------------- driver
def render(runs: Sequence[Run], out: Path, *, formats: Sequence[str] = FORMATS, order: Sequence[str] = (),
           seeds: Sequence[int] | None = None, metric: str = "accuracy", datasets: Sequence[str] = (),
           shots: int | None = None) -> tuple[list[Path], list[str]]:
    """Every figure of ``runs`` into ``out``; returns (files written, warnings). Never raises on bad runs."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    grids, warnings = build_grids(runs, [metric], seeds)
    known = {r.trainer for r in runs}
    warnings += [f"--order names trainer {t!r}, which has no run: ignored" for t in dict.fromkeys(order)
                 if t not in known]
    rank = _ranker(order)
    trainers = sorted(known, key=lambda t: (rank(t), t))
    colors = _colors(trainers)
    for grid in grids:
        if grid.protocol == "fewshot":
            files, w = fewshot_figure(grid, out, formats, order, colors)
        else:
            files, w = base2novel_figure(grid, _grid_shots(grid), out, formats, order, colors)
        written += files
        warnings += w

    expected = set(seeds) if seeds else None
    selected = [r for r in runs if (expected is None or r.seed in expected) and (not datasets or r.dataset in datasets)]
    for name in datasets:
        if name not in {r.dataset for r in runs}:
            warnings.append(f"--dataset {name!r} has no run: ignored")
    by_setting: dict[tuple[str, str], dict[int, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in selected:
        by_setting[(r.dataset, r.subsample)][r.shots].append(r)
    show_backbone = len({r.backbone for r in runs}) > 1
    for (dataset, half), per_k in sorted(by_setting.items()):
        if shots is not None and shots not in per_k:
            warnings.append(f"{dataset}{HALF[half].replace('_', ' ')}: no run with K={shots}; no reliability / "
                            f"confusion figure")
            continue
        k = shots if shots is not None else max(per_k, key=_shot_key)
        groups: dict[str, list[tuple[int, Predictions]]] = defaultdict(list)
        for r in sorted(per_k[k], key=lambda r: (rank(r.trainer), r.trainer, r.backbone or "", r.seed)):
            pred, problem = load_plot_data(r)
            if problem:
                warnings.append(problem)
            if pred is not None:
                groups[_label(r.trainer, r.backbone, show_backbone)].append((r.seed, pred))
        if not groups:
            continue
        what = {"all": "few-shot", "base": "base-to-novel, base classes", "new": "base-to-novel, novel classes"}[half]
        suffix = f"{dataset}_K{_shots(k)}{HALF[half]}"
        files, w = reliability_figure(f"Reliability: {dataset}, {what}, K={_shots(k)}",
                                      f"reliability_{suffix}", groups, out, formats, colors)
        written += files
        warnings += w
        files, w = confusion_figure(f"Confusion matrices: {dataset}, {what}, K={_shots(k)}",
                                    f"confusion_{suffix}", groups, out, formats)
        written += files
        warnings += w
    return written, warnings


def _grid_shots(grid: Grid) -> int:
    """The K of a base-to-novel grid (one grid per K)."""
    return int(next(row["shots"] for row in grid.csv_rows))
