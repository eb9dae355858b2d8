"""CLIP-Adapter (Gao et al., IJCV 2024, "CLIP-Adapter: Better Vision-Language Models with Feature Adapters";
SPEC §1.11).

A bottleneck MLP A = Linear(E→E/REDUCTION, no bias) → ReLU → Linear(E/REDUCTION→E, no bias) → ReLU on the frozen,
normalised image feature, blended with it: f' = RATIO·A(f̂) + (1−RATIO)·f̂ (not renormalised, as released);
logits = s·f'·Tᵀ with the backbone's logit scale s and the zero-shot text weights T ("a photo of a {}.").
Cross-entropy, mini-batches of BATCH_SIZE training features, trained with the engine's ``OPTIM`` node like every
other trainer (``OPTIM.LR``, ``OPTIM.MAX_EPOCH``, optimizer, schedule, warm-up); the shipped configs give the
release's setting: plain SGD at lr 0.01 (no momentum, no weight decay), 20 epochs, cosine over the epochs with a
1-epoch constant warm-up at 1e-5, stepped once per epoch. Epoch e trains on augmentation pass e mod AUGMENT_EPOCHS
(20 = the epochs: a fresh augmented view of every image each epoch, as the release's online features). The
adapter of the best validation epoch (strict improvement) is tested.

Deviation from the BiomedCoOp release: the cosine schedule is stepped per epoch (the release steps it every
iteration, so its cosine is periodic), and the best-validation adapter is tested (the release saves it but tests
the last epoch).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.optim import build_lr_scheduler, build_optimizer
from engine.registry import TRAINER_REGISTRY
from engine.utils import derive_seed
from trainers.features import BestState, FeatureTrainer, count_correct

logger = logging.getLogger(__name__)


@register_trainer_cfg("CLIP_ADAPTER")
def _clip_adapter_cfg(cfg: CN) -> None:
    cfg.TRAINER.CLIP_ADAPTER = CN()
    cfg.TRAINER.CLIP_ADAPTER.RATIO = 0.5  # residual ratio α: f' = α·A(f) + (1−α)·f
    cfg.TRAINER.CLIP_ADAPTER.REDUCTION = 4  # bottleneck width = E / REDUCTION
    # epochs, learning rate, optimizer and schedule: the engine's OPTIM node (OPTIM.MAX_EPOCH, OPTIM.LR, …)
    cfg.TRAINER.CLIP_ADAPTER.BATCH_SIZE = 32  # training features per step
    cfg.TRAINER.CLIP_ADAPTER.AUGMENT_EPOCHS = 20  # augmentation passes; epoch e uses pass e mod AUGMENT_EPOCHS
    cfg.TRAINER.CLIP_ADAPTER.PREC = "fp32"  # the head (fp32/amp/fp16/bf16); the tower: MODEL.BACKBONE.FROZEN_PREC


class ClipAdapterHead(nn.Module):
    """logits = s · (ratio·A(f) + (1−ratio)·f) · Tᵀ; ``text`` [C, E] and ``logit_scale`` are non-persistent
    buffers, so the checkpoint is the adapter's two weight matrices."""

    def __init__(self, text: torch.Tensor, logit_scale: torch.Tensor, *, ratio: float, reduction: int) -> None:
        super().__init__()
        dim = text.shape[1]
        hidden = dim // reduction
        if hidden < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.REDUCTION {reduction} leaves no hidden unit for width {dim}")
        self.adapter = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU()
        )
        self.ratio = ratio
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("logit_scale", logit_scale.reshape(()).float(), persistent=False)

    def adapt(self, feats: torch.Tensor) -> torch.Tensor:
        """f' = ratio·A(f) + (1−ratio)·f (not renormalised)."""
        return self.ratio * self.adapter(feats) + (1.0 - self.ratio) * feats

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.adapt(feats) @ self.text.t()


@TRAINER_REGISTRY.register()
class CLIP_Adapter(FeatureTrainer):  # noqa: N801 - the release's trainer name
    """A residual feature adapter on the frozen image features, trained with cross-entropy."""

    cfg_node = "CLIP_ADAPTER"
    model_name = "clip_adapter"

    def num_epochs(self) -> int:
        return int(self.cfg.OPTIM.MAX_EPOCH)

    def build_head(self) -> nn.Module:
        return ClipAdapterHead(self.text_weights(), self.backbone.logit_scale, ratio=float(self.node.RATIO),
                               reduction=int(self.node.REDUCTION))

    def optim_cfg(self) -> CN:
        """The engine's OPTIM node: the one source of the epochs, learning rate, optimizer and schedule."""
        return self.cfg.OPTIM

    def fit(self) -> None:
        node, head = self.node, self.head
        passes, batch = int(node.AUGMENT_EPOCHS), int(node.BATCH_SIZE)
        labels = self.train_labels
        xv, yv = self.val_features()
        optim_cfg = self.optim_cfg()
        optim = build_optimizer(head, optim_cfg)
        sched = build_lr_scheduler(optim, optim_cfg)
        best = BestState(head, prefer_later=False)
        views = self.train_passes(range(min(passes, self.max_epoch)))
        for epoch in range(self.max_epoch):
            feats = views[epoch % passes]
            generator = torch.Generator()
            generator.manual_seed(derive_seed(self.cfg.SEED, "epoch", epoch))
            order = torch.randperm(len(labels), generator=generator).to(self.device)
            lr = optim.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                loss = F.cross_entropy(head(feats[idx]), labels[idx])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                loss_sum += loss.detach()
            sched.step()
            with torch.no_grad():
                correct = count_correct(head(xv), yv)
            best.update(correct, epoch + 1)
            mean_loss = float(loss_sum) / -(-len(order) // batch)  # one host sync per epoch, for the log
            if not torch.isfinite(torch.tensor(mean_loss)):
                raise FloatingPointError(f"CLIP-Adapter: loss is infinite or NaN (epoch {epoch + 1})")
            logger.info("epoch [%d/%d] loss %.4f\tval acc %.2f%%\tlr %.6e", epoch + 1, self.max_epoch, mean_loss,
                        100.0 * float(correct) / len(yv), lr)
        best.restore()
        logger.info("CLIP-Adapter: testing the adapter of epoch %d (best validation accuracy %.2f%%)",
                    int(best.epoch), 100.0 * float(best.score) / len(yv))
