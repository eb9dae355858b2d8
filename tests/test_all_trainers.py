"""Every registered trainer × the four tiny backbone twins (BiomedCLIP, OpenAI CLIP, PubMedCLIP, PMC-CLIP): trains
one tiny epoch + evaluates through train.py, learns exactly its declared parameters (everything else frozen) and
checkpoints only those. Where a method cannot run on a family it refuses in one line saying why (MaPLe's deep vision
prompts on PMC-CLIP's ResNet). One backbone build per family for the module (train.main's backbone cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
import trainers  # noqa: F401  (registers every trainer)
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.registry import TRAINER_REGISTRY
from engine.trainer import TrainerBase
from trainers import build_trainer

BACKBONES = ("tiny-biomedclip", "tiny-clip", "tiny-pubmedclip", "tiny-pmc-clip")
#: (trainer, backbone) pairs that cannot run, with the words their one-line refusal must contain
REFUSED = {("MaPLe", "tiny-pmc-clip"): "deep vision prompts (MaPLe) cannot apply"}
_BUILT: dict[str, dict] = {b: {} for b in BACKBONES}  # one train.main backbone cache per family: built once
NAMES = TRAINER_REGISTRY.registered_names()


def config_for(name: str) -> str:
    for path in (f"configs/trainers/{name}/few_shot/synthmed.yaml", f"configs/trainers/{name}/few_shot.yaml"):
        if Path(path).is_file():
            return path
    raise AssertionError(f"trainer {name} has no few-shot config for SynthMed")


def opts(backbone: str) -> list[str]:
    return ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", backbone,
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "VERBOSE", "False"]


def test_the_matrix_covers_every_trainer_and_the_four_families() -> None:
    assert len(NAMES) == 12 and {"OGKD", "BiomedCoOp", "MaPLe", "ZeroshotCLIP"} <= set(NAMES)
    from clip_backbones import build_backbone

    families = {build_backbone(b).family for b in BACKBONES}
    assert families == {"hf-bert", "openai-clip"}  # two text adapters serve the four families


def test_every_trainer_has_a_config_and_a_config_node() -> None:
    assert {"CoOp", "ZeroshotCLIP", "BiomedCoOp", "OGKD"} <= set(NAMES)
    cfg = get_cfg_default()
    for name in NAMES:
        config_for(name)
        node = TRAINER_REGISTRY.get(name).cfg_node
        assert node is None or node in cfg.TRAINER, name


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", NAMES)
def test_trainer_runs_and_checkpoints_only_what_it_learns(name: str, backbone: str, synth_root: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--root", str(synth_root), "--seed", "1", "--trainer", name,
            "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", config_for(name),
            "--output-dir", str(out), *opts(backbone)]
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
    assert 0.0 <= m["accuracy"] <= 100.0

    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, config_for(name))
    merge_from_list(cfg, ["DATASET.ROOT", str(synth_root), "OUTPUT_DIR", str(tmp_path / "probe"), "SEED", "1",
                          "TRAINER.NAME", name, *opts(backbone)])
    trainer = build_trainer(cfg)
    assert not any(p.requires_grad for p in trainer.backbone.parameters())
    declared = {mod: [n for n, p in module.named_parameters() if p.requires_grad]
                for mod, module in trainer._models.items()}
    for mod, names in declared.items():
        ckpts = sorted((out / mod).glob("model.pth.tar-*"))
        assert ckpts, f"{name}: no checkpoint for {mod}"
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["state_dict"]
        assert sorted(state) == sorted(names), f"{name}/{mod}: checkpoint {sorted(state)} vs learnable {names}"
    if not declared:
        assert not list(out.glob("*/model.pth.tar-*"))

    # one gradient step: exactly the declared parameters receive gradients
    if type(trainer).forward_backward is TrainerBase.forward_backward or not declared:
        return  # learns without gradients (closed form / search) or learns nothing
    trainer.before_train()
    trainer.set_model_mode("train")
    trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
    for mod, module in trainer._models.items():
        for n, p in module.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"{name}: {mod}.{n} got no gradient"
    assert all(p.grad is None for p in trainer.backbone.parameters())


B2N = {"ZeroshotCLIP", "CoOp", "CoCoOp", "KgCoOp", "ProGrad", "MaPLe", "BiomedCoOp", "OGKD"}  # can name unseen classes


@pytest.mark.parametrize("name", NAMES)
def test_trainer_runs_on_synthlesion_with_its_configs(name: str, synthlesion_root: Path, tmp_path: Path) -> None:
    """Every trainer has SynthLesion configs and runs them on the shipped pre-trained synthlesion-clip."""
    protocols = ["few_shot", "base_to_novel"] if name in B2N else ["few_shot"]
    assert Path(f"configs/trainers/{name}/base_to_novel/synthlesion.yaml").is_file() == (name in B2N)
    for protocol in protocols:
        out = tmp_path / protocol
        subsample = ["DATASET.SUBSAMPLE_CLASSES", "base"] if protocol == "base_to_novel" else []
        args = ["--root", str(synthlesion_root), "--seed", "1", "--trainer", name,
                "--dataset-config-file", "configs/datasets/synthlesion.yaml",
                "--config-file", f"configs/trainers/{name}/{protocol}/synthlesion.yaml", "--output-dir", str(out),
                "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", "synthlesion-clip",
                "VERBOSE", "False", *subsample]
        assert train.main(args) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert (m["trainer"], m["backbone"], m["dataset"]) == (name, "synthlesion-clip", "SynthLesion")
        assert m["num_samples"] == (500 if subsample else 1000)
