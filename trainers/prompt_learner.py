"""The CoOp prompt learner shared by every CoOp-family trainer (SPEC §1.0).

Text input = [start token] + n_ctx learnable vectors + word embeddings of "<classname>." + [end] + padding.
The learnable vectors replace the embeddings of the placeholder tokens at positions ``prompt_start ..
prompt_start + n_ctx``. The prefix (start token) and suffix (class tokens, ".", end, padding) are frozen,
non-persistent buffers rebuilt from the current class names, so a checkpoint holds the context only and
transfers across class sets (base → new).

Class-token position ``end`` / ``middle`` / ``front`` uses each class name's real token count
(the released code used 1 for every name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

logger = logging.getLogger(__name__)

POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"


def prompt_learner_cfg(*, n_ctx: int = 4, ctx_init: str = "a photo of a", csc: bool = False,
                       class_token_position: str = "end", prec: str = "fp32") -> CN:
    """A new ``TRAINER.<NAME>`` node with the prompt learner's keys, the defaults the CoOp family shares (CoOp passes
    its own ``n_ctx`` / ``ctx_init``); the trainer adds its own keys to the node it gets."""
    node = CN()
    node.N_CTX = n_ctx  # number of context vectors (CTX_INIT overrides it with its token count, see each trainer)
    node.CTX_INIT = ctx_init  # initialisation words; "" → N(0, 0.02²)
    node.CSC = csc  # class-specific context
    node.CLASS_TOKEN_POSITION = class_token_position  # end / middle / front
    node.PREC = prec  # fp32 / amp / fp16 / bf16 (mixed precision needs CUDA)
    return node


def clean_classname(name: str) -> str:
    return name.replace("_", " ")


def register_class_prompt_buffers(module: nn.Module, backbone: Any, prefix_text: str, names: Sequence[str],
                                  n_ctx: int) -> None:
    """Tokenise "<prefix_text> <name>." per class and register the frozen, non-persistent buffers
    ``tokenized_prompts`` [C, L], ``token_prefix`` (start token) and ``token_suffix`` (after the n_ctx slots), and
    the attribute ``text_length``: the prompts' trimmed length (fixed, so the text encoder never waits for it)."""
    device = next(iter(backbone.parameters())).device
    start = backbone.prompt_start
    tokens = backbone.tokenize([f"{prefix_text} {n}." for n in names]).to(device)
    with torch.no_grad():
        emb = backbone.token_embedding(tokens).float()
    module.register_buffer("tokenized_prompts", tokens, persistent=False)
    module.register_buffer("token_prefix", emb[:, :start], persistent=False)
    module.register_buffer("token_suffix", emb[:, start + n_ctx:], persistent=False)
    module.text_length = backbone.text_length(tokens)


