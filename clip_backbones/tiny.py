"""Tiny, randomly initialised, architecturally faithful backbones built offline from the shipped assets.

- ``tiny-biomedclip``: open_clip ``CustomTextCLIP`` exactly like BiomedCLIP (HF BERT text tower with an MLP
  projection and CLS pooling, context 256; timm ``vit_base_patch16_224`` made narrow; BiomedCLIP's mean/std),
  with a small WordPiece vocabulary that spells any lowercase English word without [UNK].
- ``tiny-clip``: open_clip OpenAI-style ``CLIP`` (QuickGELU, context 77, the bundled BPE tokenizer).

Each is an open_clip ``local-dir`` folder under ``assets/`` without weights; the factory builds it with a fixed
seed so every build gives identical weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from timm.models import model_entrypoint, register_model
from torch import nn

from .errors import BackboneError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TINY_BACKBONES: dict[str, Path] = {  # name -> open_clip local-dir folder (config + tokenizer files, no weights)
    "tiny-biomedclip": ASSETS_DIR / "tiny-biomedclip",
    "tiny-clip": ASSETS_DIR / "tiny-clip",
}
TINY_SEED = 0  # every tiny build draws its random weights from this seed

TINY_VIT_NAME = "vit_micro_patch16_224"
_TINY_VIT_ARGS = dict(embed_dim=32, depth=2, num_heads=2)  # narrow and shallow; the rest is vit_base_patch16_224


def vit_micro_patch16_224(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's ``vit_base_patch16_224`` builder with a 32-wide, 2-block, 2-head transformer (never pretrained)."""
    if pretrained:
        raise BackboneError(f"{TINY_VIT_NAME} is a random test model; it has no pretrained weights")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm passes these to entrypoints
        kwargs.pop(key, None)
    return timm.create_model("vit_base_patch16_224", pretrained=False, **{**_TINY_VIT_ARGS, **kwargs})


def register_tiny_timm_models() -> None:
    """Register ``vit_micro_patch16_224`` in timm's registry (idempotent); needed before building a tiny model."""
    if not timm.is_model(TINY_VIT_NAME):
        register_model(vit_micro_patch16_224)
    elif model_entrypoint(TINY_VIT_NAME) is not vit_micro_patch16_224:
        raise BackboneError(f"timm already has a different model named {TINY_VIT_NAME!r}; "
                            "the tiny backbones cannot register theirs")
