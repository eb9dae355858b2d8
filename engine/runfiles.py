"""The files of a run directory: each one's name, record, writer and reader, in one place.

=======================  ==========================================================================================
file                     owner
=======================  ==========================================================================================
``metrics.json``         :class:`RunMetrics`, :func:`write_metrics`, :func:`read_metrics` (here)
``config.yaml``          :func:`write_config`, :func:`read_config` (here)
``fewshot_split.json``   :class:`FewShotSplit`, :func:`write_split`, :func:`read_split` (here)
``confusion_matrix.json`` :func:`write_confusion_matrix` (here; written with ``TEST.COMPUTE_CMAT``)
``predictions.npz``      :mod:`engine.plotdata` (``PREDICTIONS_FILE``, ``save_predictions``, ``load_predictions``)
``tensorboard/``         the trainer (:mod:`engine.run_outputs`), under :data:`TENSORBOARD_DIR`
=======================  ==========================================================================================

``metrics.json`` is the run's result. :func:`write_metrics` adds ``"checksum": "sha256:<hex>"``, the SHA-256 of the
canonical JSON of every other key (sorted keys, compact separators, UTF-8), and writes the file atomically (temp
file + rename, :func:`engine.utils.atomic_open`). :func:`read_metrics` returns a :class:`RunMetrics` or raises
:class:`MetricsError` naming the file and what is wrong: unreadable, not JSON (e.g. truncated), not an object, a
checksum that does not match (edited or damaged), a known key of the wrong type, no finite ``accuracy``, a NaN or
infinite ``macro_f1`` / ``ece`` / per-class accuracy (a diverged run; :func:`write_metrics` refuses to write one:
:class:`NonFiniteResultError`). Files
written before a key existed still read (every key but ``accuracy`` may be absent; a file without ``"checksum"``
is accepted when the rest holds); keys this version does not know are kept in :attr:`RunMetrics.extra`.

This module imports only the standard library (``engine.utils`` and ``yacs`` are imported when a file is written
or a config read), so the grid's completeness check and the tables read results without loading torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
SPLIT_FILE = "fewshot_split.json"
CONFUSION_FILE = "confusion_matrix.json"
TENSORBOARD_DIR = "tensorboard"
CHECKSUM_KEY = "checksum"
#: metrics.json keys that measure the run's cost (they differ between two runs with identical results), and the
#: checksum that covers them
COST_KEYS = ("wall_time_s", "timings_s", "counts", "peak_rss_mib", "peak_gpu_mib", "checksum")


class RunFileError(ValueError):
    """A run-directory file that cannot be read as what it should be (the message names the file and why)."""


class MetricsError(RunFileError):
    """A ``metrics.json`` that cannot be trusted as a finished result (the message names the file and why)."""


class NonFiniteResultError(FloatingPointError):
    """An evaluation with a NaN or infinite metric or confidence: the model diverged after the last loss check
    (``train.py`` reports it as "training diverged"); nothing is written."""


#: the metrics.json fields that hold evaluation numbers: each must be finite (per_class_accuracy: each value)
RESULT_KEYS = ("accuracy", "macro_f1", "ece", "per_class_accuracy")


def nonfinite_results(m: dict[str, Any]) -> list[str]:
    """The :data:`RESULT_KEYS` of ``m`` that hold a NaN or infinite number (``name (value)``); absent keys pass."""
    bad = []
    for key in RESULT_KEYS:
        v = m.get(key)
        values = list(v.values()) if isinstance(v, dict) else [v]
        odd = [x for x in values if _number(x) and not math.isfinite(x)]
        if odd:
            bad.append(f"{key} ({odd[0]})")
    return bad


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: what each kind of field accepts (None, i.e. absent, is always accepted)
_KINDS = {"number": _number, "integer": _integer, "string": lambda v: isinstance(v, str),
          "boolean": lambda v: isinstance(v, bool), "object": lambda v: isinstance(v, dict)}


@dataclass(frozen=True)
class RunMetrics:
    """The ``metrics.json`` schema: one run's evaluation (accuracy, macro_f1, ece in percent), what identifies the
    run, and what it cost. Field order is the file's key order; a None field is not written (except
    ``git_commit``: null outside a git checkout). Dict-style reads (``m["accuracy"]``, ``m.get("ece")``) give the
    file's values, for callers written against the plain dict this used to be."""

    split: str = field(default="test", metadata={"kind": "string"})
    accuracy: float | None = field(default=None, metadata={"kind": "number"})
    macro_f1: float | None = field(default=None, metadata={"kind": "number"})
    ece: float | None = field(default=None, metadata={"kind": "number"})
    num_samples: int | None = field(default=None, metadata={"kind": "integer"})
    per_class_accuracy: dict[str, float] | None = field(default=None, metadata={"kind": "object"})
    trainer: str | None = field(default=None, metadata={"kind": "string"})
    dataset: str | None = field(default=None, metadata={"kind": "string"})
    backbone: str | None = field(default=None, metadata={"kind": "string"})
    seed: int | None = field(default=None, metadata={"kind": "integer"})
    shots: int | None = field(default=None, metadata={"kind": "integer"})
    #: NUM_SHOTS ≤ 0: the whole training split (Dassl)
    shots_all: bool | None = field(default=None, metadata={"kind": "boolean"})
    train_images: int | None = field(default=None, metadata={"kind": "integer"})
    subsample: str | None = field(default=None, metadata={"kind": "string"})
    #: the ablation point (config ABLATION.NAME: a variant, or "<sweep>=<value>"); absent outside an ablation run
    ablation: str | None = field(default=None, metadata={"kind": "string"})
    epochs: int | None = field(default=None, metadata={"kind": "integer"})
    wall_time_s: float | None = field(default=None, metadata={"kind": "number"})
    timings_s: dict[str, float] | None = field(default=None, metadata={"kind": "object"})
    counts: dict[str, int] | None = field(default=None, metadata={"kind": "object"})
    peak_rss_mib: float | None = field(default=None, metadata={"kind": "number"})
    peak_gpu_mib: float | None = field(default=None, metadata={"kind": "number"})
    versions: dict[str, str | None] | None = field(default=None, metadata={"kind": "object"})
    git_commit: str | None = field(default=None, metadata={"kind": "string", "always": True})
    #: differences from the checkpoint's provenance that ``--allow-mismatch`` allowed (evaluation only)
    provenance_mismatch: dict[str, Any] | None = field(default=None, metadata={"kind": "object"})
    #: ``{"file": "predictions.npz", "sha256": <hex>}``: the figures' data (:mod:`engine.plotdata`)
    predictions: dict[str, str] | None = field(default=None, metadata={"kind": "object"})
    checksum: str | None = field(default=None, metadata={"kind": "string"})
    #: keys this version does not know (a newer writer's): kept, written back, covered by the checksum
    extra: dict[str, Any] = field(default_factory=dict, metadata={"kind": None})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "metrics") -> RunMetrics:
        """The record of a decoded ``metrics.json`` object; :class:`MetricsError` (naming ``source``) on a known key
        of the wrong type."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                continue
            kind = f.metadata["kind"]
            if value is not None and not _KINDS[kind](value):
                raise MetricsError(f"{source}: {key} is {value!r}, expected a{'n' if kind[0] in 'aeiou' else ''} "
                                   f"{kind}")
            values[key] = value
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def as_dict(self) -> dict[str, Any]:
        """The file's JSON object (field order; None fields left out, but ``git_commit``; then :attr:`extra`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and (getattr(self, f.name) is not None or f.metadata.get("always"))}
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()


