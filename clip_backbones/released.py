"""PubMedCLIP and PMC-CLIP in their released file formats (BACKBONES.md §7), and their tiny offline twins.

- **PubMedCLIP** (Eslami et al.; ROCO fine-tune of OpenAI CLIP ViT-B/32): one torch checkpoint
  ``PubMedCLIP_ViT32.pth`` (Hugging Face model repository ``sarahESL/PubMedCLIP``) whose ``state_dict`` entry holds
  an OpenAI-CLIP state dict. Built as open_clip's ``CLIP`` with the ``ViT-B-32-quickgelu`` configuration (OpenAI's
  key names, QuickGELU, 224 px, context 77, OpenAI's BPE tokenizer and mean / std); logit scale = the checkpoint's.
  Served by the ``openai-clip`` adapter.
- **PMC-CLIP** (Lin et al. 2023): three files in the Hugging Face *dataset* repository ``axiong/pmc_oa`` —
  ``image_encoder(resnet50).pth`` (OpenAI ModifiedResNet-50 state dict: layers [3, 4, 6, 3], width 64, 8 pooling
  heads, output 768), ``text_encoder.pth`` (BiomedBERT ``BertModel`` state dict, pooler included) and
  ``text_projection_layer.pth`` (a [768, 768] tensor P). Text feature = BERT's pooler output @ P, tokenised with the
  BiomedBERT tokenizer padded / truncated to 77; logit scale = exp(4.4292). Built as open_clip's ``CustomTextCLIP``
  (ModifiedResNet image tower; ``HFTextEncoder`` with the ``cls_pooler`` — BERT's pooler output — and a bias-free
  ``linear`` projection whose weight is Pᵀ), so it is served by the ``hf-bert`` adapter like BiomedCLIP. The text
  tower's ``config.json`` and tokenizer (``vocab.txt``, optionally ``tokenizer_config.json``) come from the folder
  if it has them, else from ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract`` on the hub.

Both are read with ``torch.load(weights_only=True)`` (no code runs from the files), memory-mapped when the file is
in torch's zip format, and assigned strictly: a missing, unexpected or misshapen key is one error line naming it.

Downloads go through ``huggingface_hub.hf_hub_download``: cached in the Hugging Face cache, resumed when
interrupted, and ``HF_HUB_OFFLINE=1`` honoured (then the files must be in the cache, or given as a local copy:
``pubmedclip:<file.pth>`` / ``pmc-clip:<folder>``).

Tiny twins ``tiny-pubmedclip`` / ``tiny-pmc-clip``: the same architecture families at tiny widths (shipped
``architecture.json`` under ``assets/``), random weights drawn with a fixed seed, **written in the released file
formats** into ``<feature cache folder>/tiny-backbones/`` on first use and then loaded by the very code that loads
the downloaded files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.constants import is_offline_mode
from open_clip import CLIP, CustomTextCLIP
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import set_model_preprocess_cfg
from open_clip.tokenizer import HFTokenizer
from torch import nn

from .errors import BackboneError
from .loading import assign_state_dict, check_state_dict

logger = logging.getLogger(__name__)

PUBMEDCLIP_PREFIX = "pubmedclip:"
PMC_CLIP_PREFIX = "pmc-clip:"
PMC_CLIP_LOGIT_SCALE = 4.4292  # the release's constant: logits = exp(4.4292) · cos
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TINY_SEED = 0
TINY_FORMAT_VERSION = 1  # bump when the generated files change for the same assets


@dataclass(frozen=True)
class HubFile:
    """One released file on the Hugging Face hub."""

    repo: str
    filename: str
    repo_type: str = "model"

    def where(self) -> str:
        return f"Hugging Face {self.repo_type} repository {self.repo}"

    def redownload(self) -> str:
        """The command that downloads it again into the Hugging Face cache."""
        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        return f"hf download {self.repo} '{self.filename}'{kind} --force-download"


PUBMEDCLIP_FILE = HubFile("sarahESL/PubMedCLIP", "PubMedCLIP_ViT32.pth")
PMC_CLIP_FILES: dict[str, HubFile] = {  # role -> file, in the release's dataset repository
    "image": HubFile("axiong/pmc_oa", "image_encoder(resnet50).pth", "dataset"),
    "text": HubFile("axiong/pmc_oa", "text_encoder.pth", "dataset"),
    "projection": HubFile("axiong/pmc_oa", "text_projection_layer.pth", "dataset"),
}
BIOMEDBERT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
TEXT_TOWER_FILES = ("config.json", "vocab.txt")  # required (from the folder, or BiomedBERT's hub repository)
TEXT_TOWER_OPTIONAL = ("tokenizer_config.json",)
PUBMEDCLIP_ARCH = "ViT-B-32-quickgelu"  # open_clip's config of OpenAI's ViT-B/32 (OpenAI key names, QuickGELU)


@dataclass(frozen=True)
class PmcClipArch:
    """PMC-CLIP's architecture besides the text tower's BERT config: the ModifiedResNet image tower and the joint
    space. ``embed_dim`` is the width of the projection P's output (= the ResNet's attention-pool output)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 8
    image_size: int = 224
    embed_dim: int = 768
    context_length: int = 77

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PmcClipArch:
        return cls(**{**data, "layers": tuple(data["layers"])})


