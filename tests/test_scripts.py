"""The user-facing scripts: the offline demo (the summary script has its own tests in test_summarize.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_prints_a_table(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DATA_ROOT": str(synth_root), "OUTPUT_ROOT": str(tmp_path / "demo"), "SHOTS": "2",
           "SEEDS": "1", "EPOCHS": "1", "WORKERS": "0"}
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trainers = ("BiomedCoOp", "CoOp", "OGKD", "ZeroshotCLIP")
    assert "| SynthMed  | " in proc.stdout and all(f"| {t} K=2 " in proc.stdout for t in trainers)
    for trainer in trainers:
        m = json.loads((tmp_path / "demo" / "synthmed" / trainer / "shots2" / "seed1" / "metrics.json").read_text())
        assert m["backbone"] == "tiny-biomedclip" and m["trainer"] == trainer
    assert (tmp_path / "demo" / "summary.csv").is_file()

