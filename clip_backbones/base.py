"""The backbone interface shared by every model family.

A :class:`Backbone` wraps one frozen open_clip model and its tokenizer behind a single interface: tokenize,
look up token embeddings, encode text from (possibly learned) embeddings with the padding trimmed, encode
images into a global and per-patch features — both optionally with deep prompts (MaPLe) — and expose the model's
widths and preprocessing. Family-specific text code lives in the adapters (``hf_text.py``, ``openai_clip.py``);
vision code in ``vision.py``; the block loop that inserts deep prompts in ``prompting.py``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import open_clip
import torch
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from torch import nn

from .errors import BackboneError
from .vision import VisionTower, vision_tower_for

Tokenizer = HFTokenizer | SimpleTokenizer


class Backbone(nn.Module, ABC):
    """One frozen open_clip model with one interface, whatever the model family.

    Attributes:
        name: the name it was built from (``"BiomedCLIP"``, ``"tiny-clip"``, ``"local-dir:/x"``, ...).
        family: text-tower family, ``"hf-bert"`` or ``"openai-clip"`` (class attribute of the adapter).
        model: the open_clip model (``CustomTextCLIP`` or ``CLIP``).
        tokenizer: the model's own open_clip tokenizer.
        text_width: width of the token embeddings (the prompt context dimension).
        vision_width: width of the vision transformer's tokens (a ResNet tower: channels of its last feature map).
        embed_dim: width of the joint image-text embedding space.
        context_length: length every tokenized text is padded / truncated to.
        image_size: side of the (square) input image, in pixels.
        num_patches: number of patch tokens per image returned by :meth:`encode_image` (for a ResNet tower, the
            cells of its last feature map: see ``vision.ResNetVisionTower``).
        mean, std: per-channel normalisation of input images.
        interpolation: resize interpolation of the model's preprocessing (e.g. ``"bicubic"``).
        resize_mode: open_clip resize mode of the model's preprocessing (e.g. ``"shortest"``).
        prompt_start: index of the first token after the start token.
        weights_file: the checkpoint file the weights were loaded from (memory-mapped from it when its format
            allows), or None for randomly initialised models; set by :func:`~clip_backbones.build_backbone`.
    """

    family: ClassVar[str]
    prompt_start: int = 1

    def __init__(self, name: str, model: nn.Module, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.weights_file: Path | None = None
        self._vision: VisionTower = vision_tower_for(model.visual)

        self.text_width: int = self.word_embeddings.embedding_dim
        self.vision_width: int = self._vision.width
        self.num_patches: int = self._vision.num_patches
        self.context_length: int = int(tokenizer.context_length)

        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp["size"]
        sides = (size, size) if isinstance(size, int) else tuple(size)
        if sides[0] != sides[1]:
            raise BackboneError(f"backbone '{name}' expects non-square {sides[0]}x{sides[1]} images; "
                                "only square input sizes are supported")
        self.image_size: int = int(sides[0])
        self.mean: tuple[float, float, float] = tuple(float(v) for v in pp["mean"])
        self.std: tuple[float, float, float] = tuple(float(v) for v in pp["std"])
        self.interpolation: str = str(pp["interpolation"])
        self.resize_mode: str = str(pp["resize_mode"])

        self.requires_grad_(False)
        self.eval()

    # ----------------------------------------------------------------------------------------- common
    def weights_fingerprint(self) -> str:
        """SHA-256 over the model's parameter and buffer names, shapes, dtypes and bytes; computed once (the
        backbone is frozen). It keys the feature cache: other weights never reuse cached features."""
        if self.__dict__.get("_weights_fingerprint") is None:
            from engine.cache import fingerprint_module

            self.__dict__["_weights_fingerprint"] = fingerprint_module(self.model)
        return self.__dict__["_weights_fingerprint"]

    def architecture_digest(self) -> str:
        """SHA-256 of the model's module tree as printed (layer types and sizes, activations such as QuickGELU vs
        GELU, dropout rates, norms' eps); memoised. With the weights fingerprint it identifies what the frozen towers
        compute: a config edit that keeps the weights but changes the computation changes it."""
        if self.__dict__.get("_architecture_digest") is None:
            self.__dict__["_architecture_digest"] = hashlib.sha256(repr(self.model).encode()).hexdigest()
        return self.__dict__["_architecture_digest"]

    @property
    def has_weights_fingerprint(self) -> bool:
        """Whether :meth:`weights_fingerprint` is known (computed, or adopted from a memo) without hashing."""
        return self.__dict__.get("_weights_fingerprint") is not None

    def adopt_weights_fingerprint(self, fingerprint: str) -> None:
        """Take ``fingerprint`` as :meth:`weights_fingerprint` without hashing: a memo of the value computed
        earlier for the same, unchanged :attr:`weights_file` (``engine.cache.FeatureCache.weights_fingerprint``)."""
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"not a SHA-256 hex digest: {fingerprint!r}")
        self.__dict__["_weights_fingerprint"] = fingerprint

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) of the model, a 0-d tensor without gradient."""
        return self.model.logit_scale.detach().exp().reshape(())

    @property
    def vision_blocks(self) -> nn.ModuleList | nn.Sequential:
        """The vision transformer's blocks, in order (the tower's own container: index, iterate, len).

        Raises:
            BackboneError: the image tower is convolutional (PMC-CLIP's ResNet): no token blocks, so no deep vision
                prompts (MaPLe).
        """
        return self._vision.blocks

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize with the model's own tokenizer.

        Args:
            texts: N strings (used as given: "_" is not replaced here).
        Returns:
            LongTensor[N, context_length] on the CPU, padded to the full context length.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize() takes a sequence of strings; wrap a single text in a list")
        return self.tokenizer(list(texts)).long()

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw word embeddings only (no positions added).

        Args:
            tokens: LongTensor[N, L].
        Returns:
            Tensor[N, L, text_width] on the model's device.
        """
        return self.word_embeddings(tokens.to(self._embedding_device()))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own text encoding of full-length tokens (the reference; not normalised).

        Args:
            tokens: LongTensor[N, L] from :meth:`tokenize`.
        Returns:
            Tensor[N, embed_dim].
        """
        return self.model.encode_text(tokens.to(self._embedding_device()))

    def encode_image(self, images: torch.Tensor, *,
                     prompts: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected global and patch features (neither normalised), optionally with deep vision prompts.

        Args:
            images: Tensor[B, 3, image_size, image_size], normalised with ``mean``/``std``, on the model's device.
            prompts: [V_0, …, V_{J-1}], each Tensor[n, vision_width], J ≤ ``len(vision_blocks)`` (MaPLe). V_0 is
                appended after the image tokens (no positional embedding) before the pre-transformer norm; V_i
                overwrites the last n tokens entering vision block i; deeper blocks carry them along. Prompt tokens
                are dropped before pooling. Empty: the model's own forward pass.
        Returns:
            (Tensor[B, embed_dim], equal to ``model.encode_image(images)`` without prompts,
             Tensor[B, num_patches, embed_dim]: the same projection applied to every real patch token).
        """
        if prompts and len(prompts) > len(self.vision_blocks):  # (a convolutional tower refuses prompts here)
            raise ValueError(f"{len(prompts)} vision prompts for {len(self.vision_blocks)} vision blocks; "
                             "at most one per block")
        return self._vision.encode(images, prompts)

    def set_text_train(self, mode: bool) -> None:
        """Put only the text tower in train (dropout active) or eval mode; the image tower is untouched.

        OGKD / BiomedCoOp train with BERT dropout on, as released (the whole model was registered there)."""
        for module in self.text_modules:
            module.train(mode)

    # --------------------------------------------------------------------------- family-specific
    @property
    @abstractmethod
    def text_modules(self) -> list[nn.Module]:
        """The modules of the text tower (for train / eval switching)."""

    @property
    @abstractmethod
    def text_blocks(self) -> nn.ModuleList:
        """The text transformer's layers, in order."""

    @abstractmethod
    def num_tokens(self, text: str) -> int:
        """Number of real tokens of ``text`` as tokenized, without the special start / end tokens."""

    @property
    @abstractmethod
    def word_embeddings(self) -> nn.Embedding:
        """The text tower's token-embedding table."""

    @abstractmethod
    def text_length(self, tokens: torch.Tensor) -> int:
        """The length the padded ``tokens`` [N, L] are trimmed to: the longest real prompt (one host sync)."""

    @abstractmethod
    def encode_text_from_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor, *,
                                    deep_prompts: Sequence[torch.Tensor] = (),
                                    length: int | None = None) -> torch.Tensor:
        """Encode text given its token embeddings (learned context vectors may be spliced in).

        The padded context is trimmed to the longest real prompt of the batch before the transformer runs;
        the result equals :meth:`encode_text` up to float rounding when ``embeddings`` are unmodified. ``length``
        = :meth:`text_length` of ``tokens`` when the caller knows it (a prompt learner's fixed prompts): then
        nothing waits for the device.

        Args:
            embeddings: Tensor[N, L, text_width]; gradients flow into it.
            tokens: LongTensor[N, L]; only marks where the real content is.
            deep_prompts: [P_1, …, P_k], each Tensor[n, text_width], k < ``len(text_blocks)`` (MaPLe): P_i replaces
                positions ``prompt_start … prompt_start + n`` of the input of text layer i (raw: no norm, no
                positions); deeper layers carry them along. Empty: the model's own transformer forward.
        Returns:
            Tensor[N, embed_dim], not normalised.
        """

    def _embedding_device(self) -> torch.device:
        return self.word_embeddings.weight.device

    def _check_text_args(self, embeddings: torch.Tensor, tokens: torch.Tensor,
                         deep_prompts: Sequence[torch.Tensor]) -> None:
        if embeddings.dim() != 3 or embeddings.shape[:2] != tokens.shape:
            raise ValueError(f"embeddings [N, L, W] and tokens [N, L] must match; got embeddings "
                             f"{tuple(embeddings.shape)} and tokens {tuple(tokens.shape)}")
        if len(deep_prompts) >= len(self.text_blocks):
            raise ValueError(f"{len(deep_prompts)} deep text prompts for {len(self.text_blocks)} text layers; "
                             "layer 0 takes the embeddings, so at most one per later layer")
