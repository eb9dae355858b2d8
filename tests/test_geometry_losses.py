"""OGKD's class graph and losses (SPEC §2.2, §2.4) against hand-computed values and explicit loops."""

import math

import pytest
import torch
from torch.nn import functional as F

from trainers.geometry import class_graph, fold_novel
from trainers.losses import gad_loss, lgd_loss, top_k_patches

# A row-stochastic graph whose column sums (1.8, 0.8, 0.4) are not 1, so exp(q̃) is not a distribution.
W3 = [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]


# ---------------------------------------------------------------- explicit reference implementations (floats)
def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _smoothed(q: list[float], w: list[list[float]], gamma: float) -> list[float]:
    """q̃_j = (1 − γ) q_j + γ Σ_i q_i W_ij."""
    c = len(q)
    return [(1 - gamma) * q[j] + gamma * sum(q[i] * w[i][j] for i in range(c)) for j in range(c)]


def _gad_loop(zs: list[list[float]], zt: list[list[float]], w: list[list[float]], gamma: float) -> float:
    total = 0.0
    for b in range(len(zs)):
        p, qt = _log_softmax(zs[b]), _smoothed(_log_softmax(zt[b]), w, gamma)
        for j in range(len(p)):
            total += math.exp(qt[j]) * (qt[j] - p[j])
    return total / (len(zs) * len(zs[0]))


def _lgd_loop(zs, zt, w, labels, gamma) -> float:  # [B][K][C] nested lists
    total, n_batch, n_patch = 0.0, len(zs), len(zs[0])
    for b in range(n_batch):
        y = labels[b]
        for n in range(n_patch):
            p, qt = _log_softmax(zs[b][n]), _smoothed(_log_softmax(zt[b][n]), w, gamma)
            total += math.exp(qt[y]) * (qt[y] - p[y])
    return total / (n_batch * n_patch)


def _random_graph(c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(c, c, generator=g, dtype=torch.float64) * 2, dim=1)


# ---------------------------------------------------------------- class_graph
def test_class_graph_hand_case_rows_and_scale_invariance():
    # p0 ⟂ p1, p2 at 45° to both: cos = [[1, 0, r], [0, 1, r], [r, r, 1]] with r = 1/√2
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    alpha, r = 2.0, 1 / math.sqrt(2)
    cos = [[1.0, 0.0, r], [0.0, 1.0, r], [r, r, 1.0]]
    expected = [[math.exp(alpha * s) / sum(math.exp(alpha * t) for t in row) for s in row] for row in cos]
    W = class_graph(protos, alpha)
    assert W.shape == (3, 3)
    torch.testing.assert_close(W, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(W.sum(dim=1), torch.ones(3, dtype=torch.float64))
    # not symmetric: W_02 = e^{αr} / (e^α + 1 + e^{αr}) but W_20 = e^{αr} / (2e^{αr} + e^α)
    assert not torch.allclose(W[0, 2], W[2, 0])
    # any positive per-prototype scale gives the same graph (normalised inside)
    scaled = protos * torch.tensor([[3.0], [0.25], [7.0]], dtype=torch.float64)
    torch.testing.assert_close(class_graph(scaled, alpha), W)
    # alpha = 0 → uniform rows
    torch.testing.assert_close(class_graph(protos, 0.0), torch.full((3, 3), 1 / 3, dtype=torch.float64))


def test_class_graph_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"\[C, D\]"):
        class_graph(torch.ones(3), 1.0)


# ---------------------------------------------------------------- fold_novel
def test_fold_novel_hand_case_matches_loops():
    W = _random_graph(4, seed=1)
    base, novel, lam = [0, 2], [1, 3], 0.1
    expected = torch.zeros(2, 2, dtype=torch.float64)
    for a, i in enumerate(base):
        for c, j in enumerate(base):
            expected[a, c] = W[i, j] + lam * sum(W[i, n] * W[n, j] for n in novel)
    got = fold_novel(W, torch.tensor(base), lam)
    torch.testing.assert_close(got, expected)
    # keyword call; the base order given is the output order
    got_rev = fold_novel(W_all=W, base_idx=torch.tensor([2, 0]), lambda_novel=lam)
    torch.testing.assert_close(got_rev, expected.flip(0).flip(1))
    # λ = 0 → W_bb; a non-zero λ changes it (the folding is really applied)
    torch.testing.assert_close(fold_novel(W, torch.tensor(base), 0.0), W[[0, 2]][:, [0, 2]])
    assert not torch.allclose(got, W[[0, 2]][:, [0, 2]])


def test_fold_novel_without_novel_classes_is_w_bb():
    W = _random_graph(4, seed=2)
    torch.testing.assert_close(fold_novel(W, torch.arange(4), 0.1), W)
    perm = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(fold_novel(W, perm, 0.1), W[perm][:, perm])


