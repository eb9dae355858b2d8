"""Tip-Adapter / Tip-Adapter-F (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of CLIP for
Few-shot Classification"; SPEC §1.12).

A key-value cache of the few-shot training set: keys K = normalised mean over AUGMENT_EPOCHS augmentation passes of
the training features [N, E], values V = one-hot labels [N, C]. For a normalised test feature f̂:

    logits = s·f̂Tᵀ + α · exp(−β(1 − f̂Kᵀ)) V

with s the backbone's logit scale (the release hard-codes 85.2323, BiomedCLIP's stored value; we read it from the
backbone, so other backbones get their own) and T the zero-shot text weights ("a photo of a {}.").

* ``FINETUNE False`` (Tip-Adapter, training-free): K fixed; (β, α) by grid search on the validation features.
* ``FINETUNE True`` (Tip-Adapter-F, the shipped config): K is learned. For each initial α ∈ {0, …,
  INIT_ALPHA_SCALE−1} the keys restart from the cache and are trained ``OPTIM.MAX_EPOCH`` epochs at that α and
  β = INIT_BETA (AdamW with ``OPTIM.LR``, ``OPTIM.WEIGHT_DECAY``, ``OPTIM.ADAM_BETA1/2`` and eps EPS; cosine over
  epochs × iterations stepped per iteration; mini-batches of BATCH_SIZE); the initial α with the best validation
  accuracy (strict) wins. The winner's keys are then trained ``OPTIM.MAX_EPOCH`` more epochs (fresh AdamW +
  cosine), keeping the best validation epoch (strict; the winner itself counts). ``OPTIM.NAME`` must be ``adamw``
  and ``OPTIM.LR_SCHEDULER`` ``cosine`` (without warm-up): another value is an error, not ignored.
  Training epoch e uses augmentation pass AUGMENT_EPOCHS + e: a fresh view of every image per epoch as in the
  release, distinct from the cache's passes, shared by every initial α.
* ``GRID_SEARCH True``: the final (β, α) come from the SEARCH_STEP grid β_i = 0.1 + i·(SEARCH_SCALE[0]−0.1)/
  SEARCH_STEP[0] (α likewise) on the validation features, β outer, α inner, strict improvement — i.e. the first
  best pair in that order; evaluated one β at a time with all α at once. Otherwise (β, α) = (INIT_BETA, INIT_ALPHA)
  (Tip-Adapter-F: the selected initial α).

The registered ``tip_adapter`` head holds the fitted state as its parameters — keys [N, E], α and β — so the
checkpoint alone reproduces the run in ``--eval-only``; only the keys are ever given to an optimiser (α, β are
searched). V, T and s are non-persistent buffers rebuilt from the training labels and class names.

Deviation from the BiomedCoOp release: after the α search the release's final 20-epoch loop steps an optimiser
bound to the pre-search adapter, so the selected adapter is never trained further; here the selected adapter is
the one that is trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import ConfigError, register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from engine.utils import derive_seed
from trainers.features import BestState, FeatureTrainer, count_correct

logger = logging.getLogger(__name__)


@register_trainer_cfg("TIPADAPTER")
def _tip_adapter_cfg(cfg: CN) -> None:
    cfg.TRAINER.TIPADAPTER = CN()
    cfg.TRAINER.TIPADAPTER.FINETUNE = True  # True: Tip-Adapter-F (learned keys); False: training-free Tip-Adapter
    cfg.TRAINER.TIPADAPTER.INIT_BETA = 1.0  # β while the keys are trained, and without GRID_SEARCH
    cfg.TRAINER.TIPADAPTER.INIT_ALPHA = 1.0  # α of the training-free variant without GRID_SEARCH
    cfg.TRAINER.TIPADAPTER.GRID_SEARCH = True  # final (β, α) from the validation grid
    cfg.TRAINER.TIPADAPTER.SEARCH_SCALE = (50.0, 50.0)  # (β, α) grid upper ends
    cfg.TRAINER.TIPADAPTER.SEARCH_STEP = (200, 200)  # (β, α) grid sizes
    cfg.TRAINER.TIPADAPTER.INIT_ALPHA_SCALE = 10  # Tip-Adapter-F: initial α ∈ {0, …, INIT_ALPHA_SCALE − 1}
    # Tip-Adapter-F's epochs (per initial α, and of the final training), lr and weight decay: OPTIM.MAX_EPOCH,
    # OPTIM.LR, OPTIM.WEIGHT_DECAY (the shipped config: 20, 0.001, 0.01 with OPTIM.NAME adamw)
    cfg.TRAINER.TIPADAPTER.BATCH_SIZE = 256
    cfg.TRAINER.TIPADAPTER.EPS = 1e-4  # AdamW eps
    cfg.TRAINER.TIPADAPTER.AUGMENT_EPOCHS = 1  # augmentation passes averaged into the cache keys
    cfg.TRAINER.TIPADAPTER.PREC = "fp32"  # the head (fp32/amp/fp16/bf16); the tower: MODEL.BACKBONE.FROZEN_PREC


def tip_logits(clip_logits: torch.Tensor, affinity: torch.Tensor, values: torch.Tensor,
               alpha: float | torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """Tip-Adapter logits ``clip_logits + α · exp(−β(1 − affinity)) V``.

    clip_logits: [B, C] (s·f̂Tᵀ); affinity: [B, N] (f̂Kᵀ); values: [N, C] (one-hot cache labels)."""
    return clip_logits + alpha * (torch.exp(-beta * (1.0 - affinity)) @ values)


def search_grid(scale: float, steps: int) -> list[float]:
    """The release's grid {0.1 + i·(scale − 0.1)/steps : i = 0..steps−1}."""
    return [0.1 + i * (scale - 0.1) / steps for i in range(steps)]


