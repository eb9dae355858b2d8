"""``build_backbone``: one entry point from a backbone name to a frozen :class:`Backbone`."""

from __future__ import annotations

import functools
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub.constants import is_offline_mode
from open_clip import CLIP, CustomTextCLIP
from open_clip.pretrained import download_pretrained_from_hf
from torch import nn
from torch.utils.serialization import config as torch_serialization_config

from engine.registry import suggest

from .base import Backbone, Tokenizer
from .errors import BackboneError
from .hf_text import HFTextBackbone
from .loading import finish_assigned
from .openai_clip import OpenAIClipBackbone
from .released import (
    PMC_CLIP_PREFIX,
    PUBMEDCLIP_PREFIX,
    TINY_RELEASED,
    download_pmc_clip,
    download_pubmedclip,
    load_pmc_clip,
    load_pubmedclip,
    load_tiny_release,
)
from .tiny import PRETRAINED_BACKBONES, TINY_BACKBONES, TINY_SEED, register_tiny_timm_models

logger = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
BIOMEDCLIP_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
OPENAI_PRETRAINED_TAG = "openai"
OPENAI_CLIP_MODELS: dict[str, str] = {  # OpenAI CLIP name -> open_clip architecture (weights: OPENAI_PRETRAINED_TAG)
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
NAMED_BACKBONES: dict[str, str] = {"BiomedCLIP": BIOMEDCLIP_ID}  # short name -> open_clip id
RELEASED_BACKBONES: tuple[str, ...] = ("PubMedCLIP", "PMC-CLIP")  # released files read by ``released.py``
BACKBONE_NAMES: tuple[str, ...] = (*NAMED_BACKBONES, *RELEASED_BACKBONES, *OPENAI_CLIP_MODELS, *TINY_BACKBONES,
                                   *TINY_RELEASED, *PRETRAINED_BACKBONES)
BUILD_SEED = TINY_SEED  # all builds run under a private RNG with this seed: no effect on the caller's RNG

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip loads from a local-dir folder
PREFERRED_CHECKPOINTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                         "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                         "pytorch_model.bin", "pytorch_model.pth", "model.pth")  # open_clip's order
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                      "tokenizer.model")
LOCAL_DIR_CONTENTS = (
    "a local-dir folder must contain open_clip_config.json, the weights (open_clip_pytorch_model.bin or "
    "open_clip_pytorch_model.safetensors) and, for a Hugging Face text tower such as BiomedCLIP's, the "
    "tokenizer files (vocab.txt or tokenizer.json, tokenizer_config.json) and the text model's config.json"
)
HF_TEXT_FILES = {  # file -> what it is, for folders whose model has a Hugging Face text tower
    "config.json": "the text model's configuration",
    "tokenizer_config.json": "the tokenizer settings",
}


def available_backbones() -> list[str]:
    """Names :func:`build_backbone` accepts, besides any ``hf-hub:<org>/<repo>`` or ``local-dir:<folder>`` id and the
    local copies ``pubmedclip:<file.pth>`` / ``pmc-clip:<folder>``."""
    return list(BACKBONE_NAMES)


