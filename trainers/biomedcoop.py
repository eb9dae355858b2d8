"""BiomedCoOp (Koleilat et al., CVPR 2025): CoOp + LLM-prompt teacher with outlier pruning (SCCM + KDSP; SPEC §1.6).

Loss = CE(z_S, y) + λ_SCCM·MSE(t̂^S, t̄) + λ_KDSP·KL(teacher‖student) summed / numel — the KDSP term is
:func:`trainers.losses.gad_loss` with γ = 0.
"""

from __future__ import annotations

import torch
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.distill import DistillBatch, DistillPromptTrainer
from trainers.losses import gad_loss
from trainers.prompt_learner import prompt_learner_cfg


@register_trainer_cfg("BIOMEDCOOP")
def _biomedcoop_cfg(cfg: CN) -> None:
    cfg.TRAINER.BIOMEDCOOP = prompt_learner_cfg()  # CTX_INIT: only with 4 vectors (else random), as released
    cfg.TRAINER.BIOMEDCOOP.N_PROMPTS = 50  # LLM sentences per class in the teacher bank
    cfg.TRAINER.BIOMEDCOOP.TAU = 1.5  # outlier threshold of the teacher prompt selection
    cfg.TRAINER.BIOMEDCOOP.SCCM_LAMBDA = 1.0
    cfg.TRAINER.BIOMEDCOOP.KDSP_LAMBDA = 1.0
    cfg.TRAINER.BIOMEDCOOP.PROMPT_BANK = "prompts/biomedcoop.json"  # ours; "{root}" = DATASET.ROOT
    cfg.TRAINER.BIOMEDCOOP.TEXT_DROPOUT = True  # ours; BERT dropout while training, as released


@TRAINER_REGISTRY.register()
class BiomedCoOp(DistillPromptTrainer):
    cfg_node = "BIOMEDCOOP"
    sccm_key = "SCCM_LAMBDA"

    def before_train(self) -> None:
        super().before_train()
        self._identity = torch.eye(self.num_classes, device=self.device)  # gad_loss's W, unused at γ = 0

    def distill_terms(self, batch: DistillBatch) -> dict[str, torch.Tensor]:
        return {"kdsp": self.node.KDSP_LAMBDA * gad_loss(batch.z_s.float(), batch.z_t.float(), self._identity, 0.0)}