class PromptLearner(nn.Module):
    """Learnable context vectors + frozen class-name embeddings → prompt embeddings ``[C, L, W]``.

    Args:
        backbone: a :class:`clip_backbones.Backbone` (frozen).
        classnames: class names of the current label space (label order).
        n_ctx: number of context vectors; with ``ctx_init`` it becomes the init's token count.
        ctx_init: initial words (e.g. "a photo of a"); "" → N(0, ``init_std``²).
        csc: class-specific context (one context per class).
        class_token_position: "end", "middle" or "front".
    """

    def __init__(
        self,
        backbone: Any,
        classnames: Sequence[str],
        *,
        n_ctx: int,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {class_token_position!r}")
        names = [clean_classname(c) for c in classnames]
        n_cls = len(names)
        width = backbone.text_width
        start = backbone.prompt_start
        # real parameters live on the backbone's device, like the frozen buffers
        device = next(iter(backbone.parameters())).device

        ctx_init = clean_classname(ctx_init).strip()
        if ctx_init:
            init_len = backbone.num_tokens(ctx_init)
            if init_len != n_ctx:
                logger.info("CTX_INIT %r has %d tokens: using n_ctx = %d (configured N_CTX %d)",
                            ctx_init, init_len, init_len, n_ctx)
            n_ctx = init_len
            with torch.no_grad():
                emb = backbone.token_embedding(backbone.tokenize([ctx_init]).to(device))
            ctx = emb[0, start:start + n_ctx].clone().float()
            if csc:
                ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
            prefix_text = ctx_init
        else:
            if n_ctx < 1:
                raise ValueError(f"N_CTX must be ≥ 1 without CTX_INIT, got {n_ctx}")
            shape = (n_cls, n_ctx, width) if csc else (n_ctx, width)
            ctx = torch.empty(shape, device=device).normal_(0.0, init_std)
            prefix_text = " ".join([PLACEHOLDER] * n_ctx)
        logger.info("prompt learner: %s context, n_ctx %d, init %r, class token %s",
                    "class-specific" if csc else "generic", n_ctx, ctx_init or "random", class_token_position)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.n_cls = n_cls
        self.csc = csc
        self.class_token_position = class_token_position
        self.classnames = names
        self.name_lens = [backbone.num_tokens(n) for n in names]

        register_class_prompt_buffers(self, backbone, prefix_text, names, n_ctx)
        order = self._order(start, self.tokenized_prompts.shape[1]).to(self.tokenized_prompts.device)
        self.register_buffer("order", order, persistent=False)

    def _order(self, start: int, length: int) -> torch.Tensor:
        """Gather index [C, L]: output position → position in cat([prefix, ctx, suffix]) (the "end" layout)."""
        n_ctx = self.n_ctx
        rows = []
        for name_len in self.name_lens:
            prefix = list(range(start))
            ctx = list(range(start, start + n_ctx))
            cls = list(range(start + n_ctx, start + n_ctx + name_len))
            rest = list(range(start + n_ctx + name_len, length))
            if self.class_token_position == "end":
                row = prefix + ctx + cls + rest
            elif self.class_token_position == "front":
                row = prefix + cls + ctx + rest
            else:  # middle
                half = n_ctx // 2
                row = prefix + ctx[:half] + cls + ctx[half:] + rest
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long)

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings for context ``ctx`` of shape [n_ctx, W], [C, n_ctx, W] or [B, C, n_ctx, W].

        Returns [C, L, W] (or [B, C, L, W])."""
        lead = ctx.shape[:-3] if ctx.dim() == 4 else ()
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix = self.token_prefix.expand(*lead, -1, -1, -1)
        suffix = self.token_suffix.expand(*lead, -1, -1, -1)
        x = torch.cat([prefix.to(ctx.dtype), ctx, suffix.to(ctx.dtype)], dim=-2)
        if self.class_token_position == "end":
            return x
        index = self.order.view(*([1] * len(lead)), *self.order.shape, 1).expand(*x.shape)
        return torch.gather(x, -2, index)

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [C, L, W] for the current context."""
        return self.assemble(self.ctx)


def text_features(backbone: Any, prompts: torch.Tensor, tokens: torch.Tensor,
                  length: int | None = None) -> torch.Tensor:
    """L2-normalised text features of prompt embeddings (trimmed to the longest real prompt; pass its ``length``
    when known, so that nothing waits for the device)."""
    return F.normalize(backbone.encode_text_from_embeddings(prompts, tokens, length=length), dim=-1)


def image_features(backbone: Any, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised global image features (frozen tower, no gradient)."""
    with torch.no_grad():
        return F.normalize(backbone.encode_image(images)[0], dim=-1)


@torch.no_grad()
def zeroshot_classifier(backbone: Any, classnames: Sequence[str], templates: Sequence[str],
                        batch_size: int = 256) -> torch.Tensor:
    """Class text features [C, E] from hand-written templates: for each class, the normalised mean of the
    normalised features of every template (a single template gives its normalised feature)."""
    device = next(iter(backbone.parameters())).device
    texts = [t.format(clean_classname(c)) for c in classnames for t in templates]
    feats = []
    for i in range(0, len(texts), batch_size):
        tokens = backbone.tokenize(texts[i:i + batch_size]).to(device)
        feats.append(text_features(backbone, backbone.token_embedding(tokens), tokens))
    per_template = torch.cat(feats).view(len(classnames), len(templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1)
