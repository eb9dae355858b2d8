"""scripts/compare.py and reporting.stats on hand-made run folders: differences computed by hand, interval coverage
on a case with a known answer, Wilcoxon against a hand-computed case, missing seeds / datasets, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from reporting import stats
from reporting.compare import compare
from reporting.runs import load_runs

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_cli", REPO / "scripts" / "compare.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def _write(root: Path, dataset: str, trainer: str, seed: int, accuracy: float, *, subsample: str = "all",
           shots: int = 16) -> None:
    d = root / f"{dataset}_{trainer}_{shots}_{seed}_{subsample}"
    d.mkdir(parents=True)
    m = {"dataset": dataset, "trainer": trainer, "seed": seed, "shots": shots, "subsample": subsample,
         "backbone": "tiny", "accuracy": accuracy}
    (d / "metrics.json").write_text(json.dumps(m))


# A − B per dataset and seed (K=16); B = 50 everywhere.
DIFFS = {"Alpha": (1.0, 2.0, 3.0), "Beta": (-1.0, -1.0, -1.0), "Gamma": (4.0, 5.0, 6.0), "Delta": (0.0, 0.0, 0.0)}


def _grid(root: Path, diffs: dict[str, tuple[float, ...]] = DIFFS, shots: int = 16) -> None:
    for dataset, ds in diffs.items():
        for seed, d in enumerate(ds, start=1):
            _write(root, dataset, "A", seed, 50.0 + d, shots=shots)
            _write(root, dataset, "B", seed, 50.0, shots=shots)


def _block(cmp, setting: str):
    return next(b for b in cmp.blocks if b.setting == setting)


def test_differences_win_tie_loss_and_wilcoxon(tmp_path: Path) -> None:
    _grid(tmp_path)
    runs, _, _ = load_runs(tmp_path, ["accuracy"])
    blk = _block(compare(runs, "A", "B"), "K=16")
    per = {d.dataset: d.difference for d in blk.per_dataset}
    assert per == pytest.approx({"Alpha": 2.0, "Beta": -1.0, "Gamma": 5.0, "Delta": 0.0})
    assert blk.difference == pytest.approx((2 - 1 + 5 + 0) / 4)  # mean over datasets
    assert blk.wtl == (2, 1, 1) and blk.n_cells == 12
    # Wilcoxon on [2, -1, 5, 0]: the zero dropped; |d| ranks 2→2, 1→1, 5→3: W+ = 5, W- = 1, W = 1; exact two-sided
    # p = 2 × P(W- ≤ 1) = 2 × 2/8 = 0.5 (sign patterns with W- ≤ 1: none negative, only the rank-1 negative)
    assert blk.wilcoxon.statistic == 1.0 and blk.wilcoxon.pvalue == pytest.approx(0.5) and blk.wilcoxon.n == 3
    lo, hi = blk.ci
    assert lo < blk.difference < hi
    # determinism: the same runs give the same interval
    assert _block(compare(runs, "A", "B"), "K=16").ci == blk.ci


def test_wilcoxon_against_a_hand_computed_case() -> None:
    # d = 1, 2, 3, -4, 5: ranks of |d| are 1..5; W- = 4, W+ = 11; W = min = 4. Exact null: the sign-subsets of
    # {1..5} with rank sum ≤ 4 are {}, {1}, {2}, {3}, {4}, {1,2}, {1,3}: 7 of 32, so two-sided p = 14/32 = 0.4375
    res = stats.wilcoxon([1.0, 2.0, 3.0, -4.0, 5.0])
    assert res.statistic == 4.0 and res.pvalue == pytest.approx(14 / 32) and res.method == "exact" and res.n == 5
    assert stats.wilcoxon([3.0]).not_run == "fewer than 2 paired datasets (1)"
    assert stats.wilcoxon([0.0, 0.0]).not_run == "every per-dataset difference is 0"


def test_hierarchical_interval_covers_zero_in_about_95_percent_of_seeded_repeats() -> None:
    """Zero true difference, symmetric noise: dataset effects and seed noise both N(0, 1)."""
    rng = np.random.default_rng(2026)
    covered, repeats = 0, 200
    for i in range(repeats):
        effects = rng.normal(0.0, 1.0, size=20)
        values = [np.stack([e + rng.normal(0.0, 1.0, size=3), np.zeros(3)], axis=1) for e in effects]
        lo, hi = stats.hierarchical_bootstrap(values, n_boot=1000, seed=i)
        covered += lo <= 0.0 <= hi
    assert 0.88 <= covered / repeats <= 0.99, covered


def test_hierarchical_bootstrap_resamples_seeds_within_datasets() -> None:
    """One dataset, seeds 0 and 2: the replicates are means of resampled seeds (0, 1 or 2), never outside."""
    lo, hi = stats.hierarchical_bootstrap([np.array([[0.0, 0.0], [2.0, 0.0]])], n_boot=2000, seed=1)
    assert lo == 0.0 and hi == 2.0
    # constant differences: a zero-width interval at that value
    lo, hi = stats.hierarchical_bootstrap([np.array([[3.0, 1.0]] * 3), np.array([[4.0, 2.0]] * 2)], seed=3)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)


def test_base_to_novel_hm_difference_is_of_the_hms_of_the_seed_means(tmp_path: Path) -> None:
    # A: seeds (base, novel) (90, 10) and (70, 30): seed-means 80 / 20 → HM 32; B: 50 / 50 → HM 50
    for dataset in ("Alpha", "Beta"):
        for seed, (b, n) in zip((1, 2), ((90.0, 10.0), (70.0, 30.0))):
            _write(tmp_path, dataset, "A", seed, b, subsample="base")
            _write(tmp_path, dataset, "A", seed, n, subsample="new")
            _write(tmp_path, dataset, "B", seed, 50.0, subsample="base")
            _write(tmp_path, dataset, "B", seed, 50.0, subsample="new")
    runs, _, _ = load_runs(tmp_path, ["accuracy"])
    cmp = compare(runs, "A", "B")
    assert _block(cmp, "K=16 HM").difference == pytest.approx(32.0 - 50.0)
    assert _block(cmp, "K=16 base").difference == pytest.approx(30.0)
    assert _block(cmp, "K=16 novel").difference == pytest.approx(-30.0)
    hm = _block(cmp, "K=16 HM").per_dataset[0]
    assert (hm.mean_a, hm.mean_b) == (pytest.approx(32.0), pytest.approx(50.0))


def test_missing_seed_and_dataset_are_left_out_and_listed(tmp_path: Path) -> None:
    _grid(tmp_path, {"Alpha": (1.0, 2.0, 3.0), "Beta": (2.0, 2.0, 2.0)})
    (tmp_path / "Alpha_B_16_3_all" / "metrics.json").unlink()  # seed 3 of B missing on Alpha
    _write(tmp_path, "Gamma", "A", 1, 99.0)  # a dataset only A has
    runs, _, _ = load_runs(tmp_path, ["accuracy"])
    cmp = compare(runs, "A", "B")
    blk = _block(cmp, "K=16")
    per = {d.dataset: (d.difference, d.n_seeds) for d in blk.per_dataset}
    assert per == {"Alpha": (pytest.approx(1.5), 2), "Beta": (pytest.approx(2.0), 3)}  # Alpha over seeds 1, 2
    assert blk.unpaired == ["Alpha: seed 3 of one trainer only"]
    assert any("Gamma K=16 has runs of A only" in n for n in cmp.notes)


def test_all_k_averages_the_paired_differences_over_k(tmp_path: Path) -> None:
    _grid(tmp_path, {"Alpha": (1.0, 1.0), "Beta": (3.0, 3.0)}, shots=4)
    _grid(tmp_path, {"Alpha": (3.0, 3.0), "Beta": (5.0, 5.0)}, shots=16)
    runs, _, _ = load_runs(tmp_path, ["accuracy"])
    cmp = compare(runs, "A", "B")
    assert [b.setting for b in cmp.blocks] == ["K=4", "K=16", "all K"]
    allk = _block(cmp, "all K")
    assert {d.dataset: d.difference for d in allk.per_dataset} == {"Alpha": 2.0, "Beta": 4.0}
    assert allk.difference == 3.0 and allk.n_cells == 8


def test_command_line_writes_md_tex_json_and_the_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _grid(tmp_path)
    assert cli.main([str(tmp_path), "--a", "A", "--b", "B", "--format", "md,latex,json"]) == 0
    for ext in ("md", "tex", "json"):
        assert (tmp_path / f"compare_A_vs_B.{ext}").is_file()
    assert (tmp_path / "figures" / "compare_A_vs_B.png").stat().st_size > 1000
    record = json.loads((tmp_path / "compare_A_vs_B.json").read_text())
    k16 = record["settings"][0]
    assert k16["difference"] == 1.5 and (k16["win"], k16["tie"], k16["loss"]) == (2, 1, 1)
    assert k16["wilcoxon"]["pvalue"] == 0.5
    md = (tmp_path / "compare_A_vs_B.md").read_text(encoding="utf-8")
    assert "| K=16 | 4 | 12 | +1.50 |" in md and "| Gamma | +5.00 [+4.00, +6.00] (3) |" in md
    tex = (tmp_path / "compare_A_vs_B.tex").read_text(encoding="utf-8")
    assert "\\begin{tabular}" in tex and "+1.50" in tex


def test_fewer_than_two_paired_datasets_the_test_is_not_run_and_the_report_says_why(tmp_path: Path) -> None:
    _grid(tmp_path, {"Alpha": (1.0, 2.0, 3.0)})
    assert cli.main([str(tmp_path), "--a", "A", "--b", "B", "--format", "md,json", "--no-figure"]) == 0
    md = (tmp_path / "compare_A_vs_B.md").read_text(encoding="utf-8")
    assert "- K=16: Wilcoxon test not run: fewer than 2 paired datasets (1)." in md
    record = json.loads((tmp_path / "compare_A_vs_B.json").read_text())
    assert record["settings"][0]["wilcoxon"]["not_run"] == "fewer than 2 paired datasets (1)"


def test_unknown_trainer_is_listed_once_and_a_published_name_is_mapped(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    _grid(tmp_path)
    assert cli.main([str(tmp_path), "--a", "Nobody", "--b", "Nothing"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'Nobody', 'Nothing'" in err[0] and "trainers with runs: A, B" in err[0]
    for seed in (1, 2, 3):
        _write(tmp_path, "Alpha", "LinearProbe", seed, 40.0)
        _write(tmp_path, "Beta", "LinearProbe", seed, 40.0)
    assert cli.main([str(tmp_path), "--all", "--b", "Standard LP", "--format", "json", "--no-figure"]) == 0
    assert "'Standard LP' is LinearProbe" in capsys.readouterr().err
    assert (tmp_path / "compare_A_vs_LinearProbe.json").is_file()
    assert (tmp_path / "compare_B_vs_LinearProbe.json").is_file()
    record = json.loads((tmp_path / "compare_B_vs_LinearProbe.json").read_text())
    assert record["settings"][0]["difference"] == 10.0 and record["settings"][0]["n_datasets"] == 2
