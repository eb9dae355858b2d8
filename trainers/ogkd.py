"""OGKD — Omni-Geometry Knowledge Distillation (Tien & Shen 2026; SPEC §2).

BiomedCoOp's student and teacher, with the teacher's targets smoothed along a class-similarity graph
W = row-softmax(α·cos(p_i, p_j)) of the teacher prototypes, on the global token (GAD) and on the k patches most
aligned with the ground-truth class (LGD):

    L = CE + λ_SCCM·SCCM + λ_GAD·GAD(z_S, z_T; W, γ) + λ_LGD·LGD(top-k patches; W, γ)

``FOLD_NOVEL True`` (ours; the release's folding is silently inactive, SPEC §2.2) builds W over all classes of
the dataset and folds the novel classes onto the base ones: W_eff = W_bb + λ_n·W_bn·W_nb.
"""

from __future__ import annotations

import logging

import torch
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.distill import DistillBatch, DistillPromptTrainer
from trainers.geometry import class_graph, fold_novel
from trainers.losses import gad_loss, lgd_loss, top_k_patches
from trainers.prompt_learner import prompt_learner_cfg

logger = logging.getLogger(__name__)


@register_trainer_cfg("OGKD")
def _ogkd_cfg(cfg: CN) -> None:
    cfg.TRAINER.OGKD = prompt_learner_cfg()  # CTX_INIT is used only with 4 vectors (else random init), as released
    cfg.TRAINER.OGKD.N_PROMPTS = 50  # LLM sentences per class in the teacher bank
    cfg.TRAINER.OGKD.TAU = 1.5  # outlier threshold of the teacher prompt selection
    cfg.TRAINER.OGKD.LAMBDA_SCCM = 1.0
    cfg.TRAINER.OGKD.LAMBDA_GAD = 1.0
    cfg.TRAINER.OGKD.LAMBDA_LGD = 0.0
    cfg.TRAINER.OGKD.GAMMA = 0.3  # weight of the graph-smoothed teacher target
    cfg.TRAINER.OGKD.ALPHA = 4.0  # graph temperature: W = row-softmax(ALPHA · cos)
    cfg.TRAINER.OGKD.TOP_K_RATIO = 0.3  # LGD patches: k = max(1, round(N · ratio))
    cfg.TRAINER.OGKD.PROMPT_BANK = "prompts/biomedcoop.json"  # ours; "{root}" = DATASET.ROOT
    cfg.TRAINER.OGKD.FOLD_NOVEL = False  # ours; fold the novel classes into W (base-to-novel training only)
    cfg.TRAINER.OGKD.LAMBDA_NOVEL = 0.1  # ours; λ_n of the folding (hard-coded 0.1 in the release)
    cfg.TRAINER.OGKD.TEXT_DROPOUT = True  # ours; BERT dropout while training, as released


@TRAINER_REGISTRY.register()
class OGKD(DistillPromptTrainer):
    cfg_node = "OGKD"
    sccm_key = "LAMBDA_SCCM"

    @property
    def needs_patches(self) -> bool:
        return bool(self.node.LAMBDA_LGD)

    def before_train(self) -> None:
        super().before_train()
        self.W = self.build_graph()

    def build_graph(self) -> torch.Tensor:
        """W over the training classes, or (FOLD_NOVEL) over all classes folded onto the base classes."""
        c = self.node
        if not c.FOLD_NOVEL:
            return class_graph(self.bank_mean, c.ALPHA)
        ds = self.dm.dataset
        base_idx = torch.tensor(ds.label_ids_in_all, dtype=torch.long, device=self.device)
        if self.cfg.DATASET.SUBSAMPLE_CLASSES != "base" or len(ds.classnames_all) == len(base_idx):
            raise ValueError(
                "TRAINER.OGKD.FOLD_NOVEL needs novel classes to fold: train with DATASET.SUBSAMPLE_CLASSES base "
                f"(got {self.cfg.DATASET.SUBSAMPLE_CLASSES!r}, {len(ds.classnames_all)} classes in all)"
            )
        _, prototypes_all = self.prompt_bank_features(self.prompt_bank, ds.classnames_all, c.N_PROMPTS)
        W = fold_novel(class_graph(prototypes_all, c.ALPHA), base_idx, c.LAMBDA_NOVEL)
        logger.info("class graph over all %d classes folded onto the %d base classes (λ_novel %.3g)",
                    len(ds.classnames_all), len(base_idx), c.LAMBDA_NOVEL)
        return W

    def distill_terms(self, batch: DistillBatch) -> dict[str, torch.Tensor]:
        c = self.node
        terms = {"gad": c.LAMBDA_GAD * gad_loss(batch.z_s.float(), batch.z_t.float(), self.W, c.GAMMA)}
        if self.needs_patches:  # the patch logits are only needed for a non-zero LGD weight
            patches = F.normalize(batch.patches, dim=-1)
            zp_s = batch.scale * patches @ batch.text.t()  # [B, N, C]
            zp_t = batch.scale * patches @ batch.teacher_text.t()
            sel_s, sel_t = top_k_patches(zp_s.float(), zp_t.float(), batch.labels, c.TOP_K_RATIO)
            terms["lgd"] = c.LAMBDA_LGD * lgd_loss(sel_s, sel_t, self.W, batch.labels, c.GAMMA)
        return terms