PMC_CLIP_ARCH = PmcClipArch()


@dataclass(frozen=True)
class TinyRelease:
    """A tiny twin: its asset folder (``architecture.json`` + text-tower files) and its released format."""

    folder: Path
    family: str  # "pubmedclip" or "pmc-clip"


TINY_RELEASED: dict[str, TinyRelease] = {
    "tiny-pubmedclip": TinyRelease(ASSETS_DIR / "tiny-pubmedclip", "pubmedclip"),
    "tiny-pmc-clip": TinyRelease(ASSETS_DIR / "tiny-pmc-clip", "pmc-clip"),
}


def _preprocess_cfg(image_size: int) -> dict[str, Any]:
    """OpenAI's mean / std, bicubic, shortest-side resize: what both releases normalise with."""
    return {"size": image_size, "mode": "RGB", "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


# --------------------------------------------------------------------------------------------- architectures
def pubmedclip_model(model_cfg: Mapping[str, Any] | None = None) -> CLIP:
    """OpenAI CLIP (open_clip ``CLIP``) with ``model_cfg`` (default: ViT-B/32 QuickGELU), on the meta device."""
    cfg = dict(model_cfg) if model_cfg is not None else open_clip.get_model_config(PUBMEDCLIP_ARCH)
    with torch.device("meta"):
        model = CLIP(**cfg)
    set_model_preprocess_cfg(model, _preprocess_cfg(int(cfg["vision_cfg"]["image_size"])))
    return model


def pmc_clip_model(arch: PmcClipArch, text_folder: Path, *, device: str = "meta") -> CustomTextCLIP:
    """PMC-CLIP's architecture as an open_clip ``CustomTextCLIP`` on ``device``: ModifiedResNet image tower, the BERT
    of ``text_folder/config.json`` with its pooler, a bias-free linear projection, logit scale 4.4292."""
    if arch.width * 32 % arch.heads:
        raise BackboneError(f"PMC-CLIP architecture: {arch.heads} attention-pool heads do not divide the "
                            f"{arch.width * 32} channels of width {arch.width}")
    vision_cfg = {"layers": list(arch.layers), "width": arch.width, "head_width": arch.width * 32 // arch.heads,
                  "image_size": arch.image_size}
    text_cfg = {"hf_model_name": str(text_folder), "hf_tokenizer_name": str(text_folder), "hf_model_pretrained": False,
                "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler", "context_length": arch.context_length}
    with torch.device(device):
        model = CustomTextCLIP(embed_dim=arch.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg,
                               init_logit_scale=PMC_CLIP_LOGIT_SCALE)
    set_model_preprocess_cfg(model, _preprocess_cfg(arch.image_size))
    return model


# ------------------------------------------------------------------------------------------------- reading
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


def read_torch_file(path: Path, redownload: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, memory-mapped when the file is in torch's zip format.
    A file that cannot be read is one error line naming it and ``redownload``, the command that restores it."""
    if not path.is_file():
        raise BackboneError(f"missing file {path}; get it with: {redownload}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # truncated zip, bad pickle, refused object: many types, re-raised with the cause
        raise BackboneError(f"cannot read {path}: the file is damaged or truncated, or not a torch checkpoint "
                            f"[{type(err).__name__}: {_first_line(err)}]; get it again with: {redownload}") from err


def _tensor_dict(obj: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise BackboneError(f"{path} holds a {type(obj).__name__}, not a state dict ({what})")
    return dict(obj)


# ----------------------------------------------------------------------------------------------- PubMedCLIP
def load_pubmedclip(file: Path, *, model_cfg: Mapping[str, Any] | None = None,
                    redownload: str | None = None) -> tuple[CLIP, Any, Path]:
    """PubMedCLIP from its checkpoint ``file`` (``{"state_dict": <OpenAI CLIP state dict>, …}``): (model, OpenAI BPE
    tokenizer, the file). ``model_cfg``: the architecture (default ViT-B/32 QuickGELU; the tiny twin's otherwise)."""
    redownload = redownload or PUBMEDCLIP_FILE.redownload()
    ckpt = read_torch_file(file, redownload)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:5])) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise BackboneError(f"{file} has no 'state_dict' entry (found: {keys or 'nothing'}): a PubMedCLIP checkpoint "
                            "is a dict whose 'state_dict' holds the OpenAI CLIP state dict")
    state = _tensor_dict(ckpt["state_dict"], file, "its 'state_dict' entry")
    model = pubmedclip_model(model_cfg)
    assign_state_dict(model, state, f"{file} ('state_dict')", "an OpenAI CLIP ViT state dict of this architecture "
                      "(PubMedCLIP)")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(model.context_length))
    return model, tokenizer, file


