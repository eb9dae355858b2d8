"""Pre-train the tiny SynthLesion CLIP (``synthlesion-clip``) from nothing: render, train, evaluate, save.

The recipe of ../shared/docs/SYNTHLESION.md: a stock open_clip ``CLIP`` (``MODEL_CFG``) trained on a fixed pool of
rendered source-domain images of the 86 pre-training attribute combinations, each step a batch of pool images
under a random dihedral transform with a fresh random caption per image. Loss = multi-positive contrastive (an
image's soft target is spread evenly over every caption of the batch consistent with its attributes, and vice
versa) + ``AUX_WEIGHT`` × the mean cross-entropy of five linear attribute heads on 10 · the normalised image
embedding (the heads are discarded; the saved model is a plain CLIP). AdamW with weight decay on matrices only,
linear warm-up then cosine, learnable logit scale from 1/0.07.

The result is an open_clip ``local-dir`` folder: ``open_clip_config.json``, ``open_clip_model.safetensors``
(fp16 weights) and ``pretrain_report.json`` (settings, zero-shot accuracies measured on the saved fp16 weights,
file hashes). Deterministic for a seed and thread count on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from engine.utils import atomic_write_text
from synth import synthlesion as sl

MODEL_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": sl.IMAGE_SIZE, "patch_size": 8, "width": 96, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PREPROCESS_CFG: dict = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic",
                        "resize_mode": "shortest"}
WEIGHTS_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"
REPORT_FILE = "pretrain_report.json"
ZERO_SHOT_TEMPLATE = "a photo of a {}."
AUX_WEIGHT = 1.0
REGIMES = ("attribute", "clinical")
INIT_MODELS = ("synthlesion-clip",)  # shipped models pre-training may continue from


@dataclass(frozen=True)
class PretrainSettings:
    """The recipe; the defaults made the shipped model."""

    seed: int = 0
    steps: int = 600
    batch_size: int = 256
    pool_size: int = 40_000
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    eval_per_class: int = 200  # zero-shot report: rendered test images per class and domain
    regime: str = "attribute"  # "attribute" (synthlesion-clip) or "clinical" (synthlesion-clinical-clip)
    label_p: float = 0.25  # clinical: share of a class image's captions that name a label
    label_noise: float = 0.35  # clinical: share of those names that are a confusable class's label
    init: str = ""  # "" = random initialisation; a shipped model's name (PRETRAINED_BACKBONES) = continue from it

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {self.regime!r}")
        if self.init and self.init not in INIT_MODELS:
            raise ValueError(f"init must be empty or one of {', '.join(INIT_MODELS)}, got {self.init!r}")
        for name in ("label_p", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")

    @property
    def clinical(self) -> bool:
        return self.regime == "clinical"


#: the recipe of the shipped clinical model (synthlesion-clinical-clip): continued pre-training of the shipped
#: synthlesion-clip (attribute words already strongly grounded) on the clinical captions, which ground the medical
#: labels weakly; a short budget at a lower learning rate. Why: docs/synthlesion-clinical.md
CLINICAL_SETTINGS = PretrainSettings(steps=200, batch_size=128, pool_size=12_000, lr=5e-4, regime="clinical",
                                     init="synthlesion-clip")


class _AttributeHeads(nn.Module):
    """Five linear heads (one per attribute) on 10 · the normalised image embedding; discarded after training."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, len(v)) for v in sl.ATTRIBUTES.values())

    def loss(self, image_features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        z = 10.0 * F.normalize(image_features, dim=-1)
        return torch.stack([F.cross_entropy(h(z), codes[:, i]) for i, h in enumerate(self.heads)]).mean()


def build_model(seed: int) -> nn.Module:
    """The untrained tiny CLIP (open_clip ``CLIP`` from ``MODEL_CFG``), initialised under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**MODEL_CFG)
    return model


def _shipped_state(name: str) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a shipped pre-trained model (its files checked against their SHA-256 first)."""
    from safetensors.torch import load_file

    from clip_backbones.tiny import PRETRAINED_BACKBONES

    shipped = PRETRAINED_BACKBONES[name]
    shipped.verify(name)
    return {k: v.float() for k, v in load_file(str(shipped.folder / WEIGHTS_FILE)).items()}


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] → the model's input [N, 3, H, W] (grey replicated; PREPROCESS_CFG mean / std)."""
    x = images.float().div_(255.0)
    x = (x - PREPROCESS_CFG["mean"][0]) / PREPROCESS_CFG["std"][0]
    return x.unsqueeze(1).expand(-1, 3, -1, -1)


