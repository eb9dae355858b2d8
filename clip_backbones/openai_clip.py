"""Adapter for open_clip's OpenAI-style ``CLIP`` (causal text transformer + open_clip ViT)."""

from __future__ import annotations

import torch
from open_clip import CLIP
from torch import nn

from .base import Backbone, Tokenizer
from .errors import BackboneError


class OpenAIClipBackbone(Backbone):
    """OpenAI-CLIP-style backbone: ``token_embedding``, ``positional_embedding``, causal ``transformer``,
    ``ln_final``, features taken at the end-of-text token (the largest token id) and ``text_projection``.

    Under the causal mask a token only sees the tokens before it, so cutting the context after the last
    end-of-text token of the batch changes nothing.
    """

    family = "openai-clip"

    def __init__(self, name: str, model: nn.Module, tokenizer: Tokenizer) -> None:
        if not isinstance(model, CLIP):
            raise BackboneError(f"'{name}' is a {type(model).__name__}; the openai-clip adapter needs open_clip CLIP")
        if model.text_pool_type != "argmax":
            raise BackboneError(f"'{name}' pools text with {model.text_pool_type!r}; the openai-clip adapter "
                                "supports 'argmax' (end-of-text token) pooling")
        if model.attn_mask is None:
            raise BackboneError(f"'{name}' has no causal text mask; trimming the context would change its output")
        super().__init__(name, model, tokenizer)
        proj = model.text_projection
        if isinstance(proj, nn.Linear):
            self.embed_dim: int = int(proj.out_features)
        elif proj is None:
            self.embed_dim = self.text_width
        else:
            self.embed_dim = int(proj.shape[1])

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.token_embedding

    @property
    def text_modules(self) -> list[nn.Module]:
        m = self.model
        return [m.token_embedding, m.transformer, m.ln_final]

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.model.transformer.resblocks

    def num_tokens(self, text: str) -> int:
        tokens = self.tokenize([text])[0]
        return int(tokens.argmax()) - self.prompt_start  # tokens strictly between start and end-of-text

    def encode_text_from_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self._check_pair(embeddings, tokens)
        m = self.model
        eot = tokens.to(embeddings.device).argmax(dim=-1)
        length = int(eot.max()) + 1  # the longest real prompt of the batch, end-of-text included
        cast_dtype = m.transformer.get_cast_dtype()
        x = embeddings[:, :length].to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(m.text_projection, nn.Linear):
            return m.text_projection(x)
        if m.text_projection is None:
            return x
        return x @ m.text_projection
