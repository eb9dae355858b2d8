"""MaPLe (Khattak et al., CVPR 2023): coupled multi-modal deep prompts, cross-entropy (SPEC §1.8).

Language prompts P_0 … P_{J-1} ∈ R^{n_ctx × text_width}; vision prompts V_k = F_k(P_k) with one coupling map
F_k = Linear(text_width → vision_width) per depth. P_0 replaces the word embeddings right after the start token;
V_0 is appended after the image tokens. In layers i = 1 … J-1 of both towers the prompt tokens coming out of
the previous layer are replaced by P_i (text, raw: no LayerNorm, no positions) and V_i (vision, the last n_ctx
tokens); deeper layers carry them along. Only ``MultiModalPromptLearner`` (P_0, P_1..J-1, F_0..J-1) is learned;
both towers stay frozen and in eval mode. Inference = the prompted logits.

As in MaPLe's release, the tokenised prompt is the whole "<CTX_INIT> <class>." and the frozen suffix starts
after position ``prompt_start + n_ctx``, so with n_ctx 2 the text reads [SOS] P_0 "of a <class>." [EOS].

The towers themselves are the backbone's (``clip_backbones``, one adapter per family):
``backbone.encode_text_from_embeddings(prompts, tokens, deep_prompts=[P_1, …])`` and
``backbone.encode_image(images, prompts=[V_0, …])`` re-run each model's own forward pass layer by layer with the
prompts inserted. V_0 enters before the vision pre-norm, as in MaPLe's CLIP code (BiomedCLIP's norm_pre is the
identity, so there it is SPEC §1.8's order exactly); pooling never sees the prompt tokens.

Deviation from the BiomedCoOp release: none possible — MaPLe is not in the BiomedCoOp / OGKD releases; the
BiomedCLIP hyper-parameters are MaPLe's CLIP defaults (n_ctx 2, J 9, SGD 0.0035, batch 4, 5 epochs) with fp32
instead of fp16 and no random flip, an assumption (SPEC §1.8). Against MaPLe's own code: J is capped at the depth
of the shallower tower (logged), and N_CTX larger than CTX_INIT's token count is an error (MaPLe silently switched
to a random init when N_CTX > 4).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer
from trainers.prompt_learner import PLACEHOLDER, clean_classname, register_class_prompt_buffers

logger = logging.getLogger(__name__)


@register_trainer_cfg("MAPLE")
def _maple_cfg(cfg: CN) -> None:
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # prompt tokens per layer (P_0 from the first N_CTX tokens of CTX_INIT)
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # "" → "X X …" placeholders and P_0 ~ N(0, 0.02²)
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # J: layers that receive prompts (capped at the shallower tower's depth)
    cfg.TRAINER.MAPLE.PREC = "fp32"  # fp32 / amp / fp16 / bf16 (mixed precision needs CUDA)


# ------------------------------------------------------------------------------------------------ prompts
class MultiModalPromptLearner(nn.Module):
    """P_0 (``ctx``), deep text prompts P_1..J-1 (``compound_prompts_text``) and the coupling maps F_0
    (``proj``), F_1..J-1 (``compound_prompt_projections``) — MaPLe's parameter names.

    Args:
        backbone: a :class:`clip_backbones.Backbone` (frozen).
        classnames: class names of the current label space (label order).
        n_ctx: prompt tokens per layer.
        ctx_init: initial words; P_0 = the word embeddings of their first ``n_ctx`` tokens. "" → random init.
        depth: J, the number of layers that receive prompts (≥ 1); capped at the shallower tower's depth.
        init_std: std of the random initialisation.
    """

    def __init__(self, backbone: Any, classnames: Sequence[str], *, n_ctx: int, ctx_init: str = "",
                 depth: int = 9, init_std: float = 0.02) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"TRAINER.MAPLE.N_CTX must be ≥ 1, got {n_ctx}")
        if depth < 1:
            raise ValueError(f"TRAINER.MAPLE.PROMPT_DEPTH must be ≥ 1, got {depth}")
        n_layers = min(len(backbone.text_blocks), len(backbone.vision_blocks))
        if depth > n_layers:
            logger.info("PROMPT_DEPTH %d > the shallower tower's %d layers: using depth %d", depth, n_layers, n_layers)
            depth = n_layers
        t_width, v_width = backbone.text_width, backbone.vision_width
        start = backbone.prompt_start
        device = next(iter(backbone.parameters())).device

        ctx_init = clean_classname(ctx_init).strip()
        if ctx_init:
            init_len = backbone.num_tokens(ctx_init)
            if n_ctx > init_len:
                raise ValueError(f"TRAINER.MAPLE.N_CTX {n_ctx} > the {init_len} tokens of CTX_INIT {ctx_init!r}; "
                                 "lower N_CTX, lengthen CTX_INIT, or set CTX_INIT '' for a random init")
            with torch.no_grad():
                emb = backbone.token_embedding(backbone.tokenize([ctx_init]).to(device))
            ctx = emb[0, start:start + n_ctx].clone().float()
            prefix_text = ctx_init
        else:
            ctx = torch.empty(n_ctx, t_width, device=device).normal_(0.0, init_std)
            prefix_text = " ".join([PLACEHOLDER] * n_ctx)
        logger.info("MaPLe prompts: n_ctx %d, depth %d, init %r, text width %d → vision width %d",
                    n_ctx, depth, ctx_init or "random", t_width, v_width)

        self.n_ctx = n_ctx
        self.depth = depth
        self.prompt_start = start
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(t_width, v_width).to(device)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, t_width, device=device).normal_(0.0, init_std))
             for _ in range(depth - 1)])
        # as released: F_1 … F_{J-1} start as copies of one randomly initialised Linear (F_0 has its own init)
        single = nn.Linear(t_width, v_width).to(device)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)])

        register_class_prompt_buffers(self, backbone, prefix_text, [clean_classname(c) for c in classnames], n_ctx)

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [C, L, text_width]: prefix, P_0, suffix."""
        ctx = self.ctx.unsqueeze(0).expand(self.token_prefix.shape[0], -1, -1)
        return torch.cat([self.token_prefix.to(ctx.dtype), ctx, self.token_suffix.to(ctx.dtype)], dim=1)

    def deep_text_prompts(self) -> list[torch.Tensor]:
        """[P_1, …, P_{J-1}], each [n_ctx, text_width]."""
        return list(self.compound_prompts_text)

    def vision_prompts(self) -> list[torch.Tensor]:
        """[V_0, …, V_{J-1}] = [F_0(P_0), …, F_{J-1}(P_{J-1})], each [n_ctx, vision_width]."""
        return [self.proj(self.ctx)] + [f(p) for f, p in zip(self.compound_prompt_projections,
                                                              self.compound_prompts_text, strict=True)]


