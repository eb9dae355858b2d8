"""Backbones: one frozen-model interface over open_clip models (BiomedCLIP, OpenAI CLIP, PubMedCLIP and PMC-CLIP in
their released file formats, any open_clip hub id or local folder, and tiny offline miniatures for tests).

    from clip_backbones import build_backbone
    backbone = build_backbone("BiomedCLIP", device="cuda")
"""

from .base import Backbone
from .errors import BackboneError
from .factory import BACKBONE_NAMES, BIOMEDCLIP_ID, available_backbones, build_backbone
from .hf_text import HFTextBackbone
from .openai_clip import OpenAIClipBackbone

__all__ = [
    "BACKBONE_NAMES",
    "BIOMEDCLIP_ID",
    "Backbone",
    "BackboneError",
    "HFTextBackbone",
    "OpenAIClipBackbone",
    "available_backbones",
    "build_backbone",
]
