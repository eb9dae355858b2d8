"""MaPLe: the layer-by-layer towers reproduce the backbone, prompts sit where the method puts them, only the
multi-modal prompt learner is learned, and train.py runs it end to end on both backbone families."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import train
from clip_backbones import build_backbone
from clip_backbones.tiny import TINY_BACKBONES
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from trainers import build_trainer
from trainers.maple import MultiModalPromptLearner

FAMILIES = ["tiny-biomedclip", "tiny-clip"]
# deeper / unequal-width variants of the two families (text width ≠ vision width; J = 3 for the CLIP one):
# name -> (tiny model copied, file changed, {path of keys in that file: values to set})
DEEP = {"deep-bert": ("tiny-biomedclip", "config.json",
                      {(): {"hidden_size": 24, "num_hidden_layers": 3, "intermediate_size": 48}}),
        "deep-clip": ("tiny-clip", "open_clip_config.json",
                      {("model_cfg", "vision_cfg"): {"width": 48, "layers": 3},
                       ("model_cfg", "text_cfg"): {"width": 32, "layers": 4}})}
NAMES = ["glioma", "no tumor", "a rather long class name of several words"]  # different lengths → padding


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cache: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, (base, fname, change) in DEEP.items():
            folder = tmp_path_factory.mktemp(name)
            shutil.copytree(TINY_BACKBONES[base], folder, dirs_exist_ok=True)
            cfg = json.loads((folder / fname).read_text())
            for keys, values in change.items():
                node = cfg
                for key in keys:
                    node = node[key]
                node.update(values)
            (folder / fname).write_text(json.dumps(cfg))
            mp.setitem(TINY_BACKBONES, name, folder)

        def get(name: str) -> Any:
            if name not in cache:
                cache[name] = build_backbone(name)
            return cache[name]

        yield get


def images(backbone: Any, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=g)


@pytest.mark.parametrize("name", FAMILIES)
def test_depth_one_without_vision_prompts_is_the_backbone(name: str, backbones: Any) -> None:
    bb = backbones(name)
    pl = MultiModalPromptLearner(bb, NAMES, n_ctx=2, ctx_init="a photo of a", depth=1)
    # P_0 = "a photo"; the tokenised prompt is the whole "a photo of a <c>." → the plain zero-shot prompt
    ref = bb.encode_text(bb.tokenize([f"a photo of a {c}." for c in NAMES]))
    torch.testing.assert_close(bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts), ref, rtol=1e-5, atol=1e-5)
    x = images(bb)
    torch.testing.assert_close(bb.encode_image(x, prompts=())[0], bb.encode_image(x)[0], rtol=1e-5, atol=1e-5)
    # the layer-by-layer paths with prompts of zero tokens (nothing inserted) reproduce the models' own forward
    empty_text, empty_vision = torch.zeros(0, bb.text_width), torch.zeros(0, bb.vision_width)
    layered = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=[empty_text])
    torch.testing.assert_close(layered, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(bb.encode_image(x, prompts=[empty_vision] * 2), bb.encode_image(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # with V_0 appended the CLS token attends to it: the feature changes
    assert not torch.allclose(bb.encode_image(x, prompts=pl.vision_prompts())[0], bb.encode_image(x)[0], atol=1e-4)


@pytest.mark.parametrize("name,depth", [("tiny-biomedclip", 2), ("tiny-clip", 2), ("deep-bert", 2),
                                        ("deep-clip", 3)])
def test_prompts_enter_every_layer_at_their_positions(name: str, depth: int, backbones: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bb = backbones(name)
    torch.manual_seed(0)
    with caplog.at_level("INFO"):
        pl = MultiModalPromptLearner(bb, NAMES, n_ctx=2, ctx_init="a photo of a", depth=9)
    assert pl.depth == depth and f"using depth {depth}" in caplog.text  # capped at the shallower tower
    assert pl.proj.in_features == bb.text_width and pl.proj.out_features == bb.vision_width
    f = pl.compound_prompt_projections  # as released: F_1 … F_{J-1} start as copies of one Linear
    assert len(f) == depth - 1 and all(torch.equal(g.weight, f[0].weight) for g in f)
    assert not torch.equal(pl.proj.weight, f[0].weight)
    n, s = pl.n_ctx, bb.prompt_start
    seen: dict[str, list] = {"text_in": [], "text_out": [], "vis_in": [], "vis_out": []}
    hooks = []
    for kind, blocks in (("text", bb.text_blocks), ("vis", bb.vision_blocks)):
        for blk in blocks:
            hooks.append(blk.register_forward_pre_hook(lambda m, a, k=kind: seen[f"{k}_in"].append(a[0])))
            hooks.append(blk.register_forward_hook(lambda m, a, o, k=kind: seen[f"{k}_out"].append(o)))
    with torch.no_grad():
        bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=pl.deep_text_prompts())
        v = pl.vision_prompts()
        bb.encode_image(images(bb), prompts=v)
    for h in hooks:
        h.remove()
    p = [pl.ctx, *pl.deep_text_prompts()]
    for i in range(1, len(bb.text_blocks)):
        inp, prev = seen["text_in"][i], seen["text_out"][i - 1]
        if i < depth:  # positions start … start+n hold P_i for every class; the rest is the previous output
            assert torch.equal(inp[:, s:s + n], p[i].expand(len(NAMES), -1, -1))
            assert torch.equal(inp[:, :s], prev[:, :s]) and torch.equal(inp[:, s + n:], prev[:, s + n:])
        else:  # deeper layers carry the prompt tokens along
            assert torch.equal(inp, prev)
    assert seen["vis_in"][0].shape[1] == 1 + bb.num_patches + n  # CLS + patches + V_0
    for i in range(1, len(bb.vision_blocks)):
        inp, prev = seen["vis_in"][i], seen["vis_out"][i - 1]
        if i < depth:  # the last n tokens are F_i(P_i)
            assert torch.equal(inp[:, -n:], v[i].expand(2, -1, -1))
            torch.testing.assert_close(v[i], pl.compound_prompt_projections[i - 1](p[i]))
            assert torch.equal(inp[:, :-n], prev[:, :-n])
        else:
            assert torch.equal(inp, prev)


@pytest.mark.parametrize("name", ["tiny-biomedclip", "tiny-clip", "deep-clip"])
def test_deep_prompts_equal_to_what_they_replace_change_nothing(name: str, backbones: Any) -> None:
    """P_i / V_i set to the very states they overwrite leave the features unchanged: the replacement hits
    exactly those positions, raw (no norm, no positional embedding), and nothing else."""
    bb = backbones(name)
    torch.manual_seed(0)
    pl = MultiModalPromptLearner(bb, NAMES[:1], n_ctx=2, ctx_init="a photo of a", depth=9)
    n, s, J = pl.n_ctx, bb.prompt_start, pl.depth
    assert J >= 2
    outs: dict[str, list] = {"text": [], "vis": []}
    hooks = [blk.register_forward_hook(lambda m, a, o, k=k: outs[k].append(o))
             for k, blocks in (("text", bb.text_blocks), ("vis", bb.vision_blocks)) for blk in blocks]
    x = images(bb, n=1)
    with torch.no_grad():
        text_ref = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts)  # no deep prompts
        img_ref = bb.encode_image(x, prompts=pl.vision_prompts()[:1])[0]  # V_0 only
        for h in hooks:
            h.remove()
        for k in range(1, J):
            p_k = pl.compound_prompts_text[k - 1]
            p_k.copy_(outs["text"][k - 1][0, s:s + n])
            # F_k(P_k) = the last n vision tokens leaving block k-1: W = (pinv(P_k) T)ᵀ, b = 0
            target = outs["vis"][k - 1][0, -n:].double()
            f = pl.compound_prompt_projections[k - 1]
            f.weight.copy_((torch.linalg.pinv(p_k.double()) @ target).t())
            f.bias.zero_()
        text = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=pl.deep_text_prompts())
        torch.testing.assert_close(text, text_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bb.encode_image(x, prompts=pl.vision_prompts())[0], img_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_deep_prompt_moves_both_towers(name: str, backbones: Any) -> None:
    bb = backbones(name)
    torch.manual_seed(0)
    pl = MultiModalPromptLearner(bb, NAMES, n_ctx=2, ctx_init="a photo of a", depth=2)
    x = images(bb)
    with torch.no_grad():
        t0 = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=pl.deep_text_prompts())
        i0 = bb.encode_image(x, prompts=pl.vision_prompts())[0]
        pl.compound_prompts_text[0].add_(0.5 * torch.randn_like(pl.ctx))  # P_1: text layer 1, V_1 = F_1(P_1)
        t1 = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=pl.deep_text_prompts())
        i1 = bb.encode_image(x, prompts=pl.vision_prompts())[0]
        pl.compound_prompt_projections[0].bias.add_(0.5 * torch.randn(bb.vision_width))  # F_1: vision only
        t2 = bb.encode_text_from_embeddings(pl(), pl.tokenized_prompts, deep_prompts=pl.deep_text_prompts())
        i2 = bb.encode_image(x, prompts=pl.vision_prompts())[0]
    assert (t1 - t0).abs().max() > 1e-4 and (i1 - i0).abs().max() > 1e-4
    assert torch.equal(t2, t1) and (i2 - i1).abs().max() > 1e-4


def test_ctx_init_shorter_than_n_ctx_is_an_error(backbones: Any) -> None:
    with pytest.raises(ValueError, match="N_CTX 5 > the 4 tokens of CTX_INIT 'a photo of a'"):
        MultiModalPromptLearner(backbones("tiny-clip"), NAMES, n_ctx=5, ctx_init="a photo of a")
    pl = MultiModalPromptLearner(backbones("tiny-clip"), NAMES, n_ctx=3, ctx_init="")
    assert pl.ctx.shape == (3, 32) and 0.005 < pl.ctx.std() < 0.05  # N(0, 0.02²), "X X X <c>." placeholders


FAST = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "VERBOSE", "False"]
LEARNED = ["ctx", "proj.weight", "proj.bias", "compound_prompts_text.0", "compound_prompt_projections.0.weight",
           "compound_prompt_projections.0.bias"]


@pytest.mark.parametrize("name", FAMILIES)
def test_only_the_multimodal_prompt_learner_is_learned(name: str, synth_root: Path, tmp_path: Path) -> None:
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, "configs/trainers/MaPLe/few_shot.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(synth_root), "OUTPUT_DIR", str(tmp_path), "SEED", "1",
                          "TRAINER.NAME", "MaPLe", "MODEL.BACKBONE.NAME", name, *FAST])
    trainer = build_trainer(cfg)
    assert trainer.get_model_names() == ["MultiModalPromptLearner"]
    before = {k: p.detach().clone() for k, p in trainer.backbone.named_parameters()}
    trainer.set_model_mode("train")
    out = trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
    assert torch.isfinite(out["loss"])
    grads = {k: p.grad for k, p in trainer.prompt_learner.named_parameters()}
    assert list(grads) == LEARNED and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(not p.requires_grad and p.grad is None for p in trainer.backbone.parameters())
    assert all(torch.equal(p, before[k]) for k, p in trainer.backbone.named_parameters())
    assert not trainer.backbone.training and not any(m.training for m in trainer.backbone.modules())
    assert list(trainer.trainable_state(trainer.prompt_learner)) == LEARNED


@pytest.mark.parametrize("name", FAMILIES)
def test_train_py_one_epoch_checkpoint_and_eval_only(name: str, synth_root: Path, tmp_path: Path) -> None:
    def run(out: Path, *extra: str, protocol: str = "few_shot") -> int:
        return train.main(["--root", str(synth_root), "--seed", "1", "--trainer", "MaPLe",
                           "--dataset-config-file", "configs/datasets/synthmed.yaml",
                           "--config-file", f"configs/trainers/MaPLe/{protocol}.yaml", "--output-dir", str(out),
                           *extra, *FAST, "MODEL.BACKBONE.NAME", name])

    out = tmp_path / "run"
    assert run(out) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["trainer"] == "MaPLe" and m["num_samples"] == 120 and m["epochs"] == 1
    ckpt = torch.load(out / "MultiModalPromptLearner" / "model.pth.tar-1", weights_only=True)
    assert list(ckpt["state_dict"]) == LEARNED
    assert ckpt["state_dict"]["ctx"].shape == (2, 32) and ckpt["state_dict"]["proj.weight"].shape == (32, 32)
    ev = tmp_path / "eval"
    assert run(ev, "--eval-only", "--model-dir", str(out)) == 0
    assert json.loads((ev / "metrics.json").read_text())["accuracy"] == m["accuracy"]
    if name != "tiny-biomedclip":
        return
    # the prompts transfer to another label space (base → new)
    new = tmp_path / "new"
    assert run(new, "--eval-only", "--model-dir", str(out), "DATASET.SUBSAMPLE_CLASSES", "new",
               protocol="base_to_novel") == 0
    assert json.loads((new / "metrics.json").read_text())["num_samples"] == 60