# ------------------------------------------------------------------------------------------------- PMC-CLIP
def pmc_clip_text_folder(folder: Path | None, name: str) -> Path:
    """The folder holding the text tower's config.json and tokenizer: ``folder`` when it has them, else the hub
    snapshot of BiomedBERT (downloaded or from the cache)."""
    if folder is not None and all((folder / f).is_file() for f in TEXT_TOWER_FILES):
        return folder
    hint = (f"To work offline, put {', '.join(TEXT_TOWER_FILES + TEXT_TOWER_OPTIONAL)} of {BIOMEDBERT_REPO} in "
            f"{folder}." if folder is not None else "")
    paths = [_hub_file(HubFile(BIOMEDBERT_REPO, f), name, hint) for f in TEXT_TOWER_FILES]
    for optional in TEXT_TOWER_OPTIONAL:
        try:
            hf_hub_download(BIOMEDBERT_REPO, optional)
        except Exception as err:  # absent from the repository or the cache: BERT's tokenizer defaults apply
            logger.info("%s: no %s (%s); BertTokenizer defaults apply", BIOMEDBERT_REPO, optional, type(err).__name__)
    return paths[0].parent  # one snapshot folder holds every file of the revision


def load_pmc_clip(folder: Path, *, arch: PmcClipArch = PMC_CLIP_ARCH, text_folder: Path | None = None,
                  redownload: Mapping[str, str] | None = None) -> tuple[CustomTextCLIP, HFTokenizer, None]:
    """PMC-CLIP from ``folder`` holding the release's three files: (model, BiomedBERT tokenizer with context 77,
    None — the weights come from three files, so no single weights file identifies them)."""
    redownload = redownload or {role: f.redownload() for role, f in PMC_CLIP_FILES.items()}
    paths = {role: folder / f.filename for role, f in PMC_CLIP_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise BackboneError(f"PMC-CLIP folder {folder} lacks {', '.join(missing)}: it must hold the release's three "
                            f"files {', '.join(f.filename for f in PMC_CLIP_FILES.values())} "
                            f"({PMC_CLIP_FILES['image'].where()})")
    text_folder = text_folder or pmc_clip_text_folder(folder, "PMC-CLIP")
    model = pmc_clip_model(arch, text_folder)

    image = _tensor_dict(read_torch_file(paths["image"], redownload["image"]), paths["image"], "the image encoder")
    text = _tensor_dict(read_torch_file(paths["text"], redownload["text"]), paths["text"], "the text encoder")
    proj = read_torch_file(paths["projection"], redownload["projection"])
    if "embeddings.position_ids" in text and "embeddings.position_ids" not in model.text.transformer.state_dict():
        # written by transformers < 4.31, where this buffer was persistent; its value is fixed (0, 1, 2, …)
        ids = text.pop("embeddings.position_ids")
        if not torch.equal(ids.reshape(-1), torch.arange(ids.numel())):
            raise BackboneError(f"{paths['text']}: 'embeddings.position_ids' is not 0, 1, 2, …: not a BERT state dict")
        logger.info("%s: dropped the buffer embeddings.position_ids (0..%d), not part of the model's state in "
                    "this transformers version", paths["text"], ids.numel() - 1)
    what_image = (f"an OpenAI ModifiedResNet state dict of PMC-CLIP's architecture (layers {list(arch.layers)}, "
                  f"width {arch.width}, output {arch.embed_dim})")
    check_state_dict(model.visual, image, str(paths["image"]), what_image)
    check_state_dict(model.text.transformer, text, str(paths["text"]), "a BertModel state dict (with pooler) of the "
                     f"text tower's config ({text_folder / 'config.json'})")
    want = (model.text.proj.in_features, model.text.proj.out_features)
    if not isinstance(proj, torch.Tensor) or tuple(proj.shape) != want:
        got = tuple(proj.shape) if isinstance(proj, torch.Tensor) else type(proj).__name__
        raise BackboneError(f"{paths['projection']} holds {got}, not the [{want[0]}, {want[1]}] text projection "
                            "matrix (text feature = pooler output @ P)")
    state = {**{f"visual.{k}": v for k, v in image.items()},
             **{f"text.transformer.{k}": v for k, v in text.items()},
             "text.proj.weight": proj.detach().t().contiguous(),  # x @ P == Linear(weight = Pᵀ)(x)
             "logit_scale": torch.tensor(PMC_CLIP_LOGIT_SCALE)}
    assign_state_dict(model, state, str(folder), "PMC-CLIP")
    tokenizer = HFTokenizer(str(text_folder), context_length=arch.context_length)
    return model, tokenizer, None


# ---------------------------------------------------------------------------------------------------- hub
def _hub_file(file: HubFile, name: str, local_hint: str = "") -> Path:
    """``hf_hub_download`` of one released file (cached, resumable, HF_HUB_OFFLINE honoured), or one error line."""
    try:
        return Path(hf_hub_download(file.repo, file.filename, repo_type=file.repo_type))
    except Exception as err:  # hub / cache / network errors come in many types; re-raised with the cause
        reason = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if is_offline_mode()
                  else "the Hugging Face Hub could not be reached or the file is not there")
        raise BackboneError(f"cannot get {name}'s file {file.filename} ({file.where()}): {reason} "
                            f"[{type(err).__name__}: {_first_line(err)}]. {local_hint}".rstrip()) from err


