"""MaPLe (Khattak et al., CVPR 2023): coupled multi-modal deep prompts, cross-entropy (SPEC §1.8).

Language prompts P_0 … P_{J-1} ∈ R^{n_ctx × text_width}; vision prompts V_k = F_k(P_k) with one coupling map
F_k = Linear(text_width → vision_width) per depth. P_0 replaces the word embeddings right after the start token;
V_0 is appended after the image tokens. In layers i = 1 … J-1 of both towers the prompt tokens coming out of
the previous layer are replaced by P_i (text, raw: no LayerNorm, no positions) and V_i (vision, the last n_ctx
tokens); deeper layers carry them along. Only ``MultiModalPromptLearner`` (P_0, P_1..J-1, F_0..J-1) is learned;
both towers stay frozen and in eval mode. Inference = the prompted logits.

As in MaPLe's release, the tokenised prompt is the whole "<CTX_INIT> <class>." and the frozen suffix starts
after position ``prompt_start + n_ctx``, so with n_ctx 2 the text reads [SOS] P_0 "of a <class>." [EOS].

Mapping onto the towers (layer-by-layer re-implementations of the models' own forward passes):
- HF BERT text (BiomedCLIP): BERT embeddings (position + token type, LayerNorm, dropout) → encoder layers with
  the bidirectional padding mask → pooler → proj. OpenAI-CLIP text: + positional embedding → causal resblocks
  → ln_final → end-of-text token → text_projection. Both trim the padding to the longest prompt.
- timm ViT (BiomedCLIP): patch_embed → _pos_embed → patch_drop → [append V_0] → norm_pre → blocks → norm →
  CLS → open_clip head. open_clip ViT: conv1 → class + positional embedding → patch_dropout → [append V_0] →
  ln_pre → resblocks → ln_post / pool → proj. V_0 enters before the pre-norm, as in MaPLe's CLIP code
  (BiomedCLIP's norm_pre is the identity, so there it is SPEC §1.8's order exactly). Pooling never sees the
  prompt tokens (they are dropped before it).

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
from open_clip.hf_model import ClsPooler
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer
from trainers.prompt_learner import PLACEHOLDER, clean_classname

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

        names = [clean_classname(c) for c in classnames]
        tokens = backbone.tokenize([f"{prefix_text} {n}." for n in names]).to(device)
        with torch.no_grad():
            emb = backbone.token_embedding(tokens).float()
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", emb[:, :start], persistent=False)
        self.register_buffer("token_suffix", emb[:, start + n_ctx:], persistent=False)

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


def _replace(x: torch.Tensor, start: int, prompt: torch.Tensor) -> torch.Tensor:
    """x [B, L, W] with positions start … start+n replaced by ``prompt`` [n, W] (out of place; start < 0 counts
    from the end)."""
    start = start + x.shape[1] if start < 0 else start
    p = prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :start], p, x[:, start + prompt.shape[0]:]], dim=1)


def _run_blocks(blocks: nn.Module, x: torch.Tensor, deep: Sequence[torch.Tensor], start: int, *,
                batch_first: bool = True, **kwargs: Any) -> torch.Tensor:
    """Run ``blocks`` in order on x [B, L, W]; deep[i-1] replaces positions start … start+n entering block i
    (1 ≤ i ≤ len(deep)); later blocks carry the prompt tokens along. ``kwargs`` go to every block."""
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            x = _replace(x, start, deep[i - 1])
        x = block(x, **kwargs) if batch_first else block(x.transpose(0, 1), **kwargs).transpose(0, 1)
    return x


# ------------------------------------------------------------------------------------------------ text towers
def encode_text_deep(backbone: Any, embeddings: torch.Tensor, tokens: torch.Tensor,
                     deep_prompts: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Text features (not normalised) of prompt embeddings, with deep prompts replacing the prompt positions.

    Args:
        backbone: the frozen backbone.
        embeddings: Tensor[N, L, text_width], P_0 already spliced in.
        tokens: LongTensor[N, L]; marks the real content (padding is trimmed) and the end-of-text token.
        deep_prompts: [P_1, …, P_{J-1}], each [n_ctx, text_width]; P_i replaces the input of layer i at
            positions ``prompt_start … prompt_start + n_ctx``. Empty → equals ``encode_text_from_embeddings``.
    Returns:
        Tensor[N, embed_dim].
    """
    if embeddings.dim() != 3 or embeddings.shape[:2] != tokens.shape:
        raise ValueError(f"embeddings [N, L, W] and tokens [N, L] must match; got {tuple(embeddings.shape)} "
                         f"and {tuple(tokens.shape)}")
    if len(deep_prompts) >= len(backbone.text_blocks):
        raise ValueError(f"{len(deep_prompts)} deep text prompts for {len(backbone.text_blocks)} text layers")
    if backbone.family == "hf-bert":
        return _hf_bert_text(backbone, embeddings, tokens, deep_prompts)
    if backbone.family == "openai-clip":
        return _openai_clip_text(backbone, embeddings, tokens, deep_prompts)
    raise ValueError(f"MaPLe has no text path for backbone family {backbone.family!r}")


