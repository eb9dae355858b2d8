"""Adapter for open_clip ``CustomTextCLIP`` models with a Hugging Face text tower (BiomedCLIP: BERT + timm ViT)."""

from __future__ import annotations

import torch
from open_clip import CustomTextCLIP
from open_clip.hf_model import HFTextEncoder
from open_clip.tokenizer import HFTokenizer
from torch import nn

from .base import Backbone, Tokenizer
from .errors import BackboneError


class HFTextBackbone(Backbone):
    """BiomedCLIP-style backbone: ``model.text`` is open_clip's ``HFTextEncoder`` (transformer, pooler, proj).

    Text features from embeddings follow ``HFTextEncoder.forward`` with ``inputs_embeds`` instead of ids: the
    HF model adds position / token-type embeddings, LayerNorm and dropout (dropout follows ``model.text``'s
    train / eval mode), attends only to non-pad tokens, and the pooler (CLS of the last hidden state) and
    projection follow.
    """

    family = "hf-bert"

    def __init__(self, name: str, model: nn.Module, tokenizer: Tokenizer) -> None:
        if not (isinstance(model, CustomTextCLIP) and isinstance(model.text, HFTextEncoder)):
            raise BackboneError(f"'{name}' is a {type(model).__name__} without a Hugging Face text tower; "
                                "the hf-bert adapter needs CustomTextCLIP with HFTextEncoder")
        if not isinstance(tokenizer, HFTokenizer):
            raise BackboneError(f"'{name}': the hf-bert adapter needs open_clip's HFTokenizer, "
                                f"got {type(tokenizer).__name__}")
        encoder = getattr(model.text.transformer, "encoder", None)
        if not isinstance(getattr(encoder, "layer", None), nn.ModuleList):
            raise BackboneError(f"'{name}': text model {type(model.text.transformer).__name__} has no "
                                "encoder.layer list; the hf-bert adapter needs a BERT-style encoder")
        super().__init__(name, model, tokenizer)
        text = model.text
        self.pad_token_id: int = int(text.config.pad_token_id)
        self.embed_dim: int = int(text.output_dim)
        self._special_ids = torch.tensor(sorted(tokenizer.tokenizer.all_special_ids), dtype=torch.long)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.text.transformer.get_input_embeddings()

    @property
    def text_modules(self) -> list[nn.Module]:
        return [self.model.text]

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.model.text.transformer.encoder.layer

    def num_tokens(self, text: str) -> int:
        tokens = self.tokenize([text])[0]
        return int((~torch.isin(tokens, self._special_ids)).sum())

    def encode_text_from_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self._check_pair(embeddings, tokens)
        mask = (tokens.to(embeddings.device) != self.pad_token_id).long()
        length = int(mask.sum(dim=1).max())  # right padding: the longest real prompt of the batch
        embeddings, mask = embeddings[:, :length], mask[:, :length]
        text = self.model.text
        out = text.transformer(inputs_embeds=embeddings, attention_mask=mask)
        return text.proj(text.pooler(out, mask))
