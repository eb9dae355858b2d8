"""Optimizers and epoch-wise LR schedules with Dassl's semantics (SPEC §4.3).

The schedule is written in closed form: for the 0-based epoch index ``i`` and ``W = WARMUP_EPOCH``

* ``i < W``: warm-up — ``constant``: ``WARMUP_CONS_LR``; ``linear``: ``WARMUP_MIN_LR`` at ``i = 0`` then
  ``LR · i / W``;
* ``i ≥ W``: the main schedule at step ``t = i − W`` (``WARMUP_RECOUNT True``, Dassl's default) or ``t = i``;
  ``cosine``: ``LR · ½(1 + cos(π t / MAX_EPOCH))`` (CosineAnnealingLR, eta_min 0); ``single_step``:
  ``LR · GAMMA^(t // STEPSIZE)``; ``multi_step``: ``LR · GAMMA^(#milestones ≤ t)``; ``constant``: ``LR``.

With cosine and a 1-epoch constant warm-up this gives 1e-5 in epoch 1, the full LR in epoch 2 and
``LR · ½(1 + cos(π (E−2)/E))`` in the last epoch E, exactly as Dassl's recursive schedulers do.
The scheduler is stepped once per epoch by the trainer.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from yacs.config import CfgNode

SCHEDULERS = ("cosine", "single_step", "multi_step", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def _trainable(params: nn.Module | Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    if isinstance(params, nn.Module):
        params = params.parameters()
    out = [p for p in params if p.requires_grad]
    if not out:
        raise ValueError("build_optimizer: the module has no parameter with requires_grad=True")
    return out


def build_optimizer(params: nn.Module | Iterable[torch.nn.Parameter], optim_cfg: CfgNode) -> torch.optim.Optimizer:
    """One parameter group over the trainable parameters, as Dassl's ``build_optimizer`` (STAGED_LR off)."""
    name = optim_cfg.NAME.lower()
    ps = _trainable(params)
    if name == "sgd":
        return torch.optim.SGD(
            ps,
            lr=optim_cfg.LR,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=optim_cfg.WEIGHT_DECAY,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "adam":
        return torch.optim.Adam(
            ps, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY, betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
        )
    if name == "adamw":
        return torch.optim.AdamW(
            ps, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY, betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            ps,
            lr=optim_cfg.LR,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=optim_cfg.WEIGHT_DECAY,
            alpha=optim_cfg.RMSPROP_ALPHA,
        )
    raise ValueError(f"Unknown OPTIM.NAME {optim_cfg.NAME!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_schedule(optim_cfg: CfgNode) -> Callable[[int], float]:
    """Return ``f(epoch_index) -> learning rate`` (0-based epoch index) for ``optim_cfg``."""
    base = float(optim_cfg.LR)
    max_epoch = int(optim_cfg.MAX_EPOCH)
    sched = optim_cfg.LR_SCHEDULER.lower()
    warm = max(int(optim_cfg.WARMUP_EPOCH), 0)
    wtype = optim_cfg.WARMUP_TYPE.lower()
    if sched not in SCHEDULERS:
        raise ValueError(
            f"Unknown OPTIM.LR_SCHEDULER {optim_cfg.LR_SCHEDULER!r}; choose one of {', '.join(SCHEDULERS)}"
        )
    if warm > 0 and wtype not in ("constant", "linear"):
        raise ValueError(f"Unknown OPTIM.WARMUP_TYPE {optim_cfg.WARMUP_TYPE!r}; choose 'constant' or 'linear'")
    stepsize = optim_cfg.STEPSIZE
    steps = [int(s) for s in (stepsize if isinstance(stepsize, (list, tuple)) else [stepsize])]
    if sched in ("single_step", "multi_step") and (not steps or steps[0] <= 0):
        raise ValueError(f"OPTIM.LR_SCHEDULER {sched} needs a positive OPTIM.STEPSIZE, got {stepsize}")

    def main(t: int) -> float:
        if sched == "cosine":
            return base * 0.5 * (1.0 + math.cos(math.pi * t / max_epoch))
        if sched == "single_step":
            return base * optim_cfg.GAMMA ** (t // steps[0])
        if sched == "multi_step":
            return base * optim_cfg.GAMMA ** bisect.bisect_right(sorted(steps), t)
        return base

    def f(i: int) -> float:
        if i < warm:
            if wtype == "constant":
                return float(optim_cfg.WARMUP_CONS_LR)
            return float(optim_cfg.WARMUP_MIN_LR) if i == 0 else base * i / warm
        return main(i - warm if optim_cfg.WARMUP_RECOUNT else i)

    return f


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: CfgNode) -> torch.optim.lr_scheduler.LambdaLR:
    """An epoch-wise scheduler whose LR at epoch index i is ``lr_schedule(optim_cfg)(i)``."""
    f = lr_schedule(optim_cfg)
    base = float(optim_cfg.LR)
    if base <= 0:
        raise ValueError(f"OPTIM.LR must be positive, got {base}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: f(i) / base)