@pytest.mark.parametrize(
    ("base_idx", "match"),
    [
        (torch.tensor([0, 0]), "repeat"),
        (torch.tensor([0, 4]), r"0\.\.3"),
        (torch.tensor([-1, 2]), r"0\.\.3"),
        (torch.tensor([0.0, 2.0]), "integer"),
        (torch.tensor([[0, 2]]), "1-D"),
        (torch.tensor([], dtype=torch.long), "empty"),
    ],
)
def test_fold_novel_rejects_bad_base_idx(base_idx, match):
    with pytest.raises(ValueError, match=match):
        fold_novel(_random_graph(4, seed=3), base_idx, 0.1)


# ---------------------------------------------------------------- gad_loss
def test_gad_gamma0_is_kdsp_kl_sum_over_numel():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(3, 4, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(3, 4, generator=g, dtype=torch.float64) * 3
    W = _random_graph(4, seed=4)  # irrelevant at γ = 0
    loss = gad_loss(zs, zt, W, 0.0)
    assert loss.shape == ()
    # KL(teacher ‖ student) summed / numel, by loops
    kl = 0.0
    for b in range(3):
        q, p = _log_softmax(zt[b].tolist()), _log_softmax(zs[b].tolist())
        kl += sum(math.exp(q[j]) * (q[j] - p[j]) for j in range(4))
    assert loss.item() == pytest.approx(kl / 12, rel=1e-12, abs=1e-15)
    ref = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), reduction="sum", log_target=True) / zs.numel()
    torch.testing.assert_close(loss, ref)
    assert loss.item() > 0


def test_gad_gamma_positive_unnormalised_target_matches_loop():
    zs = [[1.0, -0.5, 2.0], [0.3, 0.0, -1.2]]
    zt = [[2.5, 0.1, -1.0], [-0.7, 1.9, 0.4]]
    gamma = 0.3
    W = torch.tensor(W3, dtype=torch.float64)
    # the target exp(q̃) is not a distribution (W's column sums are not 1)
    row_sums = [sum(math.exp(v) for v in _smoothed(_log_softmax(r), W3, gamma)) for r in zt]
    assert all(abs(s - 1.0) > 1e-3 for s in row_sums)
    loss = gad_loss(torch.tensor(zs, dtype=torch.float64), torch.tensor(zt, dtype=torch.float64), W, gamma)
    assert loss.item() == pytest.approx(_gad_loop(zs, zt, W3, gamma), rel=1e-12)
    # a float32 graph is accepted with float64 logits (cast to the logits' dtype)
    loss32w = gad_loss(torch.tensor(zs, dtype=torch.float64), torch.tensor(zt, dtype=torch.float64), W.float(), gamma)
    assert loss32w.item() == pytest.approx(loss.item(), rel=1e-6)


def test_gad_gradient_closed_form_and_teacher_detached():
    g = torch.Generator().manual_seed(5)
    n_batch, n_cls, gamma = 4, 5, 0.6
    zs = (torch.randn(n_batch, n_cls, generator=g, dtype=torch.float64) * 2).requires_grad_()
    zt = (torch.randn(n_batch, n_cls, generator=g, dtype=torch.float64) * 2).requires_grad_()
    W = torch.softmax(torch.randn(n_cls, n_cls, generator=g, dtype=torch.float64), dim=1)
    gad_loss(zs, zt, W, gamma).backward()
    q = F.log_softmax(zt.detach(), -1)
    target = torch.exp((1 - gamma) * q + gamma * q @ W)  # [B, C]
    s_b = target.sum(dim=1, keepdim=True)  # [B, 1]
    expected = (s_b * torch.softmax(zs.detach(), -1) - target) / (n_batch * n_cls)
    torch.testing.assert_close(zs.grad, expected)
    assert zt.grad is None or torch.count_nonzero(zt.grad) == 0


def test_gad_rejects_bad_inputs():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        gad_loss(z, torch.zeros(2, 4), torch.eye(3), 0.3)
    with pytest.raises(ValueError, match=r"\[C, C\]"):
        gad_loss(z, z, torch.eye(4), 0.3)
    with pytest.raises(ValueError, match="gamma"):
        gad_loss(z, z, torch.eye(3), 1.5)


