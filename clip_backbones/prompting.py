"""Deep prompts: run a tower's blocks one by one, overwriting the prompt positions before each block.

Shared by the text adapters (``hf_text.py``, ``openai_clip.py``) and the image towers (``vision.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def replace_tokens(x: torch.Tensor, start: int, prompt: torch.Tensor) -> torch.Tensor:
    """x [B, L, W] with positions ``start … start+n`` replaced by ``prompt`` [n, W] (out of place; start < 0
    counts from the end)."""
    start = start + x.shape[1] if start < 0 else start
    p = prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :start], p, x[:, start + prompt.shape[0]:]], dim=1)


def run_blocks(blocks: nn.Module, x: torch.Tensor, deep: Sequence[torch.Tensor], start: int, *,
               batch_first: bool = True, **kwargs: Any) -> torch.Tensor:
    """Run ``blocks`` in order on x [B, L, W]; deep[i-1] replaces positions ``start … start+n`` entering block i
    (1 ≤ i ≤ len(deep)); later blocks carry the prompt tokens along. ``kwargs`` go to every block; with
    ``batch_first=False`` each block sees [L, B, W]."""
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            x = replace_tokens(x, start, deep[i - 1])
        x = block(x, **kwargs) if batch_first else block(x.transpose(0, 1), **kwargs).transpose(0, 1)
    return x
