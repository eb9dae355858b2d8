"""LP++ (Huang et al., CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP"; SPEC §1.10).

logits = W f̂ + b + α ⊙ (f̂ Tᵀ): a linear probe plus a learned per-class weight α_c on the zero-shot text score
f̂·t_c (T: "a photo of a {}.", no logit scale on the text term). Full batch over the training features:

* init: W = per-class mean of the training features (the visual prototypes), b = nn.Linear's default init,
  α_c = ᾱ = mean_c(ALPHA_INIT_SCALE · mean_{n: y_n = c} f̂_n·t_c) (ALPHA_INIT_SCALE 250, the release's value);
* data-driven step sizes from the Lipschitz constants: lr_W = 4M / λ_max(FᵀF), lr_α = M / (4 max_c Σ_n (f̂_n·t_c)²)
  (M training features, F their matrix);
* ``OPTIM.MAX_EPOCH`` epochs (the shipped config: 300) of block-coordinate descent: SGD (momentum MOMENTUM,
  lr_W) on (W, b) every epoch and a plain gradient step α ← α − lr_α ∇_α every ALPHA_UPDATE_EVERY-th epoch, with
  ∇_α of that epoch's loss;
* selection: the validation accuracy after every epoch; the state of the best epoch (ties → the later epoch) is
  kept and tested.

The step sizes come from the data, so ``OPTIM.LR`` has no meaning here: a value other than the default is an error
(not silently ignored).

Deviation from the BiomedCoOp release: W is initialised with the class means (the paper's visual prototypes;
the release uses class sums, in fp16), and the α gradient is reset after every epoch (the release never zeroes
it, so each α step uses the sum of all gradients since the start).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.features import BestState, FeatureTrainer, count_correct

logger = logging.getLogger(__name__)


@register_trainer_cfg("LPPLUSPLUS")
def _lpplusplus_cfg(cfg: CN) -> None:
    cfg.TRAINER.LPPLUSPLUS = CN()
    # full-batch epochs: OPTIM.MAX_EPOCH (the shipped config: 300); step sizes from the data (no OPTIM.LR)
    cfg.TRAINER.LPPLUSPLUS.ALPHA_UPDATE_EVERY = 10  # α is updated every N-th epoch
    cfg.TRAINER.LPPLUSPLUS.ALPHA_INIT_SCALE = 250.0  # ᾱ = mean_c(scale · mean_{n in c} f·t_c)
    cfg.TRAINER.LPPLUSPLUS.MOMENTUM = 0.9  # SGD momentum on (W, b)
    cfg.TRAINER.LPPLUSPLUS.AUGMENT_EPOCHS = 1  # augmentation passes over the training images (stacked)
    cfg.TRAINER.LPPLUSPLUS.PREC = "fp32"  # the head (fp32/amp/fp16/bf16); the tower: MODEL.BACKBONE.FROZEN_PREC


class LPPlusPlusHead(nn.Module):
    """logits = linear(f) + α ⊙ (f Tᵀ); ``text`` [C, E] is a non-persistent buffer (rebuilt from class names)."""

    def __init__(self, text: torch.Tensor) -> None:
        super().__init__()
        num_classes, dim = text.shape
        self.linear = nn.Linear(dim, num_classes)
        self.alpha = nn.Parameter(torch.ones(num_classes))
        self.register_buffer("text", text, persistent=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats) + self.alpha * (feats @ self.text.t())


@torch.no_grad()
def lpp_init(feats: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, *,
             alpha_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LP++ initialisation: (W [C, E] = class means of ``feats`` [M, E], ᾱ = mean_c(scale · mean_{n∈c} f_n·t_c)).

    ``labels`` [M] in 0..C-1; ``text`` [C, E]. Every class needs at least one feature."""
    onehot = F.one_hot(labels, text.shape[0]).to(feats.dtype)  # [M, C]
    counts = onehot.sum(dim=0)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"LP++ needs training features of every class; classes {missing} have none")
    class_means = onehot.t() @ feats / counts[:, None]
    per_class_sim = (onehot * (feats @ text.t())).sum(dim=0) / counts  # mean_{n: y_n = c} f_n·t_c
    return class_means, alpha_scale * per_class_sim.mean()


