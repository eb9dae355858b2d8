"""OGKD's distillation losses (SPEC §2.4), exactly as coded in the released OGKD.

Both targets are graph-smoothed teacher log-probabilities mixed in **log space** and **not renormalised**:
``q̃ = (1 − γ)·q + γ·(q @ W)`` with ``q = log_softmax(teacher)`` (detached). ``exp(q̃)`` is a weighted geometric
mean of teacher probabilities and sums to 1 only when W's column sums are 1. The reductions are sum / numel.
All functions are pure: no host syncs, no device moves, no Python loops over the batch or the classes.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["gad_loss", "graph_smoothed_log_target", "lgd_loss", "top_k_patches"]


def _check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma (the graph mixing weight γ) must lie in [0, 1], got {gamma}")


def graph_smoothed_log_target(teacher_logits: Tensor, W: Tensor, gamma: float) -> Tensor:
    """The graph-smoothed teacher target ``q̃`` of OGKD, in log space (shared by GAD and LGD).

    ``q̃_{..j} = (1 − γ)·q_{..j} + γ·Σ_i q_{..i}·W_ij`` (column j of W), with ``q = log_softmax(teacher_logits)``
    taken over the last (class) axis and detached.

    Args:
        teacher_logits: ``[..., C]`` teacher logits (any leading shape); no gradient flows into them.
        W: ``[C, C]`` class graph (W_eff); cast to the dtype of the log-probabilities.
        gamma: mixing weight γ in ``[0, 1]``; γ = 0 gives the plain teacher log-probabilities.

    Returns:
        ``[..., C]`` un-normalised log-target q̃ (detached).
    """
    n_cls = teacher_logits.shape[-1]
    if W.shape != (n_cls, n_cls):
        raise ValueError(f"W must be [C, C] = [{n_cls}, {n_cls}] to match the logits, got {tuple(W.shape)}")
    q = F.log_softmax(teacher_logits.detach(), dim=-1)  # [..., C]
    return (1.0 - gamma) * q + gamma * (q @ W.to(dtype=q.dtype))


def gad_loss(student_logits: Tensor, teacher_logits: Tensor, W: Tensor, gamma: float) -> Tensor:
    """Graph-aware global distillation (GAD) of OGKD: KL(exp q̃ ‖ student), summed over all entries / (B·C).

    ``L = (1/(B·C)) Σ_{b,j} exp(q̃_bj)·(q̃_bj − p_bj)`` with ``p = log_softmax(student_logits)`` and ``q̃`` from
    :func:`graph_smoothed_log_target`; this is ``F.kl_div(p, q̃, reduction="sum", log_target=True) / p.numel()``.
    The gradient w.r.t. the student logits is ``(S_b·softmax(z_S) − exp(q̃))/(B·C)`` with ``S_b = Σ_j exp(q̃_bj)``.
    With γ = 0 it is BiomedCoOp's KDSP term.

    Args:
        student_logits: ``[B, C]`` student logits z_S (global token).
        teacher_logits: ``[B, C]`` teacher logits z_T (selected LLM prompts); detached here.
        W: ``[C, C]`` class graph W_eff.
        gamma: graph mixing weight γ in ``[0, 1]`` (GAMMA).

    Returns:
        Scalar loss ``[]``.
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both be [B, C], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    _check_gamma(gamma)
    log_target = graph_smoothed_log_target(teacher_logits, W, gamma)  # [B, C]
    log_student = F.log_softmax(student_logits, dim=-1)  # [B, C]
    return F.kl_div(log_student, log_target, reduction="sum", log_target=True) / log_student.numel()


