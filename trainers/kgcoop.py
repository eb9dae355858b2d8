"""KgCoOp (Yao et al., CVPR 2023): CoOp regularised towards the zero-shot class features (SPEC §1.4).

Prior t_c^zs = normalize(enc("a photo of a <class>.")), computed once when training starts.
Loss = CE(z, y) + W·(1 − (1/C) Σ_c cos(t_c, t_c^zs)). Learned: ``ctx`` only. The context is always
initialised from "a photo of a", whatever CTX_INIT says (as released; a differing CTX_INIT is logged).

Deviation from the BiomedCoOp release: none in the method; the frozen, unused bias / meta-net / adapter tensors
the release builds are not created.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer
from trainers.prompt_learner import prompt_learner_cfg, zeroshot_classifier

logger = logging.getLogger(__name__)

KGCOOP_INIT = "a photo of a"  # the released KgCoOp always initialises the context from these words
ZS_TEMPLATE = "a photo of a {}."  # the hand-written prompt of the prior (CUSTOM_TEMPLATES)


@register_trainer_cfg("KGCOOP")
def _kgcoop_cfg(cfg: CN) -> None:
    # N_CTX: the init's token count is used (4 for "a photo of a"); CTX_INIT is read for compatibility: the
    # init is always "a photo of a"
    cfg.TRAINER.KGCOOP = prompt_learner_cfg()
    cfg.TRAINER.KGCOOP.W = 8.0  # weight of the knowledge-guided term


def kg_regulariser(text: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """KgCoOp's knowledge-guided term 1 − (1/C) Σ_c cos(t_c, t_c^zs) (unweighted).

    Args:
        text: Tensor[C, E], the learned class text features.
        prior: Tensor[C, E], the zero-shot class text features.
    Returns:
        a 0-d tensor.
    """
    return 1.0 - F.cosine_similarity(text, prior, dim=-1, eps=1e-7).mean()


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    """CoOp + W · (1 − mean cosine to the zero-shot class features)."""

    cfg_node = "KGCOOP"

    def build_model(self) -> None:
        ctx_init = self.cfg.TRAINER.KGCOOP.CTX_INIT
        if ctx_init.replace("_", " ").strip() != KGCOOP_INIT:
            logger.info("KgCoOp initialises the context from %r (as released); TRAINER.KGCOOP.CTX_INIT %r is not used",
                        KGCOOP_INIT, ctx_init)
        self.prompt_learner = self.build_prompt_learner(ctx_init=KGCOOP_INIT)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)

    def before_train(self) -> None:
        self.zs_text = zeroshot_classifier(self.backbone, self.classnames, [ZS_TEMPLATE])  # [C, E], once

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["label"].to(self.device, non_blocking=True)
        g = self.frozen_features(batch)["g"]
        with self.autocast():
            text = self.class_features()
            logits = self.logits(g, text)
            ce = F.cross_entropy(logits.float(), labels)
            kg = self.cfg.TRAINER.KGCOOP.W * kg_regulariser(text.float(), self.zs_text.float())
            loss = ce + kg
        self.model_backward_and_update(loss)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {"loss": loss.detach(), "ce": ce.detach(), "kg": kg.detach(), "acc": acc}
