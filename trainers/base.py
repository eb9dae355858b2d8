"""Shared trainer pieces for CLIP-style classifiers: cosine logits, cached class features at test time."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from engine.trainer import TrainerBase
from trainers.prompt_learner import PromptLearner, image_features, text_features


class ClipTrainer(TrainerBase):
    """Logits = logit_scale · f̂ · t̂ᵀ with class features from :meth:`class_features`.

    Class features are computed once per evaluation (they do not depend on the image) and on every training
    step (they carry the gradient)."""

    def class_features(self) -> torch.Tensor:
        """L2-normalised class text features [C, E]."""
        raise NotImplementedError

    def logits(self, images: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:
        return self.backbone.logit_scale * image_features(self.backbone, images) @ class_feats.t()

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images, self._eval_class_feats)

    def test(self, split: str = "test", **kwargs: Any) -> dict[str, Any]:
        self.set_model_mode("eval")
        with torch.no_grad(), self.autocast():
            self._eval_class_feats = self.class_features().float()
        try:
            return super().test(split, **kwargs)
        finally:
            del self._eval_class_feats


class PromptTrainer(ClipTrainer):
    """A CoOp-style trainer: a :class:`PromptLearner` over the frozen backbone, trained with cross-entropy.

    Subclasses set ``cfg_node`` (their TRAINER.<NODE>) and may override :meth:`loss`."""

    def build_prompt_learner(self, **overrides: Any) -> PromptLearner:
        c = self.cfg.TRAINER[self.cfg_node]
        kwargs = dict(n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, csc=c.CSC, class_token_position=c.CLASS_TOKEN_POSITION)
        kwargs.update(overrides)
        return PromptLearner(self.backbone, self.classnames, **kwargs)

    def build_model(self) -> None:
        self.prompt_learner = self.build_prompt_learner()
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)

    def class_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        return text_features(self.backbone, pl(), pl.tokenized_prompts)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Return {"loss": total, ...extra terms to log}. Default: cross-entropy."""
        return {"loss": F.cross_entropy(logits, labels)}

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, labels = self.parse_batch(batch)
        with self.autocast():
            logits = self.logits(images, self.class_features())
            terms = self.loss(logits.float(), labels, batch)
        self.model_backward_and_update(terms["loss"])
        acc = (logits.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {**{k: v.detach() for k, v in terms.items()}, "acc": acc}
