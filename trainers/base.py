"""Shared trainer pieces for CLIP-style classifiers: cosine logits, cached class features at test time."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from engine.trainer import TrainerBase
from trainers.prompt_learner import PromptLearner, text_features
from trainers.teacher import bank_keys_for, encode_prompt_bank


class ClipTrainer(TrainerBase):
    """Logits = logit_scale · f̂ · t̂ᵀ with class features from :meth:`class_features`.

    Class features are computed once per evaluation (they do not depend on the image) and on every training
    step (they carry the gradient). The image tower is frozen and unprompted, so evaluation runs on cached image
    features and training steps may take features encoded ahead in batches."""

    frozen_image_tower = True
    batched_train_features = True

    def class_features(self) -> torch.Tensor:
        """L2-normalised class text features [C, E]."""
        raise NotImplementedError

    def logits(self, features: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:
        """s · f̂ · t̂ᵀ for normalised image features [B, E] and class features [C, E]."""
        return self.backbone.logit_scale * features.to(class_feats.dtype) @ class_feats.t()

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features, self._eval_class_feats)

    def step_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """What :meth:`logits` takes for a training batch: its frozen global image features."""
        return self.frozen_features(batch)["g"]

    def prompt_bank_features(self, bank: dict[str, list[str]], classnames: Sequence[str],
                             n_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~trainers.teacher.encode_prompt_bank` through the feature cache and the frozen precision:
        (per-sentence features [C, T, E], class means [C, E]), fp32. The key covers the exact token ids."""
        def key() -> dict[str, Any]:
            keys = bank_keys_for(bank, classnames, n_prompts)
            tokens = self.backbone.tokenize([s for k in keys for s in bank[k][:n_prompts]])
            digest = hashlib.sha256(tokens.contiguous().numpy().tobytes()).hexdigest()
            return self.cache_key("prompt-bank", tokens=digest, shape=list(tokens.shape), n_prompts=n_prompts,
                                  classnames=list(classnames))

        def compute() -> dict[str, torch.Tensor]:
            size = self.encode_pass_size(text=True)
            with torch.no_grad(), self.frozen_autocast():
                feats, means = encode_prompt_bank(self.backbone, bank, classnames, n_prompts,
                                                  progress=bool(self.cfg.VERBOSE),
                                                  **({"batch_size": size} if size else {}))
            return {"feats": feats.float(), "means": means.float()}

        out = self.cached(key, compute, f"teacher prompt bank ({len(classnames)} classes x {n_prompts})")
        return out["feats"], out["means"]

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

    model_keys = ("N_CTX", "CTX_INIT", "CSC", "CLASS_TOKEN_POSITION")  # the prompt learner; the rest is training

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
        return text_features(self.backbone, pl(), pl.tokenized_prompts, pl.text_length)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Return {"loss": total, ...extra terms to log}. Default: cross-entropy."""
        return {"loss": F.cross_entropy(logits, labels)}

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["label"].to(self.device, non_blocking=True)
        inputs = self.step_inputs(batch)
        with self.autocast():
            logits = self.logits(inputs, self.class_features())
            terms = self.loss(logits.float(), labels, batch)
        self.model_backward_and_update(terms["loss"])
        acc = (logits.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {**{k: v.detach() for k, v in terms.items()}, "acc": acc}
