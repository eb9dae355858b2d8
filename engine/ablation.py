"""OGKD's ablation study on the grid machinery: named variants and one-parameter sweeps, as config files.

A *variant* is a small YAML override file, ``configs/ablations/<T>/<variant>.yaml``, merged after the trainer's
few-shot config of the dataset (``configs/trainers/<T>/few_shot/<dataset>.yaml``, :func:`engine.cells.trainer_config`):
its keys become ``KEY VALUE`` pairs of the cell, after the config file and before ``EXTRA``. A *sweep* is
``configs/ablations/<T>/sweeps/<name>.yaml``::

    KEY: TRAINER.OGKD.GAMMA     # one config key
    VALUES: [0.1, 0.6]          # the values to run, each on the unchanged config (the ``full`` variant)

A value equal to the dataset config's own value is not run again: that point is the ``full`` variant's run, which a
sweep always adds. Every run records its point in the config key ``ABLATION.NAME`` (``coop``, ``+sccm``, …,
``gamma=0.1``), which ``metrics.json`` keeps as ``"ablation"``: the tables group by it, never by the path.

Run directories::

    OUTPUT_ROOT/ablation/<dataset>/<T>[/<backbone>]/<point>/shots<K>/seed<S>/

Bad input is one :class:`GridError` line before any cell starts: an unknown variant or sweep (listing those that
exist), a sweep value whose type does not fit its key (naming the key), an override key the config does not have.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from engine.grid_jobs import GridError, Job

PROTOCOL = "ablation"
#: the protocol whose trainer configs the ablation starts from
BASE_PROTOCOL = "few_shot"
TRAINER = "OGKD"
DEFAULT_SHOTS = (1, 4, 16)
#: the unchanged config: every sweep's default point
FULL = "full"
#: the variants' order in tables and grids (others follow, sorted)
ORDER = ("coop", "+sccm", "+kd", "+gad", "+lgd", FULL)
#: the config key every run records its point in (metrics.json "ablation")
NAME_KEY = "ABLATION.NAME"
_NAME = re.compile(r"[A-Za-z0-9_.+=-]+")
REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the study: a variant, or one value of a sweep (on the ``full`` config)."""

    name: str  # run folder and ABLATION.NAME: "coop", "+sccm", …, "gamma=0.1"
    overrides: tuple[str, ...]  # KEY VALUE pairs merged after the trainer config
    sweep: str = ""  # the sweep's name for a sweep point


def ablation_dir(trainer: str = TRAINER, repo: str | Path = REPO) -> Path:
    return Path(repo) / "configs" / "ablations" / trainer


def _ordered(names: Sequence[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))


def known_variants(trainer: str = TRAINER, repo: str | Path = REPO) -> list[str]:
    """The variant names (``configs/ablations/<T>/*.yaml``), in :data:`ORDER`."""
    return _ordered([p.stem for p in ablation_dir(trainer, repo).glob("*.yaml")])


def known_sweeps(trainer: str = TRAINER, repo: str | Path = REPO) -> list[str]:
    """The sweep names (``configs/ablations/<T>/sweeps/*.yaml``), sorted."""
    return sorted(p.stem for p in (ablation_dir(trainer, repo) / "sweeps").glob("*.yaml"))


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise GridError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"A": {"B": 1}}`` → ``{"A.B": 1}``."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_value(value: Any) -> str:
    """A value as a ``KEY VALUE`` item that the config decodes back to the same value (strings quoted)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return repr(tuple(value))
    return repr(value)


def pairs(overrides: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(item for k, v in overrides.items() for item in (k, config_value(v)))


def load_variant(name: str, trainer: str = TRAINER, repo: str | Path = REPO) -> dict[str, Any]:
    """A variant's overrides as ``{dotted key: value}``; :class:`GridError` listing the variants for an unknown
    name."""
    path = ablation_dir(trainer, repo) / f"{name}.yaml"
    if not path.is_file():
        raise GridError(f"unknown ablation variant {name!r}; variants: {' '.join(known_variants(trainer, repo))}")
    raw = _load_yaml(path) or {}
    if not isinstance(raw, Mapping):
        raise GridError(f"{path} must hold a mapping of config keys, not {type(raw).__name__}")
    flat = flatten(raw)
    if NAME_KEY in flat:
        raise GridError(f"{path} sets {NAME_KEY}: the variant's name is its file name; remove the key")
    return flat


def load_sweep(name: str, trainer: str = TRAINER, repo: str | Path = REPO) -> tuple[str, list[Any]]:
    """A sweep's ``(KEY, VALUES)``; :class:`GridError` listing the sweeps for an unknown name, or naming what is
    malformed."""
    path = ablation_dir(trainer, repo) / "sweeps" / f"{name}.yaml"
    if not path.is_file():
        raise GridError(f"unknown ablation sweep {name!r}; sweeps: {' '.join(known_sweeps(trainer, repo))}")
    raw = _load_yaml(path)
    if not isinstance(raw, Mapping) or set(raw) != {"KEY", "VALUES"} or not isinstance(raw["KEY"], str) \
            or not isinstance(raw["VALUES"], list) or not raw["VALUES"]:
        raise GridError(f"{path} must hold KEY (a config key) and VALUES (a non-empty list), e.g. "
                        f"KEY: TRAINER.OGKD.GAMMA and VALUES: [0.1, 0.6]")
    return raw["KEY"], list(raw["VALUES"])


def _fits(value: Any, default: Any) -> bool:
    """Whether a sweep value has the type of the key's value (a whole number fits a float key; a bool fits only a
    bool key)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and math.isfinite(value)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))


