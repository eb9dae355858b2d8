"""CoOp (Zhou et al., IJCV 2022): learnable context vectors, cross-entropy (SPEC §1.2)."""

from __future__ import annotations

from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer
from trainers.prompt_learner import prompt_learner_cfg


@register_trainer_cfg("COOP")
def _coop_cfg(cfg: CN) -> None:
    cfg.TRAINER.COOP = prompt_learner_cfg(n_ctx=16, ctx_init="")  # CTX_INIT e.g. "a photo of a"


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """Context optimisation: only ``prompt_learner.ctx`` is learned; the loss is cross-entropy."""

    cfg_node = "COOP"