def download_pubmedclip() -> Path:
    """The released PubMedCLIP checkpoint from the hub (or the cache)."""
    return _hub_file(PUBMEDCLIP_FILE, "PubMedCLIP",
                     f"To work offline, download {PUBMEDCLIP_FILE.filename} elsewhere "
                     f"(hf download {PUBMEDCLIP_FILE.repo} {PUBMEDCLIP_FILE.filename}) and use "
                     f"MODEL.BACKBONE.NAME {PUBMEDCLIP_PREFIX}<path to the file>.")


def download_pmc_clip() -> tuple[Path, Path]:
    """(the folder of the three released PMC-CLIP files, BiomedBERT's text-tower folder), from the hub or cache."""
    hint = (f"To work offline, put {', '.join(f.filename for f in PMC_CLIP_FILES.values())} "
            f"({PMC_CLIP_FILES['image'].where()}) and {', '.join(TEXT_TOWER_FILES + TEXT_TOWER_OPTIONAL)} "
            f"(Hugging Face model repository {BIOMEDBERT_REPO}) in one folder and use MODEL.BACKBONE.NAME "
            f"{PMC_CLIP_PREFIX}<folder>.")
    paths = [_hub_file(f, "PMC-CLIP", hint) for f in PMC_CLIP_FILES.values()]
    try:
        text_folder = pmc_clip_text_folder(None, "PMC-CLIP")
    except BackboneError as err:
        raise BackboneError(f"{err} {hint}") from err
    return paths[0].parent, text_folder


