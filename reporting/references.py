"""Published numbers as data, and the measured tables held against them (``summarize.py --reference NAME``).

A reference is one YAML file per source, ``references/<name>.yaml`` (see references/biomedcoop-cvpr25.yaml and
docs/comparing.md): citation, source, backbone, metric, a map from the published method names to this toolkit's
trainers (``Standard LP: LinearProbe``; a name not in the map is the trainer of the same name), and per protocol
(``fewshot``, ``base2novel``): what its numbers are (``numbers``: ``averages`` or ``per-dataset``), the datasets it
averages over, how its averages were made (``average``; for base-to-novel ``hm_average``: ``mean-of-dataset-hms``
or ``hm-of-averages``), provenance, the ``columns`` (K for few-shot; base / novel / HM for base-to-novel, at
``shots``) and ``rows`` ``[method, dataset or Average, value per column]`` (null: not published).

The rule for the noise mark: a compared cell is marked when |measured − published| > 2 × the population std over
seeds of the measured value, that value recomputed per seed the way the cell is computed (a dataset cell: its per-seed
values; an Average: per seed, the mean over the datasets; HM: the per-seed HM). Fewer than 2 seeds: not judged.
Average rows are compared only when the runs cover exactly the reference's datasets and every dataset has every
expected seed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from reporting.aggregate import AVERAGE, PARTS, Cell, Grid, Published, harmonic_mean, seed_values
from reporting.runs import Run
from reporting.text import _shots, signed

REFERENCES_DIR = Path(__file__).resolve().parents[1] / "references"
PROTOCOLS = ("fewshot", "base2novel")
NUMBERS = ("averages", "per-dataset")
HM_AVERAGES = ("mean-of-dataset-hms", "hm-of-averages")
NOISE_FACTOR = 2.0  # |Δ| > NOISE_FACTOR × std over seeds: beyond seed noise
RULE = ("! = |Δ| > 2 × the population std over seeds of the measured value (recomputed per seed as the cell is: "
        "per-seed values; for an Average the per-seed mean over the datasets; for HM the per-seed HM); not judged "
        "with fewer than 2 seeds")


class ReferenceFileError(ValueError):
    """A reference file that cannot be used: the message is one line naming the file (and row)."""


@dataclass(frozen=True)
class Protocol:
    """One protocol of a reference: its published values ``{(method, dataset, key): value}``, key = K or part."""

    name: str
    numbers: str
    datasets: tuple[str, ...]
    average: str
    provenance: str
    values: dict[tuple[str, str, object], float]
    shots: int | None = None  # base-to-novel: the K of the base training
    hm_average: str | None = None

    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _, _ in self.values))


@dataclass(frozen=True)
class Reference:
    name: str
    path: Path
    citation: str
    source: str
    backbone: str
    metric: str
    trainers: dict[str, str]  # published method name → trainer name
    protocols: dict[str, Protocol] = field(default_factory=dict)

    def published_name(self, trainer: str) -> str:
        """The published method name of ``trainer`` (the map inverted; else the trainer's own name)."""
        inverse = {ours: published for published, ours in self.trainers.items()}
        return inverse.get(trainer, trainer)

    def trainer_name(self, method: str) -> str:
        return self.trainers.get(method, method)


# ---------------------------------------------------------------------------------------------------- loading
def reference_path(name: str | Path) -> Path:
    """``NAME`` → references/NAME.yaml; a path to a .yaml/.yml file is used as it is."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    return REFERENCES_DIR / f"{name}.yaml"


def available() -> list[str]:
    return sorted(p.stem for p in REFERENCES_DIR.glob("*.yaml"))


def _text(path: Path, data: dict, key: str, where: str = "") -> str:
    v = data.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ReferenceFileError(f"{path}: {where}{key!r} missing or not a text")
    return v


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_reference(name: str | Path) -> Reference:
    """The reference ``name`` (references/NAME.yaml, or a path); :class:`ReferenceFileError` (one line) if unusable."""
    path = reference_path(name)
    if not path.is_file():
        raise ReferenceFileError(f"{path}: no such reference file (shipped: {', '.join(available()) or 'none'}; "
                             f"or give a path to a .yaml file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ReferenceFileError(f"{path}: unreadable YAML{where} ({what}; quote a text that holds ': ')") from None
    if not isinstance(data, dict):
        raise ReferenceFileError(f"{path}: not a YAML mapping")
    trainers = data.get("trainers") or {}
    if not isinstance(trainers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in trainers.items()):
        raise ReferenceFileError(f"{path}: 'trainers' must map published method names to trainer names (text: text)")
    protocols_data = data.get("protocols")
    if not isinstance(protocols_data, dict) or not protocols_data:
        raise ReferenceFileError(f"{path}: 'protocols' missing (a mapping with fewshot and/or base2novel)")
    protocols = {}
    for pname, pdata in protocols_data.items():
        if pname not in PROTOCOLS:
            raise ReferenceFileError(f"{path}: unknown protocol {pname!r} (allowed: {', '.join(PROTOCOLS)})")
        protocols[pname] = _protocol(path, pname, pdata)
    return Reference(name=str(data.get("name") or path.stem), path=path, citation=_text(path, data, "citation"),
                     source=_text(path, data, "source"), backbone=_text(path, data, "backbone"),
                     metric=_text(path, data, "metric"), trainers=dict(trainers), protocols=protocols)


def _protocol(path: Path, name: str, data: object) -> Protocol:
    where = f"{name}: "
    if not isinstance(data, dict):
        raise ReferenceFileError(f"{path}: {name} is not a mapping")
    numbers = _text(path, data, "numbers", where)
    if numbers not in NUMBERS:
        raise ReferenceFileError(f"{path}: {where}numbers is {numbers!r}; allowed: {', '.join(NUMBERS)}")
    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise ReferenceFileError(f"{path}: {where}'datasets' must be a list of dataset names")
    columns = data.get("columns")
    shots = hm_average = None
    if name == "fewshot":
        if not isinstance(columns, list) or not columns or not all(isinstance(k, int) and not isinstance(k, bool)
                                                                   for k in columns):
            raise ReferenceFileError(f"{path}: {where}'columns' must be the list of K (integers: [1, 2, 4, 8, 16])")
        keys: list[object] = list(columns)
    else:
        if columns != list(PARTS):
            raise ReferenceFileError(f"{path}: {where}'columns' must be [base, novel, HM]")
        keys = list(PARTS)
        shots = data.get("shots")
        if not isinstance(shots, int) or isinstance(shots, bool):
            raise ReferenceFileError(f"{path}: {where}'shots' (the K of the base training) missing or not an integer")
        hm_average = _text(path, data, "hm_average", where)
        if hm_average not in HM_AVERAGES:
            raise ReferenceFileError(f"{path}: {where}hm_average is {hm_average!r}; allowed: {', '.join(HM_AVERAGES)}")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ReferenceFileError(f"{path}: {where}'rows' missing or empty")
    values: dict[tuple[str, str, object], float] = {}
    for i, row in enumerate(rows, start=1):
        label = f"{path}: {name} row {i}"
        if not isinstance(row, list) or len(row) < 2 or not isinstance(row[0], str) or not isinstance(row[1], str):
            raise ReferenceFileError(f"{label} ({row!r}): expected [method, dataset, {', '.join(map(str, keys))}]")
        method, dataset, vals = row[0], row[1], row[2:]
        label += f" ({method}, {dataset})"
        if len(vals) != len(keys):
            raise ReferenceFileError(f"{label}: {len(vals)} values for the {len(keys)} columns "
                                     f"({', '.join(map(str, keys))})")
        bad = [str(v) for v in vals if v is not None and not (_number(v) and 0 <= v <= 100)]
        if bad:
            raise ReferenceFileError(f"{label}: not a number in [0, 100] (or null): {', '.join(bad)}")
        if dataset != AVERAGE and dataset not in datasets:
            raise ReferenceFileError(f"{label}: dataset {dataset!r} is not in {name}.datasets")
        if numbers == "averages" and dataset != AVERAGE:
            raise ReferenceFileError(f"{label}: numbers is 'averages' but this row is for dataset {dataset!r}")
        for key, v in zip(keys, vals):
            if v is None:
                continue
            if (method, dataset, key) in values:
                raise ReferenceFileError(f"{label}: a second value for {method}, {dataset}, {key}")
            values[(method, dataset, key)] = float(v)
    return Protocol(name=name, numbers=numbers, datasets=tuple(datasets), average=_text(path, data, "average", where),
                    provenance=_text(path, data, "provenance", where), values=values, shots=shots,
                    hm_average=hm_average)


# ---------------------------------------------------------------------------------------------------- comparing
@dataclass(frozen=True)
class Comparison:
    """One cell the reference has: measured vs published."""

    protocol: str
    metric: str
    shots: int
    part: str  # "" (few-shot), base, novel or HM
    dataset: str
    trainer: str
    backbone: str | None
    published_as: str
    published: float
    measured: float | None
    measured_as: str  # what the measured value is (e.g. "mean of dataset HMs")
    difference: float | None
    noise_std: float | None
    n_seeds: int
    beyond_noise: bool | None
    why_not: str = ""

    def setting(self) -> str:
        what = "few-shot" if self.protocol == "fewshot" else f"base-to-novel {self.part}"
        return f"{what}, K={_shots(self.shots)}, {self.dataset}"


def _per_seed_average(per_dataset: Sequence[dict[int, float]]) -> dict[int, float]:
    """Per seed (those every dataset has), the mean over datasets."""
    common = set.intersection(*(set(d) for d in per_dataset)) if per_dataset else set()
    return {s: float(np.mean([d[s] for d in per_dataset])) for s in sorted(common)}


def _judge(measured: float, published: float, per_seed: dict[int, float]) -> tuple[float, float | None, bool | None]:
    diff = measured - published
    if len(per_seed) < 2:
        return diff, None, None
    std = float(np.std(list(per_seed.values())))
    return diff, std, bool(abs(diff) > NOISE_FACTOR * std + 1e-12)


def annotate(grids: Sequence[Grid], runs: Sequence[Run], ref: Reference,
             seeds: Collection[int] | None = None) -> tuple[list[Grid], list[Comparison]]:
    """``grids`` with the reference's published values beside the measured cells (``Cell.published``), notes and CSV /
    JSON fields added; and every comparison made. Grids of another metric or protocol are returned unchanged."""
    values = {m: seed_values(runs, m, seeds) for m in {g.metric for g in grids}}
    out, comparisons = [], []
    for g in grids:
        proto = ref.protocols.get(g.protocol)
        k_grid = int(g.csv_rows[0]["shots"]) if g.protocol == "base2novel" and g.csv_rows else None
        if g.metric != ref.metric or proto is None or (k_grid is not None and proto.shots != k_grid):
            out.append(g)
            continue
        grid, made = _annotate_grid(g, values[g.metric], ref, proto, k_grid)
        out.append(grid)
        comparisons += made
    return out, comparisons


def _annotate_grid(g: Grid, sv: dict, ref: Reference, proto: Protocol,
                   k_grid: int | None) -> tuple[Grid, list[Comparison]]:
    cells = dict(g.cells)
    made: list[Comparison] = []
    same_datasets = set(g.datasets) == set(proto.datasets)
    free_seen = []
    for t, b in g.trainers():
        method = ref.published_name(t)
        if g.protocol == "fewshot":
            keys: list[tuple[object, int, str]] = [(k, k, "") for tt, bb, k in g.columns if (tt, bb) == (t, b)]
        else:
            keys = [(part, k_grid, part) for part in PARTS]
        for row in [*g.datasets, AVERAGE]:
            for key, k, part in keys:
                pub = proto.values.get((method, row, key))
                if pub is None:
                    continue
                if (t, b) in g.free and t not in free_seen:
                    free_seen.append(t)
                cell = cells.get((row, t, b, key), Cell())
                comp = _compare(g, sv, proto, t, b, row, k, part, cell, pub, method, same_datasets)
                made.append(comp)
                against = (f"{comp.measured_as} {comp.measured:.2f}"
                           if comp.measured is not None and comp.measured_as != "cell" else "")
                cells[(row, t, b, key)] = replace(cell, published=Published(pub, comp.difference, comp.beyond_noise,
                                                                            comp.why_not, against))
    if not made:
        return g, made
    notes = list(g.notes)
    notes.append(f"[pub X; Δ d]: the published value of {ref.name} ({ref.citation}; {proto.provenance}; "
                 f"{ref.backbone}) for that cell; Δ = measured − published; {RULE}. Only cells the reference has.")
    runs_backbones = sorted({b or "unknown" for _, b in g.trainers()})
    if runs_backbones != [ref.backbone]:
        notes.append(f"The reference was measured on {ref.backbone}; these runs on {', '.join(runs_backbones)}.")
    has_average = any(c.dataset == AVERAGE for c in made)
    if not has_average:
        pass
    elif same_datasets:
        notes.append(f"Average rows compared: the runs cover the reference's datasets ({', '.join(proto.datasets)}; "
                     f"its averages: {proto.average}).")
    else:
        notes.append(f"Average rows not compared: the reference averages over {len(proto.datasets)} datasets "
                     f"({', '.join(proto.datasets)}); these runs cover {', '.join(g.datasets)}.")
    if g.protocol == "base2novel" and has_average:
        if proto.hm_average == "mean-of-dataset-hms":
            notes.append("HM of the Average row: the published HM average is the mean of the per-dataset HMs, so it is "
                         "compared with the mean of these runs' dataset HMs (shown after 'vs'), not with the HM of the "
                         "averages in the cell.")
        else:
            notes.append("HM of the Average row: the published HM average is the HM of the base and novel averages, "
                         "as in the cell.")
    if free_seen:
        notes.append(f"{', '.join(free_seen)}: training-free, shown once; its comparisons per K are in the CSV/JSON.")
    rows = [dict(r) for r in g.csv_rows]
    index = {(r["dataset"], r["trainer"], r["backbone"] or None, r["shots"]): r for r in rows}
    for c in made:
        r = index.get((c.dataset, c.trainer, c.backbone, c.shots))
        if r is None:
            continue
        prefix = "" if c.protocol == "fewshot" else f"{c.part.lower()}_"
        r.update({f"{prefix}published": c.published, f"{prefix}difference": c.difference,
                  f"{prefix}noise_std": c.noise_std, f"{prefix}beyond_noise": c.beyond_noise})
        if c.measured_as != "cell":
            r[f"{prefix}compared_value"] = c.measured
    return replace(g, cells=cells, notes=notes, csv_rows=rows), made


def _compare(g: Grid, sv: dict, proto: Protocol, t: str, b: str | None, row: str, k: int, part: str, cell: Cell,
             pub: float, method: str, same_datasets: bool) -> Comparison:
    def result(measured: float | None, per_seed: dict[int, float], why: str = "", as_: str = "cell") -> Comparison:
        if measured is None or why:
            return Comparison(g.protocol, g.metric, k, part, row, t, b, method, pub, measured, as_, None, None,
                              len(per_seed), None, why or "no run")
        diff, std, beyond = _judge(measured, pub, per_seed)
        return Comparison(g.protocol, g.metric, k, part, row, t, b, method, pub, measured, as_, diff, std,
                          len(per_seed), beyond)

    def seeds_of(dataset: str, p: str) -> dict[int, float]:
        return sv.get((g.protocol, dataset, t, b, k, p), {})

    if row != AVERAGE:
        return result(cell.mean, seeds_of(row, part))
    if not same_datasets:
        return result(cell.mean, {}, "other datasets")
    if cell.partial is not None or cell.mean is None:
        return result(None, {}, "incomplete")
    if part == "HM":
        hms = [g.cells[(d, t, b, "HM")].mean for d in g.datasets]
        per = [seeds_of(d, "HM") for d in g.datasets]
        if proto.hm_average == "mean-of-dataset-hms":
            return result(float(np.mean(hms)), _per_seed_average(per), as_="mean of dataset HMs")
        base = _per_seed_average([seeds_of(d, "base") for d in g.datasets])
        novel = _per_seed_average([seeds_of(d, "novel") for d in g.datasets])
        return result(cell.mean, {s: harmonic_mean(base[s], novel[s]) for s in base if s in novel})
    return result(cell.mean, _per_seed_average([seeds_of(d, part) for d in g.datasets]))


def coverage(ref: Reference, runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(trainers with runs that the reference does not name, published methods with no run), each listed once."""
    trainers = sorted({r.trainer for r in runs})
    methods = list(dict.fromkeys(m for p in ref.protocols.values() for m in p.methods()))
    unknown = [t for t in trainers if ref.published_name(t) not in methods]
    unrun = [m for m in methods if ref.trainer_name(m) not in trainers]
    return unknown, unrun


# ---------------------------------------------------------------------------------------------------- report
def reproduction_section(ref: Reference, comparisons: Sequence[Comparison], runs: Sequence[Run],
                         top: int = 10) -> str:
    """The report.md section: per trainer how far the runs are from the published numbers, and the cells to look
    at first (beyond seed noise first, then by |Δ|)."""
    lines = [f"# Reproduction: {ref.name}", "",
             f"Published: {ref.citation} ({ref.backbone}, {ref.metric} in %). Source: {ref.source.strip()}", "",
             f"Δ = measured − published. {RULE}.", ""]
    backbones = sorted({r.backbone or "unknown" for r in runs})
    if backbones != [ref.backbone]:
        lines += [f"These runs use {', '.join(backbones)}, the reference {ref.backbone}: the numbers measure "
                  f"different models, and large differences are expected.", ""]
    judged = [c for c in comparisons if c.difference is not None]
    by_trainer: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by_trainer[c.trainer].append(c)
    if by_trainer:
        lines += ["| trainer (published as) | cells compared | mean Δ | mean \\|Δ\\| | largest \\|Δ\\| | beyond noise "
                  "| not compared |", "|---|---|---|---|---|---|---|"]
        for t, cs in sorted(by_trainer.items()):
            done = [c for c in cs if c.difference is not None]
            diffs = [c.difference for c in done]
            worst = max(done, key=lambda c: abs(c.difference), default=None)
            lines.append(
                f"| {t} ({cs[0].published_as}) | {len(done)} | "
                + (f"{signed(float(np.mean(diffs)))} | {np.mean(np.abs(diffs)):.2f} | {signed(worst.difference)} "
                   f"({worst.setting()}) | " if done else "— | — | — | ")
                + f"{sum(bool(c.beyond_noise) for c in done)} | {len(cs) - len(done)} |")
        lines.append("")
    else:
        lines += ["No cell of these runs has a published value in this reference.", ""]
    if judged:
        beyond = sum(bool(c.beyond_noise) for c in judged)
        lines += ["## Cells to look at first", "",
                  f"{beyond} of the {len(judged)} compared cells differ beyond seed noise; listed first, then the "
                  f"others by |Δ|.", ""]
        ranked = sorted(judged, key=lambda c: (not c.beyond_noise, -abs(c.difference)))
        for c in ranked[:top]:
            noise = ("noise not judged (fewer than 2 seeds)" if c.noise_std is None
                     else f"seed std {c.noise_std:.2f}{', beyond noise' if c.beyond_noise else ''}")
            lines.append(f"- {c.trainer}, {c.setting()}: measured {c.measured:.2f}"
                         f"{'' if c.measured_as == 'cell' else f' ({c.measured_as})'} vs published {c.published:.2f} "
                         f"(Δ {signed(c.difference)}; {noise}; {c.n_seeds} seeds)")
        lines.append("")
    skipped = [c for c in comparisons if c.difference is None]
    unknown, unrun = coverage(ref, runs)
    if skipped or unknown or unrun:
        lines += ["## Not compared", ""]
        reasons: dict[str, list[str]] = defaultdict(list)
        for c in skipped:
            reasons[c.why_not].append(f"{c.trainer} {c.setting()}")
        for why, cells in reasons.items():
            lines.append(f"- {why}: {len(cells)} cells ({'; '.join(cells[:6])}{'; …' if len(cells) > 6 else ''})")
        if unknown:
            lines.append(f"- trainers with runs but no published value in {ref.name}: {', '.join(unknown)}")
        if unrun:
            lines.append(f"- published methods with no run here: {', '.join(unrun)}")
        lines.append("")
    return "\n".join(lines)
