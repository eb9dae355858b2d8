"""Zero-shot: the single template and the LLM prompt ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F

import train
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from trainers import build_trainer
from trainers.teacher import load_prompt_bank

CONFIG = "configs/trainers/ZeroshotCLIP/few_shot/synthmed.yaml"
OPTS = ["MODEL.BACKBONE.NAME", "tiny-biomedclip", "DATALOADER.NUM_WORKERS", "0", "VERBOSE", "False"]


def _trainer(root: Path, out: Path, *extra: str):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, CONFIG)
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), "TRAINER.NAME", "ZeroshotCLIP",
                          *OPTS, *extra])
    return build_trainer(cfg)


def test_ensemble_is_the_mean_of_normalised_sentence_features(synth_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(synth_root, tmp_path, "TRAINER.ZEROSHOTCLIP.ENSEMBLE", "True",
                       "TRAINER.ZEROSHOTCLIP.N_PROMPTS", "7")
    bank = load_prompt_bank(synth_root / "SynthMed" / "prompt_bank.json")
    bb = trainer.backbone
    expected = []
    for cname in trainer.classnames:
        tokens = bb.tokenize(bank[cname][:7])
        expected.append(F.normalize(F.normalize(bb.encode_text(tokens), dim=-1).mean(0), dim=-1))
    torch.testing.assert_close(trainer.text_feats, torch.stack(expected), atol=1e-5, rtol=1e-5)
    single = _trainer(synth_root, tmp_path / "single")
    tokens = bb.tokenize([f"a photo of a {c}." for c in single.classnames])
    torch.testing.assert_close(single.text_feats, F.normalize(bb.encode_text(tokens), dim=-1), atol=1e-5, rtol=1e-5)


def test_ensemble_run_writes_metrics(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(["--root", str(synth_root), "--trainer", "ZeroshotCLIP", "--dataset-config-file",
                       "configs/datasets/synthmed.yaml", "--config-file", CONFIG, "--output-dir", str(out),
                       *OPTS, "TRAINER.ZEROSHOTCLIP.ENSEMBLE", "True"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 0
