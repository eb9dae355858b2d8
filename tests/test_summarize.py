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


# ---------------------------------------------------------------------------------------------------- --format, layouts
def _latex_grid(root: Path) -> None:
    """Beta / Skin_Lesion × CLIP_Adapter and OGKD, K = 4 and 16, seeds 1-2; ece 3 for CLIP_Adapter, 5 for OGKD.

    accuracy, K=4: Beta CLIP_Adapter 80 ± 0, OGKD 61 ± 1; Skin_Lesion CLIP_Adapter 55 ± 5, OGKD 71 ± 1;
    Average CLIP_Adapter 67.5, OGKD 66. K=16: CLIP_Adapter on Beta seed 1 only (70), OGKD on Skin_Lesion (90 ± 0);
    so the K=16 Averages are incomplete: CLIP_Adapter over 0 of 2 datasets, OGKD over 1 (90)."""
    for seed, (a, o, b, p) in zip((1, 2), ((50.0, 70.0, 80.0, 60.0), (60.0, 72.0, 80.0, 62.0))):
        _write(root, "Skin_Lesion", "CLIP_Adapter", seed, a, shots=4, ece=3.0)
        _write(root, "Skin_Lesion", "OGKD", seed, o, shots=4, ece=5.0)
        _write(root, "Beta", "CLIP_Adapter", seed, b, shots=4, ece=3.0)
        _write(root, "Beta", "OGKD", seed, p, shots=4, ece=5.0)
        _write(root, "Skin_Lesion", "OGKD", seed, 90.0, shots=16, ece=5.0)
    _write(root, "Beta", "CLIP_Adapter", 1, 70.0, shots=16, ece=3.0)


def _tex_tables(root: Path) -> list[str]:
    text = (root / "summary.tex").read_text(encoding="utf-8")
    return text.split("\\begin{table}")[1:]


def test_latex_booktabs_bold_best_per_k_and_escaped_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _latex_grid(tmp_path)
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "ece", "--format", "md,latex"]) == 0
    text = (tmp_path / "summary.tex").read_text(encoding="utf-8")
    assert text.startswith("%") and "\\usepackage{booktabs}" in text.splitlines()[1]
    assert text.isascii()  # ±, †, —, ×, … are written as LaTeX commands
    acc, ece = _tex_tables(tmp_path)  # one LaTeX table per Markdown table
    assert len(_tables(tmp_path)) == 2
    lines = acc.splitlines()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}", "\\end{table}"):
        assert rule in lines
    caption = next(line for line in lines if line.startswith("\\caption{"))
    assert "Few-shot: accuracy (\\%)" in caption and "Rows: datasets; columns: trainer $\\times$ K" in caption
    assert "seeds 1, 2 (every seed found)" in caption and "highest" in caption
    assert " & \\multicolumn{2}{c}{CLIP\\_Adapter} & \\multicolumn{2}{c}{OGKD} \\\\" in lines
    assert "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}" in lines
    assert "dataset & K=4 & K=16 & K=4 & K=16 \\\\" in lines
    # per row, the best among the trainers with the same K; a value alone at its K is never bold
    assert ("Beta & \\textbf{80.00} $\\pm$ 0.00 & 70.00 $\\pm$ 0.00 $^\\dagger$(missing 2) & 61.00 $\\pm$ 1.00 & "
            "--- \\\\") in lines
    assert "Skin\\_Lesion & 55.00 $\\pm$ 5.00 & --- & \\textbf{71.00} $\\pm$ 1.00 & 90.00 $\\pm$ 0.00 \\\\" in lines
    # incomplete Averages are marked and never compete
    average = lines.index("Average & \\textbf{67.50} & ---$^{*}$ (0/2 datasets) & 66.00 & 90.00$^{*}$ (1/2 datasets) "
                          "\\\\")
    assert lines[average - 1] == "\\midrule" and lines[average + 1] == "\\bottomrule"
    # ece: lower is better
    lines = ece.splitlines()
    assert "lowest" in next(line for line in lines if line.startswith("\\caption{"))
    assert ("Beta & \\textbf{3.00} $\\pm$ 0.00 & 3.00 $\\pm$ 0.00 $^\\dagger$(missing 2) & 5.00 $\\pm$ 0.00 & "
            "--- \\\\") in lines
    assert "Average & \\textbf{3.00} & ---$^{*}$ (0/2 datasets) & 5.00 & 5.00$^{*}$ (1/2 datasets) \\\\" in lines
    assert summarize._tex("a_b%c&d#e") == "a\\_b\\%c\\&d\\#e"
    capsys.readouterr()

    # trainers layout: best per column (one K) of each per-dataset table
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--format", "latex", "--layout", "trainers"]) == 0
    assert capsys.readouterr().out == ""  # no md: nothing on stdout
    assert not (tmp_path / "fewshot_accuracy.csv").exists()
    beta, skin, average = _tex_tables(tmp_path)
    assert "Rows: trainers; columns: K; dataset Skin\\_Lesion" in skin
    assert "trainer & K=4 & K=16 \\\\" in skin.splitlines()
    assert "CLIP\\_Adapter & 55.00 $\\pm$ 5.00 & --- \\\\" in skin.splitlines()
    assert "OGKD & \\textbf{71.00} $\\pm$ 1.00 & 90.00 $\\pm$ 0.00 \\\\" in skin.splitlines()
    assert ("CLIP\\_Adapter & \\textbf{80.00} $\\pm$ 0.00 & 70.00 $\\pm$ 0.00 $^\\dagger$(missing 2) \\\\"
            in beta.splitlines())
    # the Average table marks incomplete averages (which never compete)
    assert "CLIP\\_Adapter & \\textbf{67.50} & ---$^{*}$ (0/2 datasets) \\\\" in average.splitlines()
    assert "OGKD & 66.00 & 90.00$^{*}$ (1/2 datasets) \\\\" in average.splitlines()
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--layout", "trainers"]) == 0
    assert _tables(tmp_path)["Few-shot: accuracy (%) — Average"][1:] == [
        ["CLIP_Adapter", "67.50", "—* (0/2 datasets)"], ["OGKD", "66.00", "90.00* (1/2 datasets)"]]