def top_k_patches(
    student_patch_logits: Tensor, teacher_patch_logits: Tensor, labels: Tensor, ratio: float
) -> tuple[Tensor, Tensor]:
    """Label-guided patch selection of OGKD's LGD: the k patches with the largest |teacher GT-class logit|.

    ``k = max(1, round(N · ratio))`` with Python's banker's rounding (N = 196: 0.3 → 59, 0.03 → 6, 0.01 → 2).
    For image b the score of patch n is ``|teacher_patch_logits[b, n, labels[b]]|`` (strongly aligned or
    anti-aligned patches); the same indices are gathered from both tensors, highest score first.

    Args:
        student_patch_logits: ``[B, N, C]`` student patch logits Z_S.
        teacher_patch_logits: ``[B, N, C]`` teacher patch logits Z_T.
        labels: ``[B]`` ground-truth class indices y.
        ratio: TOP_K_RATIO in ``(0, 1]``.

    Returns:
        ``([B, k, C], [B, k, C])``: the selected student and teacher patch logits.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio (TOP_K_RATIO) must lie in (0, 1], got {ratio}")
    if student_patch_logits.dim() != 3 or student_patch_logits.shape != teacher_patch_logits.shape:
        raise ValueError(
            "student_patch_logits and teacher_patch_logits must both be [B, N, C], got "
            f"{tuple(student_patch_logits.shape)} and {tuple(teacher_patch_logits.shape)}"
        )
    n_batch, n_patch, n_cls = teacher_patch_logits.shape
    if labels.shape != (n_batch,):
        raise ValueError(f"labels must be [B] = [{n_batch}], got {tuple(labels.shape)}")
    k = max(1, round(n_patch * ratio))
    gt_index = labels.view(n_batch, 1, 1).expand(n_batch, n_patch, 1)  # [B, N, 1]
    gt_score = teacher_patch_logits.detach().gather(2, gt_index).squeeze(2).abs()  # [B, N]
    top = gt_score.topk(k, dim=1).indices  # [B, k]
    patch_index = top.unsqueeze(2).expand(n_batch, k, n_cls)  # [B, k, C]
    return student_patch_logits.gather(1, patch_index), teacher_patch_logits.gather(1, patch_index)


def lgd_loss(
    student_patch_logits: Tensor,
    teacher_patch_logits: Tensor,
    W: Tensor,
    labels: Tensor,
    gamma: float,
) -> Tensor:
    """Label-guided local distillation (LGD) of OGKD: the GT channel of a patch-level KL, summed / (B·K).

    ``L = (1/(B·K)) Σ_{b,n} exp(q̃_{b,n,y_b})·(q̃_{b,n,y_b} − p_{b,n,y_b})`` with ``p = log_softmax(student)`` and
    ``q̃`` from :func:`graph_smoothed_log_target`. Only the ground-truth channel is kept, so this is a patch-level
    cross-entropy toward y weighted by the (un-normalised, graph-smoothed) teacher GT probability, plus a constant.
    The gradient w.r.t. the student patch logits is ``exp(q̃_y)·(softmax − onehot_y)/(B·K)``.

    Args:
        student_patch_logits: ``[B, K, C]`` selected student patch logits (from :func:`top_k_patches`).
        teacher_patch_logits: ``[B, K, C]`` selected teacher patch logits; detached here.
        W: ``[C, C]`` class graph W_eff.
        labels: ``[B]`` ground-truth class indices y.
        gamma: graph mixing weight γ in ``[0, 1]`` (GAMMA).

    Returns:
        Scalar loss ``[]``.
    """
    if student_patch_logits.dim() != 3 or student_patch_logits.shape != teacher_patch_logits.shape:
        raise ValueError(
            "student_patch_logits and teacher_patch_logits must both be [B, K, C], got "
            f"{tuple(student_patch_logits.shape)} and {tuple(teacher_patch_logits.shape)}"
        )
    n_batch, n_patch, _ = student_patch_logits.shape
    if labels.shape != (n_batch,):
        raise ValueError(f"labels must be [B] = [{n_batch}], got {tuple(labels.shape)}")
    _check_gamma(gamma)
    log_target = graph_smoothed_log_target(teacher_patch_logits, W, gamma)  # [B, K, C]
    log_student = F.log_softmax(student_patch_logits, dim=-1)  # [B, K, C]
    gt_index = labels.view(n_batch, 1, 1).expand(n_batch, n_patch, 1)  # [B, K, 1]
    log_target_gt = log_target.gather(2, gt_index)  # [B, K, 1]
    log_student_gt = log_student.gather(2, gt_index)  # [B, K, 1]
    return F.kl_div(log_student_gt, log_target_gt, reduction="sum", log_target=True) / log_student_gt.numel()