def content_checksum(metrics: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over the canonical JSON of ``metrics`` without its ``checksum`` key."""
    body = {k: v for k, v in metrics.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_metrics(path: str | Path, metrics: RunMetrics | dict[str, Any]) -> RunMetrics:
    """Write ``metrics`` (+ its checksum) to ``path`` (a run folder or the file) atomically; returns what was
    written. A dict is checked as :meth:`RunMetrics.from_dict` does."""
    from engine.utils import atomic_open  # (lazy: reading needs no torch, so the grid's check is fast)

    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    record = metrics if isinstance(metrics, RunMetrics) else RunMetrics.from_dict(metrics, path)
    bad = nonfinite_results(record.as_dict())
    if bad:
        raise NonFiniteResultError(f"the evaluation gave a non-finite {', '.join(bad)}, so {path} was not written: "
                                   "the model diverged after its last loss check")
    body = dataclasses.replace(record, checksum=None).as_dict()
    record = dataclasses.replace(record, checksum=content_checksum(body))
    with atomic_open(path, "w") as f:
        f.write(json.dumps(record.as_dict(), indent=2) + "\n")
    return record


def read_metrics(path: str | Path, *, require_accuracy: bool = True) -> RunMetrics:
    """The validated record of a ``metrics.json`` (a run folder is accepted too); :class:`MetricsError` if it
    cannot be trusted. ``require_accuracy`` False leaves the check of the metric values to the caller."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsError(f"{path}: no such file (the run did not finish)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetricsError(f"{path}: unreadable, not valid JSON ({e}): truncated or damaged") from None
    if not isinstance(m, dict):
        raise MetricsError(f"{path}: not a JSON object but {type(m).__name__}")
    if CHECKSUM_KEY in m and m[CHECKSUM_KEY] != content_checksum(m):
        raise MetricsError(f"{path}: checksum mismatch (the file was edited or damaged after it was written)")
    acc = m.get("accuracy")
    if require_accuracy and not (_number(acc) and math.isfinite(acc)):
        raise MetricsError(f"{path}: no finite accuracy ({acc!r})")
    bad = nonfinite_results(m)
    if require_accuracy and bad:
        raise MetricsError(f"{path}: non-finite {', '.join(bad)} (a diverged run)")
    return RunMetrics.from_dict(m, path)


# ---------------------------------------------------------------------------------------------------- config.yaml
def write_config(run_dir: str | Path, cfg: Any) -> Path:
    """``run_dir/config.yaml``: the fully resolved config (``cfg.dump()``), written atomically."""
    from engine.utils import atomic_write_text

    path = Path(run_dir) / CONFIG_FILE
    atomic_write_text(path, cfg.dump())
    return path


def read_config(run_dir: str | Path) -> Any:
    """The ``CfgNode`` saved in ``run_dir/config.yaml``, or None when the folder has none; :class:`RunFileError`
    naming the file if it is not a config."""
    from yacs.config import CfgNode

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = CfgNode.load_cfg(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - yaml's errors, yacs's AssertionError…: named in one line
        raise RunFileError(f"{path}: unreadable as a config ({type(e).__name__}: {e})") from None
    return cfg


# --------------------------------------------------------------------------------------------- fewshot_split.json
@dataclass(frozen=True)
class FewShotSplit:
    """``fewshot_split.json``: the exact training and validation items a run used, each ``[relpath, label,
    classname]`` (relpath relative to the dataset's image folder), with what drew them."""

    dataset: str
    num_shots: int
    seed: int
    subsample_classes: str
    classnames: list[str]
    train: list[list[Any]]
    val: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_split(run_dir: str | Path, split: FewShotSplit) -> Path:
    """``run_dir/fewshot_split.json``, written atomically."""
    from engine.utils import atomic_write_json

    path = Path(run_dir) / SPLIT_FILE
    atomic_write_json(path, split.as_dict())
    return path


def read_split(path: str | Path) -> FewShotSplit:
    """The :class:`FewShotSplit` of a ``fewshot_split.json`` (a run folder is accepted too); :class:`RunFileError`
    naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    names = [f.name for f in dataclasses.fields(FewShotSplit)]
    missing = [k for k in names if not isinstance(data, dict) or k not in data]
    if missing:
        raise RunFileError(f"{path}: not a split file, missing {', '.join(missing)}")
    lists = ("classnames", "train", "val")
    bad = [k for k in lists if not isinstance(data[k], list)]
    bad += [k for k in ("num_shots", "seed") if not _integer(data[k])]
    bad += [k for k in ("train", "val") if k not in bad and any(not isinstance(e, list) or len(e) != 3
                                                                 for e in data[k])]
    if bad:
        raise RunFileError(f"{path}: invalid {', '.join(bad)}")
    return FewShotSplit(**{k: data[k] for k in names})


# ------------------------------------------------------------------------------------------ confusion_matrix.json
def write_confusion_matrix(run_dir: str | Path, classnames: list[str], rows_true_cols_pred: list[list[int]]) -> Path:
    """``run_dir/confusion_matrix.json`` (``TEST.COMPUTE_CMAT``): rows are true labels, columns predicted ones."""
    from engine.utils import atomic_write_json

    path = Path(run_dir) / CONFUSION_FILE
    atomic_write_json(path, {"classnames": classnames, "rows_true_cols_pred": rows_true_cols_pred})
    return path
