"""The user-facing scripts: the offline demo (the summary script has its own tests in test_summarize.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_prints_a_table(synthlesion_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DATA_ROOT": str(synthlesion_root), "OUTPUT_ROOT": str(tmp_path / "demo"), "SHOTS": "1",
           "SEEDS": "1", "EPOCHS": "1"}
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trainers = ("BiomedCoOp", "CoOp", "OGKD", "ZeroshotCLIP")
    few = proc.stdout.split("## Few-shot: accuracy (%) — SynthLesion")[1].split("## ")[0]
    assert "| trainer      | K=1 " in few and all(f"| {t} " in few for t in trainers)
    for trainer in trainers:
        run = tmp_path / "demo" / "few_shot" / "synthlesion" / trainer / "shots1" / "seed1"
        m = json.loads((run / "metrics.json").read_text())
        assert m["backbone"] == "synthlesion-clip" and m["trainer"] == trainer and m["dataset"] == "SynthLesion"
    for trainer in ("ZeroshotCLIP", "OGKD"):  # the base-to-novel row
        run = tmp_path / "demo" / "base_to_novel" / "synthlesion" / trainer / "shots16" / "seed1"
        assert {json.loads((run / half / "metrics.json").read_text())["subsample"] for half in ("base", "new")} == {
            "base", "new"}
    b2n = proc.stdout.split("## Base-to-novel: accuracy (%), K=16 — SynthLesion")[1]
    assert "| trainer      | base " in b2n and "| OGKD " in b2n and "| ZeroshotCLIP " in b2n
    assert (tmp_path / "demo" / "summary.csv").is_file()
    report = (tmp_path / "demo" / "report.md").read_text(encoding="utf-8")  # --plots: figures embedded
    assert "](figures/reliability_SynthLesion_K1.png)" in report
    assert (tmp_path / "demo" / "figures" / "reliability_SynthLesion_K1.png").is_file()