def _hf_bert_text(backbone: Any, embeddings: torch.Tensor, tokens: torch.Tensor,
                  deep_prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``HFTextEncoder.forward`` with ``inputs_embeds``, its BERT encoder run layer by layer."""
    text = backbone.model.text
    bert = text.transformer
    mask = (tokens.to(embeddings.device) != backbone.pad_token_id).long()
    length = int(mask.sum(dim=1).max())  # right padding: the longest real prompt of the batch
    embeddings, mask = embeddings[:, :length], mask[:, :length]
    x = bert.embeddings(inputs_embeds=embeddings)
    # the same additive mask BertModel builds for its layers (attention implementation taken from the config)
    attn = create_bidirectional_mask(config=bert.config, inputs_embeds=x, attention_mask=mask)
    x = _run_blocks(bert.encoder.layer, x, deep_prompts, backbone.prompt_start, attention_mask=attn)
    use_bert_pooler = isinstance(text.pooler, ClsPooler) and text.pooler.use_pooler_output and bert.pooler is not None
    out = BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=bert.pooler(x) if use_bert_pooler else None)
    return text.proj(text.pooler(out, mask))


def _openai_clip_text(backbone: Any, embeddings: torch.Tensor, tokens: torch.Tensor,
                      deep_prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``OpenAIClipBackbone.encode_text_from_embeddings`` with the causal resblocks run one by one."""
    m = backbone.model
    eot = tokens.to(embeddings.device).argmax(dim=-1)
    length = int(eot.max()) + 1  # the longest real prompt of the batch, end-of-text included
    cast_dtype = m.transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
    x = _run_blocks(m.transformer.resblocks, x, deep_prompts, backbone.prompt_start,
                    batch_first=m.transformer.batch_first, attn_mask=m.attn_mask[:length, :length])
    x = m.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
    if isinstance(m.text_projection, nn.Linear):
        return m.text_projection(x)
    if m.text_projection is None:
        return x
    return x @ m.text_projection


# ------------------------------------------------------------------------------------------------ vision towers
def encode_image_deep(backbone: Any, images: torch.Tensor,
                      vision_prompts: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Global image features (not normalised) with vision prompts.

    Args:
        backbone: the frozen backbone.
        images: Tensor[B, 3, H, W], normalised.
        vision_prompts: [V_0, …, V_{J-1}], each [n_ctx, vision_width]: V_0 is appended after the image tokens,
            V_i replaces the last n_ctx tokens entering block i. None → no prompt tokens at all (equals
            ``backbone.encode_image(images)[0]``).
    Returns:
        Tensor[B, embed_dim].
    """
    prompts = list(vision_prompts or [])
    if len(prompts) > len(backbone.vision_blocks):
        raise ValueError(f"{len(prompts)} vision prompts for {len(backbone.vision_blocks)} vision blocks")
    visual = backbone.model.visual
    if isinstance(visual, TimmModel):
        return _timm_vision(visual, images, prompts)
    if isinstance(visual, VisionTransformer):
        return _open_clip_vision(visual, images, prompts)
    raise ValueError(f"MaPLe has no vision path for image tower {type(visual).__name__}")


def _n_tokens(prompts: Sequence[torch.Tensor]) -> int:
    return prompts[0].shape[0] if prompts else 0


def _append(x: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """x [B, L, W] followed by V_0 (no positional embedding); unchanged without prompts."""
    if not prompts:
        return x
    return torch.cat([x, prompts[0].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)


def _timm_vision(visual: TimmModel, images: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """timm ``VisionTransformer.forward_features`` + ``forward_head`` + open_clip head, block by block."""
    trunk = visual.trunk
    x = trunk.patch_embed(images)
    x = trunk._pos_embed(x)  # prefix token(s) + positional embedding
    x = trunk.patch_drop(x)
    n_real = x.shape[1]
    x = trunk.norm_pre(_append(x, prompts))
    x = trunk.norm(_run_blocks(trunk.blocks, x, prompts[1:], -_n_tokens(prompts)))
    return visual.head(trunk.forward_head(x[:, :n_real]))  # CLS pooling (checked by the backbone)


def _open_clip_vision(visual: VisionTransformer, images: torch.Tensor,
                      prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """open_clip ``VisionTransformer.forward`` (batch-first), block by block; pool 'tok' or 'avg'."""
    x = visual.conv1(images)  # [B, width, grid, grid]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid², width]
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    n_real = x.shape[1]
    x = visual.ln_pre(_append(x, prompts))
    x = _run_blocks(visual.transformer.resblocks, x, prompts[1:], -_n_tokens(prompts),
                    batch_first=visual.transformer.batch_first)
    x = x[:, :n_real]  # prompt tokens never reach the pooling
    if visual.final_ln_after_pool:
        pooled = visual.ln_post(_pool_tokens(visual, x))
    else:
        pooled = _pool_tokens(visual, visual.ln_post(x))
    return pooled @ visual.proj


def _pool_tokens(visual: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    if visual.pool_type == "tok":
        return x[:, 0]
    if visual.pool_type == "avg":
        return x[:, 1:].mean(dim=1)
    raise ValueError(f"MaPLe supports open_clip ViT pooling 'tok' / 'avg', not {visual.pool_type!r}")


# ------------------------------------------------------------------------------------------------ trainer
@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """Multi-modal prompt learning: coupled deep text / vision prompts, cross-entropy on the prompted logits."""

    cfg_node = "MAPLE"

    def build_model(self) -> None:
        c = self.cfg.TRAINER.MAPLE
        self.prompt_learner = MultiModalPromptLearner(self.backbone, self.classnames, n_ctx=c.N_CTX,
                                                      ctx_init=c.CTX_INIT, depth=c.PROMPT_DEPTH)
        optim, sched = self.build_optim_sched(self.prompt_learner)
        self.register_model("MultiModalPromptLearner", self.prompt_learner, optim, sched)

    def class_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        feats = encode_text_deep(self.backbone, pl(), pl.tokenized_prompts, pl.deep_text_prompts())
        return F.normalize(feats, dim=-1)

    def logits(self, images: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:
        f = F.normalize(encode_image_deep(self.backbone, images, self.prompt_learner.vision_prompts()), dim=-1)
        return self.backbone.logit_scale * f @ class_feats.t()
