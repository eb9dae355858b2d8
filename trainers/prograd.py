"""ProGrad (Zhu et al., ICCV 2023): prompt-aligned gradients against a zero-shot teacher (SPEC §1.5).

Teacher z_T = s·f̂·t^zsᵀ with t^zs = normalize(enc("a photo of a <class>.")), computed once when training starts.
L_ce = CE(z_S, y); L_kl = T²·mean_b Σ_c −softmax(z_T/T)_c·log softmax(z_S/T)_c. Per learned tensor,
g_a = ∇L_ce, g_b = ∇L_kl and the update uses :func:`prograd_project` (g_a with its component against g_b removed,
scaled by λ = LAMBDA). Learned: ``ctx`` only (CTX_INIT "a photo of a" by default).

Of the release's loss keys only the ProGrad loss is implemented: ``NAME "prograd"``, ``GM False``, ``ALPHA 0.0``;
any other value is an error.

Deviation from the BiomedCoOp release: its teacher logits come from the student itself (not the zero-shot model),
so ∇L_kl = 0 and training reduces to plain CE; here the teacher is the real zero-shot BiomedCLIP, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from engine.config import register_trainer_cfg
from engine.registry import TRAINER_REGISTRY
from trainers.base import PromptTrainer
from trainers.prompt_learner import prompt_learner_cfg, zeroshot_classifier

ZS_TEMPLATE = "a photo of a {}."  # the zero-shot teacher's prompt (CUSTOM_TEMPLATES)
IMPLEMENTED = {"NAME": "prograd", "GM": False, "ALPHA": 0.0}  # the release's loss keys, as far as implemented


@register_trainer_cfg("PROGRAD")
def _prograd_cfg(cfg: CN) -> None:
    cfg.TRAINER.PROGRAD = prompt_learner_cfg()
    cfg.TRAINER.PROGRAD.NAME = "prograd"  # loss name (only "prograd" is implemented)
    cfg.TRAINER.PROGRAD.GM = False  # gradient-matching variant of the release (not implemented: must be False)
    cfg.TRAINER.PROGRAD.ALPHA = 0.0  # mixing weight of the release's other variants (not implemented: must be 0)
    cfg.TRAINER.PROGRAD.T = 1.0  # distillation temperature
    cfg.TRAINER.PROGRAD.LAMBDA = 1.0  # strength λ of the gradient projection


def prograd_project(g_a: torch.Tensor, g_b: torch.Tensor, lam: float) -> torch.Tensor:
    """ProGrad's prompt-aligned gradient for one parameter tensor.

    With ĝ_b = g_b / ‖g_b‖: g_a − λ⟨g_a, ĝ_b⟩ĝ_b if ⟨g_a, ĝ_b⟩ < 0, else g_a. A zero g_b leaves g_a unchanged.
    One tensor expression (no host sync).

    Args:
        g_a: the gradient of the task loss (CE), any shape.
        g_b: the gradient of the distillation loss, the same shape.
        lam: λ, the strength of the projection (1 removes the conflicting component entirely).
    Returns:
        a tensor of g_a's shape.
    """
    norm = torch.linalg.vector_norm(g_b)
    g_b_hat = g_b / torch.where(norm > 0, norm, torch.ones_like(norm))
    dot = (g_a * g_b_hat).sum()
    return torch.where(dot < 0, g_a - lam * dot * g_b_hat, g_a)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """ProGrad's L_kl = T²·mean_b Σ_c −softmax(z_T/T)_c·log softmax(z_S/T)_c.

    Args:
        student_logits: Tensor[B, C], z_S.
        teacher_logits: Tensor[B, C], z_T (no gradient needed).
        temperature: T.
    """
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature * temperature * -(p_t * log_p_s).sum(dim=-1).mean()


@TRAINER_REGISTRY.register()
class ProGrad(PromptTrainer):
    """CoOp whose CE gradient loses its component that conflicts with the zero-shot teacher's (λ-scaled)."""

    cfg_node = "PROGRAD"

    def build_model(self) -> None:
        c = self.cfg.TRAINER.PROGRAD
        for key, value in IMPLEMENTED.items():
            if c[key] != value:
                raise ValueError(f"TRAINER.PROGRAD.{key} = {c[key]!r} is not implemented: only the ProGrad loss "
                                 f"({', '.join(f'{k} {v!r}' for k, v in IMPLEMENTED.items())}) is")
        if c.T <= 0:
            raise ValueError(f"TRAINER.PROGRAD.T must be > 0, got {c.T}")
        super().build_model()

    def before_train(self) -> None:
        self.zs_text = zeroshot_classifier(self.backbone, self.classnames, [ZS_TEMPLATE])  # [C, E], once

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.cfg.TRAINER.PROGRAD
        labels = batch["label"].to(self.device, non_blocking=True)
        f = self.frozen_features(batch)["g"]
        with self.autocast():
            scale = self.backbone.logit_scale
            z_s = (scale * f @ self.class_features().t()).float()
            z_t = (scale * f @ self.zs_text.to(f.dtype).t()).float()
            ce = F.cross_entropy(z_s, labels)
            kl = soft_cross_entropy(z_s, z_t, c.T)
        self.prograd_backward_and_update(ce, kl, c.LAMBDA)
        acc = (z_s.detach().argmax(dim=1) == labels).float().mean() * 100.0
        return {"ce": ce.detach(), "kl": kl.detach(), "acc": acc}

    def prograd_backward_and_update(self, loss_a: torch.Tensor, loss_b: torch.Tensor, lam: float) -> None:
        """Gradients of both losses, projected per tensor, then one optimizer step (replaces
        ``model_backward_and_update``; the GradScaler is a no-op unless PREC fp16)."""
        self.record_nonfinite(loss_a + loss_b)  # on the device: raised at the next print point / epoch end
        optim = self._optims["prompt_learner"]
        params = [p for p in self.prompt_learner.parameters() if p.requires_grad]
        scaled_a, scaled_b = self._scaler.scale(loss_a), self._scaler.scale(loss_b)
        g_a = torch.autograd.grad(scaled_a, params, retain_graph=True)
        g_b = torch.autograd.grad(scaled_b, params)
        for p, ga, gb in zip(params, g_a, g_b, strict=True):
            p.grad = prograd_project(ga, gb, lam)  # projection is invariant to the common loss scale
        self._scaler.step(optim)
        self._scaler.update()