def build_backbone(name: str | Any, *, device: torch.device | str | None = None) -> Backbone:
    """Build a frozen backbone (``requires_grad`` False everywhere, eval mode) on ``device``.

    ``name`` is a backbone name, or a config (anything with ``MODEL.BACKBONE.NAME``, e.g. the yacs config of a
    run): then the name is read from it and, unless ``device`` is given, the device is CUDA when ``USE_CUDA`` is
    set and CUDA is available, else the CPU. With a plain name the default device is the CPU.

    ``name`` is resolved in this order:
      - ``"BiomedCLIP"`` -> ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``;
      - an OpenAI CLIP name (``"ViT-B/16"``, ``"ViT-B/32"``, ``"ViT-L/14"``, ``"ViT-L/14@336px"``) -> the open_clip
        architecture with OpenAI weights;
      - ``"PubMedCLIP"`` / ``"PMC-CLIP"`` -> the released files from the Hugging Face hub (or its cache), read in their
        own formats (``released.py``); ``"pubmedclip:<file.pth>"`` / ``"pmc-clip:<folder>"`` -> local copies;
      - ``"tiny-biomedclip"`` / ``"tiny-clip"`` -> random miniatures built offline, identical on every build;
      - ``"tiny-pubmedclip"`` / ``"tiny-pmc-clip"`` -> random miniatures written once in the released file formats
        and loaded by the released formats' loader;
      - ``"synthlesion-clip"`` / ``"synthlesion-clinical-clip"`` -> the tiny CLIPs pre-trained on SynthLesion and on
        its clinical regime, shipped in the repository (their files are checked against their recorded SHA-256);
      - ``"hf-hub:<org>/<repo>"`` -> open_clip's hub loader (needs the hub or the local HF cache);
      - ``"local-dir:<folder>"`` -> everything from one folder, offline (see ``LOCAL_DIR_CONTENTS``).

    Weights are initialised under a private, fixed-seed RNG, so building never changes the caller's RNG state.

    Raises:
        BackboneError: unknown name, missing local files, hub unreachable, or an unsupported model family.
    """
    if not isinstance(name, str):
        cfg = name
        name = cfg.MODEL.BACKBONE.NAME
        if device is None:
            device = "cuda" if getattr(cfg, "USE_CUDA", False) and torch.cuda.is_available() else "cpu"
    device = device if device is not None else "cpu"
    start = time.perf_counter()
    if name in NAMED_BACKBONES:
        model, tokenizer, weights = _load_hub(NAMED_BACKBONES[name], name)
    elif name in OPENAI_CLIP_MODELS:
        model, tokenizer, weights = _load_openai(name)
    elif name == "PubMedCLIP":
        model, tokenizer, weights = load_pubmedclip(download_pubmedclip())
    elif name == "PMC-CLIP":
        folder, text_folder = download_pmc_clip()
        model, tokenizer, weights = load_pmc_clip(folder, text_folder=text_folder)
    elif name in TINY_RELEASED:
        model, tokenizer, weights = load_tiny_release(name)
    elif name.startswith(PUBMEDCLIP_PREFIX):
        model, tokenizer, weights = load_pubmedclip(Path(name[len(PUBMEDCLIP_PREFIX):]).expanduser().resolve())
    elif name.startswith(PMC_CLIP_PREFIX):
        folder = Path(name[len(PMC_CLIP_PREFIX):]).expanduser().resolve()
        if not folder.is_dir():
            raise BackboneError(f"PMC-CLIP folder not found: {folder}; it must hold the release's three files "
                                "(see clip_backbones.released.PMC_CLIP_FILES)")
        model, tokenizer, weights = load_pmc_clip(folder)
    elif name in TINY_BACKBONES:
        model, tokenizer, weights = _load_local_dir(TINY_BACKBONES[name], weights_optional=True)
    elif name in PRETRAINED_BACKBONES:
        PRETRAINED_BACKBONES[name].verify(name)
        model, tokenizer, weights = _load_local_dir(PRETRAINED_BACKBONES[name].folder, weights_optional=False)
    elif name.startswith(HF_HUB_PREFIX):
        model, tokenizer, weights = _load_hub(name, name)
    elif name.startswith(LOCAL_DIR_PREFIX):
        model, tokenizer, weights = _load_local_dir(Path(name[len(LOCAL_DIR_PREFIX):]), weights_optional=False)
    else:
        raise BackboneError(_unknown_name_message(name))

    backbone = _adapter_for(name, model)(name, model, tokenizer).to(device)
    backbone.weights_file = Path(weights).resolve() if weights is not None else None
    logger.info(
        "backbone %s (%s, %s) built in %.2f s on %s: text width %d, vision width %d, embed dim %d, context %d, "
        "image %d, %.2fM parameters", name, backbone.family, type(model).__name__, time.perf_counter() - start,
        device, backbone.text_width, backbone.vision_width, backbone.embed_dim, backbone.context_length,
        backbone.image_size, sum(p.numel() for p in model.parameters()) / 1e6)
    return backbone


