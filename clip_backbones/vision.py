"""Image towers: projected global and patch features from open_clip's two ViT flavours.

- ``TimmModel`` (BiomedCLIP): a timm ``VisionTransformer`` trunk plus open_clip's head (Dropout -> Linear).
- ``VisionTransformer`` (OpenAI CLIP): open_clip's own ViT with ``ln_post`` and a ``proj`` matrix.

Patch features are the final-layer patch tokens passed through exactly the per-token operations that turn
the pooled token into the global feature, so a patch feature and the global feature live in the same space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import timm
import torch
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from timm.layers import Mlp
from torch import nn

from .errors import BackboneError


class VisionTower(ABC):
    """Common interface of the image towers (a plain object holding a reference to ``model.visual``)."""

    width: int  # token width inside the transformer
    num_patches: int  # patch tokens per image

    @property
    @abstractmethod
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, H, W] -> (global [B, embed_dim], patches [B, num_patches, embed_dim])."""


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

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk.forward_features(images)  # [B, prefix + patches, width], final norm applied
        pooled = self.visual.head(self.trunk.forward_head(feats))  # == TimmModel.forward(images)
        return pooled, self._project(feats[:, self.num_prefix_tokens:])


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

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.visual.forward_intermediates(
            images, indices=1, normalize_intermediates=True, output_fmt="NLC")  # last block, ln_post applied
        patches = out["image_intermediates"][-1] @ self.visual.proj  # [B, patches, embed_dim]
        return out["image_features"], patches


def vision_tower_for(visual: nn.Module) -> VisionTower:
    """The tower adapter for ``model.visual``; BackboneError for unsupported image towers."""
    if isinstance(visual, TimmModel):
        return TimmVisionTower(visual)
    if isinstance(visual, VisionTransformer):
        return OpenClipVisionTower(visual)
    raise BackboneError(f"image tower {type(visual).__name__} is not supported; supported: open_clip "
                        "TimmModel around a timm VisionTransformer, open_clip VisionTransformer")
