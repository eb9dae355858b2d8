"""Published numbers as data (references/*.yaml) and summarize.py --reference, on hand-made run folders whose
expected cells are computed by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from reporting.references import ReferenceFileError, load_reference, reproduction_section

REPO = Path(__file__).resolve().parents[1]
if "summarize" in sys.modules:
    summarize = sys.modules["summarize"]
else:
    _spec = importlib.util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
    summarize = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = summarize
    _spec.loader.exec_module(summarize)


def _write(root: Path, dataset: str, trainer: str, seed: int, accuracy: float, *, subsample: str = "all",
           shots: int = 16, backbone: str = "BiomedCLIP") -> None:
    d = root / f"{dataset}_{trainer}_{shots}_{seed}_{subsample}"
    d.mkdir(parents=True)
    m = {"dataset": dataset, "trainer": trainer, "seed": seed, "shots": shots, "subsample": subsample,
         "backbone": backbone, "accuracy": accuracy, "macro_f1": accuracy / 2, "ece": 1.0}
    (d / "metrics.json").write_text(json.dumps(m))


def _reference(path: Path, rows_fs: str, rows_b2n: str = "", datasets: str = "[Alpha, Beta]",
               hm_average: str = "mean-of-dataset-hms", numbers: str = "per-dataset") -> Path:
    text = f"""name: handmade
citation: "A. Author, a hand-made table, 2026"
source: "written for this test"
backbone: BiomedCLIP
metric: accuracy
trainers:
  Standard LP: LinearProbe