# ------------------------------------------------------------------------------------------------ loaders
class _QuietOpenClip(logging.Filter):
    """Drop open_clip's root-logger records below ERROR (its "no weights: initialised randomly" warnings are
    the expected behaviour of the tiny random models, which say so in our own log line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("open_clip" in record.pathname and record.levelno < logging.ERROR)


def _create(model_id: str, *, checkpoint: str | Path | None, quiet: bool = False, **kwargs: Any) -> nn.Module:
    """``open_clip.create_model`` on the CPU under a private RNG seeded with BUILD_SEED.

    With a ``checkpoint`` the model is built on the meta device (no memory, no random initialisation: that is
    seconds for a ViT-B/16 + BERT-base) and the checkpoint's tensors are assigned to it, read once — one copy of
    the weights in memory instead of a random model plus the loaded state dict. Without one (the tiny random
    models) the weights are open_clip's random initialisation under the fixed seed.
    """
    quiet_filter = _QuietOpenClip()
    root = logging.getLogger()
    if quiet or checkpoint is not None:  # with a checkpoint, open_clip's "initialized randomly" is before loading
        root.addFilter(quiet_filter)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            if checkpoint is None:
                return open_clip.create_model(model_id, device="cpu", **kwargs)
            with torch.device("meta"):
                # weights come from the checkpoint only (never the text tower's own pretrained download)
                model = open_clip.create_model(model_id, device="meta", load_weights=False,
                                               **{**kwargs, "pretrained_text": False})
    finally:
        root.removeFilter(quiet_filter)
    _load_checkpoint(model, Path(checkpoint))
    return model


def _load_checkpoint(model: nn.Module, checkpoint: Path) -> None:
    """Assign ``checkpoint``'s tensors to the meta-device ``model`` through open_clip's ``load_checkpoint`` (its
    key conversions, strict key check), keep the model's dtypes, and rebuild the non-persistent buffers, which no
    checkpoint holds."""
    dtypes = {k: v.dtype for k, v in model.state_dict(keep_vars=True).items()}
    # load_checkpoint calls model.load_state_dict(state, strict=...); a meta tensor can only be replaced, not filled
    model.load_state_dict = functools.partial(type(model).load_state_dict, model, assign=True)  # type: ignore[method-assign]
    _check_readable(checkpoint)
    try:
        # the tensors stay memory-mapped from the file (safetensors always; torch's zip format through torch's own
        # load.mmap setting): nothing is copied, a page is read when first used (rows of a token embedding that no
        # prompt uses never are), and processes on one machine share the pages of one file
        with torch_serialization_config.patch({"load.mmap": zipfile.is_zipfile(checkpoint)}):
            open_clip.load_checkpoint(model, str(checkpoint), strict=True)
    except RuntimeError as err:  # torch's strict-load report: missing / unexpected keys, shape mismatches
        raise BackboneError(f"{checkpoint} does not fit the model's architecture: {_first_line(err)}") from err
    finally:
        del model.load_state_dict
    finish_assigned(model, dtypes, str(checkpoint))


def _check_readable(checkpoint: Path) -> None:
    """Refuse, in one line naming it, a weights file that cannot be read (truncated, damaged), before open_clip's
    loader turns that into a traceback or a misleading "does not fit" message: a safetensors file's header must
    cover the file, a torch file must be a complete zip archive (or, for the legacy format, load). Cheap: headers
    and the zip's directory only."""
    why = None
    try:
        if checkpoint.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(checkpoint), framework="pt", device="cpu") as f:
                f.keys()
        elif zipfile.is_zipfile(checkpoint):  # its central directory is at the end: a cut file has none
            with zipfile.ZipFile(checkpoint) as z:
                z.namelist()  # (no CRC pass: the tensors stay memory-mapped, read when first used)
        else:
            torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every way a file can fail to be read, named in one line
        why = f"{type(err).__name__}: {_first_line(err)}"
    if why is not None:
        raise BackboneError(f"weights file {checkpoint} is unreadable ({why}): it is truncated or damaged; download "
                            "or copy it again")


