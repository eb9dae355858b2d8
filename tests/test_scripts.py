"""The user-facing scripts: the offline demo and the summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_prints_a_table(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DATA_ROOT": str(synth_root), "OUTPUT_ROOT": str(tmp_path / "demo"), "SHOTS": "2",
           "SEEDS": "1", "EPOCHS": "1", "WORKERS": "0"}
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trainers = ("BiomedCoOp", "CoOp", "OGKD", "ZeroshotCLIP")
    assert all(f"| SynthMed  | {t}" in proc.stdout for t in trainers)
    for trainer in trainers:
        m = json.loads((tmp_path / "demo" / "synthmed" / trainer / "shots2" / "seed1" / "metrics.json").read_text())
        assert m["backbone"] == "tiny-biomedclip" and m["trainer"] == trainer
    assert (tmp_path / "demo" / "summary.csv").is_file()


def _write(root: Path, trainer: str, seed: int, acc: float) -> None:
    d = root / trainer / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "dataset": "SynthMed", "trainer": trainer, "shots": 4, "subsample": "all", "seed": seed,
        "accuracy": acc, "macro_f1": acc / 2, "ece": 1.0}))


def test_summary_mean_and_population_std(tmp_path: Path) -> None:
    for seed, acc in zip((1, 2, 3), (50.0, 60.0, 70.0)):
        _write(tmp_path, "CoOp", seed, acc)
    _write(tmp_path, "ZeroshotCLIP", 1, 40.0)
    proc = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    std = np.std([50.0, 60.0, 70.0])  # population std = 8.165
    assert f"60.00 ± {std:.2f}" in proc.stdout and "30.00 ± 4.08" in proc.stdout
    assert "40.00 ± 0.00" in proc.stdout and "1 2 3" in proc.stdout
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,trainer,shots") and len(rows) == 3
