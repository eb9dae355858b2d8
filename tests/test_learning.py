"""The learning guard: on SynthLesion (target domain) with the shipped pre-trained tiny CLIP, the prompt learners beat
zero-shot on the same test split, through the real entry point and the shipped configs.

Any change that breaks learning end to end (optimiser, schedule, augmentation, prompt wiring, distillation terms,
evaluation) fails here. The margins are below what was measured over seeds (see MARGIN)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train

SHOTS = 4
# Measured on 2026-12-01 by scripts/run_fewshot.sh (K = 4, seeds 1 / 2 / 3; zero-shot 35.7 on the same 1000 test
# images): CoOp 44.0 / 44.1 / 40.7, BiomedCoOp 44.0 / 43.1 / 40.6, OGKD 42.9 / 43.2 / 40.7 — the smallest gain over
# zero-shot across seeds is 4.9 points; this test runs seed 1 (gains 8.3 / 8.3 / 7.2) and asks for 4.
MARGIN = {"CoOp": 4.0, "BiomedCoOp": 4.0, "OGKD": 4.0}


def _run(root: Path, out: Path, trainer: str, protocol: str = "few_shot", *opts: str, seed: int = 1) -> dict:
    args = ["--root", str(root), "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/synthlesion.yaml",
            "--config-file", f"configs/trainers/{trainer}/{protocol}/synthlesion.yaml", "--output-dir", str(out),
            "MODEL.BACKBONE.NAME", "synthlesion-clip", "VERBOSE", "False", *opts]
    assert train.main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def zero_shot(synthlesion_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(synthlesion_root, tmp_path_factory.mktemp("zs"), "ZeroshotCLIP")


@pytest.mark.parametrize("trainer", sorted(MARGIN))
def test_prompt_learner_beats_zero_shot(trainer: str, zero_shot: dict, synthlesion_root: Path, tmp_path: Path) -> None:
    m = _run(synthlesion_root, tmp_path / trainer, trainer, "few_shot", "DATASET.NUM_SHOTS", str(SHOTS))
    assert m["num_samples"] == zero_shot["num_samples"] == 1000 and m["backbone"] == "synthlesion-clip"
    assert m["accuracy"] >= zero_shot["accuracy"] + MARGIN[trainer], (trainer, m["accuracy"], zero_shot["accuracy"])