# ------------------------------------------------------------------------------------------------ trainer
@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """Multi-modal prompt learning: coupled deep text / vision prompts, cross-entropy on the prompted logits."""

    cfg_node = "MAPLE"
    model_keys = ("N_CTX", "CTX_INIT", "PROMPT_DEPTH")
    frozen_image_tower = False  # the vision prompts change the image tower: every evaluation encodes the images
    batched_train_features = False

    def build_model(self) -> None:
        c = self.cfg.TRAINER.MAPLE
        self.prompt_learner = MultiModalPromptLearner(self.backbone, self.classnames, n_ctx=c.N_CTX,
                                                      ctx_init=c.CTX_INIT, depth=c.PROMPT_DEPTH)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("MultiModalPromptLearner", self.prompt_learner, optim, sched)

    def class_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        feats = self.backbone.encode_text_from_embeddings(pl(), pl.tokenized_prompts, length=pl.text_length,
                                                          deep_prompts=pl.deep_text_prompts())
        return F.normalize(feats, dim=-1)

    def step_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["img"].to(self.device, non_blocking=True)

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images, self._eval_class_feats)

    def logits(self, images: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        image_feats, _ = self.backbone.encode_image(images, prompts=self.prompt_learner.vision_prompts())
        return self.backbone.logit_scale * F.normalize(image_feats, dim=-1) @ class_feats.t()