# ----------------------------------------------------------------------------------------------- tiny twins
def tiny_release_folder(name: str) -> Path:
    """The folder of the tiny twin ``name`` in its released format, generated on first use (atomically: a
    concurrent first use never sees half a folder) under ``<cache>/tiny-backbones/<name>-<digest>``. The digest
    covers the assets, the seed and the library versions, so another architecture never reuses old files."""
    from engine.cache import default_cache_dir
    from engine.utils import package_versions

    spec = TINY_RELEASED[name]
    h = hashlib.sha256(f"{name}|{TINY_SEED}|{TINY_FORMAT_VERSION}|{json.dumps(package_versions(), sort_keys=True)}"
                       .encode())
    for f in sorted(spec.folder.iterdir()):
        h.update(f.name.encode() + b"|" + f.read_bytes())
    root = default_cache_dir() / "tiny-backbones"
    folder = root / f"{name}-{h.hexdigest()[:16]}"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        _write_tiny(spec, tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: use its folder (same content)
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("tiny twin %s written in the released format to %s", name, folder)
    return folder


def tiny_architecture(name: str) -> dict[str, Any]:
    return json.loads((TINY_RELEASED[name].folder / "architecture.json").read_text(encoding="utf-8"))


def _write_tiny(spec: TinyRelease, out: Path) -> None:
    """Random weights under a private RNG seeded with TINY_SEED, saved as the release saves them."""
    arch = json.loads((spec.folder / "architecture.json").read_text(encoding="utf-8"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        if spec.family == "pubmedclip":
            model = CLIP(**arch["model_cfg"])
            torch.save({"epoch": 0, "state_dict": model.state_dict()}, out / PUBMEDCLIP_FILE.filename)
            return
        for f in (*TEXT_TOWER_FILES, *TEXT_TOWER_OPTIONAL):
            shutil.copy(spec.folder / f, out / f)
        model = pmc_clip_model(PmcClipArch.from_json(arch["pmc_clip"]), out, device="cpu")
        for m in model.visual.modules():  # open_clip zero-initialises bn3 (each block starts as its shortcut):
            if isinstance(m, nn.BatchNorm2d):  # random affine and statistics make every block count
                nn.init.normal_(m.weight, 1.0, 0.2)
                nn.init.normal_(m.bias, 0.0, 0.2)
                nn.init.normal_(m.running_mean, 0.0, 0.2)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
    torch.save(model.visual.state_dict(), out / PMC_CLIP_FILES["image"].filename)
    torch.save(model.text.transformer.state_dict(), out / PMC_CLIP_FILES["text"].filename)
    torch.save(model.text.proj.weight.detach().t().contiguous(), out / PMC_CLIP_FILES["projection"].filename)


def load_tiny_release(name: str) -> tuple[nn.Module, Any, Path | None]:
    """The tiny twin ``name``, loaded from its generated files by the release's loader."""
    folder = tiny_release_folder(name)
    arch = tiny_architecture(name)
    redo = f"delete the folder {folder} (it is generated again on the next build)"
    if TINY_RELEASED[name].family == "pubmedclip":
        return load_pubmedclip(folder / PUBMEDCLIP_FILE.filename, model_cfg=arch["model_cfg"], redownload=redo)
    return load_pmc_clip(folder, arch=PmcClipArch.from_json(arch["pmc_clip"]), text_folder=folder,
                         redownload={role: redo for role in PMC_CLIP_FILES})