def test_json_records_equal_the_csv_rows(tmp_path: Path) -> None:
    _latex_grid(tmp_path)
    for seed, (b, n) in zip((1, 2), ((90.0, 10.0), (70.0, 30.0))):
        _write(tmp_path, "Beta", "CoOp", seed, b, subsample="base")
        _write(tmp_path, "Beta", "CoOp", seed, n, subsample="new")
    _write(tmp_path, "Beta", "CoOp", 3, 50.0, subsample="base")  # seed 3 has no new run
    assert summarize.main([str(tmp_path), "--format", "csv,json"]) == 0
    assert not (tmp_path / "summary.md").exists() and not (tmp_path / "summary.tex").exists()
    rows = _csv(tmp_path / "summary.csv")
    records = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert len(records) == len(rows) == 3 * (4 * 3) + 3 * 2  # 4 trainer × K columns × 3 rows; 2 base-to-novel rows
    for row, record in zip(rows, records):
        assert list(record) == list(row)
        for key, text in row.items():
            value = record[key]
            if key.startswith("missing_"):  # a list where the row has the field, else None
                assert text == "" if value is None else " ".join(map(str, value)) == text
            elif text == "":
                assert value is None
            elif isinstance(value, str):
                assert value == text
            else:
                assert isinstance(value, int | float) and value == pytest.approx(float(text), abs=1e-12)
    by_key = {(r["protocol"], r["metric"], r["dataset"], r["trainer"], r["shots"]): r for r in records}
    skin = by_key[("fewshot", "accuracy", "Skin_Lesion", "CLIP_Adapter", 4)]
    assert skin["mean"] == 55.0 and skin["std"] == 5.0 and skin["n_seeds"] == 2 and skin["missing_seeds"] == []
    assert skin["backbone"] is None
    assert by_key[("fewshot", "accuracy", "Beta", "CLIP_Adapter", 16)]["missing_seeds"] == [2]
    avg = by_key[("fewshot", "accuracy", "Average", "OGKD", 16)]
    assert avg["mean"] == 90.0 and avg["std"] is None and avg["missing_datasets"] == ["Beta"]
    b2n = by_key[("base2novel", "accuracy", "Beta", "CoOp", 16)]
    assert b2n["base_mean"] == 80.0 and b2n["hm"] == pytest.approx(32.0) and b2n["missing_seeds"] == [3]
    assert b2n["missing_base"] == [] and b2n["missing_new"] == [3] and b2n["mean"] is None


