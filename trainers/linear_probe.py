"""Linear probe (Radford et al. 2021, CLIP §3.2; SPEC §1.9): L2-regularised logistic regression on frozen features.

sklearn ``LogisticRegression`` (lbfgs, L2) on the normalised training features (AUGMENT_EPOCHS augmentation
passes, stacked). The inverse regularisation C is chosen on the validation features as in CLIP's / CoOp's
linear-probe code: the best C of a coarse grid, then BISECTION_STEPS bisection steps in log10 space on
[C*/10, 10·C*] (each step fits both ends and keeps the better, ties to the left end; the range halves on the
winner's side); the step-8 winner is the model. Its coefficients are stored in a registered ``nn.Linear``
(checkpoint: ``linear_probe/model.pth.tar-0``, weight and bias), so evaluation and ``--eval-only`` are
logits = W f̂ + b. No gradient training.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.features import FeatureTrainer

logger = logging.getLogger(__name__)


@register_trainer_cfg("LINEARPROBE")
def _linear_probe_cfg(cfg: CN) -> None:
    cfg.TRAINER.LINEARPROBE = CN()
    cfg.TRAINER.LINEARPROBE.C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # coarse search over C (in this order)
    cfg.TRAINER.LINEARPROBE.BISECTION_STEPS = 8  # log10-space bisection steps around the best grid C
    cfg.TRAINER.LINEARPROBE.MAX_ITER = 1000  # lbfgs iterations per fit
    cfg.TRAINER.LINEARPROBE.AUGMENT_EPOCHS = 1  # augmentation passes over the training images (stacked)
    cfg.TRAINER.LINEARPROBE.PREC = "fp32"  # the head (fp32/amp/fp16/bf16); the tower: MODEL.BACKBONE.FROZEN_PREC


def search_c(score: Callable[[float], float], grid: Sequence[float], steps: int) -> float:
    """The C chosen by CLIP's linear-probe search; ``score(C)`` is the validation accuracy of a fit at C.

    1. ``C* = grid[argmax score]`` (the first of equal scores, in grid order);
    2. ``steps`` bisection steps on [log10 C* − 1, log10 C* + 1]: score both ends; the left end wins ties;
       the range becomes the half beside the winner ([left, mid] or [mid, right]);
    3. return the last step's winner (C* itself when ``steps`` is 0).
    """
    if not grid:
        raise ValueError("the C grid is empty")
    scores = [score(c) for c in grid]
    best = grid[int(np.argmax(scores))]
    lo, hi = math.log10(best) - 1.0, math.log10(best) + 1.0
    for _ in range(steps):
        c_lo, c_hi = 10.0**lo, 10.0**hi
        mid = 0.5 * (lo + hi)
        if score(c_lo) >= score(c_hi):
            best, hi = c_lo, mid
        else:
            best, lo = c_hi, mid
    return best


@TRAINER_REGISTRY.register()
class LinearProbe(FeatureTrainer):
    """Logistic regression on frozen image features, C chosen on the validation split."""

    cfg_node = "LINEARPROBE"
    model_name = "linear_probe"

    def build_head(self) -> nn.Module:
        return nn.Linear(self.backbone.embed_dim, self.num_classes)

    def fit(self) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        node = self.node
        x, y = (t.cpu().numpy() for t in self.train_features(int(node.AUGMENT_EPOCHS)))
        xv, yv = (t.cpu().numpy() for t in self.val_features())
        fits: dict[float, tuple[LogisticRegression, float]] = {}

        def fit_at(c: float) -> tuple[LogisticRegression, float]:
            if c not in fits:  # lbfgs is deterministic: a C scored once is not refitted
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # reported below, once per C
                    clf = LogisticRegression(C=c, l1_ratio=0.0, solver="lbfgs", max_iter=int(node.MAX_ITER))
                    clf.fit(x, y)
                if int(np.max(clf.n_iter_)) >= int(node.MAX_ITER):
                    logger.info("C=%.4g: lbfgs stopped at MAX_ITER %d before converging", c, node.MAX_ITER)
                fits[c] = (clf, 100.0 * float(np.mean(clf.predict(xv) == yv)))
            return fits[c]

        c = search_c(lambda c: fit_at(c)[1], [float(v) for v in node.C_GRID], int(node.BISECTION_STEPS))
        clf, acc = fit_at(c)
        logger.info("linear probe: C = %.6g (val accuracy %.2f%%, %d fits)", c, acc, len(fits))
        self._store(clf)

    @torch.no_grad()
    def _store(self, clf: object) -> None:
        """Copy sklearn's coefficients into the head (binary problems: class 0 gets the zero logit, so the
        softmax equals sklearn's sigmoid)."""
        coef = torch.as_tensor(clf.coef_, dtype=torch.float32)
        bias = torch.as_tensor(clf.intercept_, dtype=torch.float32)
        if list(clf.classes_) != list(range(self.num_classes)):
            raise ValueError(f"the training features cover classes {list(clf.classes_)}, expected all "
                             f"{self.num_classes} classes (a class without training images?)")
        if self.num_classes == 2:
            coef = torch.cat([torch.zeros_like(coef), coef])
            bias = torch.cat([torch.zeros_like(bias), bias])
        self.head.weight.copy_(coef)
        self.head.bias.copy_(bias)
