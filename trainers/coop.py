"""CoOp (Zhou et al., IJCV 2022): learnable context vectors, cross-entropy (SPEC §1.2)."""

from __future__ import annotations

from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer


@register_trainer_cfg("COOP")
def _coop_cfg(cfg: CN) -> None:
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors (CTX_INIT overrides it with its token count)
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words, e.g. "a photo of a"
    cfg.TRAINER.COOP.PREC = "fp32"  # fp32 / amp / fp16 / bf16 (mixed precision needs CUDA)
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end / middle / front


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """Context optimisation: only ``prompt_learner.ctx`` is learned; the loss is cross-entropy."""

    cfg_node = "COOP"
