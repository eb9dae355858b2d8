"""CoCoOp, KgCoOp and ProGrad: the projection rule, the update ProGrad really takes, KgCoOp's regulariser, CoCoOp's
per-image prompts, and each trainer end to end through train.py on both tiny backbone families."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import train
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from trainers import build_trainer
from trainers.prograd import prograd_project, soft_cross_entropy
from trainers.prompt_learner import PromptLearner, image_features, text_features

CONFIGS = {"CoCoOp": "configs/trainers/CoCoOp/few_shot.yaml",
           "KgCoOp": "configs/trainers/KgCoOp/few_shot/synthmed.yaml",
           "ProGrad": "configs/trainers/ProGrad/few_shot/synthmed.yaml"}


def fast(backbone: str = "tiny-biomedclip") -> list[str]:
    return ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", backbone,
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "VERBOSE", "False"]


def make_trainer(name: str, root: Path, out: Path, *opts: str, backbone: str = "tiny-biomedclip"):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, CONFIGS[name])
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), "SEED", "1", "TRAINER.NAME", name,
                          *fast(backbone), *opts])
    return build_trainer(cfg)


def zeroshot_text(backbone, classnames: list[str]) -> torch.Tensor:
    """"a photo of a {}." through the model's own full-length text encoder (independent of the trainers' path)."""
    tokens = backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])
    with torch.no_grad():
        return F.normalize(backbone.encode_text(tokens), dim=-1)


# ------------------------------------------------------------------------------------------------------ ProGrad
def test_prograd_project_hand_cases() -> None:
    g_a = torch.tensor([1.0, 0.0])
    # conflicting: ĝ_b = (−1, 1)/√2, ⟨g_a, ĝ_b⟩ = −1/√2 → g_a + (1/√2)·ĝ_b = (0.5, 0.5), orthogonal to g_b
    g_b = torch.tensor([-1.0, 1.0])
    g = prograd_project(g_a, g_b, 1.0)
    torch.testing.assert_close(g, torch.tensor([0.5, 0.5]))
    assert abs(float(g @ g_b)) < 1e-7
    torch.testing.assert_close(prograd_project(g_a, g_b, 0.5), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(prograd_project(g_a, 3.0 * g_b, 1.0), torch.tensor([0.5, 0.5]))  # only ĝ_b counts
    # agreeing (⟨g_a, g_b⟩ > 0) or orthogonal: unchanged
    assert torch.equal(prograd_project(g_a, torch.tensor([1.0, 1.0]), 1.0), g_a)
    assert torch.equal(prograd_project(g_a, torch.tensor([0.0, 2.0]), 1.0), g_a)
    # zero g_b: unchanged, no NaN
    assert torch.equal(prograd_project(g_a, torch.zeros(2), 1.0), g_a)
    # per tensor, whatever its shape: the inner product runs over all entries
    a = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    b = torch.tensor([[0.0, -1.0], [0.0, 0.0]])
    torch.testing.assert_close(prograd_project(a, b, 1.0), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))


def test_prograd_soft_cross_entropy_formula() -> None:
    z_s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    z_t = torch.tensor([[1.0, 1.0, 0.0], [-2.0, 0.0, 1.0]])
    for t in (0.25, 1.0, 4.0):
        p_t = F.softmax(z_t / t, dim=1)
        # T²·(KL(p_T‖p_S) + H(p_T)), batch mean
        kl = F.kl_div(F.log_softmax(z_s / t, dim=1), p_t, reduction="batchmean")
        entropy = -(p_t * p_t.log()).sum(dim=1).mean()
        torch.testing.assert_close(soft_cross_entropy(z_s, z_t, t), t * t * (kl + entropy))


def test_prograd_step_takes_the_projected_gradient(synth_root: Path, tmp_path: Path) -> None:
    """One SGD step (no momentum, no weight decay) moves ctx by −lr·g, g recomputed here by hand with autograd."""
    trainer = make_trainer("ProGrad", synth_root, tmp_path, "OPTIM.MOMENTUM", "0.0", "OPTIM.WEIGHT_DECAY", "0.0",
                           "TRAINER.PROGRAD.T", "2.0", "TRAINER.PROGRAD.LAMBDA", "1.0")
    trainer.before_train()
    bb, pl = trainer.backbone, trainer.prompt_learner
    torch.testing.assert_close(trainer.zs_text, zeroshot_text(bb, trainer.classnames), atol=1e-5, rtol=0)
    trainer.set_model_mode("train")
    lr = 0.5
    trainer._optims["prompt_learner"].param_groups[0]["lr"] = lr
    batch = next(iter(trainer.dm.train_loader_x))
    images, labels = trainer.parse_batch(batch)

    ctx = pl.ctx.detach().clone().requires_grad_(True)
    f = F.normalize(bb.encode_image(images)[0], dim=-1)
    text = F.normalize(bb.encode_text_from_embeddings(pl.assemble(ctx), pl.tokenized_prompts), dim=-1)
    s, t = bb.logit_scale, 2.0
    z_s = s * f @ text.t()
    (g_a,) = torch.autograd.grad(F.cross_entropy(z_s, labels), ctx, retain_graph=True)
    # a (seeded) random teacher whose distillation gradient conflicts with the CE gradient
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        teacher = F.normalize(torch.randn(trainer.zs_text.shape, generator=gen), dim=-1)
        p_t = F.softmax(s * f @ teacher.t() / t, dim=1)
        kl = t * t * (-(p_t * F.log_softmax(z_s / t, dim=1)).sum(dim=1)).mean()
        (g_b,) = torch.autograd.grad(kl, ctx, retain_graph=True)
        unit = g_b / g_b.norm()
        dot = float((g_a * unit).sum())
        if dot < 0:
            break
    assert dot < 0, "no conflicting teacher found"
    trainer.zs_text = teacher
    ce = F.cross_entropy(z_s, labels)
    expected = g_a - dot * unit

    before = pl.ctx.detach().clone()
    out = trainer.forward_backward(batch)
    torch.testing.assert_close(out["ce"], ce.detach())
    torch.testing.assert_close(out["kl"], kl.detach())
    torch.testing.assert_close(pl.ctx.detach() - before, -lr * expected, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(pl.ctx.detach() - before, -lr * g_a, atol=1e-6, rtol=1e-3)  # not plain CE
    assert abs(float((pl.ctx.grad * g_b).sum())) < 1e-6 * float(g_a.norm() * g_b.norm())  # λ = 1: ⟂ g_b


def test_prograd_unimplemented_loss_keys_are_errors(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TRAINER.PROGRAD.GM = True is not implemented"):
        make_trainer("ProGrad", synth_root, tmp_path, "TRAINER.PROGRAD.GM", "True")
    with pytest.raises(ValueError, match=r"TRAINER.PROGRAD.ALPHA = 0.5 is not implemented"):
        make_trainer("ProGrad", synth_root, tmp_path, "TRAINER.PROGRAD.ALPHA", "0.5")


# ------------------------------------------------------------------------------------------------------- KgCoOp
def test_kgcoop_regulariser_hand_case() -> None:
    from trainers.kgcoop import kg_regulariser

    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    prior = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(kg_regulariser(text, prior), torch.tensor(1.0 - (1.0 + 0.0 + 0.8) / 3))
    assert float(kg_regulariser(prior, prior)) == pytest.approx(0.0, abs=1e-7)


def test_kgcoop_loss_is_ce_plus_w_times_one_minus_mean_cosine(synth_root: Path, tmp_path: Path) -> None:
    # CTX_INIT is ignored (as released): the context starts from "a photo of a" all the same
    trainer = make_trainer("KgCoOp", synth_root, tmp_path, "TRAINER.KGCOOP.W", "3.0", "TRAINER.KGCOOP.CTX_INIT", "")
    trainer.before_train()
    bb, pl = trainer.backbone, trainer.prompt_learner
    ref = PromptLearner(bb, trainer.classnames, n_ctx=4, ctx_init="a photo of a")
    assert torch.equal(pl.ctx.detach(), ref.ctx.detach())
    prior = zeroshot_text(bb, trainer.classnames)
    trainer.set_model_mode("train")
    batch = next(iter(trainer.dm.train_loader_x))

    # at initialisation the learned prompt IS the zero-shot prompt: the term vanishes
    with torch.no_grad():
        text0 = text_features(bb, pl(), pl.tokenized_prompts)
    torch.testing.assert_close(text0, prior, atol=1e-5, rtol=0)
    out = trainer.forward_backward(batch)
    assert 0.0 <= float(out["kg"]) < 1e-5

    with torch.no_grad():
        pl.ctx.add_(0.5 * torch.randn_like(pl.ctx, generator=torch.Generator().manual_seed(0)))
    images, labels = trainer.parse_batch(batch)
    with torch.no_grad():
        text = text_features(bb, pl(), pl.tokenized_prompts)
        cos = (text * prior).sum(dim=1)  # both normalised
        ce = F.cross_entropy(bb.logit_scale * image_features(bb, images) @ text.t(), labels)
    out = trainer.forward_backward(batch)
    kg = 3.0 * (1.0 - cos.mean())
    assert float(kg) > 1e-3
    torch.testing.assert_close(out["kg"], kg, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["loss"], ce + kg, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------- CoCoOp
@pytest.mark.parametrize("position", ["end", "middle"])
def test_cocoop_logits_use_each_images_own_prompt(position: str, synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer("CoCoOp", synth_root, tmp_path, "TRAINER.COCOOP.CLASS_TOKEN_POSITION", position)
    bb, pl = trainer.backbone, trainer.prompt_learner
    assert [m.__class__.__name__ for m in pl.meta_net] == ["Linear", "ReLU", "Linear"]
    assert (pl.meta_net.linear1.in_features, pl.meta_net.linear1.out_features) == (bb.embed_dim, bb.embed_dim // 16)
    assert pl.meta_net.linear2.out_features == bb.text_width
    with torch.no_grad():  # the tiny model's meta-net has 16 // 16 = 1 hidden unit: keep it out of the ReLU's zero
        pl.meta_net.linear1.bias.fill_(1.0)
    images, _ = trainer.parse_batch(next(iter(trainer.dm.train_loader_x)))
    with torch.no_grad():
        logits = trainer.model_inference(images)
        # reference: a plain (untrimmed) CoOp prompt learner, one image at a time, context ctx + π(x)
        ref = PromptLearner(bb, trainer.classnames, n_ctx=4, ctx_init="a photo of a", class_token_position=position)
        f = image_features(bb, images)
        per_image = []
        for fb in f:
            ctx = pl.ctx + pl.meta_net(fb)
            per_image.append(text_features(bb, ref.assemble(ctx), ref.tokenized_prompts))
        expected = bb.logit_scale * torch.stack([fb @ t.t() for fb, t in zip(f, per_image, strict=True)])
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        # the meta-net conditions the prompt: two images, two different sets of class features
        assert (per_image[0] - per_image[1]).abs().max() > 1e-4
        # one image per text-encoder pass gives the same logits
        trainer.cfg.defrost()
        trainer.cfg.TRAINER.COCOOP.PROMPTS_PER_PASS = 1
        torch.testing.assert_close(trainer.model_inference(images), logits, atol=1e-4, rtol=1e-5)
        # without the meta-net's output CoCoOp is CoOp: shared class features
        pl.meta_net.linear2.weight.zero_()
        pl.meta_net.linear2.bias.zero_()
        coop = bb.logit_scale * f @ text_features(bb, ref.assemble(pl.ctx), ref.tokenized_prompts).t()
        torch.testing.assert_close(trainer.model_inference(images), coop, atol=1e-5, rtol=1e-5)


def test_cocoop_gradients_reach_ctx_and_the_meta_net_only(synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer("CoCoOp", synth_root, tmp_path, backbone="tiny-clip")
    pl = trainer.prompt_learner
    learnable = sorted(n for n, p in pl.named_parameters() if p.requires_grad)
    assert learnable == ["ctx", "meta_net.linear1.bias", "meta_net.linear1.weight", "meta_net.linear2.bias",
                         "meta_net.linear2.weight"]
    with torch.no_grad():  # the tiny model's meta-net has 16 // 16 = 1 hidden unit: keep it out of the ReLU's zero
        pl.meta_net.linear1.bias.fill_(1.0)
    trainer.set_model_mode("train")
    trainer._optims["prompt_learner"].param_groups[0]["lr"] = 0.1  # a visible step (the warm-up LR is 1e-5)
    before = {n: p.detach().clone() for n, p in pl.named_parameters()}
    trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
    for n, p in pl.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
        assert not torch.equal(p.detach(), before[n]), n
    assert all(not p.requires_grad and p.grad is None for p in trainer.backbone.parameters())


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("backbone", ["tiny-biomedclip", "tiny-clip"])
@pytest.mark.parametrize("name", ["CoCoOp", "KgCoOp", "ProGrad"])
def test_train_one_epoch_and_evaluate(name: str, backbone: str, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--root", str(synth_root), "--seed", "1", "--trainer", name,
              "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", CONFIGS[name]]
    assert train.main([*common, "--output-dir", str(out), *fast(backbone)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["trainer"], m["backbone"], m["num_samples"], m["epochs"]) == (name, backbone, 120, 1)
    state = torch.load(out / "prompt_learner" / "model.pth.tar-1", weights_only=True)["state_dict"]
    keys = ["ctx"] + (["meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                       "meta_net.linear2.bias"] if name == "CoCoOp" else [])
    assert sorted(state) == sorted(keys)
    assert all(math.isfinite(float(v.abs().sum())) for v in state.values())
    if name == "CoCoOp" and backbone == "tiny-biomedclip":  # the final checkpoint (meta-net too) reproduces the run
        ev = tmp_path / "eval"
        assert train.main([*common, "--output-dir", str(ev), "--eval-only", "--model-dir", str(out),
                           *fast(backbone)]) == 0
        assert json.loads((ev / "metrics.json").read_text())["accuracy"] == m["accuracy"]
