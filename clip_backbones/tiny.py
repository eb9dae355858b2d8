"""Tiny backbones built offline from the shipped assets: random miniatures for tests, and one pre-trained model.

- ``tiny-biomedclip``: open_clip ``CustomTextCLIP`` exactly like BiomedCLIP (HF BERT text tower with an MLP
  projection and CLS pooling, context 256; timm ``vit_base_patch16_224`` made narrow; BiomedCLIP's mean/std),
  with a small WordPiece vocabulary that spells any lowercase English word without [UNK].
- ``tiny-clip``: open_clip OpenAI-style ``CLIP`` (QuickGELU, context 77, the bundled BPE tokenizer).

Each is an open_clip ``local-dir`` folder under ``assets/`` without weights; the factory builds it with a fixed
seed so every build gives identical weights.

The twins of the released formats (``tiny-pubmedclip``, ``tiny-pmc-clip``) are in ``released.py``.

- ``synthlesion-clip`` (``PRETRAINED_BACKBONES``): a tiny OpenAI-style CLIP pre-trained by the project on the
  SynthLesion world (``scripts/pretrain_tiny_clip.py``), shipped with its fp16 weights; its files are checked
  against the recorded SHA-256 on every build, so a damaged or edited copy is an error, not silent drift.
- ``synthlesion-clinical-clip``: the same architecture pre-trained for SynthLesion's clinical regime
  (``scripts/pretrain_tiny_clip.py --clinical``): attribute words strongly grounded, medical labels weakly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ShippedModel:
    """A pre-trained open_clip local-dir folder in the repository, with the SHA-256 of its files."""

    folder: Path
    sha256: dict[str, str]  # file name -> hex digest
    rebuild: str  # the command that re-creates the folder

    def verify(self, name: str) -> None:
        """Raise ``BackboneError`` naming the file and the rebuild command if a file is missing or differs."""
        for file, digest in self.sha256.items():
            path = self.folder / file
            if not path.is_file():
                raise BackboneError(f"shipped backbone '{name}' is missing {path}; restore it (git checkout -- "
                                    f"{path}) or rebuild the folder with: {self.rebuild}")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise BackboneError(f"shipped backbone '{name}': {path} is damaged or edited (SHA-256 differs from "
                                    f"the recorded one); restore it (git checkout -- {path}) or rebuild the folder "
                                    f"with: {self.rebuild}")


PRETRAINED_BACKBONES: dict[str, ShippedModel] = {
    "synthlesion-clip": ShippedModel(
        folder=ASSETS_DIR / "synthlesion-clip",
        sha256={
            "open_clip_config.json": "a77241b8c5b6a65f30dab3d33fa4fe0dc37624e747f73f843861d10462090bc1",
            "open_clip_model.safetensors": "7940b55075591139ba0271f1bb7ab00a895a970f7a8a1495aebc93029a2bba0f",
        },
        rebuild="python scripts/pretrain_tiny_clip.py --out clip_backbones/assets/synthlesion-clip",
    ),
    "synthlesion-clinical-clip": ShippedModel(  # SynthLesion's clinical regime: medical labels weakly grounded
        folder=ASSETS_DIR / "synthlesion-clinical-clip",
        sha256={
            "open_clip_config.json": "a77241b8c5b6a65f30dab3d33fa4fe0dc37624e747f73f843861d10462090bc1",
            "open_clip_model.safetensors": "be5110a03dcde41f992240645a37405fefa78af4982eff1c6178db6d54dfdd5a",
        },
        rebuild="python scripts/pretrain_tiny_clip.py --clinical --threads 1 "
                "--out clip_backbones/assets/synthlesion-clinical-clip",
    ),
}

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