def base_config(dataset: str, trainer: str = TRAINER, repo: str | Path = REPO) -> Any:
    """The config a cell of ``dataset`` starts from: defaults → dataset YAML → the trainer's few-shot YAML (imports
    the trainers, to know their keys)."""
    from engine.cells import trainer_config
    from engine.config import ConfigError, get_cfg_default, merge_from_file

    importlib.import_module("trainers")  # registers every trainer's config node
    cfg = get_cfg_default()
    try:
        merge_from_file(cfg, Path(repo) / "configs" / "datasets" / f"{dataset}.yaml")
        merge_from_file(cfg, Path(repo) / trainer_config(trainer, BASE_PROTOCOL, dataset, repo))
    except ConfigError as e:
        raise GridError(str(e)) from None
    return cfg


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key; :class:`GridError` naming the key when the config has none."""
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise GridError(f"config key {key!r} does not exist (see python train.py --help and docs/spec.md)")
        node = node[part]
    return node


def _check_overrides(cfg: Any, name: str, overrides: tuple[str, ...]) -> None:
    """Merge ``overrides`` into a copy of ``cfg`` strictly: :class:`GridError` naming the point on a bad key."""
    from engine.config import ConfigError, merge_from_list

    try:
        merge_from_list(cfg.clone(), list(overrides))
    except ConfigError as e:
        raise GridError(f"ablation {name!r}: {e}") from None


def points(variants: Sequence[str], sweeps: Sequence[str], dataset: str, trainer: str = TRAINER,
           repo: str | Path = REPO) -> list[Point]:
    """The points of ``variants`` and ``sweeps`` on ``dataset`` (each checked against its config), variants first.
    A sweep adds ``full`` (its default value's point) when it is not listed; a sweep value equal to the config's
    own is that point and is not repeated."""
    cfg = base_config(dataset, trainer, repo)
    names = list(dict.fromkeys(variants))
    if sweeps and FULL not in names:
        names.append(FULL)
    out = []
    for v in _ordered(names):
        p = Point(v, pairs(load_variant(v, trainer, repo)))
        if not _NAME.fullmatch(v):
            raise GridError(f"ablation variant file name {v!r} is not a folder name: use A-Z a-z 0-9 _ . + = -")
        _check_overrides(cfg, v, p.overrides)
        out.append(p)
    for s in dict.fromkeys(sweeps):
        key, values = load_sweep(s, trainer, repo)
        default = get_key(cfg, key)
        for value in values:
            if not _fits(value, default):
                raise GridError(f"sweep {s!r}: {key} takes a {type(default).__name__} like {default!r}, got "
                                f"{value!r} ({type(value).__name__}) in configs/ablations/{trainer}/sweeps/{s}.yaml")
            if value == default:
                continue  # the full variant's run
            name = f"{s}={value}"
            if not _NAME.fullmatch(name):
                raise GridError(f"sweep {s!r}: the value {value!r} makes no folder name (use numbers or plain words)")
            p = Point(name, (key, config_value(float(value) if isinstance(default, float) else value)), s)
            _check_overrides(cfg, name, p.overrides)
            out.append(p)
    return out


def parse_names(raw: str, known: Sequence[str]) -> list[str]:
    """A VARIANTS / SWEEPS value: names separated by spaces; ``all`` = every known one; ``none`` = none (unknown
    names are reported when the points are built)."""
    items = raw.split()
    if items == ["all"]:
        return list(known)
    if items == ["none"]:
        return []
    return list(dict.fromkeys(items))


def ablation_jobs(spec: Any, variants: Sequence[str], sweeps: Sequence[str], trainer: str = TRAINER,
                  repo: str | Path = REPO) -> list[Job]:
    """Every job of the study: backbones × datasets × points × shots × seeds (a :class:`engine.cells.GridSpec` gives
    everything but the points), each checked first."""
    from engine.cells import backbone_folder, check, run_jobs, trainer_config

    if not variants and not sweeps:
        raise GridError("nothing to run: VARIANTS and SWEEPS are both empty")
    check(dataclasses.replace(spec, protocol=BASE_PROTOCOL, trainers=(trainer,)), repo)
    several = len(spec.backbones) > 1
    per_dataset = {ds: points(variants, sweeps, ds, trainer, repo) for ds in spec.datasets}
    jobs = []
    for b in spec.backbones:
        for ds in spec.datasets:
            config = trainer_config(trainer, BASE_PROTOCOL, ds, repo)
            for p in per_dataset[ds]:
                for k in spec.shots:
                    for s in spec.seeds:
                        parts = [spec.output_root, PROTOCOL, ds, trainer]
                        if several:
                            parts.append(backbone_folder(b))
                        run = "/".join([*parts, p.name, f"shots{k}", f"seed{s}"])
                        label = " ".join([ds, trainer, *([b] if several else []), p.name, f"shots{k}", f"seed{s}"])
                        extra = (*p.overrides, NAME_KEY, config_value(p.name), *spec.extra)
                        jobs.append(run_jobs(BASE_PROTOCOL, dataset=ds, trainer=trainer, shots=k, seed=s, backbone=b,
                                             run=run, config=config, label=label, data_root=spec.data_root,
                                             extra=extra))
    return jobs
