"""What a run saves at evaluation time for its figures: ``predictions.npz`` (numpy only; no torch, no pickle).

The test evaluation of every run writes, next to ``metrics.json`` and before it, a compressed ``.npz`` of plain
numeric / fixed-width string arrays (no object arrays, so it loads with ``allow_pickle=False``):

=====================  =========  ====================================================================
key                    shape      meaning
=====================  =========  ====================================================================
``label``              [N] int32  true label of each test image, in the split's order
``pred``               [N] int32  predicted label (argmax of the logits; first index on ties)
``confidence``         [N] f32    max softmax probability
``classnames``         [C] str    class names in label order
``confusion_matrix``   [C, C] i64 counts, rows = true label, columns = predicted label
``bin_edges``          [B+1] f64  reliability bins: equal width over (0, 1], bin k = (edges[k], edges[k+1]]
``bin_count``          [B] i64    images per bin
``bin_confidence``     [B] f64    mean confidence per bin (0 where the bin is empty)
``bin_accuracy``       [B] f64    accuracy per bin, a fraction (0 where the bin is empty)
``ece``                [] f64     expected calibration error in percent, from these bins (= metrics.json "ece")
=====================  =========  ====================================================================

``metrics.json`` records the file's name and SHA-256 under ``"predictions"``, so a figure never mixes a run's
numbers with another run's predictions. Figures (``scripts/plot.py``) read these files, never logs.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREDICTIONS_FILE = "predictions.npz"
FORMAT_VERSION = 1
_KEYS = ("label", "pred", "confidence", "classnames", "confusion_matrix", "bin_edges", "bin_count",
         "bin_confidence", "bin_accuracy", "ece", "format_version")


class PlotDataError(ValueError):
    """A predictions file that is missing, unreadable or inconsistent."""


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """Reliability-diagram bins of confidences [N] in [0, 1] with 0/1 correctness [N].

    ``n_bins`` equal-width bins over (0, 1]; bin k holds edges[k] < conf ≤ edges[k+1] (conf = 0 goes to bin 0).
    Returns {"edges" [B+1], "count" [B] int64, "confidence" [B] (mean per bin), "accuracy" [B] (fraction per bin),
    "ece" [] (percent: Σ_bins n_bin / N · |acc_bin − conf_bin|)}; empty bins have confidence and accuracy 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct).astype(np.float64)
    if conf.ndim != 1 or conf.shape != ok.shape or conf.size == 0:
        raise ValueError(f"confidence and correct must be non-empty [N] arrays, got {conf.shape} and {ok.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=n_bins)
    used = count > 0
    mean_conf = np.zeros(n_bins)
    mean_acc = np.zeros(n_bins)
    mean_conf[used] = conf_sum[used] / count[used]
    mean_acc[used] = acc_sum[used] / count[used]
    gaps = np.abs(acc_sum[used] - conf_sum[used]) / count[used]
    ece = 100.0 * float(np.sum(count[used] / conf.shape[0] * gaps))
    return {"edges": edges, "count": count.astype(np.int64), "confidence": mean_conf, "accuracy": mean_acc,
            "ece": np.float64(ece)}


@dataclass(frozen=True)
class Predictions:
    """One run's saved test predictions (see the module docstring for the arrays)."""

    label: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    classnames: list[str]
    confusion_matrix: np.ndarray
    bin_edges: np.ndarray
    bin_count: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    ece: float


def save_predictions(path: str | Path, *, label: np.ndarray, pred: np.ndarray, confidence: np.ndarray,
                     classnames: list[str], n_bins: int) -> str:
    """Write ``predictions.npz`` atomically (temp file + rename); returns its SHA-256 (hex)."""
    label = np.asarray(label, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    conf = np.asarray(confidence, dtype=np.float64)
    n_cls = len(classnames)
    if label.shape != pred.shape or label.shape != conf.shape or label.ndim != 1:
        raise ValueError(f"label, pred and confidence must be [N] arrays of one length, got {label.shape}, "
                         f"{pred.shape}, {conf.shape}")
    bins = reliability_bins(conf, pred == label, n_bins)
    cm = np.bincount(label * n_cls + pred, minlength=n_cls * n_cls).reshape(n_cls, n_cls)
    arrays = {"label": label.astype(np.int32), "pred": pred.astype(np.int32), "confidence": conf.astype(np.float32),
              "classnames": np.array(classnames, dtype=str), "confusion_matrix": cm.astype(np.int64),
              "bin_edges": bins["edges"], "bin_count": bins["count"], "bin_confidence": bins["confidence"],
              "bin_accuracy": bins["accuracy"], "ece": bins["ece"], "format_version": np.int64(FORMAT_VERSION)}
    from engine.utils import atomic_open  # (lazy: reading predictions needs numpy only)

    with atomic_open(path, "wb") as f:
        # np.savez_compressed stamps each member with the current time; fixed stamps make the bytes (and the
        # SHA-256 in metrics.json) a function of the predictions only, so identical runs give identical files
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    return sha256_file(path)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_predictions(path: str | Path, sha256: str | None = None) -> Predictions:
    """Read and check a ``predictions.npz``; ``sha256`` (from metrics.json) must match when given.

    Raises :class:`PlotDataError` naming the file and the problem (missing, unreadable, wrong checksum, missing or
    inconsistent arrays)."""
    path = Path(path)
    if not path.is_file():
        raise PlotDataError(f"{path}: not found")
    if sha256 is not None and sha256_file(path) != sha256:
        raise PlotDataError(f"{path}: SHA-256 differs from the one recorded in metrics.json (another run's file?)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise PlotDataError(f"{path}: missing arrays {', '.join(missing)}")
            a = {k: z[k] for k in _KEYS}
    except PlotDataError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, ValueError, EOFError…: a damaged file, named in one line
        raise PlotDataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    n, c, b = a["label"].shape[0] if a["label"].ndim == 1 else -1, a["classnames"].shape[0], a["bin_count"].shape[0]
    problems = []
    if n < 1 or a["pred"].shape != (n,) or a["confidence"].shape != (n,):
        problems.append("label / pred / confidence are not [N] arrays of one length")
    if a["confusion_matrix"].shape != (c, c):
        problems.append(f"confusion_matrix has shape {a['confusion_matrix'].shape}, expected ({c}, {c})")
    if a["bin_edges"].shape != (b + 1,) or a["bin_confidence"].shape != (b,) or a["bin_accuracy"].shape != (b,):
        problems.append("the bin arrays do not have matching lengths")
    if problems:
        raise PlotDataError(f"{path}: {'; '.join(problems)}")
    return Predictions(label=a["label"], pred=a["pred"], confidence=a["confidence"],
                       classnames=[str(s) for s in a["classnames"]], confusion_matrix=a["confusion_matrix"],
                       bin_edges=a["bin_edges"], bin_count=a["bin_count"], bin_confidence=a["bin_confidence"],
                       bin_accuracy=a["bin_accuracy"], ece=float(a["ece"]))