def _zero_shot_grid(root: Path, *, vary: bool = False) -> None:
    """CoOp (trained) and ZeroshotCLIP (epochs 0: Alpha 40, Beta 62 at every K and seed) at K = 1, 4, seeds 1-3.

    CoOp: Alpha K=1 52/53/54 (53 ± 0.82), K=4 56 ± 0.82; Beta 61 (K=1) and 64 (K=4) at every seed."""
    for seed in (1, 2, 3):
        for k in (1, 4):
            _write(root, "Alpha", "CoOp", seed, 50.0 + k + seed, shots=k, epochs=10)
            _write(root, "Beta", "CoOp", seed, 60.0 + k, shots=k, epochs=10)
            _write(root, "Alpha", "ZeroshotCLIP", seed, 40.0 + (k == 4 and vary), shots=k, epochs=0)
            _write(root, "Beta", "ZeroshotCLIP", seed, 62.0, shots=k, epochs=0)


def test_training_free_trainer_is_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _zero_shot_grid(tmp_path)
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--format", "md,csv,latex"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert acc[0] == ["dataset", "CoOp K=1", "CoOp K=4", "ZeroshotCLIP (no training)"]
    assert [_cell(acc, row, "ZeroshotCLIP (no training)") for row in ("Alpha", "Beta", "Average")] == [
        "40.00", "62.00", "51.00"]
    assert _cell(acc, "Alpha", "CoOp K=1") == "53.00 ± 0.82"
    note = ("- ZeroshotCLIP learns nothing (epochs 0 in every run): one value per dataset, identical over its 6 runs "
            "on each dataset (K ∈ {1, 4}, seeds 1–3).")
    assert note in out.splitlines()
    # the CSV is unchanged: one row per K with plain numbers
    rows = [r for r in _csv(tmp_path / "fewshot_accuracy.csv") if r["trainer"] == "ZeroshotCLIP"]
    assert [(r["dataset"], r["shots"], r["mean"], r["std"]) for r in rows if r["dataset"] != "Average"] == [
        ("Alpha", "1", "40.0000", "0.0000"), ("Alpha", "4", "40.0000", "0.0000"),
        ("Beta", "1", "62.0000", "0.0000"), ("Beta", "4", "62.0000", "0.0000")]
    tex = _tex_tables(tmp_path)[0].splitlines()
    assert "dataset & K=1 & K=4 & no training \\\\" in tex
    # no fake ± 0.00; the training-free column competes at every K: bold where it is the best of some K
    assert "Alpha & \\textbf{53.00} $\\pm$ 0.82 & \\textbf{56.00} $\\pm$ 0.82 & 40.00 \\\\" in tex
    assert "Beta & 61.00 $\\pm$ 0.00 & \\textbf{64.00} $\\pm$ 0.00 & \\textbf{62.00} \\\\" in tex

    # trainers layout: one row, the value in every K column, without ±
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--layout", "trainers"]) == 0
    out = capsys.readouterr().out
    alpha = _tables(tmp_path)["Few-shot: accuracy (%) — Alpha"]
    assert alpha[0] == ["trainer", "K=1", "K=4"]
    assert alpha[2] == ["ZeroshotCLIP (no training)", "40.00", "40.00"]
    assert _tables(tmp_path)["Few-shot: accuracy (%) — Average"][2] == ["ZeroshotCLIP (no training)", "51.00", "51.00"]
    assert note in out.splitlines()


