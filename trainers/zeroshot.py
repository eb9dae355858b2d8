"""Zero-shot CLIP / BiomedCLIP (SPEC §1.1): hand-written template(s) or the LLM prompt ensemble; nothing learned.

``ENSEMBLE True`` (BiomedCoOp's ``ZeroshotBiomedCLIP2``): t_c = normalize((1/N) Σ_i normalize(enc(T_c,i))) over the
first ``N_PROMPTS`` sentences of class c in the prompt bank.
"""

from __future__ import annotations

import logging

import torch
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import ClipTrainer
from trainers.prompt_learner import zeroshot_classifier
from trainers.teacher import load_prompt_bank, resolve_bank_path

logger = logging.getLogger(__name__)


@register_trainer_cfg("ZEROSHOTCLIP")
def _zeroshot_cfg(cfg: CN) -> None:
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATES = ("a photo of a {}.",)  # CUSTOM_TEMPLATES of the BiomedCLIP benchmark
    cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE = False  # True: average the LLM prompt bank's sentences instead
    cfg.TRAINER.ZEROSHOTCLIP.PROMPT_BANK = "prompts/biomedcoop.json"  # with ENSEMBLE; "{root}" = DATASET.ROOT
    cfg.TRAINER.ZEROSHOTCLIP.N_PROMPTS = 50  # with ENSEMBLE: sentences per class
    cfg.TRAINER.ZEROSHOTCLIP.PREC = "fp32"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    """Class features from the template(s) or the prompt bank, computed once; evaluation only."""

    cfg_node = "ZEROSHOTCLIP"

    def build_model(self) -> None:
        c = self.cfg.TRAINER.ZEROSHOTCLIP
        if c.ENSEMBLE:
            path = resolve_bank_path(c.PROMPT_BANK, self.cfg.DATASET.ROOT)
            logger.info("zero-shot prompt ensemble: %d sentences per class from %s", c.N_PROMPTS, path)
            _, self.text_feats = self.prompt_bank_features(load_prompt_bank(path), self.classnames, c.N_PROMPTS)
            return
        templates = list(c.TEMPLATES)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"TRAINER.ZEROSHOTCLIP.TEMPLATES must be templates with '{{}}', got {templates}")
        self.text_feats = zeroshot_classifier(self.backbone, self.classnames, templates)

    def class_features(self) -> torch.Tensor:
        return self.text_feats
