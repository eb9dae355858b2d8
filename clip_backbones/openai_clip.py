"""Adapter for open_clip's OpenAI-style ``CLIP`` (causal text transformer + open_clip ViT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip import CLIP
from torch import nn

from .base import Backbone, Tokenizer
from .errors import BackboneError
from .prompting import run_blocks


class OpenAIClipBackbone(Backbone):
    """OpenAI-CLIP-style backbone: ``token_embedding``, ``positional_embedding``, causal ``transformer``,
    ``ln_final``, features taken at the end-of-text token (the largest token id) and ``text_projection``.

    Under the causal mask a token only sees the tokens before it, so cutting the context after the last
    end-of-text token of the batch changes nothing. With deep prompts the causal resblocks run one by one.
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

    def text_length(self, tokens: torch.Tensor) -> int:
        return int(tokens.argmax(dim=-1).max()) + 1  # end-of-text has the largest id: its position + 1

    def encode_text_from_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor, *,
                                    deep_prompts: Sequence[torch.Tensor] = (),
                                    length: int | None = None) -> torch.Tensor:
        self._check_text_args(embeddings, tokens, deep_prompts)
        x, attn_mask, eot = self._text_inputs(embeddings, tokens, length)
        m = self.model
        if deep_prompts:
            x = run_blocks(m.transformer.resblocks, x, deep_prompts, self.prompt_start,
                           batch_first=m.transformer.batch_first, attn_mask=attn_mask)
        else:
            x = m.transformer(x, attn_mask=attn_mask)
        return self._text_outputs(x, eot)

    def _text_inputs(self, embeddings: torch.Tensor, tokens: torch.Tensor,
                     length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transformer input [N, T, W] with positions added, causal mask [T, T], end-of-text index LongTensor[N]),
        trimmed to the longest real prompt of the batch, T ≤ L."""
        m = self.model
        eot = tokens.to(embeddings.device).argmax(dim=-1)
        if length is None:
            length = int(eot.max()) + 1  # the longest real prompt of the batch, end-of-text included
        cast_dtype = m.transformer.get_cast_dtype()
        x = embeddings[:, :length].to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        return x, m.attn_mask[:length, :length], eot

    def _text_outputs(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """ln_final, the end-of-text token, text_projection: transformer output [N, T, W] -> Tensor[N, embed_dim]."""
        m = self.model
        x = m.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(m.text_projection, nn.Linear):
            return m.text_projection(x)
        if m.text_projection is None:
            return x
        return x @ m.text_projection
