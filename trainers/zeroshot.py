"""Zero-shot CLIP / BiomedCLIP (SPEC §1.1): hand-written template(s), nothing learned."""

from __future__ import annotations

import torch
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import ClipTrainer
from trainers.prompt_learner import zeroshot_classifier


@register_trainer_cfg("ZEROSHOTCLIP")
def _zeroshot_cfg(cfg: CN) -> None:
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATES = ("a photo of a {}.",)  # CUSTOM_TEMPLATES of the BiomedCLIP benchmark
    cfg.TRAINER.ZEROSHOTCLIP.PREC = "fp32"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    """Class features from the template(s), computed once; evaluation only."""

    cfg_node = "ZEROSHOTCLIP"

    def build_model(self) -> None:
        templates = list(self.cfg.TRAINER.ZEROSHOTCLIP.TEMPLATES)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"TRAINER.ZEROSHOTCLIP.TEMPLATES must be templates with '{{}}', got {templates}")
        self.text_feats = zeroshot_classifier(self.backbone, self.classnames, templates)

    def class_features(self) -> torch.Tensor:
        return self.text_feats
