"""scripts/summarize.py on hand-made metrics.json trees: numbers are computed by hand in each test."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
summarize = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = summarize  # dataclasses look the module up while the file executes
_spec.loader.exec_module(summarize)


def _write(root: Path, dataset: str, trainer: str, seed: int, accuracy: float, *, subsample: str = "all",
           shots: int = 16, **extra: object) -> Path:
    """A minimal metrics.json; the folder name is arbitrary on purpose (runs are classified by content)."""
    d = root / f"{dataset}_{trainer}_{shots}_{seed}_{subsample}"
    d.mkdir(parents=True)
    m = {"dataset": dataset, "trainer": trainer, "seed": seed, "shots": shots, "subsample": subsample,
         "accuracy": accuracy, "macro_f1": accuracy / 2, "ece": 1.0, **extra}
    (d / "metrics.json").write_text(json.dumps(m))
    return d / "metrics.json"


def _tables(root: Path) -> dict[str, list[list[str]]]:
    """summary.md parsed back: section title → table rows (header first) as lists of stripped cells."""
    tables: dict[str, list[list[str]]] = {}
    for section in (root / "summary.md").read_text(encoding="utf-8").split("## ")[1:]:
        title, *lines = section.splitlines()
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
        tables[title] = rows
    return tables


def _cell(table: list[list[str]], row: str, column: str) -> str:
    header = table[0]
    return next(r for r in table[1:] if r[0] == row)[header.index(column)]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


def test_fewshot_mean_population_std_and_average(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed, (a, b) in enumerate(((50.0, 70.0), (60.0, 80.0), (70.0, 90.0)), start=1):
        _write(tmp_path, "Alpha", "CoOp", seed, a)
        _write(tmp_path, "Beta", "CoOp", seed, b)
        _write(tmp_path, "Alpha", "CoOp", seed, a + 1, shots=4)
        _write(tmp_path, "Beta", "CoOp", seed, b + 1, shots=4)
    assert summarize.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    std = (((50 - 60) ** 2 + 0 + (70 - 60) ** 2) / 3) ** 0.5  # population std = 8.165 (sample std would be 10)
    assert f"{std:.2f}" == "8.16"
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert acc[0] == ["dataset", "CoOp K=4", "CoOp K=16"]  # K ascending
    assert [r[0] for r in acc[1:]] == ["Alpha", "Beta", "Average"]
    assert _cell(acc, "Alpha", "CoOp K=16") == "60.00 ± 8.16"
    assert _cell(acc, "Beta", "CoOp K=16") == "80.00 ± 8.16"
    assert _cell(acc, "Average", "CoOp K=16") == "70.00"  # (60 + 80) / 2, complete: no marker
    assert _cell(acc, "Average", "CoOp K=4") == "71.00"
    assert _cell(_tables(tmp_path)["Few-shot: macro_f1 (%)"], "Alpha", "CoOp K=16") == "30.00 ± 4.08"
    assert "population std" in out and "†" not in out and "Base-to-novel" not in out
    assert "| Alpha     | 61.00 ± 8.16" in out  # github markdown, dataset first


def test_missing_seed_is_marked_and_the_average_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed, acc in zip((1, 2, 3), (50.0, 60.0, 70.0)):
        _write(tmp_path, "Alpha", "CoOp", seed, acc)
    _write(tmp_path, "Beta", "CoOp", 1, 60.0)
    _write(tmp_path, "Beta", "CoOp", 2, 62.0)  # seed 3 missing
    _write(tmp_path, "Beta", "OGKD", 1, 99.0)  # OGKD: no Alpha run at all
    assert summarize.main([str(tmp_path), "--metrics", "accuracy"]) == 0
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Beta", "CoOp K=16") == "61.00 ± 1.00 †(missing 3)"
    assert _cell(acc, "Alpha", "OGKD K=16") == "—"
    assert _cell(acc, "Beta", "OGKD K=16") == "99.00 ± 0.00 †(missing 2, 3)"
    # Beta is left out of the average, not averaged over its two seeds: 60.00, not (60 + 61) / 2
    assert _cell(acc, "Average", "CoOp K=16") == "60.00* (1/2 datasets)"
    assert _cell(acc, "Average", "OGKD K=16") == "—* (0/2 datasets)"
    out = capsys.readouterr().out
    assert "†(missing s)" in out and "X* (n/N datasets)" in out  # the footnote explains both markers

    rows = {(r["dataset"], r["trainer"]): r for r in _csv(tmp_path / "fewshot_accuracy.csv")}
    assert rows[("Beta", "CoOp")]["n_seeds"] == "2" and rows[("Beta", "CoOp")]["missing_seeds"] == "3"
    assert rows[("Average", "CoOp")]["n_datasets"] == "1" and rows[("Average", "CoOp")]["missing_datasets"] == "Beta"

    # --seeds widens the expected set: Alpha now lacks seed 4 too
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--seeds", "1", "2", "3", "4"]) == 0
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Alpha", "CoOp K=16") == "60.00 ± 8.16 †(missing 4)"
    assert _cell(acc, "Average", "CoOp K=16") == "—* (0/2 datasets)"
    # ... and narrows it: runs with other seeds are left out, with a note
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--seeds", "1", "2"]) == 0
    assert "left out" in capsys.readouterr().err
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Alpha", "CoOp K=16") == "55.00 ± 5.00"
    assert _cell(acc, "Average", "CoOp K=16") == "58.00"  # (55 + 61) / 2


def test_base_to_novel_hm_of_seed_means(tmp_path: Path) -> None:
    # Alpha: per-seed HMs 18 and 42 (mean 30); seed-means 80 / 20 give HM 32
    for seed, (b, n) in zip((1, 2), ((90.0, 10.0), (70.0, 30.0))):
        _write(tmp_path, "Alpha", "CoOp", seed, b, subsample="base")
        _write(tmp_path, "Alpha", "CoOp", seed, n, subsample="new")
        _write(tmp_path, "Beta", "CoOp", seed, 20.0, subsample="base")
        _write(tmp_path, "Beta", "CoOp", seed, 80.0, subsample="new")
    assert np.mean([_hm(90, 10), _hm(70, 30)]) == pytest.approx(30.0) and _hm(80, 20) == pytest.approx(32.0)
    assert summarize.main([str(tmp_path), "--metrics", "accuracy"]) == 0
    t = _tables(tmp_path)["Base-to-novel: accuracy (%), K=16"]
    assert t[0] == ["dataset", "CoOp base", "CoOp novel", "CoOp HM"]
    assert [_cell(t, "Alpha", c) for c in t[0][1:]] == ["80.00 ± 10.00", "20.00 ± 10.00", "32.00"]
    assert [_cell(t, "Beta", c) for c in t[0][1:]] == ["20.00 ± 0.00", "80.00 ± 0.00", "32.00"]
    # Average: base (80+20)/2 = 50, novel (20+80)/2 = 50, HM(50, 50) = 50, not the mean of dataset HMs (32)
    assert [_cell(t, "Average", c) for c in t[0][1:]] == ["50.00", "50.00", "50.00"]
    assert not (tmp_path / "fewshot_accuracy.csv").exists()  # only tables with data
    avg = next(r for r in _csv(tmp_path / "base2novel_accuracy.csv") if r["dataset"] == "Average")
    assert float(avg["hm"]) == pytest.approx(50.0) and float(avg["base_mean"]) == pytest.approx(50.0)


def test_base_to_novel_seed_with_only_a_base_run_is_missing(tmp_path: Path) -> None:
    for seed, (b, n) in zip((1, 2), ((90.0, 10.0), (70.0, 30.0))):
        _write(tmp_path, "Alpha", "CoOp", seed, b, subsample="base")
        _write(tmp_path, "Alpha", "CoOp", seed, n, subsample="new")
    _write(tmp_path, "Alpha", "CoOp", 3, 0.0, subsample="base")  # no new run: must not enter the base mean
    for seed in (1, 2, 3):
        _write(tmp_path, "Beta", "CoOp", seed, 20.0, subsample="base")
        _write(tmp_path, "Beta", "CoOp", seed, 80.0, subsample="new")
    assert summarize.main([str(tmp_path), "--metrics", "accuracy"]) == 0
    t = _tables(tmp_path)["Base-to-novel: accuracy (%), K=16"]
    assert _cell(t, "Alpha", "CoOp base") == "80.00 ± 10.00 †(missing 3)"
    assert _cell(t, "Alpha", "CoOp novel") == "20.00 ± 10.00 †(missing 3)"
    assert _cell(t, "Alpha", "CoOp HM") == "32.00 †(missing 3)"
    assert _cell(t, "Average", "CoOp HM") == "32.00* (1/2 datasets)"  # Beta alone
    rows = {r["dataset"]: r for r in _csv(tmp_path / "base2novel_accuracy.csv")}
    assert rows["Alpha"]["missing_seeds"] == "3" and rows["Alpha"]["missing_new"] == "3"
    assert rows["Alpha"]["missing_base"] == "" and rows["Alpha"]["n_seeds"] == "2"
    assert float(rows["Alpha"]["base_mean"]) == pytest.approx(80.0)
    assert float(rows["Alpha"]["hm"]) == pytest.approx(32.0)


def test_csv_files_hold_plain_numbers(tmp_path: Path) -> None:
    for seed, acc in zip((1, 2, 3), (50.0, 60.0, 70.0)):
        _write(tmp_path, "Alpha", "CoOp", seed, acc, shots=-1)
        _write(tmp_path, "Alpha", "CoOp", seed, acc, subsample="base")
        _write(tmp_path, "Alpha", "CoOp", seed, acc + 10, subsample="new")
    assert summarize.main([str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.glob("*.csv")}
    assert names == {"summary.csv", *(f"{p}_{m}.csv" for p in ("fewshot", "base2novel")
                                      for m in ("accuracy", "macro_f1", "ece"))}
    rows = _csv(tmp_path / "fewshot_accuracy.csv")
    assert list(rows[0])[:8] == ["dataset", "trainer", "backbone", "shots", "mean", "std", "n_seeds",
                                 "missing_seeds"]
    alpha, average = rows
    assert alpha["shots"] == "-1" and alpha["n_seeds"] == "3" and alpha["missing_seeds"] == ""
    assert float(alpha["mean"]) == 60.0 and float(alpha["std"]) == pytest.approx(np.std([50, 60, 70]), abs=1e-4)
    assert average["dataset"] == "Average" and float(average["mean"]) == 60.0 and average["n_datasets"] == "1"
    b2n = _csv(tmp_path / "base2novel_accuracy.csv")[0]
    assert float(b2n["base_mean"]) == 60.0 and float(b2n["novel_mean"]) == 70.0
    assert float(b2n["hm"]) == pytest.approx(_hm(60, 70), abs=1e-4)
    combined = _csv(tmp_path / "summary.csv")
    assert len(combined) == 3 * 2 + 3 * 2 and {r["protocol"] for r in combined} == {"fewshot", "base2novel"}
    assert "K=all" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_malformed_metrics_are_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path, "Alpha", "CoOp", 1, 50.0)
    broken = tmp_path / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    no_seed = _write(tmp_path, "Alpha", "CoOp", 2, 70.0)
    no_seed.write_text(json.dumps({"dataset": "Alpha", "trainer": "CoOp", "shots": 16, "subsample": "all",
                                   "accuracy": 70.0}))
    assert summarize.main([str(tmp_path), "--metrics", "accuracy"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {broken}: unreadable" in err and f"warning: {no_seed}: missing or invalid seed" in err
    assert _cell(_tables(tmp_path)["Few-shot: accuracy (%)"], "Alpha", "CoOp K=16") == "50.00 ± 0.00"


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert summarize.main([str(tmp_path / "absent")]) == 2
    (tmp_path / "file.txt").write_text("x")
    assert summarize.main([str(tmp_path / "file.txt")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summarize.main([str(empty)]) == 1
    assert f"no metrics.json under {empty}" in capsys.readouterr().err
    (empty / "metrics.json").write_text("[]")
    assert summarize.main([str(empty)]) == 1  # only a malformed file: no table
    assert not (empty / "summary.md").exists()


def test_command_line(tmp_path: Path) -> None:
    for seed, acc in zip((1, 2, 3), (50.0, 60.0, 70.0)):
        _write(tmp_path, "SynthMed", "CoOp", seed, acc, shots=4)
    _write(tmp_path, "SynthMed", "ZeroshotCLIP", 1, 40.0, shots=4)
    proc = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path), "--metrics", "accuracy"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("## Few-shot: accuracy (%)")
    assert "| SynthMed  | 60.00 ± 8.16 " in proc.stdout
    assert "40.00 ± 0.00 †(missing 2, 3)" in proc.stdout and "Average   | 60.00 " in proc.stdout
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "fewshot_accuracy.csv").is_file()
    assert not (tmp_path / "fewshot_ece.csv").exists()
    bad = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_layout_trainers_pivots_the_same_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed, (a, b) in enumerate(((50.0, 70.0), (60.0, 80.0)), start=1):
        _write(tmp_path, "Alpha", "CoOp", seed, a, shots=4)
        _write(tmp_path, "Alpha", "OGKD", seed, b, shots=4)
        _write(tmp_path, "Alpha", "OGKD", seed, b + 1, shots=16)
        _write(tmp_path, "Alpha", "OGKD", seed, 40.0 + seed, subsample="base")
        _write(tmp_path, "Alpha", "OGKD", seed, 20.0 + seed, subsample="new")
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--layout", "trainers",
                           "--order", "OGKD", "Nobody"]) == 0
    assert "--order names trainers with no run: Nobody" in capsys.readouterr().err
    tables = _tables(tmp_path)
    few = tables["Few-shot: accuracy (%) — Alpha"]
    assert few[0] == ["trainer", "K=4", "K=16"] and [r[0] for r in few[1:]] == ["OGKD", "CoOp"]  # --order first
    assert _cell(few, "CoOp", "K=4") == "55.00 ± 5.00" and _cell(few, "CoOp", "K=16") == "—"
    assert _cell(few, "OGKD", "K=16") == "76.00 ± 5.00"
    b2n = tables["Base-to-novel: accuracy (%), K=16 — Alpha"]
    assert b2n[0] == ["trainer", "base", "novel", "HM"]
    assert b2n[1] == ["OGKD", "41.50 ± 0.50", "21.50 ± 0.50", f"{_hm(41.5, 21.5):.2f}"]
    # the CSV files do not depend on the layout
    rows = _csv(tmp_path / "fewshot_accuracy.csv")
    assert {(r["trainer"], r["shots"], r["mean"]) for r in rows if r["dataset"] == "Alpha"} == {
        ("CoOp", "4", "55.0000"), ("OGKD", "4", "75.0000"), ("OGKD", "16", "76.0000")}
