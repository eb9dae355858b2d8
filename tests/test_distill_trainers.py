"""BiomedCoOp and OGKD as trainers: what is learned, the shared loss, the class graph, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from trainers import build_trainer
from trainers.geometry import class_graph, fold_novel
from trainers.teacher import encode_prompt_bank

FAST = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "MODEL.BACKBONE.NAME", "tiny-biomedclip",
        "DATALOADER.NUM_WORKERS", "0", "VERBOSE", "False"]


def cli(trainer: str, root: Path, out: Path, *opts: str, flags: tuple[str, ...] = (),
        protocol: str = "few_shot") -> int:
    return train.main(["--root", str(root), "--seed", "1", "--trainer", trainer,
                       "--dataset-config-file", "configs/datasets/synthmed.yaml",
                       "--config-file", f"configs/trainers/{trainer}/{protocol}/synthmed.yaml",
                       "--output-dir", str(out), *flags, *FAST, *opts])


def make_trainer(trainer: str, root: Path, out: Path, *opts: str, protocol: str = "few_shot"):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, f"configs/trainers/{trainer}/{protocol}/synthmed.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), "SEED", "1", "TRAINER.NAME", trainer,
                          *FAST, *opts])
    return build_trainer(cfg)


@pytest.mark.parametrize("name", ["BiomedCoOp", "OGKD"])
def test_only_the_context_is_learned_with_bert_dropout_on(name: str, synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer(name, synth_root, tmp_path)
    trainer.before_train()
    trainer.set_model_mode("train")
    assert trainer.backbone.model.text.training  # released behaviour: BERT dropout active while training
    assert not trainer.backbone.model.visual.training
    out = trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    grads = {n: p.grad for n, p in trainer.prompt_learner.named_parameters()}
    assert list(grads) == ["ctx"] and grads["ctx"].abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in trainer.backbone.parameters())
    assert list(trainer.trainable_state(trainer.prompt_learner)) == ["ctx"]
    trainer.set_model_mode("eval")
    assert not trainer.backbone.model.text.training
    off = make_trainer(name, synth_root, tmp_path / "off", f"TRAINER.{trainer.cfg_node}.TEXT_DROPOUT", "False")
    off.set_model_mode("train")
    assert not off.backbone.model.text.training


def test_ogkd_without_gad_and_lgd_trains_biomedcoop_without_kdsp(synth_root: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "ogkd", tmp_path / "biomedcoop"
    assert cli("OGKD", synth_root, a, "TRAINER.OGKD.LAMBDA_GAD", "0.0", "TRAINER.OGKD.LAMBDA_LGD", "0.0") == 0
    assert cli("BiomedCoOp", synth_root, b, "TRAINER.BIOMEDCOOP.KDSP_LAMBDA", "0.0") == 0
    ctx_a = torch.load(a / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]["ctx"]
    ctx_b = torch.load(b / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]["ctx"]
    assert torch.equal(ctx_a, ctx_b)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["accuracy"] == mb["accuracy"] and ma["per_class_accuracy"] == mb["per_class_accuracy"]


def test_ogkd_loss_terms_follow_the_formula(synth_root: Path, tmp_path: Path) -> None:
    """One step's logged terms equal CE + λ·SCCM + λ·GAD + λ·LGD recomputed from the public functions."""
    from torch.nn import functional as F

    from trainers.losses import gad_loss, lgd_loss, top_k_patches
    from trainers.teacher import select_prompts, selected_teacher

    trainer = make_trainer("OGKD", synth_root, tmp_path, "TRAINER.OGKD.TEXT_DROPOUT", "False")
    trainer.before_train()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.dm.train_loader_x))
    images, labels = trainer.parse_batch(batch)
    c = trainer.cfg.TRAINER.OGKD
    with torch.no_grad():
        g, p = (F.normalize(x, dim=-1) for x in trainer.backbone.encode_image(images))
        pl = trainer.prompt_learner
        t = F.normalize(trainer.backbone.encode_text_from_embeddings(pl(), pl.tokenized_prompts), dim=-1)
        s = trainer.backbone.logit_scale
        t_sel = selected_teacher(trainer.bank, select_prompts(g, trainer.bank, s, c.TAU))
        W = class_graph(trainer.bank_mean, c.ALPHA)
        ce = F.cross_entropy(s * g @ t.t(), labels)
        sccm = F.mse_loss(t, trainer.bank_mean)
        gad = gad_loss(s * g @ t.t(), s * g @ t_sel.t(), W, c.GAMMA)
        lgd = lgd_loss(*top_k_patches(s * p @ t.t(), s * p @ t_sel.t(), labels, c.TOP_K_RATIO), W, labels, c.GAMMA)
    out = trainer.forward_backward(batch)
    torch.testing.assert_close(trainer.W, W)
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["sccm"], c.LAMBDA_SCCM * sccm)
    torch.testing.assert_close(out["gad"], c.LAMBDA_GAD * gad)
    torch.testing.assert_close(out["lgd"], c.LAMBDA_LGD * lgd)
    torch.testing.assert_close(out["loss"], ce + c.LAMBDA_SCCM * sccm + c.LAMBDA_GAD * gad + c.LAMBDA_LGD * lgd)