@torch.no_grad()
def lpp_step_sizes(feats: torch.Tensor, text: torch.Tensor) -> tuple[float, float]:
    """LP++ step sizes (lr_W, lr_α) = (4M / λ_max(FᵀF), M / (4 max_c Σ_n (f_n·t_c)²)) for ``feats`` F [M, E]."""
    m = feats.shape[0]
    f64 = feats.double()
    lam_max = torch.linalg.eigvalsh(f64.t() @ f64)[-1]
    text_energy = ((f64 @ text.double().t()) ** 2).sum(dim=0).max()
    return float(4 * m / lam_max), float(m / (4 * text_energy))


def lpp_train(head: LPPlusPlusHead, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, *,
              epochs: int, lr_w: float, lr_alpha: float, momentum: float,
              alpha_every: int) -> tuple[BestState, torch.Tensor]:
    """LP++ block-coordinate descent, full batch on (``x`` [M, E], ``y`` [M]); returns (the best-validation state on
    (``xv``, ``yv``), ties → the later epoch; the last loss).

    Every epoch: one SGD step (lr_w, ``momentum``) on (W, b); at epochs ``alpha_every``, 2·``alpha_every``, …
    also α ← α − lr_α ∇_α, with ∇_α of that epoch's loss (reset every epoch)."""
    optim = torch.optim.SGD(head.linear.parameters(), lr=lr_w, momentum=momentum)
    best = BestState(head, prefer_later=True)
    loss = torch.zeros((), device=x.device)
    for epoch in range(1, epochs + 1):
        optim.zero_grad(set_to_none=True)
        head.alpha.grad = None  # ∇_α of this epoch only (the release accumulates it)
        loss = F.cross_entropy(head(x), y)
        loss.backward()
        optim.step()
        if alpha_every > 0 and epoch % alpha_every == 0:
            with torch.no_grad():
                head.alpha -= lr_alpha * head.alpha.grad
        with torch.no_grad():
            best.update(count_correct(head(xv), yv), epoch)
    return best, loss.detach()


@TRAINER_REGISTRY.register()
class LPPlusPlus(FeatureTrainer):
    """Linear probe + per-class text weights, data-driven step sizes, best-on-validation epoch."""

    cfg_node = "LPPLUSPLUS"
    model_name = "lp_plus_plus"

    def num_epochs(self) -> int:
        self.refuse_optim("LR", why="LP++ computes its step sizes from the data (lr_W, lr_α)")
        return int(self.cfg.OPTIM.MAX_EPOCH)

    def build_head(self) -> nn.Module:
        return LPPlusPlusHead(self.text_weights())

    def fit(self) -> None:
        node, head = self.node, self.head
        x, y = self.train_features(int(node.AUGMENT_EPOCHS))
        xv, yv = self.val_features()
        w0, alpha_bar = lpp_init(x, y, head.text, alpha_scale=float(node.ALPHA_INIT_SCALE))
        lr_w, lr_alpha = lpp_step_sizes(x, head.text)
        with torch.no_grad():
            head.linear.weight.copy_(w0)
            head.alpha.fill_(float(alpha_bar))
        logger.info("LP++: %d training features, ᾱ = %.4f, lr_W = %.4g, lr_α = %.4g",
                    x.shape[0], float(alpha_bar), lr_w, lr_alpha)

        best, loss = lpp_train(head, x, y, xv, yv, epochs=self.max_epoch, lr_w=lr_w, lr_alpha=lr_alpha,
                               momentum=float(node.MOMENTUM), alpha_every=int(node.ALPHA_UPDATE_EVERY))
        if not torch.isfinite(loss):
            raise FloatingPointError("LP++: the loss became infinite or NaN")
        best.restore()
        logger.info("LP++: best validation accuracy %.2f%% at epoch %d/%d (last loss %.4f)",
                    100.0 * float(best.score) / len(yv), int(best.epoch), self.max_epoch, float(loss))
