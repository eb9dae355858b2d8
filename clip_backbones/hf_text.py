"""Adapter for open_clip ``CustomTextCLIP`` models with a Hugging Face text tower (BiomedCLIP: BERT + timm ViT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from open_clip import CustomTextCLIP
from open_clip.hf_model import ClsPooler, HFTextEncoder
from open_clip.tokenizer import HFTokenizer
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .base import Backbone, Tokenizer
from .errors import BackboneError
from .prompting import run_blocks


class HFTextBackbone(Backbone):
    """BiomedCLIP-style backbone: ``model.text`` is open_clip's ``HFTextEncoder`` (transformer, pooler, proj).

    Text features from embeddings follow ``HFTextEncoder.forward`` with ``inputs_embeds`` instead of ids: the
    HF model adds position / token-type embeddings, LayerNorm and dropout (dropout follows ``model.text``'s
    train / eval mode), attends only to non-pad tokens, and the pooler (CLS of the last hidden state) and
    projection follow. With deep prompts the same steps run with the BERT encoder layer by layer.
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

    def text_length(self, tokens: torch.Tensor) -> int:
        return int((tokens != self.pad_token_id).sum(dim=1).max())  # right padding

    def encode_text_from_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor, *,
                                    deep_prompts: Sequence[torch.Tensor] = (),
                                    length: int | None = None) -> torch.Tensor:
        self._check_text_args(embeddings, tokens, deep_prompts)
        embeddings, mask = self._text_inputs(embeddings, tokens, length)
        if deep_prompts:
            out = self._layered_transformer(embeddings, mask, deep_prompts)
        else:
            bert = self.model.text.transformer
            out = bert(inputs_embeds=embeddings, attention_mask=self._attention_mask(bert.config, embeddings, mask))
        return self._text_outputs(out, mask)

    @staticmethod
    def _attention_mask(config: Any, embeddings: torch.Tensor, mask: torch.Tensor) -> Any:
        """The mask BertModel builds from the 2D padding mask, built here as a prepared 4D mask (which BertModel
        uses as given): asked for without the "no padding → no mask" shortcut, whose test (``mask.all()``) would
        wait for the device on every call."""
        from transformers.masking_utils import create_bidirectional_mask  # (lazy: only HF text towers need it)

        return create_bidirectional_mask(config=config, inputs_embeds=embeddings, attention_mask=mask,
                                         allow_is_bidirectional_skip=False)

    def _text_inputs(self, embeddings: torch.Tensor, tokens: torch.Tensor,
                     length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [N, T, W], attention mask LongTensor[N, T]) trimmed to the longest real prompt, T ≤ L."""
        mask = (tokens.to(embeddings.device) != self.pad_token_id).long()
        if length is None:
            length = int(mask.sum(dim=1).max())  # right padding: the longest real prompt of the batch
        return embeddings[:, :length], mask[:, :length]

    def _layered_transformer(self, embeddings: torch.Tensor, mask: torch.Tensor,
                             deep_prompts: Sequence[torch.Tensor]) -> BaseModelOutputWithPooling:
        """The HF model's forward with ``inputs_embeds``, its encoder layers run one by one with deep prompts."""
        text = self.model.text
        bert = text.transformer
        x = bert.embeddings(inputs_embeds=embeddings)
        # the same additive mask BertModel builds for its layers (attention implementation taken from the config)
        attn = self._attention_mask(bert.config, x, mask)
        x = run_blocks(bert.encoder.layer, x, deep_prompts, self.prompt_start, attention_mask=attn)
        # BertModel's pooler output only when open_clip's ClsPooler reads it
        use_pooler = isinstance(text.pooler, ClsPooler) and text.pooler.use_pooler_output and bert.pooler is not None
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=bert.pooler(x) if use_pooler else None)

    def _text_outputs(self, out: BaseModelOutputWithPooling, mask: torch.Tensor) -> torch.Tensor:
        """open_clip's pooler and projection of the HF model output: Tensor[N, embed_dim]."""
        text = self.model.text
        return text.proj(text.pooler(out, mask))
