"""The part BiomedCoOp and OGKD share: a CoOp student distilled from an LLM-prompt teacher (SPEC §1.6, §2.1–2.3).

Per training batch (no Python loop, no host sync):

* g, P — normalised global and patch features of the frozen image tower (no gradient);
* t̂^S — normalised student class features (the learned context through the frozen text tower, with BERT
  dropout active as in the releases unless ``TEXT_DROPOUT False``);
* the teacher: the outlier-pruned subset of the C × N_PROMPTS bank (:func:`trainers.teacher._select_prompts`,
  on the student's g), averaged per class → t^sel;
* z_S = s·g·t̂^Sᵀ, z_T = s·g·t^selᵀ; CE(z_S, y) and SCCM = MSE(t̂^S, t̄) with t̄ the mean of all prompts.

Subclasses add their distillation terms in :meth:`distill_terms`. The bank is encoded once, when training starts
(an evaluation-only run never encodes it), and kept in the feature cache. The frozen image features of a step
(g, and P only when a method reads patches: :attr:`needs_patches`) may come pre-encoded (``batch["frozen"]``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from trainers.base import PromptTrainer
from trainers.teacher import (
    _select_prompts,
    load_prompt_bank,
    resolve_bank_path,
    selected_teacher,
)

logger = logging.getLogger(__name__)

INIT_N_CTX = 4  # BiomedCoOp / OGKD use CTX_INIT only when N_CTX == 4 (else N(0, 0.02²))


@dataclass
class DistillBatch:
    """Everything a distillation loss may need for one batch."""

    labels: torch.Tensor  # [B]
    g: torch.Tensor  # [B, E] normalised global image features
    patches: torch.Tensor | None  # [B, N, E] projected patch features, not normalised (None: not needed)
    text: torch.Tensor  # [C, E] normalised student class features (with gradient)
    teacher_text: torch.Tensor  # [C, E] normalised selected-teacher class features
    scale: torch.Tensor  # logit scale s
    z_s: torch.Tensor  # [B, C] student logits
    z_t: torch.Tensor  # [B, C] teacher logits


class DistillPromptTrainer(PromptTrainer):
    """CoOp student + LLM-prompt teacher + SCCM. Subclasses define the config accessors and extra terms."""

    #: names of the per-method config keys (BiomedCoOp and OGKD spell them differently)
    sccm_key = "LAMBDA_SCCM"

    @property
    def node(self) -> Any:
        return self.cfg.TRAINER[self.cfg_node]

    def build_model(self) -> None:
        c = self.node
        ctx_init = c.CTX_INIT if c.N_CTX == INIT_N_CTX else ""
        if c.CTX_INIT and not ctx_init:
            logger.info("N_CTX %d ≠ %d: random context init (CTX_INIT %r is used only with %d vectors, as released)",
                        c.N_CTX, INIT_N_CTX, c.CTX_INIT, INIT_N_CTX)
        self.prompt_learner = self.build_prompt_learner(ctx_init=ctx_init)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)

    @property
    def needs_patches(self) -> bool:
        """Whether a step reads the patch tokens (a method with a patch loss switched on)."""
        return False

    def encode_frozen(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.needs_patches:
            return super().encode_frozen(images)
        with torch.no_grad(), self.frozen_autocast():  # one pass gives the global and the patch tokens
            g, patches = self.backbone.encode_image(images)
        return {"g": F.normalize(g.float(), dim=-1), "patches": patches.float()}

    def set_model_mode(self, mode: str) -> None:
        super().set_model_mode(mode)
        self.backbone.set_text_train(mode == "train" and bool(self.node.TEXT_DROPOUT))

    def before_train(self) -> None:
        path = resolve_bank_path(self.node.PROMPT_BANK, self.cfg.DATASET.ROOT)
        logger.info("teacher prompt bank: %s", path)
        t0 = time.perf_counter()
        self.prompt_bank = load_prompt_bank(path)
        self.bank, self.bank_mean = self.prompt_bank_features(self.prompt_bank, self.classnames, self.node.N_PROMPTS)
        self.timings["bank_s"] = time.perf_counter() - t0
        self._fallbacks = torch.zeros((), dtype=torch.long, device=self.device)

    def after_epoch(self) -> None:
        n = int(self._fallbacks)  # one host sync per epoch
        if n:
            logger.warning("teacher prompt selection fell back to all %d prompts in %d step(s) of epoch %d "
                           "(MAD = 0 or an empty selection)", self.bank.shape[1], n, self.epoch + 1)
            self._fallbacks.zero_()
        super().after_epoch()

    def distill_terms(self, batch: DistillBatch) -> dict[str, torch.Tensor]:
        """The method's weighted distillation terms (added to CE + λ_SCCM·SCCM)."""
        raise NotImplementedError

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["label"].to(self.device, non_blocking=True)
        c = self.node
        frozen = self.frozen_features(batch)
        g, patches = frozen["g"], frozen.get("patches")
        with self.autocast():
            text = self.class_features()
            scale = self.backbone.logit_scale
            with torch.no_grad():
                mask, fell_back = _select_prompts(g, self.bank, scale, c.TAU)
                teacher_text = selected_teacher(self.bank, mask)
            self._fallbacks += fell_back
            db = DistillBatch(labels=labels, g=g, patches=patches, text=text, teacher_text=teacher_text, scale=scale,
                              z_s=scale * g @ text.t(), z_t=scale * g @ teacher_text.t())
            terms = {
                "ce": F.cross_entropy(db.z_s.float(), labels),
                "sccm": c[self.sccm_key] * F.mse_loss(text.float(), self.bank_mean.float()),
                **self.distill_terms(db),
            }
            loss = torch.stack(list(terms.values())).sum()
        self.model_backward_and_update(loss)
        acc = (db.z_s.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, "acc": acc}
