"""The user-facing scripts: the offline demo (the summary script has its own tests in test_summarize.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_prints_a_table(synthlesion_clinical_root: Path, tmp_path: Path) -> None:
    """The default demo: SynthLesion's clinical regime with its shipped model."""
    env = {**os.environ, "DATA_ROOT": str(synthlesion_clinical_root), "OUTPUT_ROOT": str(tmp_path / "demo"),
           "SHOTS": "1", "SEEDS": "1", "EPOCHS": "1"}
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trainers = ("BiomedCoOp", "CoOp", "OGKD", "ZeroshotCLIP")
    few = proc.stdout.split("## Few-shot: accuracy (%) — SynthLesionClinical\n")[1].split("## ")[0]
    assert "| trainer      | K=1 " in few and all(f"| {t} " in few for t in trainers)
    for trainer in trainers:
        run = tmp_path / "demo" / "few_shot" / "synthlesion_clinical" / trainer / "shots1" / "seed1"
        m = json.loads((run / "metrics.json").read_text())
        assert m["backbone"] == "synthlesion-clinical-clip" and m["trainer"] == trainer
        assert m["dataset"] == "SynthLesionClinical"
    for trainer in ("ZeroshotCLIP", "OGKD"):  # the base-to-novel row
        run = tmp_path / "demo" / "base_to_novel" / "synthlesion_clinical" / trainer / "shots16" / "seed1"
        assert {json.loads((run / half / "metrics.json").read_text())["subsample"] for half in ("base", "new")} == {
            "base", "new"}
    b2n = proc.stdout.split("## Base-to-novel: accuracy (%), K=16 — SynthLesionClinical\n")[1]
    assert "| trainer      | base " in b2n and "| OGKD " in b2n and "| ZeroshotCLIP " in b2n
    assert (tmp_path / "demo" / "summary.csv").is_file()
    report = (tmp_path / "demo" / "report.md").read_text(encoding="utf-8")  # --plots: figures embedded
    assert "](figures/reliability_SynthLesionClinical_K1.png)" in report
    assert (tmp_path / "demo" / "figures" / "reliability_SynthLesionClinical_K1.png").is_file()



def _benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).parents[1] / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_warm_column_is_the_median_of_the_repeats() -> None:
    bench = _benchmark()
    runs = [{"timings_s": {"to_training_s": t, "steps_s": s}, "peak_rss_mib": m, "process_wall_s": w,
             "counts": {"steps": 48}, "accuracy": 20.0}
            for t, s, m, w in [(3.9, 8.0, 1650.0, 48.0), (3.4, 9.0, 1600.0, 47.0), (3.6, 7.0, 1700.0, 50.0)]]
    med = bench.median_run(runs)
    assert med["timings_s"] == {"to_training_s": 3.6, "steps_s": 8.0}
    assert (med["peak_rss_mib"], med["process_wall_s"], med["counts"]) == (1650.0, 48.0, {"steps": 48})
    assert bench.median_run(runs[:2])["timings_s"]["to_training_s"] == 3.65  # even count: mean of the middle two
    assert runs[0]["timings_s"]["to_training_s"] == 3.9  # the inputs are left alone


def test_benchmark_step_cost_ratio_counts_the_encoding_share() -> None:
    bench = _benchmark()
    # batched: 24 steps in 12 s (0.5 s) + 96 images encoded in 48 s (0.5 s/image, 2 s per step of 4 images) = 2.5 s;
    # per-step: 24 steps in 50 s = 2.083 s per step
    batched = {"timings_s": {"steps_s": 12.0, "encode_s": 48.0}, "counts": {"steps": 24, "encoded_images": 96}}
    per_step = {"timings_s": {"steps_s": 50.0}, "counts": {"steps": 24}}
    assert abs(bench.step_cost_ratio(batched, per_step, 4) - 2.5 / (50.0 / 24)) < 1e-12
    assert bench.step_cost_ratio(per_step, per_step, 4) == 1.0  # nothing encoded ahead: equal


def test_benchmark_projection_counts_the_paper_grid() -> None:
    bench = _benchmark()
    runs = bench.grid_runs()
    assert len(runs) == 225  # 11 datasets × 5 shots × 3 seeds + 10 datasets × 3 seeds × (base + novel)
    assert sum(r["protocol"] == "few_shot" for r in runs) == 165 and sum(not r["trains"] for r in runs) == 30
    zero = dict.fromkeys(("bank_cold_per_sentence_s", "bank_warm_s", "encode_per_image_s", "step_s",
                          "per_step_path_step_s", "test_cold_per_image_s", "test_warm_s", "finish_s"), 0.0)
    assert bench.project({**zero, "run_overhead_s": 2.0}) == {"runs": 225, "ours_s": 450.0,
                                                              "released_structure_s": 450.0}
    # one second per training step on the per-step path only: the released structure pays it, ours does not
    steps = sum(r["epochs"] * max(r["train"] // r["batch"], 1) for r in runs if r["trains"])
    got = bench.project({**zero, "run_overhead_s": 0.0, "per_step_path_step_s": 1.0})
    assert got["ours_s"] == 0.0 and got["released_structure_s"] == steps


def test_benchmark_rejects_bad_repeats() -> None:
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "--repeats", "0"], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 2 and "--repeats must be ≥ 1, got 0" in proc.stderr
