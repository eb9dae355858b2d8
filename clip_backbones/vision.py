"""Image towers: projected global and patch features from open_clip's two ViT flavours and its ResNet.

- ``TimmModel`` (BiomedCLIP): a timm ``VisionTransformer`` trunk plus open_clip's head (Dropout -> Linear).
- ``VisionTransformer`` (OpenAI CLIP, PubMedCLIP): open_clip's own ViT with ``ln_post`` and a ``proj`` matrix.
- ``ModifiedResNet`` (PMC-CLIP): OpenAI's ResNet with attention pooling; no deep vision prompts.

Patch features are the final-layer patch tokens passed through exactly the per-token operations that turn
the pooled token into the global feature, so a patch feature and the global feature live in the same space.

Deep vision prompts (MaPLe) re-run the tower's own forward pass block by block: V_0 is appended after the image
tokens before the pre-transformer norm (as in MaPLe's CLIP code; BiomedCLIP's ``norm_pre`` is the identity),
V_i overwrites the last n tokens entering block i, and the prompt tokens are dropped before pooling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import timm
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from timm.layers import Mlp
from torch import nn

from .errors import BackboneError
from .prompting import run_blocks


class VisionTower(ABC):
    """Common interface of the image towers (a plain object holding a reference to ``model.visual``)."""

    width: int  # token width inside the transformer
    num_patches: int  # patch tokens per image

    @property
    @abstractmethod
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order."""

    @abstractmethod
    def encode(self, images: torch.Tensor,
               prompts: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> (global [B, embed_dim], patches [B, num_patches, embed_dim]); ``prompts``
        [V_0, …, V_{J-1}] as in :meth:`clip_backbones.Backbone.encode_image` (empty: the model's own forward)."""


def _append(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """x [B, L, W] followed by ``prompt`` [n, W] (V_0; no positional embedding): [B, L + n, W]."""
    return torch.cat([x, prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)


class TimmVisionTower(VisionTower):
    """open_clip ``TimmModel`` around a timm ``VisionTransformer`` with CLS-token pooling."""

    _HEAD_LAYERS = (nn.Dropout, nn.Linear, Mlp, nn.Identity)

    def __init__(self, visual: TimmModel) -> None:
        trunk = visual.trunk
        if not isinstance(trunk, timm.models.VisionTransformer):
            raise BackboneError(f"timm trunk {type(trunk).__name__} is not supported; "
                                "patch features need a timm VisionTransformer")
        if trunk.global_pool != "token":
            raise BackboneError(f"timm ViT with global_pool={trunk.global_pool!r} is not supported; "
                                "patch features are defined for CLS-token pooling ('token')")
        odd = [f"{n}: {type(m).__name__}" for n, m in visual.head.named_children()
               if not isinstance(m, self._HEAD_LAYERS)]
        if odd:
            raise BackboneError(f"open_clip timm head has layers that are not per-token ({', '.join(odd)}); "
                                "only Dropout / Linear / Mlp projections are supported")
        self.visual = visual
        self.trunk = trunk
        self.width = int(trunk.num_features)
        self.num_patches = int(trunk.patch_embed.num_patches)
        self.num_prefix_tokens = int(trunk.num_prefix_tokens)

    @property
    def blocks(self) -> nn.Sequential:
        return self.trunk.blocks

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        # the per-token part of timm's forward_head (after pooling), then open_clip's head
        t = self.trunk
        return self.visual.head(t.head(t.head_drop(t.fc_norm(tokens))))

    def encode(self, images: torch.Tensor,
               prompts: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        if prompts:
            feats = self._prompted_features(images, prompts)
        else:
            feats = self.trunk.forward_features(images)  # [B, prefix + patches, width], final norm applied
        pooled = self.visual.head(self.trunk.forward_head(feats))  # == TimmModel.forward(images) without prompts
        return pooled, self._project(feats[:, self.num_prefix_tokens:])

    def _prompted_features(self, images: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """timm ``VisionTransformer.forward_features`` block by block with prompts; the prompt tokens dropped."""
        trunk = self.trunk
        x = trunk.patch_embed(images)
        x = trunk._pos_embed(x)  # prefix token(s) + positional embedding
        x = trunk.patch_drop(x)
        n_real = x.shape[1]
        x = trunk.norm_pre(_append(x, prompts[0]))
        x = trunk.norm(run_blocks(trunk.blocks, x, prompts[1:], -prompts[0].shape[0]))
        return x[:, :n_real]  # prompt tokens never reach the pooling


class OpenClipVisionTower(VisionTower):
    """open_clip's own ``VisionTransformer`` (class token, ``ln_post``, ``proj``)."""

    def __init__(self, visual: VisionTransformer) -> None:
        if visual.attn_pool is not None:
            raise BackboneError("open_clip ViT with attentional pooling is not supported; "
                                "its patch features are not comparable to the pooled feature")
        if visual.pool_type not in ("tok", "avg"):
            raise BackboneError(f"open_clip ViT with pool_type={visual.pool_type!r} is not supported; "
                                "expected 'tok' or 'avg'")
        if visual.proj is None:
            raise BackboneError("open_clip ViT without an output projection is not supported")
        self.visual = visual
        self.width = int(visual.transformer.width)
        self.num_patches = int(visual.grid_size[0] * visual.grid_size[1])

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def encode(self, images: torch.Tensor,
               prompts: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        if prompts:
            return self._prompted_encode(images, prompts)
        out = self.visual.forward_intermediates(
            images, indices=1, normalize_intermediates=True, output_fmt="NLC")  # last block, ln_post applied
        patches = out["image_intermediates"][-1] @ self.visual.proj  # [B, patches, embed_dim]
        return out["image_features"], patches

    def _prompted_encode(self, images: torch.Tensor,
                         prompts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """open_clip ``VisionTransformer.forward_intermediates`` (batch-first) block by block with prompts."""
        visual = self.visual
        x = visual.conv1(images)  # [B, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid², width]
        cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        n_real = x.shape[1]
        x = visual.ln_pre(_append(x, prompts[0]))
        x = run_blocks(visual.transformer.resblocks, x, prompts[1:], -prompts[0].shape[0],
                       batch_first=visual.transformer.batch_first)
        x = x[:, :n_real]  # prompt tokens never reach the pooling
        normed = visual.ln_post(x)
        pooled = visual.ln_post(self._pool_tokens(x)) if visual.final_ln_after_pool else self._pool_tokens(normed)
        return pooled @ visual.proj, normed[:, 1:] @ visual.proj  # patches: ln_post applied, as without prompts

    def _pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        # pool_type is 'tok' or 'avg' (checked in __init__)
        return x[:, 0] if self.visual.pool_type == "tok" else x[:, 1:].mean(dim=1)


class ResNetVisionTower(VisionTower):
    """open_clip's ``ModifiedResNet`` (OpenAI's ResNet: 3-convolution stem, anti-aliased strided bottlenecks,
    attention pooling), as in PMC-CLIP.

    Global feature: the tower's own forward (``attnpool`` of the last feature map). Patch features (our definition;
    the released OGKD is ViT-only): the cells of the last feature map (7×7 at 224 px) passed through the attention
    pool's value and output projections, ``c_proj(v_proj(x))`` — the usual dense-CLIP reading of an attention-pooled
    ResNet: the pooled feature is an attention-weighted mix of exactly these value vectors (plus the mean token's),
    so a patch feature lives in the same space as the global one. No positional embedding is added to them.
    """

    def __init__(self, visual: ModifiedResNet) -> None:
        self.visual = visual
        pool = visual.attnpool
        self.width = int(pool.v_proj.in_features)  # channels of the last feature map
        self.num_patches = int(pool.positional_embedding.shape[0]) - 1  # (image_size // 32)², the mean token left out

    NO_PROMPTS = ("the image tower is a convolutional ResNet (open_clip ModifiedResNet, e.g. PMC-CLIP): it has no "
                  "transformer blocks, so deep vision prompts (MaPLe) cannot apply; use a backbone with a ViT image "
                  "tower")

    @property
    def blocks(self) -> nn.ModuleList:
        raise BackboneError(self.NO_PROMPTS)

    def encode(self, images: torch.Tensor,
               prompts: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        if prompts:
            raise BackboneError(self.NO_PROMPTS)
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))  # [B, C, h, w]
        pooled = v.attnpool(x)  # == ModifiedResNet.forward(images)
        cells = x.flatten(2).transpose(1, 2)  # [B, h·w, C], row-major
        return pooled, v.attnpool.c_proj(v.attnpool.v_proj(cells))


def vision_tower_for(visual: nn.Module) -> VisionTower:
    """The tower adapter for ``model.visual``; BackboneError for unsupported image towers."""
    if isinstance(visual, TimmModel):
        return TimmVisionTower(visual)
    if isinstance(visual, VisionTransformer):
        return OpenClipVisionTower(visual)
    if isinstance(visual, ModifiedResNet):
        return ResNetVisionTower(visual)
    raise BackboneError(f"image tower {type(visual).__name__} is not supported; supported: open_clip "
                        "TimmModel around a timm VisionTransformer, open_clip VisionTransformer, open_clip "
                        "ModifiedResNet")
