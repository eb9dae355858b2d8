"""Metrics against hand-computed values (and sklearn where installed)."""

import itertools
import logging

import numpy as np
import pytest
import torch

from engine.evaluation import (
    Classification,
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_accuracy,
)

# Hand case: 6 samples, 3 classes.
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]
# accuracy = 4/6 = 66.667 %
# class 0: TP 1, FP 1 (sample 5), FN 1 (sample 1) → P 1/2, R 1/2, F1 = 2·1/(2+1+1) = 0.5
# class 1: TP 2, FP 1 (sample 1), FN 0            → P 2/3, R 1,   F1 = 4/(4+1)     = 0.8
# class 2: TP 1, FP 0,            FN 1 (sample 5) → P 1,   R 1/2, F1 = 2/(2+0+1)   = 2/3
# macro-F1 = (0.5 + 0.8 + 2/3) / 3 = 0.655556 → 65.5556 %
HAND_F1 = 100 * (0.5 + 0.8 + 2 / 3) / 3
HAND_CM = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def _logits_for(pred: list[int], n_cls: int) -> torch.Tensor:
    logits = torch.zeros(len(pred), n_cls)
    logits[torch.arange(len(pred)), torch.tensor(pred)] = 3.0
    return logits


def test_hand_case_functions() -> None:
    assert accuracy(Y_PRED, Y_TRUE) == pytest.approx(100 * 4 / 6)
    assert HAND_F1 == pytest.approx(65.5556, abs=1e-4)
    assert macro_f1(Y_PRED, Y_TRUE) == pytest.approx(HAND_F1)
    assert confusion_matrix(Y_PRED, Y_TRUE).tolist() == HAND_CM
    assert per_class_accuracy(Y_PRED, Y_TRUE) == pytest.approx({0: 50.0, 1: 100.0, 2: 50.0})
    # Scores [N, C] are reduced by argmax; tensors and arrays are accepted.
    scores = _logits_for(Y_PRED, 3)
    assert accuracy(scores, torch.tensor(Y_TRUE)) == pytest.approx(100 * 4 / 6)
    assert macro_f1(scores.numpy(), np.array(Y_TRUE)) == pytest.approx(HAND_F1)


def test_macro_f1_averages_over_true_labels_only() -> None:
    # Class 3 is predicted but never true: it is not averaged (Dassl: labels=np.unique(y_true)).
    # class 0: TP 1, FN 1 → F1 2/3; class 1: TP 1, FN 1 → F1 2/3; mean 66.67 %
    # (averaging class 3 too would give 44.44 %).
    y_true, y_pred = [0, 0, 1, 1], [0, 3, 3, 1]
    assert macro_f1(y_pred, y_true) == pytest.approx(200 / 3)
    assert macro_f1(y_pred, y_true, labels=[0, 1, 3]) == pytest.approx(100 * (4 / 3) / 3)
    # A true class never predicted correctly has F1 = 0: class 0 → 0; class 1: TP 1, FP 1 → 2/3.
    assert macro_f1([1, 1], [0, 1]) == pytest.approx(100 / 3)


def test_against_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    assert macro_f1(Y_PRED, Y_TRUE) == pytest.approx(
        100 * metrics.f1_score(Y_TRUE, Y_PRED, average="macro", labels=np.unique(Y_TRUE))
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        n_cls = int(rng.integers(2, 8))
        n = int(rng.integers(1, 40))
        y_true = rng.integers(0, n_cls, size=n)
        y_pred = rng.integers(0, n_cls, size=n)
        expected = metrics.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true), zero_division=0)
        assert macro_f1(y_pred, y_true) == pytest.approx(100 * expected)
        cm = metrics.confusion_matrix(y_true, y_pred, labels=list(range(n_cls)))
        assert confusion_matrix(y_pred, y_true, num_classes=n_cls).tolist() == cm.tolist()


