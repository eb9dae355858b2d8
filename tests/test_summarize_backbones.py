"""``summarize.py --layout backbones`` on hand-made run folders (the grid's path layout
``<root>/<dataset>/<trainer>/<backbone folder>/shots<K>/seed<S>/``); every number is computed by hand here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
summarize = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = summarize
_spec.loader.exec_module(summarize)
sys.path.insert(0, str(REPO / "scripts"))
from reporting import backbones as _layout_backbones  # noqa: E402


def _run(root: Path, dataset: str, trainer: str, backbone: str, folder: str, seed: int, accuracy: float, *,
         shots: int = 16, subsample: str = "all", epochs: int = 5) -> None:
    """One metrics.json; ``folder`` is the backbone's path component, deliberately not the backbone's name."""
    d = root / dataset / trainer / folder / f"shots{shots}" / f"seed{seed}" / subsample
    d.mkdir(parents=True)
    m = {"dataset": dataset, "trainer": trainer, "backbone": backbone, "seed": seed, "shots": shots,
         "subsample": subsample, "epochs": epochs, "accuracy": accuracy, "macro_f1": accuracy / 2, "ece": 1.0}
    (d / "metrics.json").write_text(json.dumps(m))


def _tables(root: Path) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    for section in (root / "summary.md").read_text(encoding="utf-8").split("## ")[1:]:
        title, *lines = section.splitlines()
        tables[title] = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return tables


def _cell(table: list[list[str]], row: str, column: str) -> str:
    return next(r for r in table[1:] if r[0] == row)[table[0].index(column)]


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


# folders named unlike the backbone field: the field is what counts
BACKBONES = {"tiny-biomedclip": "bm", "tiny-pmc-clip": "pmc", "tiny-pubmedclip": "pub", "tiny-clip": "oa"}


def test_fewshot_rows_trainers_columns_backbones_mean_std_and_average(tmp_path: Path) -> None:
    acc = {  # (dataset, trainer, backbone) -> per-seed accuracies at K=16; K=4 is 10 lower
        ("Alpha", "CoOp", "tiny-biomedclip"): [50.0, 60.0, 70.0],
        ("Alpha", "CoOp", "tiny-pmc-clip"): [40.0, 44.0, 48.0],
        ("Beta", "CoOp", "tiny-biomedclip"): [80.0, 82.0, 84.0],
        ("Beta", "CoOp", "tiny-pmc-clip"): [20.0, 30.0, 40.0],
        ("Alpha", "OGKD", "tiny-biomedclip"): [90.0, 91.0, 92.0],
        ("Beta", "OGKD", "tiny-biomedclip"): [70.0, 71.0, 75.0],
    }
    for (dataset, trainer, backbone), values in acc.items():
        for seed, v in enumerate(values, start=1):
            _run(tmp_path, dataset, trainer, backbone, BACKBONES[backbone], seed, v)
            _run(tmp_path, dataset, trainer, backbone, BACKBONES[backbone], seed, v - 10, shots=4)
    for dataset, value in (("Alpha", 33.0), ("Beta", 44.0)):  # training-free: one value per dataset
        for backbone in ("tiny-biomedclip", "tiny-pmc-clip"):
            for k in (4, 16):
                for seed in (1, 2, 3):
                    _run(tmp_path, dataset, "ZeroshotCLIP", backbone, BACKBONES[backbone], seed,
                         value + (backbone == "tiny-pmc-clip"), shots=k, epochs=0)
    assert summarize.main([str(tmp_path), "--layout", "backbones", "--format", "md,latex,json",
                           "--order", "OGKD"]) == 0
    tables = _tables(tmp_path)
    alpha = tables["Few-shot: accuracy (%), K=16 — Alpha"]
    # BiomedCoOp's column order (the PMC-CLIP family before BiomedCLIP); OGKD first (--order), then alphabetical
    assert alpha[0] == ["trainer", "tiny-pmc-clip", "tiny-biomedclip"]
    assert [r[0] for r in alpha[1:]] == ["OGKD", "CoOp", "ZeroshotCLIP (no training)"]
    assert _cell(alpha, "CoOp", "tiny-biomedclip") == _ms([50, 60, 70]) == "60.00 ± 8.16"
    assert _cell(alpha, "CoOp", "tiny-pmc-clip") == _ms([40, 44, 48])
    assert _cell(alpha, "OGKD", "tiny-pmc-clip") == "—"  # no run
    assert _cell(alpha, "ZeroshotCLIP (no training)", "tiny-pmc-clip") == "34.00"
    assert _cell(tables["Few-shot: accuracy (%), K=4 — Beta"], "CoOp", "tiny-pmc-clip") == _ms([10, 20, 30])
    average = tables["Few-shot: accuracy (%), K=16 — Average"]
    assert _cell(average, "CoOp", "tiny-pmc-clip") == f"{(44 + 30) / 2:.2f}"  # mean of the dataset means
    assert _cell(average, "OGKD", "tiny-biomedclip") == f"{(91 + 72) / 2:.2f}"
    assert _cell(average, "ZeroshotCLIP (no training)", "tiny-biomedclip") == f"{(33 + 44) / 2:.2f}"
    assert set(tables) == {f"Few-shot: {m} (%), K={k} — {r}" for m in ("accuracy", "macro_f1", "ece")
                           for k in (4, 16) for r in ("Alpha", "Beta", "Average")}

    tex = (tmp_path / "summary.tex").read_text()
    assert "Rows: trainers; columns: backbones; K=16; dataset Alpha" in tex
    assert "\\textbf{91.00}" in tex  # OGKD is the best tiny-biomedclip trainer on Alpha
    assert "tiny-pmc-clip & tiny-biomedclip" in tex
    records = json.loads((tmp_path / "summary.json").read_text())
    rec = next(r for r in records if (r["metric"], r["dataset"], r["trainer"], r["backbone"], r["shots"])
               == ("accuracy", "Alpha", "CoOp", "tiny-pmc-clip", 16))
    assert rec["mean"] == pytest.approx(44.0) and rec["std"] == pytest.approx(np.std([40, 44, 48]), abs=1e-4)


def test_base_to_novel_base_novel_hm_per_backbone(tmp_path: Path) -> None:
    base = {"tiny-clip": [60.0, 70.0], "tiny-pubmedclip": [80.0, 90.0]}
    new = {"tiny-clip": [30.0, 50.0], "tiny-pubmedclip": [40.0, 40.0]}
    for backbone in base:
        for seed in (1, 2):
            for half, values in (("base", base), ("new", new)):
                _run(tmp_path, "Alpha", "CoOp", backbone, BACKBONES[backbone], seed, values[backbone][seed - 1],
                     subsample=half)
    assert summarize.main([str(tmp_path), "--layout", "backbones", "--metrics", "accuracy"]) == 0
    table = _tables(tmp_path)["Base-to-novel: accuracy (%), K=16 — Alpha"]
    assert table[0] == ["trainer", "tiny-clip base", "tiny-clip novel", "tiny-clip HM", "tiny-pubmedclip base",
                        "tiny-pubmedclip novel", "tiny-pubmedclip HM"]
    assert _cell(table, "CoOp", "tiny-clip base") == _ms([60, 70])
    assert _cell(table, "CoOp", "tiny-pubmedclip novel") == "40.00 ± 0.00"
    assert _cell(table, "CoOp", "tiny-clip HM") == f"{2 * 65 * 40 / (65 + 40):.2f}"  # HM of the seed-means
    assert _cell(table, "CoOp", "tiny-pubmedclip HM") == f"{2 * 85 * 40 / 125:.2f}"


def test_backbone_order_and_missing_field() -> None:
    order = _layout_backbones.backbone_order(["BiomedCLIP", "zzz", None, "PMC-CLIP", "ViT-B/16", "PubMedCLIP", "aaa"])
    assert order == ["ViT-B/16", "PubMedCLIP", "PMC-CLIP", "BiomedCLIP", "aaa", "zzz", None]
    assert _layout_backbones.AVERAGE == summarize.AVERAGE and _layout_backbones.PARTS == summarize.PARTS
    assert "backbones" in summarize.LAYOUTS
