"""CoCoOp (Zhou et al., CVPR 2022): CoOp context conditioned on each image by a small meta-net (SPEC §1.3).

π(x) = meta(f̂(x)) with meta = Linear(E → E/16) → ReLU → Linear(E/16 → W) on the normalised image feature
(E = embed_dim, W = text_width: 512 → 32 → 768 on BiomedCLIP); context_m(x) = ctx_m + π(x). The class prompts
are rebuilt for every image, so every image has its own class text features and logits; the loss is CE.
Learned: ``ctx`` and ``meta_net`` (one module, registered as ``prompt_learner``; checkpoint keys ``ctx`` and
``meta_net.linear{1,2}.{weight,bias}``, as in the release).

The text encoder runs over the B·C per-image prompts at once, in chunks of at most
``TRAINER.COCOOP.PROMPTS_PER_PASS`` prompts (a memory knob: it does not change the result).

Deviation from the BiomedCoOp release: the base-to-novel script loads ``--load-epoch 50`` of a 10-epoch run (no
such checkpoint exists, the novel evaluation fails); our scripts load the run's final checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from engine.trainer import TrainerBase
from trainers.prompt_learner import PromptLearner, prompt_learner_cfg, text_features


@register_trainer_cfg("COCOOP")
def _cocoop_cfg(cfg: CN) -> None:
    cfg.TRAINER.COCOOP = prompt_learner_cfg()  # CSC: π(x) is added to every class's context
    cfg.TRAINER.COCOOP.PROMPTS_PER_PASS = 4096  # ours: max images × classes per text-encoder pass (memory only)


class CoCoOpPromptLearner(PromptLearner):
    """A :class:`PromptLearner` whose context is shifted per image by ``meta_net(f̂)``.

    ``forward(image_features [B, E]) -> prompt embeddings [B, C, L, W]`` (L trimmed to the longest real prompt)."""

    def __init__(self, backbone: Any, classnames: Sequence[str], **kwargs: Any) -> None:
        super().__init__(backbone, classnames, **kwargs)
        vis_dim, hidden = backbone.embed_dim, backbone.embed_dim // 16
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, backbone.text_width)),
        ])).to(self.ctx.device)
        self._trim_padding(backbone.prompt_start)

    def _trim_padding(self, start: int) -> None:
        """Drop the all-padding tail of the frozen buffers once, so the per-image prompts [B, C, L, W] are not
        built at the full context length (BiomedCLIP: 256) only to be trimmed by the text encoder.

        Only trailing positions where every prompt holds token id 0 (the padding id of BERT and CLIP
        tokenizers) go; the text encoder's own trimming then sees the same real tokens."""
        tokens = self.tokenized_prompts
        nonzero = (tokens != 0).any(dim=0).nonzero()
        keep = int(nonzero.max()) + 1 if len(nonzero) else tokens.shape[1]
        self.tokenized_prompts = tokens[:, :keep]
        self.token_suffix = self.token_suffix[:, :keep - start - self.n_ctx]
        self.order = self.order[:, :keep]

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bias = self.meta_net(image_features)  # [B, W]
        if self.csc:  # ctx [C, n_ctx, W]
            ctx = self.ctx.unsqueeze(0) + bias[:, None, None, :]
        else:  # ctx [n_ctx, W]
            ctx = (self.ctx.unsqueeze(0) + bias[:, None, :]).unsqueeze(1).expand(-1, self.n_cls, -1, -1)
        return self.assemble(ctx)  # [B, C, L, W]


@TRAINER_REGISTRY.register()
class CoCoOp(TrainerBase):
    """Conditional context optimisation: per-image prompts, cross-entropy over the per-image logits."""

    cfg_node = "COCOOP"
    model_keys = ("N_CTX", "CTX_INIT", "CSC", "CLASS_TOKEN_POSITION")
    frozen_image_tower = True  # the meta-net reads the frozen image features: evaluation runs on cached ones
    batched_train_features = True

    def build_model(self) -> None:
        c = self.cfg.TRAINER.COCOOP
        if c.PROMPTS_PER_PASS < 1:
            raise ValueError(f"TRAINER.COCOOP.PROMPTS_PER_PASS must be ≥ 1, got {c.PROMPTS_PER_PASS}")
        self.prompt_learner = CoCoOpPromptLearner(
            self.backbone, self.classnames, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, csc=c.CSC,
            class_token_position=c.CLASS_TOKEN_POSITION,
        )
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Per-image logits [B, C] for normalised image features f [B, E]: s · f̂_b · t̂_{b,c}, with t̂_{b,c} from
        image b's conditioned prompt."""
        pl = self.prompt_learner
        per_pass = max(1, int(self.cfg.TRAINER.COCOOP.PROMPTS_PER_PASS) // pl.n_cls)
        out = []
        for fb in f.split(per_pass):
            b = fb.shape[0]
            prompts = pl(fb).flatten(0, 1)  # [b·C, L, W]
            text = text_features(self.backbone, prompts, pl.tokenized_prompts.repeat(b, 1), pl.text_length)
            text = text.view(b, pl.n_cls, -1)
            out.append(torch.einsum("be,bce->bc", fb.to(text.dtype), text))
        return self.backbone.logit_scale * torch.cat(out)

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["label"].to(self.device, non_blocking=True)
        f = self.frozen_features(batch)["g"]
        with self.autocast():
            logits = self.logits_from_features(f)
            loss = F.cross_entropy(logits.float(), labels)
        self.model_backward_and_update(loss)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {"loss": loss.detach(), "acc": acc}