def _dihedral(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 dihedral transforms (rot90^k, then a flip for which ≥ 4) per image."""
    out = images.clone()
    for t in range(8):
        sel = which == t
        if sel.any():
            x = torch.rot90(images[sel], t % 4, dims=(-2, -1))
            out[sel] = torch.flip(x, dims=(-1,)) if t >= 4 else x
    return out


class _CachedTokenizer:
    def __init__(self) -> None:
        self.tok = open_clip.tokenizer.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, row in zip(missing, self.tok(missing)):
                self.cache[t] = row
        return torch.stack([self.cache[t] for t in texts])


def _lr_at(step: int, s: PretrainSettings) -> float:
    warmup = max(1, round(s.warmup_fraction * s.steps))
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, s.steps - warmup)
    return 0.5 * s.lr * (1.0 + math.cos(math.pi * progress))


def render_pool(s: PretrainSettings) -> tuple[torch.Tensor, np.ndarray]:
    """The fixed pre-training pool: ``pool_size`` source-domain images of the 86 allowed combinations (clinical
    regime: of all 96, since the novel labels must be named somewhere to be weakly grounded)."""
    rng = np.random.default_rng([s.seed, 1])
    combos = sl.all_combinations() if s.clinical else sl.pretraining_combinations()
    codes = combos[rng.integers(len(combos), size=s.pool_size)]
    return torch.from_numpy(sl.render(codes, rng, sl.SOURCE_DOMAIN)), codes


def train(s: PretrainSettings, progress: Callable[[int, float], None] | None = None) -> nn.Module:
    """Pre-train and return the model (attribute heads discarded). ``progress(step, loss)`` after every step."""
    pool, pool_codes = render_pool(s)
    model = build_model(s.seed)
    if s.init:
        model.load_state_dict(_shipped_state(s.init))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed + 1)
        heads = _AttributeHeads(MODEL_CFG["embed_dim"])
    model.train()
    params = [p for p in [*model.parameters(), *heads.parameters()] if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.98), eps=1e-6)
    tokenizer = _CachedTokenizer()
    rng = np.random.default_rng([s.seed, 2])
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        idx = rng.integers(len(pool), size=s.batch_size)
        codes = pool_codes[idx]
        which = torch.from_numpy(rng.integers(8, size=s.batch_size))
        if s.clinical:
            captions, mentioned, named = sl.sample_clinical_captions(codes, rng, s.label_p, s.label_noise)
            match = torch.from_numpy(sl.clinical_consistency(codes, codes, mentioned, named)).float()
        else:
            captions, mentioned = sl.sample_captions(codes, rng)
            match = torch.from_numpy(sl.consistency(codes, codes, mentioned)).float()
        images = _normalise(_dihedral(pool[torch.from_numpy(idx)], which))
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokenizer(captions))
        logits = model.logit_scale.exp() * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        contrastive = 0.5 * (torch.sum(-(match / match.sum(1, keepdim=True)) * F.log_softmax(logits, 1), 1).mean()
                             + torch.sum(-(match / match.sum(0, keepdim=True)) * F.log_softmax(logits, 0), 0).mean())
        loss = contrastive + AUX_WEIGHT * heads.loss(image_features, torch.from_numpy(codes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if progress is not None:
            progress(step, float(loss.detach()))
    model.eval()
    return model


@torch.no_grad()
def _encode_texts(model: nn.Module, texts: list[str]) -> torch.Tensor:
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    return F.normalize(model.encode_text(tok(texts)), dim=-1)


@torch.no_grad()
def zero_shot_report(model: nn.Module, s: PretrainSettings) -> dict[str, float]:
    """Zero-shot accuracy (%) with "a photo of a {class}.": source domain 10-way, base 5-way, novel 5-way; benchmark
    domain (``TARGET_DOMAIN``; clinical regime: ``CLINICAL_DOMAIN``) 10-way, base, novel. The clinical regime reads
    the medical labels and also reports the prompt-bank ensemble (``target_bank_10way``: mean of the normalised
    sentence features per class). Rendered evaluation images (``eval_per_class`` per class, own RNG streams)."""
    model.eval()
    names = sl.CLINICAL_CLASSNAMES if s.clinical else sl.SYNTHLESION_CLASSNAMES
    text = _encode_texts(model, [ZERO_SHOT_TEMPLATE.format(c) for c in names])
    heads = {"": text}
    if s.clinical:
        bank = sl.clinical_prompt_bank()
        heads["_bank"] = F.normalize(torch.stack([_encode_texts(model, bank[c]).mean(0) for c in names]), dim=-1)
    target = sl.CLINICAL_DOMAIN if s.clinical else sl.TARGET_DOMAIN
    report: dict[str, float] = {}
    for name, domain, stream in (("source", sl.SOURCE_DOMAIN, 3), ("target", target, 4)):
        rng = np.random.default_rng([s.seed, stream])
        n = s.eval_per_class
        labels = torch.arange(len(sl.SYNTHLESION_CLASSES)).repeat_interleave(n)
        codes = np.concatenate([sl.class_samples(c, n, rng) for c in range(len(sl.SYNTHLESION_CLASSES))])
        images = torch.from_numpy(sl.render(codes, rng, domain))
        feats = torch.cat([F.normalize(model.encode_image(_normalise(images[i:i + 500])), dim=-1)
                           for i in range(0, len(images), 500)])
        for suffix, weights in heads.items():
            logits = feats @ weights.T
            if suffix:
                report[f"{name}{suffix}_10way"] = 100.0 * float((logits.argmax(1) == labels).float().mean())
                continue
            base = labels < sl.N_BASE
            report[f"{name}_10way"] = 100.0 * float((logits.argmax(1) == labels).float().mean())
            report[f"{name}_base"] = 100.0 * float(
                (logits[base, :sl.N_BASE].argmax(1) == labels[base]).float().mean())
            report[f"{name}_novel"] = 100.0 * float(
                (logits[~base, sl.N_BASE:].argmax(1) + sl.N_BASE == labels[~base]).float().mean())
    return report


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(model: nn.Module, out: Path, s: PretrainSettings, *, extra: dict | None = None) -> dict:
    """Write the local-dir folder (fp16 weights) and the report; the report's accuracies are measured on the
    saved weights, read back. Returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    tmp.replace(out / WEIGHTS_FILE)
    saved = build_model(s.seed)
    saved.load_state_dict({k: v.float() for k, v in state.items()})
    report = {
        "zero_shot": zero_shot_report(saved, s),
        "settings": asdict(s),
        "recipe": {"model_cfg": MODEL_CFG, "aux_weight": AUX_WEIGHT, "optimizer": "AdamW betas (0.9, 0.98) eps 1e-6",
                   "schedule": "linear warm-up then cosine", "domain": sl.SOURCE_DOMAIN.as_dict(),
                   "benchmark_domain": (sl.CLINICAL_DOMAIN if s.clinical else sl.TARGET_DOMAIN).as_dict()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "open_clip": open_clip.__version__},
        "threads": torch.get_num_threads(),
        "sha256": {CONFIG_FILE: sha256_file(out / CONFIG_FILE), WEIGHTS_FILE: sha256_file(out / WEIGHTS_FILE)},
        **(extra or {}),
    }
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report
