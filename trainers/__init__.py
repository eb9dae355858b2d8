"""Trainers. Importing this package registers every trainer (and its TRAINER.<NAME> config node)."""

from __future__ import annotations

import time
from typing import Any

from yacs.config import CfgNode

from engine.trainer import TrainerBase
from engine.trainer import build_trainer as build_trainer_on
from engine.utils import select_device
from trainers import (  # noqa: F401
    biomedcoop,
    clip_adapter,
    cocoop,
    coop,
    kgcoop,
    linear_probe,
    lpplusplus,
    maple,
    ogkd,
    prograd,
    tip_adapter,
    zeroshot,
)


def build_cfg_backbone(cfg: CfgNode) -> tuple[Any, float]:
    """(the backbone ``MODEL.BACKBONE.NAME`` on the device ``USE_CUDA`` selects, seconds spent building it)."""
    from clip_backbones import build_backbone

    t0 = time.perf_counter()
    backbone = build_backbone(cfg.MODEL.BACKBONE.NAME, device=select_device(cfg.USE_CUDA, announce=False))
    return backbone, time.perf_counter() - t0


def build_trainer(cfg: CfgNode, backbone: Any | None = None, **kwargs: Any) -> TrainerBase:
    """The trainer ``cfg.TRAINER.NAME`` on ``backbone``, or on a backbone built now from ``MODEL.BACKBONE.NAME`` (on
    the device ``USE_CUDA`` selects). Keyword arguments go to :class:`engine.trainer.TrainerBase`."""
    if backbone is None:
        backbone, kwargs["backbone_s"] = build_cfg_backbone(cfg)
    return build_trainer_on(cfg, backbone, **kwargs)
