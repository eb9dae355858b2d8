"""What ``train.py --list-trainers / --list-backbones / --list-datasets`` print, without importing torch.

A static copy of the registries' names (importing ``trainers``, ``clip_backbones`` or ``datasets`` loads torch,
open_clip and transformers: ~10 s), so the listings answer at once. ``tests/test_cli.py`` checks that these tables
equal the registries (``TRAINER_REGISTRY``, ``clip_backbones.available_backbones()``, ``datasets.CATALOGUE``):
registering a trainer, a backbone name or a catalogue row without adding it here fails that test.
"""

from __future__ import annotations

#: registered trainer → what it is
TRAINERS: dict[str, str] = {
    "BiomedCoOp": "BiomedCoOp: CoOp + LLM-prompt consistency (SCCM) and knowledge distillation (KDSP)",
    "CLIP_Adapter": "CLIP-Adapter: residual MLP adapter on frozen image features",
    "CoCoOp": "CoCoOp: image-conditional context (meta-net)",
    "CoOp": "CoOp: learnable context vectors",
    "KgCoOp": "KgCoOp: CoOp kept close to the hand-crafted prompt's text features",
    "LPPlusPlus": "LP++: linear probe blended with text weights",
    "LinearProbe": "linear probe (logistic regression) on frozen image features",
    "MaPLe": "MaPLe: multi-modal deep prompts (vision and language)",
    "OGKD": "OGKD: Omni-Geometry Knowledge Distillation (Tien & Shen 2026)",
    "ProGrad": "ProGrad: prompt-aligned gradients",
    "TipAdapter": "Tip-Adapter(-F): cache model of the few-shot features",
    "ZeroshotCLIP": "zero-shot CLIP (no training)",
}

#: MODEL.BACKBONE.NAME short names → model (any ``hf-hub:<org>/<repo>`` or ``local-dir:<folder>`` also works)
BACKBONES: dict[str, str] = {
    "BiomedCLIP": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "PubMedCLIP": "PubMedCLIP ViT-B/32 (hf sarahESL/PubMedCLIP, PubMedCLIP_ViT32.pth)",
    "PMC-CLIP": "PMC-CLIP RN50 + BiomedBERT (hf dataset axiong/pmc_oa, three files)",
    "ViT-B/32": "OpenAI CLIP ViT-B/32 (open_clip)",
    "ViT-B/16": "OpenAI CLIP ViT-B/16 (open_clip)",
    "ViT-L/14": "OpenAI CLIP ViT-L/14 (open_clip)",
    "ViT-L/14@336px": "OpenAI CLIP ViT-L/14@336px (open_clip)",
    "tiny-biomedclip": "random miniature of the BiomedCLIP architecture, offline (tests)",
    "tiny-clip": "random miniature of the OpenAI CLIP architecture, offline (tests)",
    "tiny-pubmedclip": "random miniature of PubMedCLIP, in its released file format, offline (tests)",
    "tiny-pmc-clip": "random miniature of PMC-CLIP, in its released file format, offline (tests)",
    "synthlesion-clip": "tiny CLIP pre-trained on SynthLesion, shipped (demo)",
    "synthlesion-clinical-clip": "tiny CLIP pre-trained on SynthLesion's clinical regime (labels weakly grounded)",
}
BACKBONE_SCHEMES = ("hf-hub:<org>/<repo>", "local-dir:<folder>", "pubmedclip:<file.pth>", "pmc-clip:<folder>")

#: catalogue rows: (DATASET.NAME, config / lower-case name, modality, number of classes)
DATASETS: tuple[tuple[str, str, str, int], ...] = (
    ("BTMRI", "btmri", "brain MRI", 4),
    ("BUSI", "busi", "breast ultrasound", 3),
    ("CHMNIST", "chmnist", "colorectal histology", 8),
    ("COVID_19", "covid", "chest X-ray", 4),
    ("CTKidney", "ctkidney", "kidney CT", 4),
    ("DermaMNIST", "dermamnist", "dermatoscopy", 7),
    ("KneeXray", "kneexray", "knee X-ray", 5),
    ("Kvasir", "kvasir", "endoscopy", 8),
    ("LungColon", "lungcolon", "histology (LC25000)", 5),
    ("OCTMNIST", "octmnist", "retinal OCT", 4),
    ("RETINA", "retina", "fundus photography", 4),
    ("SynthMed", "synthmed", "synthetic (generated offline)", 6),
    ("SynthLesion", "synthlesion", "synthetic lesions (rendered offline)", 10),
    ("SynthLesionClinical", "synthlesion_clinical", "synthetic lesions, clinical regime (rendered offline)", 10),
)


def listing(kind: str) -> str:
    """The text printed by ``--list-<kind>`` (``trainers``, ``backbones`` or ``datasets``)."""
    if kind == "trainers":
        width = max(map(len, TRAINERS))
        return "\n".join(f"{name:<{width}}  {what}" for name, what in sorted(TRAINERS.items()))
    if kind == "backbones":
        width = max(map(len, [*BACKBONES, *BACKBONE_SCHEMES]))
        lines = [f"{name:<{width}}  {what}" for name, what in BACKBONES.items()]
        how = {"pubmedclip:<file.pth>": "a local copy of PubMedCLIP_ViT32.pth",
               "pmc-clip:<folder>": "a local folder of PMC-CLIP's three files"}
        return "\n".join([*lines, *(f"{s:<{width}}  {how.get(s, 'any open_clip model given this way')}"
                                     for s in BACKBONE_SCHEMES)])
    if kind == "datasets":
        width, config_width = max(len(d[0]) for d in DATASETS), max(len(d[1]) for d in DATASETS)
        lines = [f"{name:<{width}}  {config:<{config_width}} {n:>2} classes  {modality}"
                 for name, config, modality, n in DATASETS]
        return "\n".join([*lines, "(any other NAME with ROOT/NAME/split_NAME.json: the generic class, class names "
                                   "from the split file; see scripts/make_split.py)"])
    raise ValueError(f"unknown listing {kind!r}: trainers, backbones or datasets")
