"""Assigning a checkpoint's tensors to a model built on the meta device: the strict key check with a one-line
error naming the key, the model's own dtypes, and the non-persistent buffers that no checkpoint holds.

Shared by the open_clip loaders (``factory.py``) and the released PubMedCLIP / PMC-CLIP formats (``released.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from open_clip import CLIP
from torch import nn

from .errors import BackboneError


def model_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """The dtype of every parameter and buffer of ``model`` (persistent or not), by qualified name."""
    return {k: v.dtype for k, v in model.state_dict(keep_vars=True).items()} | {
        n: b.dtype for n, b in model.named_buffers()}


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Raise ``BackboneError`` in one line unless ``state`` has exactly the keys and shapes of ``model``'s state dict.

    The line names the first missing, unexpected or misshapen key (and how many of each there are), ``source`` (the
    file) and ``what`` it should be (e.g. "an OpenAI CLIP ViT-B/32 state dict")."""
    expected = model.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    bad_type = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    misshapen = [k for k in state if k in expected and k not in bad_type
                 and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or extra or bad_type or misshapen):
        return
    counts = f"({len(missing)} missing, {len(extra)} unexpected, {len(misshapen) + len(bad_type)} misshapen)"
    if missing:
        first = f"missing key '{missing[0]}'"
    elif extra:
        first = f"unexpected key '{extra[0]}'"
    elif bad_type:
        first = f"key '{bad_type[0]}' is a {type(state[bad_type[0]]).__name__}, not a tensor"
    else:
        k = misshapen[0]
        first = f"key '{k}' has shape {tuple(state[k].shape)}, the model expects {tuple(expected[k].shape)}"
    raise BackboneError(f"{source} is not {what}: {first} {counts}")


def assign_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Strictly load ``state`` into the meta-device ``model`` by assignment (no copy: memory-mapped tensors stay
    mapped), then :func:`finish_assigned`."""
    check_state_dict(model, state, source, what)
    dtypes = model_dtypes(model)
    model.load_state_dict(dict(state), strict=True, assign=True)
    finish_assigned(model, dtypes, source)


def finish_assigned(model: nn.Module, dtypes: Mapping[str, torch.dtype], source: str) -> None:
    """After an assigning load: cast every tensor to the model's own dtype (``dtypes``, taken before loading;
    e.g. fp16 checkpoints), rebuild the non-persistent buffers, and check that no tensor is left on the meta
    device."""
    for name, module in model.named_modules():
        for key in list(module._parameters) + list(module._buffers):
            tensor = getattr(module, key)
            if tensor is None:
                continue
            if key in module._non_persistent_buffers_set:
                setattr(module, key, _rebuild_buffer(model, module, key, tensor))
                continue
            want = dtypes[f"{name}.{key}" if name else key]
            if tensor.dtype != want:  # e.g. fp16 checkpoints: the model's own dtype, as a copying load gives
                converted = tensor.detach().to(want)
                if isinstance(tensor, nn.Parameter):
                    converted = nn.Parameter(converted, requires_grad=tensor.requires_grad)
                setattr(module, key, converted)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise BackboneError(f"{source} left {len(left)} tensors of the model unset (e.g. {left[0]}): "
                            "not a checkpoint of this architecture")


def _rebuild_buffer(model: nn.Module, module: nn.Module, key: str, meta: torch.Tensor) -> torch.Tensor:
    """The value of a non-persistent buffer (not in checkpoints) of the supported families."""
    if key == "attn_mask" and isinstance(model, CLIP) and module is model:  # OpenAI CLIP's causal text mask
        return torch.full(meta.shape, float("-inf"), dtype=meta.dtype).triu_(1)  # as TextTransformer builds it
    if key == "position_ids" and meta.dtype == torch.long:  # Hugging Face text embeddings
        return torch.arange(meta.shape[-1]).expand(meta.shape)
    if key == "token_type_ids" and meta.dtype == torch.long:
        return torch.zeros(meta.shape, dtype=torch.long)
    raise BackboneError(f"cannot rebuild the non-persistent buffer {type(module).__name__}.{key} of this "
                        "architecture after loading its checkpoint; no adapter supports it")
