"""Paired comparison of two trainers on the same runs (scripts/compare.py).

Paired cells: the same dataset, K and seed (and backbone), both trainers with a run (base-to-novel: a seed with both
its base and its new run, as in the tables). Per dataset, Δ = A − B of the seed-means over the paired seeds (HM: of
the HMs of the seed-means, as the tables compute HM); overall Δ = the mean over datasets of the per-dataset Δ
(datasets weigh the same, as in the Average rows). Intervals: 95 % percentile bootstrap, hierarchical (datasets
with replacement, then seeds within each drawn dataset), numpy, seeded. Wilcoxon signed-rank over the per-dataset Δ
(scipy.stats). Win / tie / loss: datasets with Δ ≥ 0.005 / |Δ| < 0.005 / Δ ≤ −0.005. "All K": per dataset and
seed, the mean of the paired differences over the K at that seed (HM: of the per-seed HM differences).

A dataset without a paired seed is left out of a setting and listed; a seed that only one trainer has is left out
of that cell (and counted), as the tables leave out what is missing rather than guess it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reporting import stats
from reporting.aggregate import PARTS, harmonic_mean, seed_values
from reporting.runs import Run
from reporting.text import _seeds, _shot_key, _shots, _tex, signed


@dataclass(frozen=True)
class DatasetDiff:
    dataset: str
    difference: float
    ci: tuple[float, float] | None  # over seeds; None with one paired seed
    n_seeds: int
    mean_a: float | None
    mean_b: float | None


@dataclass
class Block:
    """One setting (few-shot K, few-shot all K, base-to-novel K × part): the paired statistics."""

    protocol: str
    shots: int | None  # None: all K
    part: str  # "" few-shot; base / novel / HM
    per_dataset: list[DatasetDiff]
    n_cells: int
    difference: float
    ci: tuple[float, float]
    wilcoxon: stats.Wilcoxon
    wtl: tuple[int, int, int]
    unpaired: list[str] = field(default_factory=list)

    @property
    def setting(self) -> str:
        k = "all K" if self.shots is None else f"K={_shots(self.shots)}"
        return k if not self.part else f"{k} {self.part}"


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    backbone: str | None
    blocks: list[Block]
    notes: list[str]

    def stem(self) -> str:
        return f"compare_{_file_part(self.a)}_vs_{_file_part(self.b)}"


def _file_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+" else "_" for c in name)


def _block(protocol: str, shots: int | None, part: str, mats: dict[str, np.ndarray], f: stats.Statistic,
           means: dict[str, tuple[float | None, float | None]], unpaired: list[str], seed: int) -> Block | None:
    datasets = sorted(d for d, m in mats.items() if m.shape[0] > 0)
    if not datasets:
        return None
    values = [mats[d] for d in datasets]
    overall, per = stats.point(values, f)
    ci = stats.hierarchical_bootstrap(values, f, seed=seed)
    rows = [DatasetDiff(d, diff, stats.seed_bootstrap(mats[d], f, seed=seed), mats[d].shape[0], *means.get(d, (None,
                        None))) for d, diff in zip(datasets, per)]
    return Block(protocol, shots, part, rows, sum(m.shape[0] for m in values), overall, ci, stats.wilcoxon(per),
                 stats.win_tie_loss(per), unpaired)


def compare(runs: Sequence[Run], a: str, b: str, metric: str = "accuracy", *, seeds: Sequence[int] | None = None,
            backbone: str | None = None, seed: int = 0) -> Comparison:
    """The paired comparison A − B of ``runs`` (see the module docstring)."""
    sv = seed_values(runs, metric, set(seeds) if seeds else None)
    notes: list[str] = []
    backbones = {t: sorted({k[3] or "" for k in sv if k[2] == t}) for t in (a, b)}
    chosen: dict[str, str | None] = {}
    for t in (a, b):
        options = backbones[t] if backbone is None else [x for x in backbones[t] if x == backbone]
        if len(options) > 1:
            raise ValueError(f"trainer {t} has runs on several backbones ({', '.join(options)}): choose one "
                             f"with --backbone")
        chosen[t] = (options[0] or None) if options else None
    if chosen[a] != chosen[b]:
        notes.append(f"{a} ran on {chosen[a]}, {b} on {chosen[b]}: the pairs compare different backbones.")

    def get(t: str, protocol: str, dataset: str, k: int, part: str) -> dict[int, float]:
        return sv.get((protocol, dataset, t, chosen[t], k, part), {})

    def cells(t: str, protocol: str) -> set[tuple[str, int]]:
        return {(k[1], k[4]) for k in sv if k[0] == protocol and k[2] == t and k[3] == chosen[t]}

    blocks: list[Block] = []
    for protocol, parts in (("fewshot", ("",)), ("base2novel", PARTS)):
        have_a, have_b = cells(a, protocol), cells(b, protocol)
        both = have_a & have_b
        shots = sorted({k for _, k in both}, key=_shot_key)
        only = sorted((have_a ^ have_b), key=lambda x: (x[0], _shot_key(x[1])))
        if only:
            notes.append(f"{'Few-shot' if protocol == 'fewshot' else 'Base-to-novel'}: "
                         + "; ".join(f"{d} K={_shots(k)} has runs of {a if (d, k) in have_a else b} only"
                                     for d, k in only) + " (left out).")
        for part in parts:
            all_k: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
            for k in shots:
                mats, means, unpaired = {}, {}, []
                for d in sorted({d for d, kk in both if kk == k}):
                    if part == "HM":
                        ea = {s: (get(a, protocol, d, k, "base")[s], get(a, protocol, d, k, "novel")[s])
                              for s in get(a, protocol, d, k, "base")}
                        eb = {s: (get(b, protocol, d, k, "base")[s], get(b, protocol, d, k, "novel")[s])
                              for s in get(b, protocol, d, k, "base")}
                        f: stats.Statistic = stats.hm_difference
                    else:
                        ea = {s: (v,) for s, v in get(a, protocol, d, k, part).items()}
                        eb = {s: (v,) for s, v in get(b, protocol, d, k, part).items()}
                        f = stats.difference
                    mats[d] = stats.paired_matrix(ea, eb)
                    lone = sorted(set(ea) ^ set(eb))
                    if lone:
                        unpaired.append(f"{d}: seed {_seeds(lone)} of one trainer only")
                    if mats[d].shape[0]:
                        m = mats[d].mean(axis=0)
                        if part == "HM":
                            means[d] = (harmonic_mean(m[0], m[1]), harmonic_mean(m[2], m[3]))
                        else:
                            means[d] = (float(m[0]), float(m[1]))
                        for s, row in zip(sorted(set(ea) & set(eb)), mats[d]):
                            all_k[d][s].append(float(f(row)))
                    else:
                        unpaired.append(f"{d}: no seed with both trainers")
                blk = _block(protocol, k, part, mats, f, means, unpaired, seed)
                if blk:
                    blocks.append(blk)
            if len(shots) > 1:
                mats = {d: np.array([[np.mean(v)] for _, v in sorted(per_seed.items())]) for d, per_seed in
                        all_k.items()}
                blk = _block(protocol, None, part, mats, lambda m: m[..., 0], {}, [], seed)
                if blk:
                    blk.n_cells = sum(len(v) for per_seed in all_k.values() for v in per_seed.values())
                    blocks.append(blk)
    return Comparison(a, b, metric, chosen[a] if chosen[a] == chosen[b] else None, blocks, notes)


# ---------------------------------------------------------------------------------------------------- rendering
def _ci(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{signed(ci[0])}, {signed(ci[1])}]"


def method_text(cmp: Comparison) -> str:
    return (f"Paired cells: same dataset, K and seed, both {cmp.a} and {cmp.b} with a run (base-to-novel: base and new "
            f"runs). Δ = {cmp.a} − {cmp.b} in {cmp.metric} points (%): per dataset, the difference of the seed-means "
            f"(HM: of the HMs of the seed-means); overall, the mean over datasets. 95 % CI: percentile bootstrap, "
            f"{stats.N_BOOT} replicates, seeded, hierarchical (datasets with replacement, then seeds within each "
            f"dataset); per dataset, over its seeds. Wilcoxon: two-sided signed-rank test of the per-dataset Δ "
            f"(scipy.stats.wilcoxon; zero differences dropped). win / tie / loss: datasets with Δ ≥ {stats.TIE} / "
            f"|Δ| < {stats.TIE} / Δ ≤ −{stats.TIE}. All K: per dataset and seed, the mean difference over the K.")


def _protocols(cmp: Comparison) -> list[tuple[str, list[Block]]]:
    out = []
    for protocol, title in (("fewshot", "Few-shot"), ("base2novel", "Base-to-novel")):
        blocks = [blk for blk in cmp.blocks if blk.protocol == protocol]
        if blocks:
            out.append((title, blocks))
    return out


def _summary_rows(blocks: Sequence[Block]) -> list[list[str]]:
    return [[blk.setting, str(len(blk.per_dataset)), str(blk.n_cells), signed(blk.difference), _ci(blk.ci),
             blk.wilcoxon.text(), " / ".join(map(str, blk.wtl))] for blk in blocks]


def _dataset_rows(blocks: Sequence[Block]) -> tuple[list[str], list[list[str]]]:
    datasets = sorted({d.dataset for blk in blocks for d in blk.per_dataset})
    header = ["dataset", *(blk.setting for blk in blocks)]
    rows = []
    for ds in datasets:
        row = [ds]
        for blk in blocks:
            hit = next((d for d in blk.per_dataset if d.dataset == ds), None)
            row.append("—" if hit is None else f"{signed(hit.difference)} {_ci(hit.ci)} ({hit.n_seeds})")
        rows.append(row)
    return header, rows


SUMMARY_HEADER = ["setting", "datasets", "paired cells", "Δ", "95 % CI", "Wilcoxon", "win / tie / loss"]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(r) + " |" for r in esc]
    return [lines[0], "|" + "---|" * len(header), *lines[1:]]


def markdown(cmp: Comparison) -> str:
    lines = [f"# Paired comparison: {cmp.a} − {cmp.b} ({cmp.metric}, %)", ""]
    if cmp.backbone:
        lines += [f"Backbone: {cmp.backbone}.", ""]
    lines += [method_text(cmp), ""]
    if not cmp.blocks:
        lines += [f"No paired cell: {cmp.a} and {cmp.b} have no run on the same dataset, K and seed.", ""]
    for title, blocks in _protocols(cmp):
        lines += [f"## {title}", "", *_md_table(SUMMARY_HEADER, _summary_rows(blocks)), ""]
        header, rows = _dataset_rows(blocks)
        lines += [f"### {title} per dataset: Δ [95 % CI over seeds] (paired seeds)", "", *_md_table(header, rows), ""]
        for blk in blocks:
            if blk.wilcoxon.not_run:
                lines.append(f"- {blk.setting}: Wilcoxon test not run: {blk.wilcoxon.not_run}.")
            for u in blk.unpaired:
                lines.append(f"- {blk.setting}: {u} (left out).")
        lines.append("")
    lines += [f"- {n}" for n in cmp.notes]
    return "\n".join(lines).rstrip() + "\n"


def latex(cmp: Comparison) -> str:
    out = [f"% Paired comparison {cmp.a} vs {cmp.b} written by scripts/compare.py; needs \\usepackage{{booktabs}}.",
           ""]
    for i, (title, blocks) in enumerate(_protocols(cmp), start=1):
        for what, header, rows in (("summary", SUMMARY_HEADER, _summary_rows(blocks)),
                                   ("per dataset", *_dataset_rows(blocks))):
            caption = (f"{title}: {cmp.a} − {cmp.b} ({cmp.metric}, %), {what}. "
                       + (method_text(cmp) if what == "summary" else
                          "Cells: Δ [95 % CI over seeds] (number of paired seeds)."))
            out += ["\\begin{table}[htbp]", "\\centering", f"\\caption{{{_tex(caption)}}}",
                    f"\\label{{tab:{_file_part(cmp.stem())}-{i}-{what.replace(' ', '-')}}}",
                    f"\\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", "\\toprule",
                    " & ".join(_tex(h) for h in header) + " \\\\", "\\midrule",
                    *(" & ".join(_tex(c) for c in r) + " \\\\" for r in rows), "\\bottomrule", "\\end{tabular}",
                    "\\end{table}", ""]
    if not cmp.blocks:
        out.append(f"% No paired cell: {cmp.a} and {cmp.b} have no run on the same dataset, K and seed.")
    return "\n".join(out).rstrip() + "\n"


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def json_record(cmp: Comparison) -> dict[str, object]:
    return {
        "a": cmp.a, "b": cmp.b, "metric": cmp.metric, "backbone": cmp.backbone, "method": method_text(cmp),
        "bootstrap": {"replicates": stats.N_BOOT, "level": stats.LEVEL, "seed": 0},
        "settings": [{
            "protocol": blk.protocol, "shots": blk.shots, "part": blk.part or None, "setting": blk.setting,
            "n_datasets": len(blk.per_dataset), "n_cells": blk.n_cells, "difference": _r(blk.difference),
            "ci": [_r(blk.ci[0]), _r(blk.ci[1])],
            "wilcoxon": {"statistic": _r(blk.wilcoxon.statistic), "pvalue": _r(blk.wilcoxon.pvalue),
                         "n": blk.wilcoxon.n, "method": blk.wilcoxon.method or None,
                         "not_run": blk.wilcoxon.not_run or None},
            "win": blk.wtl[0], "tie": blk.wtl[1], "loss": blk.wtl[2], "unpaired": blk.unpaired,
            "per_dataset": [{"dataset": d.dataset, "difference": _r(d.difference),
                             "ci": None if d.ci is None else [_r(d.ci[0]), _r(d.ci[1])], "n_seeds": d.n_seeds,
                             "mean_a": _r(d.mean_a), "mean_b": _r(d.mean_b)} for d in blk.per_dataset],
        } for blk in cmp.blocks],
        "notes": cmp.notes,
    }


def figure(cmp: Comparison, out: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Per-dataset Δ with its interval over seeds (and the overall Δ with its hierarchical interval), one panel per
    setting (K, or K × part)."""
    from reporting.figures import _panels, _save

    if not cmp.blocks:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = _panels(len(cmp.blocks), width=4.2, height=0.35 * max(len(b.per_dataset) for b in cmp.blocks) + 1.6)
    for ax, blk in zip(axes, cmp.blocks):
        labels = [d.dataset for d in blk.per_dataset] + ["overall"]
        ys = np.arange(len(labels))[::-1]
        xs = [d.difference for d in blk.per_dataset] + [blk.difference]
        cis = [d.ci for d in blk.per_dataset] + [blk.ci]
        for y, x, ci, overall in zip(ys, xs, cis, [False] * len(blk.per_dataset) + [True]):
            color = "black" if overall else "tab:blue"
            if ci is not None:
                ax.plot(ci, [y, y], color=color, linewidth=1.2)
            ax.plot([x], [y], "D" if overall else "o", color=color, markersize=5 if overall else 4)
        ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yticks(ys, labels, fontsize=8)
        title = "Few-shot" if blk.protocol == "fewshot" else "Base-to-novel"
        ax.set_title(f"{title} {blk.setting}", fontsize=9)
        ax.set_xlabel(f"Δ {cmp.metric} (points)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{cmp.a} − {cmp.b}: per dataset (95 % CI over seeds) and overall (hierarchical 95 % CI)", y=1.02)
    fig.tight_layout()
    return _save(fig, out, cmp.stem(), formats)