def test_fold_novel_changes_w_exactly_as_fold_novel_says(synth_root: Path, tmp_path: Path) -> None:
    plain = make_trainer("OGKD", synth_root, tmp_path / "a", "DATASET.SUBSAMPLE_CLASSES", "base",
                         protocol="base_to_novel")
    plain.before_train()
    folded = make_trainer("OGKD", synth_root, tmp_path / "b", "DATASET.SUBSAMPLE_CLASSES", "base",
                          "TRAINER.OGKD.FOLD_NOVEL", "True", "TRAINER.OGKD.LAMBDA_NOVEL", "0.25",
                          protocol="base_to_novel")
    folded.before_train()
    ds = folded.dm.dataset
    assert len(folded.classnames) == 3 and len(ds.classnames_all) == 6 and ds.label_ids_in_all == [0, 1, 2]
    _, protos_all = encode_prompt_bank(folded.backbone, folded.prompt_bank, ds.classnames_all, 50)
    alpha = folded.cfg.TRAINER.OGKD.ALPHA
    W_all = class_graph(protos_all, alpha)
    expected = fold_novel(W_all, torch.tensor([0, 1, 2]), 0.25)
    torch.testing.assert_close(folded.W, expected)
    torch.testing.assert_close(expected, W_all[:3, :3] + 0.25 * W_all[:3, 3:] @ W_all[3:, :3])
    torch.testing.assert_close(plain.W, class_graph(plain.bank_mean, alpha))  # default: training classes only
    assert not torch.allclose(folded.W, plain.W)


def test_fold_novel_without_novel_classes_is_an_error(synth_root: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    assert cli("OGKD", synth_root, out, "TRAINER.OGKD.FOLD_NOVEL", "True") == 1
    assert "FOLD_NOVEL needs novel classes" in caplog.text and not (out / "metrics.json").exists()


def test_bank_missing_a_class_names_it(synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bank = json.loads((synth_root / "SynthMed" / "prompt_bank.json").read_text())
    del bank["round cyst lesion"], bank["normal background tissue"]
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(bank))
    out = tmp_path / "run"
    assert cli("OGKD", synth_root, out, "TRAINER.OGKD.PROMPT_BANK", str(path)) == 1
    assert "round cyst lesion" in caplog.text and "normal background tissue" in caplog.text
    assert not (out / "metrics.json").exists()
    assert cli("BiomedCoOp", synth_root, tmp_path / "r2", "TRAINER.BIOMEDCOOP.PROMPT_BANK",
               str(tmp_path / "nope.json")) == 1
    assert "download_prompts.py" in caplog.text


def test_eval_only_needs_no_bank_and_reproduces(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("OGKD", synth_root, run) == 0
    ev = tmp_path / "eval"
    assert cli("OGKD", synth_root, ev, "TRAINER.OGKD.PROMPT_BANK", str(tmp_path / "absent.json"),
               flags=("--eval-only", "--model-dir", str(run))) == 0
    assert json.loads((ev / "metrics.json").read_text())["accuracy"] == json.loads(
        (run / "metrics.json").read_text())["accuracy"]
