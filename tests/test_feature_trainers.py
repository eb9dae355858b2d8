"""Feature baselines (LinearProbe, LPPlusPlus, CLIP_Adapter, TipAdapter): formulas on hand cases, the shared
feature path, and runs through train.py whose accuracy reproduces in --eval-only."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import train
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.optim import lr_schedule
from trainers import build_trainer
from trainers.clip_adapter import ClipAdapterHead
from trainers.features import BestState
from trainers.linear_probe import LinearProbe, search_c
from trainers.lpplusplus import LPPlusPlusHead, lpp_init, lpp_step_sizes, lpp_train
from trainers.tip_adapter import TipAdapterHead, search_beta_alpha, search_grid, tip_logits

FAST = ["DATASET.NUM_SHOTS", "2", "MODEL.BACKBONE.NAME", "tiny-clip", "DATALOADER.NUM_WORKERS", "0",
        "VERBOSE", "False"]
# per-trainer overrides that keep a run to a few iterations
SHORT = {
    "LinearProbe": ["TRAINER.LINEARPROBE.BISECTION_STEPS", "2"],
    "LPPlusPlus": ["OPTIM.MAX_EPOCH", "12", "TRAINER.LPPLUSPLUS.ALPHA_UPDATE_EVERY", "5"],
    "CLIP_Adapter": ["OPTIM.MAX_EPOCH", "3", "TRAINER.CLIP_ADAPTER.AUGMENT_EPOCHS", "2"],
    "TipAdapter": ["OPTIM.MAX_EPOCH", "2", "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "2"],
}


def make_trainer(name: str, root: Path, out: Path, *opts: str):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, f"configs/trainers/{name}/few_shot.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), "SEED", "1", "TRAINER.NAME", name,
                          *FAST, *SHORT[name], *opts])
    return build_trainer(cfg)


# ------------------------------------------------------------------------------------------------ Tip-Adapter
def test_tip_adapter_logits_on_a_hand_case() -> None:
    # two cache entries (one per class), E = 2, s = 10, α = 2, β = 3, f = e1
    f = torch.tensor([[1.0, 0.0]])
    keys = torch.eye(2)
    values = torch.eye(2)
    text = torch.eye(2)
    # clip = 10·[1, 0]; affinity = [1, 0]; exp(−3(1 − A)) = [1, e^−3]; logits = clip + 2·[1, e^−3]
    expected = torch.tensor([[12.0, 2.0 * math.exp(-3.0)]])
    assert torch.allclose(tip_logits(10.0 * f @ text.t(), f @ keys.t(), values, 2.0, 3.0), expected)
    head = TipAdapterHead(text, torch.tensor(10.0), values)
    with torch.no_grad():
        head.keys.copy_(keys)
        head.alpha.fill_(2.0)
        head.beta.fill_(3.0)
    assert torch.allclose(head(f), expected)
    # a key between the classes: affinity 0.6 with key 0 → cache weight exp(−3·0.4) for class 0
    f2 = torch.tensor([[0.6, 0.8]])
    assert torch.allclose(head(f2), torch.tensor([[6.0 + 2 * math.exp(-1.2), 8.0 + 2 * math.exp(-0.6)]]))


def test_tip_adapter_grid_is_beta_outer_first_best() -> None:
    # one val sample of class 0, zero-shot prefers class 1 by 1.0; its key (class 0) has affinity 0.5:
    # correct ⇔ α·exp(−β/2) > 1. β = 4: only α = 8; β = 1: both α. β outer → (4, 8); α outer would give (1, 2).
    clip = torch.tensor([[0.0, 1.0]])
    affinity = torch.tensor([[0.5]])
    values = torch.tensor([[1.0, 0.0]])
    beta, alpha, counts = search_beta_alpha(clip, affinity, values, torch.tensor([0]), [4.0, 1.0], [2.0, 8.0])
    assert (beta, alpha) == (4.0, 8.0)
    assert counts.tolist() == [[0, 1], [1, 1]]
    grid = search_grid(50.0, 200)
    assert len(grid) == 200 and grid[0] == pytest.approx(0.1) and grid[1] == pytest.approx(0.1 + 49.9 / 200)
    assert grid[-1] == pytest.approx(0.1 + 199 * 49.9 / 200)


# ------------------------------------------------------------------------------------------------ LP++
def test_lpplusplus_init_and_step_sizes_on_a_hand_case() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    text = torch.eye(2)
    w, alpha_bar = lpp_init(feats, labels, text, alpha_scale=250.0)
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.3, 0.9]]))  # class means
    assert float(alpha_bar) == pytest.approx(250.0 * (1.0 + 0.9) / 2)  # class 0: f·t0 = 1; class 1: (1 + 0.8)/2
    # FᵀF = [[1.36, .48], [.48, 1.64]]: eigenvalues 2 and 1 → lr_W = 4·3/2; Σ_n (f_n·t_j)² = 1.36, 1.64
    lr_w, lr_alpha = lpp_step_sizes(feats, text)
    assert lr_w == pytest.approx(6.0) and lr_alpha == pytest.approx(3 / (4 * 1.64))
    with pytest.raises(ValueError, match=r"classes \[2\] have none"):
        lpp_init(feats, labels, torch.eye(3)[:, :2], alpha_scale=1.0)


def test_lpplusplus_alpha_step_uses_only_that_epochs_gradient() -> None:
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(8, 4), dim=-1)
    labels = torch.arange(8) % 2
    head = LPPlusPlusHead(F.normalize(torch.randn(2, 4), dim=-1))
    ref = copy.deepcopy(head)
    lpp_train(head, feats, labels, feats, labels, epochs=2, lr_w=0.5, lr_alpha=0.3, momentum=0.9, alpha_every=2)
    # by hand: two SGD steps on (W, b); α is stepped once, at epoch 2, with epoch 2's gradient only
    optim = torch.optim.SGD(ref.linear.parameters(), lr=0.5, momentum=0.9)
    alpha0 = ref.alpha.detach().clone()
    grads = []
    for _ in range(2):
        optim.zero_grad()
        ref.alpha.grad = None
        F.cross_entropy(ref(feats), labels).backward()
        grads.append(ref.alpha.grad.clone())
        optim.step()
    assert torch.allclose(head.alpha, alpha0 - 0.3 * grads[1])
    assert not torch.allclose(head.alpha, alpha0 - 0.3 * (grads[0] + grads[1]))  # the release's accumulation
    assert torch.allclose(head.linear.weight, ref.linear.weight)


def test_best_state_tie_rules() -> None:
    for prefer_later, expected in ((True, 3), (False, 2)):
        lin = nn.Linear(1, 1, bias=False)
        best = BestState(lin, prefer_later=prefer_later)
        for epoch, score in ((1, 1), (2, 2), (3, 2), (4, 0)):
            with torch.no_grad():
                lin.weight.fill_(float(epoch))
            best.update(torch.tensor(score), epoch)
        best.restore()
        assert int(best.epoch) == expected and float(lin.weight.detach()) == expected and int(best.score) == 2


# ------------------------------------------------------------------------------------------------ linear probe
def test_linear_probe_search_converges_to_the_peak() -> None:
    def score(c: float) -> float:  # a unimodal validation curve peaking at C = 10^2.3
        return -abs(math.log10(c) - 2.3)

    # grid → 1e2; bisection on [1, 3] (log10): right 1e3, left, right, left, left, right, right, left
    assert search_c(score, [1e6, 1e4, 1e2, 1.0, 1e-2], 8) == pytest.approx(10**2.296875)
    assert search_c(score, [1e6, 1e4, 1e2, 1.0, 1e-2], 0) == 1e2
    # a flat curve: the first grid value wins, then every step keeps the left end (ties → left): C*/10
    assert search_c(lambda c: 0.5, [1e6, 1e4, 1.0], 8) == pytest.approx(1e5)


def test_linear_probe_head_reproduces_sklearn_probabilities() -> None:
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(0)
    for num_classes in (2, 3):  # binary: sklearn keeps one coefficient row
        x = torch.randn(30, 5)
        y = torch.arange(30) % num_classes
        clf = LogisticRegression(C=1.0, l1_ratio=0.0).fit(x.numpy(), y.numpy())
        fake = SimpleNamespace(head=nn.Linear(5, num_classes), num_classes=num_classes)
        LinearProbe._store(fake, clf)
        probs = torch.softmax(fake.head(x), dim=-1).detach()
        assert torch.allclose(probs, torch.as_tensor(clf.predict_proba(x.numpy()), dtype=torch.float32), atol=1e-5)


# ------------------------------------------------------------------------------------------------ CLIP-Adapter
def test_clip_adapter_residual_on_a_hand_case() -> None:
    text = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    head = ClipAdapterHead(text, torch.tensor(10.0), ratio=0.5, reduction=2)
    assert [tuple(p.shape) for p in head.parameters()] == [(2, 4), (4, 2)]
    with torch.no_grad():
        head.adapter[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        head.adapter[2].weight.copy_(torch.tensor([[2.0, 0], [0, 0], [0, 0], [0, -1.0]]))
    f = torch.tensor([[0.5, -0.5, 0.5, 0.5]])
    # W1 f = [.5, −.5] → ReLU [.5, 0] → W2 → [1, 0, 0, 0] → ReLU; f' = .5·A(f) + .5·f = [.75, −.25, .25, .25]
    assert torch.allclose(head.adapt(f), torch.tensor([[0.75, -0.25, 0.25, 0.25]]))
    assert torch.allclose(head(f), torch.tensor([[7.5, 2.5]]))  # s·f'·Tᵀ, f' not renormalised


def test_clip_adapter_schedule_is_per_epoch_cosine_after_warmup(synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer("CLIP_Adapter", synth_root, tmp_path, "OPTIM.MAX_EPOCH", "20")
    f = lr_schedule(trainer.optim_cfg())
    assert f(0) == 1e-5 and f(1) == pytest.approx(0.01)
    assert f(19) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 18 / 20)))


# ------------------------------------------------------------------------------------------------ feature path
def test_features_are_encoded_once_per_pass_and_seeded_per_image(synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer("LinearProbe", synth_root, tmp_path, "DATALOADER.TEST.BATCH_SIZE", "5",
                           "TRAIN.ENCODE_BATCH_SIZE", "8",  # a loader batch of 5 is one pass
                           "CACHE.ENABLED", "False")  # in-memory only: nothing read from the session cache
    calls: list[int] = []
    encode = trainer.backbone.encode_image

    def counting(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(images))
        return encode(images)

    trainer.backbone.encode_image = counting
    n, nv = len(trainer.dm.dataset.train_x), len(trainer.dm.dataset.val)  # 12 and 12
    p0, p1 = trainer.train_passes([0, 1])
    assert sum(calls) == 2 * n and len(calls) == math.ceil(2 * n / 5)  # both passes in one batched run
    feats, labels = trainer.train_features(2)
    trainer.train_pass(1)
    trainer.val_features()
    trainer.val_features()
    assert sum(calls) == 2 * n + nv  # cached: nothing encoded twice
    assert torch.equal(feats, torch.cat([p0, p1])) and labels.tolist() == trainer.train_labels.tolist() * 2
    assert torch.allclose(p0.norm(dim=-1), torch.ones(n)) and not torch.allclose(p0, p1)  # two augmentations
    # the augmentation of (pass, image) does not depend on the batch size
    trainer._train_passes.clear()
    trainer.cfg.DATALOADER.TEST.BATCH_SIZE = 7
    assert torch.allclose(trainer.train_pass(1), p1, atol=1e-6)


# ------------------------------------------------------------------------------------------------ end to end
CASES = [(name, bb) for name in SHORT for bb in ("tiny-biomedclip", "tiny-clip")]


@pytest.mark.parametrize(
    ("name", "backbone", "extra"),
    [pytest.param(n, b, (), id=f"{n}-{b}") for n, b in CASES]
    + [pytest.param("TipAdapter", "tiny-clip", ("TRAINER.TIPADAPTER.FINETUNE", "False"), id="TipAdapter-free")],
)
def test_run_and_eval_only_reproduce(name: str, backbone: str, extra: tuple[str, ...], synth_root: Path,
                                     tmp_path: Path) -> None:
    base = ["--root", str(synth_root), "--seed", "1", "--trainer", name,
            "--dataset-config-file", "configs/datasets/synthmed.yaml",
            "--config-file", f"configs/trainers/{name}/few_shot.yaml"]
    opts = [*FAST, "MODEL.BACKBONE.NAME", backbone, *SHORT[name], *extra]
    run, again = tmp_path / "run", tmp_path / "eval"
    assert train.main([*base, "--output-dir", str(run), *opts]) == 0
    for f in ("config.yaml", "fewshot_split.json", "log.txt", "metrics.json"):
        assert (run / f).is_file(), f
    trained = json.loads((run / "metrics.json").read_text())
    epochs = {"LinearProbe": 0, "LPPlusPlus": 12, "CLIP_Adapter": 3, "TipAdapter": 0 if extra else 2}[name]
    assert trained["epochs"] == epochs and trained["num_samples"] == 120
    assert train.main([*base, "--output-dir", str(again), "--eval-only", "--model-dir", str(run), *opts]) == 0
    evaluated = json.loads((again / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "ece", "per_class_accuracy"):
        assert evaluated[key] == pytest.approx(trained[key]), key
