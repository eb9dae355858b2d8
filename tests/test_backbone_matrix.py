"""Every registered trainer × every backbone family, through train.py on the four tiny twins: one tiny training
epoch (a single step: 6 shots, batch 4; the feature methods' feature pass and fit) and the evaluation on the test
split. Where a method cannot run on a family it refuses in one line saying why (MaPLe's deep vision prompts on
PMC-CLIP's ResNet). One backbone build per family for the whole module (train.main's backbone cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train
import trainers  # noqa: F401  (registers every trainer)
from engine.registry import TRAINER_REGISTRY

FAMILIES = ("tiny-biomedclip", "tiny-clip", "tiny-pubmedclip", "tiny-pmc-clip")
NAMES = TRAINER_REGISTRY.registered_names()
#: (trainer, backbone) pairs that cannot run, with the words their one-line refusal must contain
REFUSED = {("MaPLe", "tiny-pmc-clip"): "deep vision prompts (MaPLe) cannot apply"}
_BUILT: dict[str, dict] = {f: {} for f in FAMILIES}  # one train.main backbone cache per family: built once


def _config(name: str) -> str:
    for path in (f"configs/trainers/{name}/few_shot/synthmed.yaml", f"configs/trainers/{name}/few_shot.yaml"):
        if Path(path).is_file():
            return path
    raise AssertionError(f"trainer {name} has no few-shot config for SynthMed")


def test_the_matrix_covers_every_trainer_and_the_four_families() -> None:
    assert len(NAMES) == 12 and {"OGKD", "BiomedCoOp", "MaPLe", "ZeroshotCLIP"} <= set(NAMES)
    from clip_backbones import build_backbone

    families = {build_backbone(f).family for f in FAMILIES}
    assert families == {"hf-bert", "openai-clip"}  # two text adapters serve the four families


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backbone", FAMILIES)
def test_trainer_runs_on_backbone(backbone: str, name: str, synth_root: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["--root", str(synth_root), "--seed", "1", "--trainer", name,
            "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", _config(name),
            "--output-dir", str(out), "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
            "MODEL.BACKBONE.NAME", backbone, "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "VERBOSE", "False"]
    rc = train.main(args, backbones=_BUILT[backbone])
    refusal = REFUSED.get((name, backbone))
    if refusal is not None:
        assert rc == 1 and not (out / "metrics.json").exists()
        errors = [line for line in (out / "log.txt").read_text().splitlines() if "error: " in line]
        assert len(errors) == 1 and refusal in errors[0], errors
        return
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["trainer"], m["backbone"], m["num_samples"]) == (name, backbone, 120)
    assert 0.0 <= m["accuracy"] <= 100.0 and sum(m["per_class_accuracy"].values()) >= 0