# ---------------------------------------------------------------- top_k_patches
def test_top_k_patches_uses_absolute_gt_teacher_logit():
    n_batch, n_patch, n_cls = 2, 5, 3
    labels = torch.tensor([1, 2])
    teacher = torch.zeros(n_batch, n_patch, n_cls)
    teacher[0, :, 1] = torch.tensor([0.1, -5.0, 2.0, -0.3, 1.0])  # GT of image 0: picks 1 (|−5|) then 2
    teacher[1, :, 2] = torch.tensor([3.0, 0.2, -0.1, -4.0, 0.5])  # GT of image 1: picks 3 (|−4|) then 0
    teacher[0, 0, 0] = 100.0  # large non-GT logits must not matter
    teacher[1, 4, 0] = -100.0
    student = torch.arange(n_batch * n_patch * n_cls, dtype=torch.float32).view(n_batch, n_patch, n_cls)
    s_sel, t_sel = top_k_patches(student, teacher, labels, 0.4)  # k = round(2.0) = 2
    assert s_sel.shape == t_sel.shape == (2, 2, 3)
    picked = [[1, 2], [3, 0]]
    for b in range(n_batch):
        torch.testing.assert_close(t_sel[b], teacher[b, picked[b]])
        torch.testing.assert_close(s_sel[b], student[b, picked[b]])
    # keyword call gives the same
    s_kw, t_kw = top_k_patches(student_patch_logits=student, teacher_patch_logits=teacher, labels=labels, ratio=0.4)
    torch.testing.assert_close(s_kw, s_sel)
    torch.testing.assert_close(t_kw, t_sel)


@pytest.mark.parametrize(
    ("n_patch", "ratio", "k"),
    [
        (196, 0.3, 59),
        (196, 0.03, 6),
        (196, 0.01, 2),
        (196, 0.8, 157),
        (196, 0.4, 78),
        (196, 0.05, 10),
        (196, 1.0, 196),
        (196, 0.001, 1),  # round(0.196) = 0 → at least one patch
        (10, 0.25, 2),  # banker's rounding: round(2.5) = 2
        (14, 0.25, 4),  # round(3.5) = 4
    ],
)
def test_top_k_patches_count(n_patch, ratio, k):
    z = torch.randn(2, n_patch, 3)
    s_sel, t_sel = top_k_patches(z, z, torch.tensor([0, 2]), ratio)
    assert s_sel.shape == t_sel.shape == (2, k, 3)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_top_k_patches_rejects_bad_ratio(ratio):
    z = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="ratio"):
        top_k_patches(z, z, torch.tensor([0]), ratio)


# ---------------------------------------------------------------- lgd_loss
def _patch_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    n_batch, n_patch, n_cls = 2, 3, 3
    zs = torch.randn(n_batch, n_patch, n_cls, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(n_batch, n_patch, n_cls, generator=g, dtype=torch.float64) * 2
    return zs, zt, torch.tensor([2, 0])


def test_lgd_matches_loop():
    zs, zt, labels = _patch_case(6)
    gamma = 0.4
    W = torch.tensor(W3, dtype=torch.float64)
    loss = lgd_loss(zs, zt, W, labels, gamma)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(_lgd_loop(zs.tolist(), zt.tolist(), W3, labels.tolist(), gamma), rel=1e-12)
    kw = lgd_loss(student_patch_logits=zs, teacher_patch_logits=zt, W=W, labels=labels, gamma=gamma)
    torch.testing.assert_close(kw, loss)


def test_lgd_gradient_closed_form_and_teacher_detached():
    zs, zt, labels = _patch_case(7)
    n_batch, n_patch, n_cls = zs.shape
    gamma = 0.7
    W = _random_graph(n_cls, seed=8)
    zs.requires_grad_()
    zt.requires_grad_()
    lgd_loss(zs, zt, W, labels, gamma).backward()
    q = F.log_softmax(zt.detach(), -1)
    q_tilde = (1 - gamma) * q + gamma * q @ W  # [B, K, C]
    onehot = F.one_hot(labels, n_cls).to(torch.float64).unsqueeze(1)  # [B, 1, C]
    weight = torch.exp((q_tilde * onehot).sum(-1, keepdim=True))  # exp(q̃_y): [B, K, 1]
    expected = weight * (torch.softmax(zs.detach(), -1) - onehot) / (n_batch * n_patch)
    torch.testing.assert_close(zs.grad, expected)
    assert zt.grad is None or torch.count_nonzero(zt.grad) == 0


def test_lgd_gamma0_ignores_graph_and_gamma_positive_uses_it():
    zs, zt, labels = _patch_case(9)
    w_a, w_b = _random_graph(3, seed=10), torch.tensor(W3, dtype=torch.float64)
    torch.testing.assert_close(lgd_loss(zs, zt, w_a, labels, 0.0), lgd_loss(zs, zt, w_b, labels, 0.0))
    assert not torch.allclose(lgd_loss(zs, zt, w_a, labels, 0.5), lgd_loss(zs, zt, w_b, labels, 0.5))


def test_lgd_rejects_bad_shapes():
    z = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\[B, K, C\]"):
        lgd_loss(z, torch.zeros(2, 2, 4), torch.eye(4), torch.tensor([0, 1]), 0.3)
    with pytest.raises(ValueError, match="labels"):
        lgd_loss(z, z, torch.eye(4), torch.tensor([0, 1, 2]), 0.3)
