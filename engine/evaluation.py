"""Classification metrics: accuracy, macro-F1, ECE, per-class accuracy, confusion matrix.

Pure numpy functions plus ``Classification``, an accumulator with the name and role of Dassl's evaluator.
No sklearn at import time or run time; macro-F1 reproduces
``sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))`` (Dassl's choice).

Conventions used by every function here:

* arguments are ``(pred, target)`` in that order (as Dassl's ``compute_accuracy(output, target)``);
  ``pred`` is either predicted labels [N] or scores [N, C] (logits or probabilities; reduced by argmax,
  first index on ties), ``target`` is the true labels [N];
* tensors, numpy arrays and sequences are accepted; nothing is moved back to a device;
* rates are returned in **percent** (0–100) as Python floats; the confusion matrix is ``[true, pred]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.plotdata import reliability_bins

logger = logging.getLogger(__name__)

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated (pred labels [N], target labels [N]) as int64 arrays."""
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    if p.ndim != 1 or t.ndim != 1:
        raise ValueError(
            f"pred must be labels [N] or scores [N, C] and target labels [N]; got shapes {p.shape} and {t.shape}"
        )
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred and target have different lengths: {p.shape[0]} vs {t.shape[0]}")
    if p.shape[0] == 0:
        raise ValueError("no samples: pred and target are empty")
    return p.astype(np.int64), t.astype(np.int64)


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Top-1 accuracy in percent. ``pred``: labels [N] or scores [N, C]; ``target``: labels [N]."""
    p, t = _labels(pred, target)
    return 100.0 * float(np.mean(p == t))


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Counts [C, C] (int64) with rows = true label, columns = predicted label.

    ``num_classes`` defaults to ``max(pred, target) + 1``; labels outside ``[0, num_classes)`` raise ValueError.
    """
    p, t = _labels(pred, target)
    n = int(max(p.max(), t.max())) + 1 if num_classes is None else int(num_classes)
    if min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= n:
        raise ValueError(
            f"labels must lie in [0, {n}); got pred in [{p.min()}, {p.max()}], target in [{t.min()}, {t.max()}]"
        )
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def macro_f1(pred: ArrayLike, target: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Unweighted mean of the per-class F1 = 2·TP / (2·TP + FP + FN), in percent.

    ``labels``: the classes averaged over; default ``np.unique(target)`` (so a class that is predicted but never
    true does not count, as in Dassl's ``f1_score(..., average="macro", labels=np.unique(y_true))``). A class
    with 2·TP + FP + FN = 0 has F1 = 0 (sklearn's zero_division behaviour).
    """
    p, t = _labels(pred, target)
    classes = np.unique(t) if labels is None else np.unique(_to_numpy(labels).astype(np.int64))
    if classes.size == 0:
        raise ValueError("labels is empty")
    f1 = []
    for c in classes:
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        denom = 2 * tp + fp + fn
        f1.append(2.0 * tp / denom if denom > 0 else 0.0)
    return 100.0 * float(np.mean(f1))


def per_class_accuracy(pred: ArrayLike, target: ArrayLike) -> dict[int, float]:
    """Accuracy in percent per true label (recall), in label order. Labels absent from ``target`` are omitted."""
    p, t = _labels(pred, target)
    return {int(c): 100.0 * float(np.mean(p[t == c] == c)) for c in np.unique(t)}


def _ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """ECE in percent from confidences [N] in [0, 1] and 0/1 correctness [N]; bins (k/n, (k+1)/n]
    (:func:`engine.plotdata.reliability_bins`, the bins the reliability diagrams show)."""
    return float(reliability_bins(confidence, correct, n_bins)["ece"])


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) in percent.

    ``probs``: class probabilities [N, C] (softmax already applied); ``labels``: true labels [N].
    Confidence = max probability, prediction = its argmax; ``n_bins`` equal-width bins over (0, 1];
    ECE = Σ_bins (n_bin / N) · |acc_bin − conf_bin|.
    """
    pr = _to_numpy(probs).astype(np.float64)
    if pr.ndim != 2:
        raise ValueError(f"probs must have shape [N, C], got {pr.shape}")
    p, t = _labels(pr, labels)
    return _ece(pr.max(axis=1), p == t, n_bins)


class Classification:
    """Accumulates predictions over batches and computes the classification metrics (Dassl's evaluator).

    >>> evaluator = Classification(["cat", "dog"])
    >>> evaluator.process(logits, labels)          # per batch; logits [B, C], labels [B]
    >>> results = evaluator.evaluate()             # dict, rates in percent

    ``per_class_accuracy`` only lists classes that occur in the processed labels (classes without samples are
    omitted, not NaN). ``evaluate()`` also logs Dassl's result block (``=> result``, ``* total``, ``* correct``,
    ``* accuracy``, ``* error``, ``* macro_f1`` with two decimals), plus per-class lines when
    ``per_class_result`` is set.
    """

    def __init__(self, classnames: list[str], *, per_class_result: bool = False, n_bins: int = 15) -> None:
        if not classnames:
            raise ValueError("classnames is empty")
        self.classnames = list(classnames)
        self.per_class_result = per_class_result  # log one line per class in evaluate()
        self.n_bins = n_bins  # ECE bins
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._pred: list[torch.Tensor] = []
        self._label: list[torch.Tensor] = []
        self._conf: list[torch.Tensor] = []

    def process(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch. ``logits``: [B, C] with C = len(classnames); ``labels``: [B] int."""
        if logits.ndim != 2 or logits.shape[1] != len(self.classnames):
            raise ValueError(
                f"logits must have shape [B, {len(self.classnames)}] (one column per class), got {tuple(logits.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
        with torch.no_grad():
            conf, pred = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
        self._pred.append(pred.cpu())
        self._label.append(labels.detach().long().cpu())
        self._conf.append(conf.cpu())

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted labels [N], true labels [N], confidences [N]) of everything processed since ``reset()``."""
        if not self._label:
            raise ValueError("Classification.samples() called before any process(); no samples")
        return (torch.cat(self._pred).numpy(), torch.cat(self._label).numpy(),
                torch.cat(self._conf).numpy().astype(np.float64))

    @property
    def num_samples(self) -> int:
        return sum(int(x.shape[0]) for x in self._label)

    def evaluate(self) -> dict[str, Any]:
        """Metrics over everything processed since the last ``reset()``.

        Returns {"accuracy", "error", "macro_f1", "ece", "num_samples", "correct", "per_class_accuracy":
        {classname: acc}, "confusion_matrix": [[int]] (rows = true, columns = predicted)}; rates in percent.
        """
        if not self._label:
            raise ValueError("Classification.evaluate() called before any process(); no samples to evaluate")
        pred = torch.cat(self._pred).numpy()
        label = torch.cat(self._label).numpy()
        conf = torch.cat(self._conf).numpy().astype(np.float64)
        n_cls = len(self.classnames)
        if label.min() < 0 or label.max() >= n_cls:
            raise ValueError(
                f"labels must lie in [0, {n_cls}) for {n_cls} classnames; got [{label.min()}, {label.max()}]"
            )

        correct = int(np.sum(pred == label))
        n = int(label.shape[0])
        acc = 100.0 * correct / n
        results: dict[str, Any] = {
            "accuracy": acc,
            "error": 100.0 - acc,
            "macro_f1": macro_f1(pred, label),
            "ece": _ece(conf, pred == label, self.n_bins),
            "num_samples": n,
            "correct": correct,
            "per_class_accuracy": {self.classnames[c]: a for c, a in per_class_accuracy(pred, label).items()},
            "confusion_matrix": confusion_matrix(pred, label, n_cls).tolist(),
        }
        self._log(results)
        return results

    def _log(self, r: dict[str, Any]) -> None:
        logger.info("=> result")
        logger.info("* total: %s", f"{r['num_samples']:,}")
        logger.info("* correct: %s", f"{r['correct']:,}")
        logger.info("* accuracy: %.2f%%", r["accuracy"])
        logger.info("* error: %.2f%%", r["error"])
        logger.info("* macro_f1: %.2f%%", r["macro_f1"])
        logger.info("* ece: %.2f%%", r["ece"])
        if self.per_class_result:
            cm = r["confusion_matrix"]
            for c, name in enumerate(self.classnames):
                total = sum(cm[c])
                if total == 0:
                    continue
                logger.info(
                    "* class: %d (%s)\ttotal: %s\tcorrect: %s\tacc: %.2f%%",
                    c,
                    name,
                    f"{total:,}",
                    f"{cm[c][c]:,}",
                    r["per_class_accuracy"][name],
                )
            mean = sum(r["per_class_accuracy"].values()) / len(r["per_class_accuracy"])
            logger.info("* average: %.2f%%", mean)
