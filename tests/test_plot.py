"""scripts/plot.py and summarize.py --plots on generated runs (metrics.json + predictions.npz written by the
engine's own writer): every figure type renders to valid PNG / PDF files; bad input warns and the rest renders."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.plotdata import PREDICTIONS_FILE, load_predictions, save_predictions, sha256_file

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


summarize = _load("summarize")
plot = _load("plot")
CLASSES = ["benign lesion", "malignant lesion", "normal tissue"]


def _run(root: Path, dataset: str, trainer: str, shots: int, seed: int, *, subsample: str = "all",
         plot_data: bool = True, epochs: int = 5) -> Path:
    """A run directory as the engine writes it: predictions.npz from labels/predictions drawn per run, and
    metrics.json whose accuracy / ECE are those of the predictions."""
    d = root / subsample / dataset / trainer / f"shots{shots}" / f"seed{seed}"
    d.mkdir(parents=True)
    rng = np.random.default_rng([shots, seed, *map(ord, trainer + subsample)])
    label = rng.integers(0, 3, 60)
    skill = 0.4 + 0.03 * shots
    pred = np.where(rng.random(60) < skill, label, rng.integers(0, 3, 60))
    conf = rng.uniform(0.34, 1.0, 60)
    m = {"split": "test", "dataset": dataset, "trainer": trainer, "backbone": "tiny-clip", "seed": seed,
         "shots": shots, "subsample": subsample, "epochs": epochs, "num_samples": 60,
         "accuracy": 100 * float(np.mean(pred == label)), "macro_f1": 50.0}
    if plot_data:
        sha = save_predictions(d / PREDICTIONS_FILE, label=label, pred=pred, confidence=conf, classnames=CLASSES,
                               n_bins=15)
        m["ece"] = load_predictions(d / PREDICTIONS_FILE).ece
        m["predictions"] = {"file": PREDICTIONS_FILE, "sha256": sha}
    else:
        m["ece"] = 5.0
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def _valid(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    if path.suffix == ".png":
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150
    else:
        data = path.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], path


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for dataset in ("Alpha", "Beta"):
        for trainer in ("CoOp", "OGKD"):
            for shots in (1, 4, 16):
                for seed in (1, 2):
                    _run(root / "few_shot", dataset, trainer, shots, seed)
        for seed in (1, 2):  # a training-free method: the same numbers at every K
            for shots in (1, 4, 16):
                d = _run(root / "few_shot", dataset, "ZeroshotCLIP", shots, seed, epochs=0)
                m = json.loads((d / "metrics.json").read_text())
                m.update(accuracy=40.0, macro_f1=30.0, ece=9.0)
                (d / "metrics.json").write_text(json.dumps(m))
            for half in ("base", "new"):
                for trainer in ("CoOp", "OGKD"):
                    _run(root / "base_to_novel", dataset, trainer, 16, seed, subsample=half)
    return root


def test_every_figure_type_renders_valid_images(results: Path) -> None:
    out = results / "figs"
    assert plot.main([str(results), "--out", str(out), "--order", "OGKD", "CoOp"]) == 0
    names = sorted(p.name for p in out.iterdir())
    for stem in ("fewshot_accuracy", "base2novel_accuracy_K16", "reliability_Alpha_K16", "confusion_Alpha_K16",
                 "reliability_Beta_K16_base", "confusion_Beta_K16_new"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names, (stem, names)
    for path in out.iterdir():
        _valid(path)


def test_reliability_pools_the_saved_bins(results: Path) -> None:
    runs, _, _ = summarize.load_runs(results / "few_shot")
    preds = [load_predictions(r.path.parent / PREDICTIONS_FILE) for r in runs
             if (r.dataset, r.trainer, r.shots) == ("Alpha", "CoOp", 16)]
    pooled = plot._pooled(preds)
    conf = np.concatenate([p.confidence for p in preds]).astype(np.float64)
    ok = np.concatenate([p.pred == p.label for p in preds])
    k = np.clip(np.searchsorted(preds[0].bin_edges[1:], conf), 0, 14)
    ece = 100 * sum(abs(ok[k == b].sum() - conf[k == b].sum()) for b in range(15)) / len(conf)
    assert pooled["n"] == 120 and pooled["ece"] == pytest.approx(ece, abs=1e-4)


def test_bad_input_warns_naming_the_file_and_the_rest_renders(results: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "r"
    for seed in (1, 2):
        _run(root, "Alpha", "CoOp", 16, seed)
        _run(root, "Alpha", "CoOp", 4, seed)
    old = _run(root, "Alpha", "LinearProbe", 16, 1, plot_data=False)  # made by an older version
    damaged = _run(root, "Alpha", "OGKD", 16, 1)  # a damaged file (its checksum recorded as it is)
    (damaged / PREDICTIONS_FILE).write_bytes(b"PK\x03\x04 not a zip")
    m = json.loads((damaged / "metrics.json").read_text())
    m["predictions"]["sha256"] = sha256_file(damaged / PREDICTIONS_FILE)
    (damaged / "metrics.json").write_text(json.dumps(m))
    other = _run(root, "Alpha", "OGKD", 16, 2)  # a predictions file that is not this run's
    (other / PREDICTIONS_FILE).write_bytes((root / "all/Alpha/CoOp/shots16/seed1" / PREDICTIONS_FILE).read_bytes())
    corrupt = root / "corrupt" / "metrics.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"dataset": "Alpha", "trainer": "Co')
    partial = root / "partial" / "metrics.json"
    partial.parent.mkdir()
    partial.write_text(json.dumps({"dataset": "Alpha", "trainer": "CoOp", "accuracy": 50.0}))
    out = tmp_path / "figs"
    assert plot.main([str(root), "--out", str(out), "--order", "Nonexistent", "CoOp"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: ")]
    assert any(str(old / "metrics.json") in w and "no plot data" in w for w in warnings)
    assert any(str(damaged / PREDICTIONS_FILE) in w and "unreadable" in w for w in warnings)
    assert any(str(other / PREDICTIONS_FILE) in w and "SHA-256" in w for w in warnings)
    assert any(str(corrupt) in w for w in warnings) and any(str(partial) in w for w in warnings)
    assert any("'Nonexistent'" in w for w in warnings)
    assert len(warnings) == 6  # one line each
    for stem in ("fewshot_accuracy", "reliability_Alpha_K16", "confusion_Alpha_K16"):
        _valid(out / f"{stem}.png")
    assert plot.main([str(tmp_path / "missing")]) == 2


def test_summarize_plots_writes_a_report_embedding_the_figures(results: Path, tmp_path: Path) -> None:
    root = results / "few_shot"
    assert summarize.main([str(root), "--plots", "--order", "OGKD"]) == 0
    report = (root / "report.md").read_text(encoding="utf-8")
    embedded = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert "figures/fewshot_accuracy.png" in embedded and "figures/reliability_Alpha_K16.png" in embedded
    for rel in embedded:
        _valid(root / rel)
    assert "## Few-shot: accuracy (%)" in report  # the tables are in the report too
