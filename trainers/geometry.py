"""OGKD's class geometry (SPEC §2.2): the class graph W and its novel back-projection W_eff.

Pure functions of tensors, equal to the released OGKD code on identical inputs. Both run once per training run
(when the trainer is built), never per step.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch.nn import functional as F

logger = logging.getLogger(__name__)

__all__ = ["class_graph", "fold_novel"]


def class_graph(prototypes: Tensor, alpha: float) -> Tensor:
    """The class graph W of OGKD: a row-softmax over prototype cosine similarities.

    ``S_ij = cos(p_i, p_j)`` and ``W_ij = exp(alpha * S_ij) / sum_k exp(alpha * S_ik)``. Rows sum to 1; W is not
    symmetric in general (the row normalisers differ).

    Args:
        prototypes: ``[C, D]`` class prototypes p_c (normalised here, so any positive scale gives the same W).
        alpha: temperature α of the graph (ALPHA: 4.0 in the few-shot configs, 1.0 in base-to-novel).

    Returns:
        ``[C, C]`` row-stochastic W.
    """
    if prototypes.dim() != 2:
        raise ValueError(f"prototypes must be [C, D], got shape {tuple(prototypes.shape)}")
    p = F.normalize(prototypes, dim=-1)  # [C, D]
    sim = p @ p.t()  # [C, C] cosine similarities S
    return torch.softmax(alpha * sim, dim=1)


def fold_novel(W_all: Tensor, base_idx: Tensor, lambda_novel: float) -> Tensor:
    """OGKD's novel back-projection: ``W_eff = W_bb + λ_n · W_bn · W_nb``.

    b = ``base_idx`` (in the given order) and n = every other index of ``0..C-1`` (ascending). Two-step paths
    base → novel → base are folded into the base-class graph, weighted by λ_n (0.1 in the released code). With
    no novel indices the result is ``W_bb``. The result is not renormalised.

    Args:
        W_all: ``[C, C]`` class graph over all classes (from :func:`class_graph`).
        base_idx: ``[Cb]`` integer indices of the base classes in ``W_all``; unique, each in ``0..C-1``.
        lambda_novel: weight λ_n of the two-step novel paths.

    Returns:
        ``[Cb, Cb]`` effective graph W_eff over the base classes.
    """
    if W_all.dim() != 2 or W_all.shape[0] != W_all.shape[1]:
        raise ValueError(f"W_all must be a square [C, C] matrix, got shape {tuple(W_all.shape)}")
    if not isinstance(base_idx, Tensor):
        raise TypeError(f"base_idx must be an integer tensor, got {type(base_idx).__name__}")
    if base_idx.dim() != 1 or base_idx.dtype == torch.bool or base_idx.is_floating_point() or base_idx.is_complex():
        raise ValueError(
            f"base_idx must be a 1-D integer tensor, got dtype {base_idx.dtype} and shape {tuple(base_idx.shape)}"
        )
    n_all = W_all.shape[0]
    if base_idx.numel() == 0:
        raise ValueError("base_idx is empty: the effective graph needs at least one base class")
    if bool(((base_idx < 0) | (base_idx >= n_all)).any()):
        raise ValueError(f"base_idx must lie in 0..{n_all - 1} (W_all is {n_all}x{n_all}), got {base_idx.tolist()}")
    if torch.unique(base_idx).numel() != base_idx.numel():
        raise ValueError(f"base_idx must not repeat an index, got {base_idx.tolist()}")

    w_bb = W_all[base_idx][:, base_idx]  # [Cb, Cb]
    if base_idx.numel() == n_all:
        logger.debug("fold_novel: no novel classes among %d, W_eff = W_bb", n_all)
        return w_bb
    is_novel = torch.ones(n_all, dtype=torch.bool, device=base_idx.device)
    is_novel[base_idx] = False
    novel_idx = is_novel.nonzero().squeeze(1)  # [Cn], ascending
    logger.debug("fold_novel: folding %d novel classes into %d base classes", novel_idx.numel(), base_idx.numel())
    w_bn = W_all[base_idx][:, novel_idx]  # [Cb, Cn]
    w_nb = W_all[novel_idx][:, base_idx]  # [Cn, Cb]
    return w_bb + lambda_novel * (w_bn @ w_nb)