protocols:
  fewshot:
    numbers: {numbers}
    datasets: {datasets}
    average: mean over datasets of per-dataset means
    provenance: Table 1
    columns: [4, 16]
    rows:
{rows_fs}
"""
    if rows_b2n:
        text += f"""  base2novel:
    numbers: {numbers}
    datasets: {datasets}
    shots: 16
    average: mean over datasets
    hm_average: {hm_average}
    provenance: Table 2
    columns: [base, novel, HM]
    rows:
{rows_b2n}
"""
    path.write_text(text, encoding="utf-8")
    return path


def _tables(root: Path) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    for section in (root / "summary.md").read_text(encoding="utf-8").split("## ")[1:]:
        title, *lines = section.splitlines()
        tables[title] = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return tables


def _cell(table: list[list[str]], row: str, column: str) -> str:
    return next(r for r in table[1:] if r[0] == row)[table[0].index(column)]


# ---------------------------------------------------------------------------------------------------- the shipped file
def test_shipped_biomedcoop_reference_parses_and_holds_the_published_figures() -> None:
    ref = load_reference("biomedcoop-cvpr25")
    assert ref.backbone == "BiomedCLIP" and ref.metric == "accuracy" and "CVPR 2025" in ref.citation
    fs, b2n = ref.protocols["fewshot"], ref.protocols["base2novel"]
    assert fs.numbers == b2n.numbers == "averages"
    assert len(fs.datasets) == 11 and len(b2n.datasets) == 10 and "BUSI" not in b2n.datasets and b2n.shots == 16
    # spot checks against docs/REFERENCES.md (BiomedCoOp repository README)
    assert fs.values[("CoOp", "Average", 16)] == 69.62
    assert fs.values[("BiomedCoOp", "Average", 1)] == 57.03
    assert fs.values[("Standard LP", "Average", 2)] == 54.21
    assert fs.values[("Tip-Adapter-F", "Average", 8)] == 65.91
    assert b2n.values[("BiomedCLIP (zero-shot)", "Average", "novel")] == 65.42
    assert b2n.values[("CoOp", "Average", "HM")] == 67.23
    assert len(fs.values) == 10 * 5 and len(b2n.values) == 6 * 3
    # the published HM average is not the HM of the published averages: the file says how it was made
    hm = 2 * 73.85 * 64.75 / (73.85 + 64.75)
    assert round(hm, 2) == 69.00 and b2n.hm_average == "mean-of-dataset-hms"
    # the trainer-name map
    assert ref.trainer_name("Standard LP") == "LinearProbe" and ref.published_name("LinearProbe") == "Standard LP"
    assert ref.published_name("LPPlusPlus") == "LP++" and ref.published_name("CoOp") == "CoOp"


def test_malformed_row_is_one_line_naming_the_file_and_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _reference(tmp_path / "bad.yaml", "      - [CoOp, Alpha, 60.0, 70.0]\n      - [CoOp, Beta, 61.0, oops]")
    with pytest.raises(ReferenceFileError, match=r"bad\.yaml: fewshot row 2 \(CoOp, Beta\): not a number"):
        load_reference(bad)
    short = _reference(tmp_path / "short.yaml", "      - [CoOp, Alpha, 60.0]")
    with pytest.raises(ReferenceFileError, match=r"short\.yaml: fewshot row 1 \(CoOp, Alpha\): 1 values for the 2"):
        load_reference(short)
    _write(tmp_path / "runs", "Alpha", "CoOp", 1, 50.0)
    assert summarize.main([str(tmp_path / "runs"), "--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "row 2" in err[0]
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text("name: x\nsource: Table 2: page 6\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match=r"unquoted\.yaml: unreadable YAML at line 2 "):
        load_reference(unquoted)
    assert summarize.main([str(tmp_path / "runs"), "--reference", "no-such-source"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-source.yaml" in err[0] and "biomedcoop-cvpr25" in err[0]


# ---------------------------------------------------------------------------------------------------- --reference
def _grid(root: Path) -> None:
    """CoOp on Alpha (seeds 70, 72, 74: mean 72, population std 1.633) and Beta (60, 60, 60); LinearProbe on Alpha."""
    for seed, (a, b) in enumerate(((70.0, 60.0), (72.0, 60.0), (74.0, 60.0)), start=1):
        _write(root, "Alpha", "CoOp", seed, a)
        _write(root, "Beta", "CoOp", seed, b)
        _write(root, "Alpha", "LinearProbe", seed, 50.0 + seed)
        _write(root, "Alpha", "OGKD", seed, 80.0)


def test_reference_values_differences_and_the_noise_mark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "runs"
    _grid(root)
    ref = _reference(tmp_path / "ref.yaml", "\n".join([
        "      - [CoOp, Alpha, null, 68.0]",      # Δ = +4.00 > 2 × 1.633 = 3.27: marked
        "      - [CoOp, Beta, null, 59.0]",       # Δ = +1.00, std 0: marked (any difference exceeds no noise)
        "      - [CoOp, Average, 70.0, 65.5]",    # Average: measured (72 + 60) / 2 = 66; per-seed averages 65, 66, 67
        "      - [Standard LP, Alpha, null, 51.0]",  # LinearProbe 51, 52, 53: Δ = +1.00 < 2 × 0.816: not marked
    ]))
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref), "--format", "md,json"]) == 0
    err = capsys.readouterr().err
    assert "no published value in handmade for: OGKD" in err  # listed once
    acc = _tables(root)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Alpha", "CoOp K=16") == "72.00 ± 1.63 [pub 68.00; Δ +4.00 !]"
    assert _cell(acc, "Beta", "CoOp K=16") == "60.00 ± 0.00 [pub 59.00; Δ +1.00 !]"
    # per-seed averages 65, 66, 67: std 0.816, 2 × = 1.63 > |66 − 65.5|: not marked
    assert _cell(acc, "Average", "CoOp K=16") == "66.00 [pub 65.50; Δ +0.50]"
    assert _cell(acc, "Alpha", "LinearProbe K=16") == "52.00 ± 0.82 [pub 51.00; Δ +1.00]"
    assert _cell(acc, "Alpha", "OGKD K=16") == "80.00 ± 0.00"  # only cells the reference has
    text = (root / "summary.md").read_text(encoding="utf-8")
    assert "Average rows compared: the runs cover the reference's datasets (Alpha, Beta;" in text
    assert "2 × the population std over seeds" in text
    records = json.loads((root / "summary.json").read_text())
    alpha = next(r for r in records if (r["dataset"], r["trainer"]) == ("Alpha", "CoOp"))
    assert alpha["published"] == 68.0 and alpha["difference"] == 4.0 and alpha["beyond_noise"] is True
    assert alpha["noise_std"] == pytest.approx(float(np.std([70, 72, 74])), abs=1e-4)
    ogkd = next(r for r in records if (r["dataset"], r["trainer"]) == ("Alpha", "OGKD"))
    assert ogkd.get("published") is None
    # LaTeX gains the same
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref), "--format", "latex"]) == 0
    tex = (root / "summary.tex").read_text(encoding="utf-8")
    assert "72.00 $\\pm$ 1.63 [pub.\\ 68.00; $\\Delta$ +4.00 \\textbf{!}]" in tex


def test_average_not_compared_when_the_runs_cover_other_datasets(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _grid(root)
    ref = _reference(tmp_path / "ref.yaml", "      - [CoOp, Average, 70.0, 65.5]", datasets="[Alpha, Beta, Gamma]",
                     numbers="averages")
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref)]) == 0
    acc = _tables(root)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Average", "CoOp K=16") == "66.00 [pub 65.50; other datasets]"
    text = (root / "summary.md").read_text(encoding="utf-8")
    assert "Average rows not compared: the reference averages over 3 datasets (Alpha, Beta, Gamma); these runs " \
           "cover Alpha, Beta." in text


def test_base_to_novel_hm_average_compared_like_with_like(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    # Alpha: base 90, novel 10 (HM 18); Beta: base 20, novel 80 (HM 32). Averages 55 / 45: HM of averages 49.5;
    # mean of dataset HMs 25. Seeds 1 and 2 identical.
    for seed in (1, 2):
        for dataset, (b, n) in (("Alpha", (90.0, 10.0)), ("Beta", (20.0, 80.0))):
            _write(root, dataset, "CoOp", seed, b, subsample="base")
            _write(root, dataset, "CoOp", seed, n, subsample="new")
    b2n = "      - [CoOp, Average, 55.0, 45.0, 24.0]"
    ref = _reference(tmp_path / "ref.yaml", "      - [CoOp, Alpha, null, 1.0]", b2n)
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref)]) == 0
    table = _tables(root)["Base-to-novel: accuracy (%), K=16"]
    assert _cell(table, "Average", "CoOp HM") == "49.50 [pub 24.00 vs mean of dataset HMs 25.00; Δ +1.00 !]"
    assert _cell(table, "Average", "CoOp base") == "55.00 [pub 55.00; Δ +0.00]"
    ref2 = _reference(tmp_path / "ref2.yaml", "      - [CoOp, Alpha, null, 1.0]", b2n, hm_average="hm-of-averages")
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref2)]) == 0
    table = _tables(root)["Base-to-novel: accuracy (%), K=16"]
    assert _cell(table, "Average", "CoOp HM") == "49.50 [pub 24.00; Δ +25.50 !]"


def test_missing_seed_and_dataset_handled_as_the_tables_do(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _grid(root)
    (root / "Beta_CoOp_16_3_all" / "metrics.json").unlink()  # Beta lacks seed 3: its Average is partial
    ref = _reference(tmp_path / "ref.yaml", "      - [CoOp, Beta, null, 59.0]\n      - [CoOp, Average, null, 65.0]")
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref)]) == 0
    acc = _tables(root)["Few-shot: accuracy (%)"]
    assert _cell(acc, "Beta", "CoOp K=16") == "60.00 ± 0.00 †(missing 3) [pub 59.00; Δ +1.00 !]"
    assert _cell(acc, "Average", "CoOp K=16") == "72.00* (1/2 datasets) [pub 65.00; incomplete]"


def test_reproduction_section_lists_each_trainer_and_the_cells_to_look_at_first(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _grid(root)
    ref = load_reference(_reference(tmp_path / "ref.yaml", "\n".join([
        "      - [CoOp, Alpha, null, 68.0]", "      - [CoOp, Beta, null, 59.0]",
        "      - [Standard LP, Alpha, null, 51.0]", "      - [CoCoOp, Alpha, null, 51.0]"])))
    runs, _, _ = summarize.load_runs(root, ["accuracy"])
    grids, _ = summarize.build_grids(runs, ["accuracy"])
    _, comparisons = summarize.annotate(grids, runs, ref)
    text = reproduction_section(ref, comparisons, runs)
    assert "| CoOp (CoOp) | 2 | +2.50 | 2.50 | +4.00 (few-shot, K=16, Alpha) | 2 | 0 |" in text
    assert "| LinearProbe (Standard LP) | 1 | +1.00 | 1.00 | +1.00 (few-shot, K=16, Alpha) | 0 | 0 |" in text
    first = [line for line in text.splitlines() if line.startswith("- CoOp") or line.startswith("- LinearProbe")]
    assert first[0].startswith("- CoOp, few-shot, K=16, Alpha: measured 72.00 vs published 68.00 (Δ +4.00")
    assert first[-1].startswith("- LinearProbe")  # within noise: last
    assert "published methods with no run here: CoCoOp" in text and "no published value in handmade: OGKD" in text


def test_plots_with_reference_writes_the_section_into_report_md(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _grid(root)
    ref = _reference(tmp_path / "ref.yaml", "      - [CoOp, Alpha, null, 68.0]")
    assert summarize.main([str(root), "--metrics", "accuracy", "--reference", str(ref), "--plots"]) == 0
    report = (root / "report.md").read_text(encoding="utf-8")
    assert report.index("# Reproduction: handmade") < report.index("# Figures")
    assert "- CoOp, few-shot, K=16, Alpha: measured 72.00 vs published 68.00" in report