def _checkpoint_in(folder: Path) -> Path | None:
    """The weights file open_clip loads from a local-dir folder (its preference order), or None."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    preferred = [folder / n for n in PREFERRED_CHECKPOINTS if (folder / n).is_file()]
    return (preferred or sorted(found, key=lambda p: p.suffix != ".safetensors") or [None])[0]


def _load_hub(model_id: str, name: str) -> tuple[nn.Module, Tokenizer, Path]:
    try:
        checkpoint = download_pretrained_from_hf(model_id[len(HF_HUB_PREFIX):])
        tokenizer = open_clip.get_tokenizer(model_id)
        model = _create(model_id, checkpoint=checkpoint)
    except BackboneError:
        raise
    except Exception as err:  # hub / cache / network errors come in many types; re-raised with the cause
        reason = ("HF_HUB_OFFLINE is set and the files are not in the local Hugging Face cache"
                  if is_offline_mode() else "the Hugging Face Hub could not be reached or the id is wrong")
        raise BackboneError(
            f"cannot load backbone '{name}' ({model_id}): {reason} [{type(err).__name__}: {_first_line(err)}]. "
            f"To work offline, put the model files in a folder and use 'local-dir:<folder>'; {LOCAL_DIR_CONTENTS}."
        ) from err
    return model, tokenizer, Path(checkpoint)


def _load_openai(name: str) -> tuple[nn.Module, Tokenizer, Path]:
    arch = OPENAI_CLIP_MODELS[name]
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, OPENAI_PRETRAINED_TAG)
    try:
        checkpoint = open_clip.download_pretrained(pretrained_cfg)
        if not checkpoint:
            raise FileNotFoundError("no weights file for this tag")
        model = _create(arch, checkpoint=checkpoint, pretrained=OPENAI_PRETRAINED_TAG,
                        force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)))
    except BackboneError:
        raise
    except Exception as err:  # download errors come in many types; re-raised with the cause
        offline = " (HF_HUB_OFFLINE is set)" if is_offline_mode() else ""
        raise BackboneError(
            f"cannot download the OpenAI weights of '{name}' (open_clip {arch}, pretrained={OPENAI_PRETRAINED_TAG!r})"
            f"{offline} [{type(err).__name__}: {_first_line(err)}]. To work offline, save the open_clip checkpoint "
            f"with an open_clip_config.json (model_cfg = open_clip.get_model_config({arch!r}), quick_gelu true) in a "
            "folder and use 'local-dir:<folder>'."
        ) from err
    return model, open_clip.get_tokenizer(arch), Path(checkpoint)


def _load_local_dir(folder: Path, *, weights_optional: bool) -> tuple[nn.Module, Tokenizer, Path | None]:
    """Build from an open_clip local-dir folder; ``weights_optional`` (tiny models only): random weights if none.
    Returns the model, its tokenizer and the weights file (None: random weights)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise BackboneError(f"local-dir folder not found: {folder}; {LOCAL_DIR_CONTENTS}")
    config_path = folder / "open_clip_config.json"
    if not config_path.is_file():
        raise BackboneError(f"missing file {config_path}; {LOCAL_DIR_CONTENTS}")
    try:
        model_cfg = json.loads(config_path.read_text(encoding="utf-8"))["model_cfg"]
    except (ValueError, KeyError) as err:
        raise BackboneError(f"{config_path} is not an open_clip config with a 'model_cfg' entry ({err})") from err
    checkpoint = _checkpoint_in(folder)
    if checkpoint is None and not weights_optional:
        raise BackboneError(f"missing weights file {folder / 'open_clip_pytorch_model.bin'} (or .safetensors) "
                            f"in {folder}; {LOCAL_DIR_CONTENTS}")

    kwargs: dict[str, Any] = {}
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        # HF text tower: its config and tokenizer come from this folder, never from the hub
        for required, what in HF_TEXT_FILES.items():
            if not (folder / required).is_file():
                raise BackboneError(f"missing file {folder / required} ({what}, e.g. from the Hugging Face repo "
                                    f"{text_cfg['hf_model_name']}); {LOCAL_DIR_CONTENTS}")
        if not any((folder / f).is_file() for f in HF_TOKENIZER_FILES):
            raise BackboneError(f"missing tokenizer vocabulary in {folder}: expected one of "
                                f"{', '.join(HF_TOKENIZER_FILES)}; {LOCAL_DIR_CONTENTS}")
        logger.info("text tower %s: config and tokenizer read from %s", text_cfg["hf_model_name"], folder)
        kwargs["text_cfg"] = {**text_cfg, "hf_model_name": str(folder), "hf_tokenizer_name": str(folder),
                              "hf_model_pretrained": False}

    register_tiny_timm_models()
    model_id = f"{LOCAL_DIR_PREFIX}{folder}"
    model = _create(model_id, checkpoint=checkpoint, quiet=checkpoint is None, pretrained_text=False, **kwargs)
    return model, open_clip.get_tokenizer(model_id), checkpoint


# ----------------------------------------------------------------------------------------------- helpers
def _adapter_for(name: str, model: nn.Module) -> type[Backbone]:
    if isinstance(model, CLIP):
        return OpenAIClipBackbone
    if isinstance(model, CustomTextCLIP) and isinstance(model.text, open_clip.hf_model.HFTextEncoder):
        return HFTextBackbone
    raise BackboneError(f"backbone '{name}' is an open_clip {type(model).__name__}, which no adapter supports; "
                        "supported: CLIP (OpenAI style) and CustomTextCLIP with a Hugging Face text tower")


def _unknown_name_message(name: str) -> str:
    return (f"unknown backbone {name!r}.{suggest(name, list(BACKBONE_NAMES))} Available: {', '.join(BACKBONE_NAMES)}, "
            f"or '{HF_HUB_PREFIX}<org>/<repo>' / '{LOCAL_DIR_PREFIX}<folder>' / '{PUBMEDCLIP_PREFIX}<file.pth>' / "
            f"'{PMC_CLIP_PREFIX}<folder>'.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"