def test_ece_hand_case() -> None:
    # 15 bins of width 1/15. Three samples at confidence 0.95 (bin (14/15, 1]), two of them correct;
    # one sample at 0.55 (bin (8/15, 9/15]), wrong.
    # ECE = 3/4 · |2/3 − 0.95| + 1/4 · |0 − 0.55| = 0.2125 + 0.1375 = 0.35 → 35 %.
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.55, 0.45]])
    labels = np.array([0, 0, 0, 1])  # samples 0, 1 correct; 2 wrong (pred 1, true 0); 3 wrong (pred 0, true 1)
    assert expected_calibration_error(probs, labels) == pytest.approx(35.0)
    # The same through the accumulator (logits = log-probabilities).
    ev = Classification(["a", "b"])
    ev.process(torch.log(torch.tensor(probs, dtype=torch.float32)), torch.tensor(labels))
    assert ev.evaluate()["ece"] == pytest.approx(35.0, abs=1e-4)


def test_ece_bins_are_right_closed() -> None:
    # Confidence 1.0 falls in the last bin (14/15, 1].
    assert expected_calibration_error([[1.0, 0.0]], [0]) == pytest.approx(0.0)
    assert expected_calibration_error([[1.0, 0.0]], [1]) == pytest.approx(100.0)
    # With 2 bins, 0.5 is in (0, 0.5] and 0.75 in (0.5, 1] (tie → pred 0, correct; then pred 0, wrong):
    # gaps |1 − 0.5| and |0 − 0.75| → ECE = (0.5 + 0.75) / 2 = 62.5 %.
    assert expected_calibration_error([[0.5, 0.5], [0.75, 0.25]], [0, 1], n_bins=2) == pytest.approx(62.5)


def test_ece_matches_reference_loop() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, size=200)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ref += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    assert expected_calibration_error(probs, labels) == pytest.approx(100 * ref)


def test_classification_accumulator(caplog: pytest.LogCaptureFixture) -> None:
    names = ["cyst", "mass", "tissue", "unused"]
    ev = Classification(names, per_class_result=True)
    logits = _logits_for(Y_PRED, 4)
    labels = torch.tensor(Y_TRUE)
    ev.process(logits[:4], labels[:4])  # two batches
    ev.process(logits[4:], labels[4:])
    with caplog.at_level(logging.INFO, logger="engine.evaluation"):
        r = ev.evaluate()
    assert r["num_samples"] == 6 and r["correct"] == 4
    assert r["accuracy"] == pytest.approx(100 * 4 / 6)
    assert r["error"] == pytest.approx(100 * 2 / 6)
    assert r["macro_f1"] == pytest.approx(HAND_F1)
    # Classes without samples ("unused") are omitted from the per-class accuracy.
    assert r["per_class_accuracy"] == pytest.approx({"cyst": 50.0, "mass": 100.0, "tissue": 50.0})
    assert r["confusion_matrix"] == [row + [0] for row in HAND_CM] + [[0, 0, 0, 0]]
    # Confidence of every sample = softmax(3, 0, 0, 0) max = e³ / (e³ + 3); ECE = |acc − conf|.
    conf = np.exp(3) / (np.exp(3) + 3)
    assert r["ece"] == pytest.approx(100 * abs(4 / 6 - conf), abs=1e-4)
    assert isinstance(r["accuracy"], float) and isinstance(r["confusion_matrix"][0][0], int)
    messages = [rec.getMessage() for rec in caplog.records]
    assert "=> result" in messages
    assert "* total: 6" in messages and "* correct: 4" in messages
    assert "* accuracy: 66.67%" in messages and "* macro_f1: 65.56%" in messages
    # reset() forgets everything.
    ev.reset()
    with pytest.raises(ValueError, match="before any process"):
        ev.evaluate()
    ev.process(logits[:2], labels[:2])
    assert ev.evaluate()["num_samples"] == 2


def test_classification_rejects_bad_shapes() -> None:
    ev = Classification(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        ev.process(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        ev.process(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    ev.process(torch.zeros(1, 3), torch.tensor([5]))
    with pytest.raises(ValueError, match="labels must lie"):
        ev.evaluate()
    with pytest.raises(ValueError, match="lengths"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