def test_training_free_trainer_whose_runs_differ_keeps_the_old_display(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    _zero_shot_grid(tmp_path, vary=True)  # Alpha K=4: 41, not 40
    assert summarize.main([str(tmp_path), "--metrics", "accuracy"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err  # 0 epochs with differing runs: a method that fits the shots (LinearProbe)
    acc = _tables(tmp_path)["Few-shot: accuracy (%)"]
    assert acc[0] == ["dataset", "CoOp K=1", "CoOp K=4", "ZeroshotCLIP K=1", "ZeroshotCLIP K=4"]
    assert _cell(acc, "Alpha", "ZeroshotCLIP K=4") == "41.00 ± 0.00"
    assert "no training" not in out and "learns nothing" not in out


def test_layout_paper_one_table_per_k_trainers_as_columns_in_order(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate(((50.0, 70.0), (60.0, 80.0)), start=1):
        for k in (1, 4):
            _write(tmp_path, "Alpha", "CoOp", seed, a + k, shots=k)
            _write(tmp_path, "Beta", "CoOp", seed, b + k, shots=k)
            _write(tmp_path, "Alpha", "OGKD", seed, a + 2 * k, shots=k)
            _write(tmp_path, "Beta", "OGKD", seed, b + 2 * k, shots=k)
        _write(tmp_path, "Alpha", "KgCoOp", seed, 10.0 * seed, shots=4)  # K=4 only
        _write(tmp_path, "Alpha", "CoOp", seed, 60.0, subsample="base")
        _write(tmp_path, "Alpha", "CoOp", seed, 40.0, subsample="new")
        _write(tmp_path, "Alpha", "OGKD", seed, 70.0, subsample="base")
        _write(tmp_path, "Alpha", "OGKD", seed, 50.0, subsample="new")
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--layout", "paper", "--order", "OGKD",
                           "--format", "md,latex"]) == 0
    tables = _tables(tmp_path)
    assert list(tables) == ["Few-shot: accuracy (%), K=1", "Few-shot: accuracy (%), K=4",
                            "Base-to-novel: accuracy (%), K=16"]
    k1, k4, b2n = tables.values()
    assert k1[0] == ["dataset", "OGKD", "CoOp"]  # --order first; KgCoOp has no K=1 run
    assert k4[0] == ["dataset", "OGKD", "CoOp", "KgCoOp"]  # then alphabetically
    assert [r[0] for r in k4[1:]] == ["Alpha", "Beta", "Average"]
    assert k4[1] == ["Alpha", "63.00 ± 5.00", "59.00 ± 5.00", "15.00 ± 5.00"]
    assert k4[2] == ["Beta", "83.00 ± 5.00", "79.00 ± 5.00", "—"]
    assert k4[3] == ["Average", "73.00", "69.00", "15.00* (1/2 datasets)"]
    assert k1[3] == ["Average", "67.00", "66.00"]
    assert b2n[0] == ["dataset", "OGKD base", "OGKD novel", "OGKD HM", "CoOp base", "CoOp novel", "CoOp HM"]
    tex = _tex_tables(tmp_path)[1].splitlines()
    assert "dataset & OGKD & CoOp & KgCoOp \\\\" in tex
    assert "Alpha & \\textbf{63.00} $\\pm$ 5.00 & 59.00 $\\pm$ 5.00 & 15.00 $\\pm$ 5.00 \\\\" in tex
    b2n_tex = _tex_tables(tmp_path)[2].splitlines()
    assert " & \\multicolumn{3}{c}{OGKD} & \\multicolumn{3}{c}{CoOp} \\\\" in b2n_tex
    assert "\\cmidrule(lr){2-4} \\cmidrule(lr){5-7}" in b2n_tex
    hm_ogkd, hm_coop = f"{_hm(70, 50):.2f}", f"{_hm(60, 40):.2f}"
    assert (f"Alpha & \\textbf{{70.00}} $\\pm$ 0.00 & \\textbf{{50.00}} $\\pm$ 0.00 & \\textbf{{{hm_ogkd}}} & "
            f"60.00 $\\pm$ 0.00 & 40.00 $\\pm$ 0.00 & {hm_coop} \\\\") in b2n_tex

    # --order now applies to the datasets layout too
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--order", "OGKD"]) == 0
    assert _tables(tmp_path)["Few-shot: accuracy (%)"][0] == [
        "dataset", "OGKD K=1", "OGKD K=4", "CoOp K=1", "CoOp K=4", "KgCoOp K=4"]


def test_unknown_format_is_an_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path, "Alpha", "CoOp", 1, 50.0)
    with pytest.raises(SystemExit) as e:
        summarize.main([str(tmp_path), "--format", "md,pdf"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--format" in err and "'pdf'" in err and "md, csv, latex, json" in err
    assert not (tmp_path / "summary.md").exists()
    assert summarize.main([str(tmp_path)]) == 0  # the default writes what it always wrote, nothing more
    assert {p.name for p in tmp_path.glob("summary.*")} == {"summary.md", "summary.csv"}


def test_order_keeps_the_first_position_of_a_repeated_trainer(tmp_path: Path) -> None:
    # demo.sh passes "--order $TRAINERS $B2N_TRAINERS", so OGKD may come twice: its first position counts
    for trainer in ("CoOp", "OGKD", "KgCoOp"):
        _write(tmp_path, "Alpha", trainer, 1, 50.0, shots=4)
    assert summarize.main([str(tmp_path), "--metrics", "accuracy", "--layout", "paper",
                           "--order", "OGKD", "CoOp", "KgCoOp", "OGKD"]) == 0
    assert _tables(tmp_path)["Few-shot: accuracy (%), K=4"][0] == ["dataset", "OGKD", "CoOp", "KgCoOp"]