@torch.no_grad()
def search_beta_alpha(clip_logits: torch.Tensor, affinity: torch.Tensor, values: torch.Tensor,
                      labels: torch.Tensor, betas: Sequence[float],
                      alphas: Sequence[float]) -> tuple[float, float, torch.Tensor]:
    """The (β, α) of the release's search: β outer, α inner, strict improvement = the first pair of highest
    accuracy in that order. Returns (β, α, correct counts [len(betas), len(alphas)])."""
    alpha_t = torch.tensor(list(alphas), dtype=clip_logits.dtype, device=clip_logits.device)[:, None, None]
    counts = torch.stack([
        count_correct(clip_logits + alpha_t * (torch.exp(-beta * (1.0 - affinity)) @ values), labels)
        for beta in betas
    ])
    best = int(counts.flatten().argmax())  # the first maximum
    return betas[best // len(alphas)], alphas[best % len(alphas)], counts


class TipAdapterHead(nn.Module):
    """logits = s·fTᵀ + α·exp(−β(1 − f·keysᵀ))·V. Parameters (the checkpoint): ``keys`` [N, E], ``alpha``,
    ``beta``; buffers ``values`` [N, C], ``text`` [C, E], ``logit_scale`` are rebuilt, not saved."""

    def __init__(self, text: torch.Tensor, logit_scale: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(values.shape[0], text.shape[1]))
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("values", values, persistent=False)
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("logit_scale", logit_scale.reshape(()).float(), persistent=False)

    def clip_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * feats @ self.text.t()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return tip_logits(self.clip_logits(feats), feats @ self.keys.t(), self.values, self.alpha, self.beta)


@TRAINER_REGISTRY.register()
class TipAdapter(FeatureTrainer):
    """Training-free Tip-Adapter (FINETUNE False) or Tip-Adapter-F (FINETUNE True, default)."""

    cfg_node = "TIPADAPTER"
    model_name = "tip_adapter"

    def num_epochs(self) -> int:
        if not self.node.FINETUNE:
            return 0
        self.require_optim(NAME="adamw", LR_SCHEDULER="cosine", why="Tip-Adapter-F trains its keys with AdamW "
                           "and a per-iteration cosine")
        if int(self.cfg.OPTIM.WARMUP_EPOCH) > 0:
            raise ConfigError(f"OPTIM.WARMUP_EPOCH {self.cfg.OPTIM.WARMUP_EPOCH}: Tip-Adapter-F has no warm-up; "
                              "set OPTIM.WARMUP_EPOCH -1")
        return int(self.cfg.OPTIM.MAX_EPOCH)

    def build_head(self) -> nn.Module:
        values = F.one_hot(self.train_labels, self.num_classes).float()
        return TipAdapterHead(self.text_weights(), self.backbone.logit_scale, values)

    def fit(self) -> None:
        node, head = self.node, self.head
        passes = int(node.AUGMENT_EPOCHS)
        if node.FINETUNE:  # the cache's passes and one fresh pass per training epoch, encoded in one go
            self.train_passes(range(passes + self.max_epoch))
        cache_keys = F.normalize(torch.stack(self.train_passes(range(passes))).mean(dim=0), dim=-1)
        xv, yv = self.val_features()
        with torch.no_grad():
            head.keys.copy_(cache_keys)
            head.alpha.fill_(float(node.INIT_ALPHA))
            head.beta.fill_(float(node.INIT_BETA))
        if node.FINETUNE:
            self._finetune(cache_keys, xv, yv)
        if node.GRID_SEARCH:
            with torch.no_grad():
                beta, alpha, counts = search_beta_alpha(
                    head.clip_logits(xv), xv @ head.keys.t(), head.values, yv,
                    search_grid(float(node.SEARCH_SCALE[0]), int(node.SEARCH_STEP[0])),
                    search_grid(float(node.SEARCH_SCALE[1]), int(node.SEARCH_STEP[1])),
                )
                head.alpha.fill_(alpha)
                head.beta.fill_(beta)
            logger.info("Tip-Adapter grid search: β = %.4f, α = %.4f (validation accuracy %.2f%%)", beta, alpha,
                        100.0 * float(counts.max()) / len(yv))
        logger.info("Tip-Adapter%s: testing with β = %.4f, α = %.4f", "-F" if node.FINETUNE else "",
                    float(head.beta.detach()), float(head.alpha.detach()))

    def _val_correct(self, xv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return count_correct(self.head(xv), yv)

    def _finetune(self, cache_keys: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor) -> None:
        """Tip-Adapter-F: train fresh keys for every initial α, keep the best, then train the winner further."""
        node, head = self.node, self.head
        beta = float(node.INIT_BETA)
        search = BestState(head, prefer_later=False)
        for alpha0 in range(int(node.INIT_ALPHA_SCALE)):
            with torch.no_grad():
                head.keys.copy_(cache_keys)
                head.alpha.fill_(float(alpha0))
            self._train_keys(float(alpha0), beta, tag=f"alpha{alpha0}")
            correct = self._val_correct(xv, yv)
            search.update(correct, alpha0)
            logger.info("Tip-Adapter-F: initial α %d → validation accuracy %.2f%%", alpha0,
                        100.0 * float(correct) / len(yv))
        search.restore()
        alpha = float(head.alpha.detach())
        logger.info("Tip-Adapter-F: training the keys of initial α %g further", alpha)
        final = BestState(head, prefer_later=False, initial=search.score)
        self._train_keys(alpha, beta, tag="final", after_epoch=lambda e: final.update(self._val_correct(xv, yv), e))
        final.restore()
        logger.info("Tip-Adapter-F: keys of epoch %d of the final training (0 = before it), validation accuracy "
                    "%.2f%%", int(final.epoch), 100.0 * float(final.score) / len(yv))

    def _train_keys(self, alpha: float, beta: float, *, tag: str,
                    after_epoch: Callable[[int], None] | None = None) -> None:
        """OPTIM.MAX_EPOCH epochs of AdamW on the keys at fixed (α, β); cosine over all iterations, stepped per
        iteration."""
        node, head = self.node, self.head
        labels, batch, passes = self.train_labels, int(node.BATCH_SIZE), int(node.AUGMENT_EPOCHS)
        iters = -(-len(labels) // batch)
        oc = self.cfg.OPTIM
        optim = torch.optim.AdamW([head.keys], lr=float(oc.LR), eps=float(node.EPS),
                                  weight_decay=float(oc.WEIGHT_DECAY),
                                  betas=(float(oc.ADAM_BETA1), float(oc.ADAM_BETA2)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, self.max_epoch * iters)
        loss = torch.zeros((), device=self.device)
        for epoch in range(self.max_epoch):
            feats = self.train_pass(passes + epoch)
            generator = torch.Generator()
            generator.manual_seed(derive_seed(self.cfg.SEED, "tip-adapter-f", tag, epoch))
            order = torch.randperm(len(labels), generator=generator).to(self.device)
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                f = feats[idx]
                logits = tip_logits(head.clip_logits(f), f @ head.keys.t(), head.values, alpha, beta)
                loss = F.cross_entropy(logits, labels[idx])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                sched.step()
            if after_epoch is not None:
                after_epoch(epoch + 1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Tip-Adapter-F: the loss became infinite or NaN ({tag})")
