"""PubMedCLIP and PMC-CLIP in their released file formats, through the tiny twins (the same loading code as the
downloaded files), and each format's bad inputs: one error line naming the key / file and what to do."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from clip_backbones import BACKBONE_NAMES, BackboneError, build_backbone
from clip_backbones.released import (
    BIOMEDBERT_REPO,
    PMC_CLIP_FILES,
    PMC_CLIP_LOGIT_SCALE,
    PUBMEDCLIP_FILE,
    PmcClipArch,
    load_pmc_clip,
    load_pubmedclip,
    tiny_architecture,
    tiny_release_folder,
)
from clip_backbones.vision import ResNetVisionTower

PROMPTS = ["glioma tumor.", "a photo of a meningioma tumor.", "normal brain",
           "an mri scan of the brain showing a pituitary tumor with cystic changes."]
PMC_NAMES = [f.filename for f in PMC_CLIP_FILES.values()]


@pytest.fixture(scope="module")
def pub():
    return build_backbone("tiny-pubmedclip")


@pytest.fixture(scope="module")
def pmc():
    return build_backbone("tiny-pmc-clip")


def _copy_pmc(tmp_path: Path) -> Path:
    shutil.copytree(tiny_release_folder("tiny-pmc-clip"), tmp_path / "pmc", dirs_exist_ok=True)
    return tmp_path / "pmc"


def _copy_pub(tmp_path: Path) -> Path:
    dst = tmp_path / PUBMEDCLIP_FILE.filename
    shutil.copy(tiny_release_folder("tiny-pubmedclip") / PUBMEDCLIP_FILE.filename, dst)
    return dst


def _load_pub(file: Path):
    """A local PubMedCLIP file through the release's loader, with the tiny twin's architecture (``pubmedclip:FILE``
    uses ViT-B/32's)."""
    return load_pubmedclip(file, model_cfg=tiny_architecture("tiny-pubmedclip")["model_cfg"])


def _load_pmc(folder: Path):
    """A local PMC-CLIP folder through the release's loader, with the tiny twin's architecture (``pmc-clip:DIR``
    uses RN50's); the text tower's config and tokenizer from the folder, as for ``pmc-clip:DIR``."""
    return load_pmc_clip(folder, arch=PmcClipArch.from_json(tiny_architecture("tiny-pmc-clip")["pmc_clip"]))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ names, files
def test_names_and_files_in_the_released_formats(pub, pmc):
    assert {"PubMedCLIP", "PMC-CLIP", "tiny-pubmedclip", "tiny-pmc-clip"} <= set(BACKBONE_NAMES)
    ckpt = torch.load(tiny_release_folder("tiny-pubmedclip") / "PubMedCLIP_ViT32.pth", weights_only=True)
    state = ckpt["state_dict"]
    assert {"visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "token_embedding.weight",
            "positional_embedding", "ln_final.weight", "text_projection", "logit_scale"} <= set(state)
    folder = tiny_release_folder("tiny-pmc-clip")
    image = torch.load(folder / "image_encoder(resnet50).pth", weights_only=True)
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "attnpool.positional_embedding",
            "attnpool.q_proj.weight", "attnpool.c_proj.weight"} <= set(image)
    text = torch.load(folder / "text_encoder.pth", weights_only=True)
    assert {"embeddings.word_embeddings.weight", "pooler.dense.weight"} <= set(text)
    proj = torch.load(folder / "text_projection_layer.pth", weights_only=True)
    assert isinstance(proj, torch.Tensor) and proj.shape == (pmc.text_width, pmc.embed_dim)  # 32 x 16: not square
    assert (pub.family, pmc.family) == ("openai-clip", "hf-bert")
    assert pub.weights_file == (tiny_release_folder("tiny-pubmedclip") / "PubMedCLIP_ViT32.pth").resolve()
    assert pmc.weights_file is None  # three files: the weights are hashed, never memoised by one file


def test_twins_are_identical_on_every_build_and_leave_the_rng_alone(pub):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    again = build_backbone("tiny-pubmedclip")
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in pub.model.state_dict().items())


def test_pubmedclip_logit_scale_is_the_checkpoints_and_pmc_clip_is_exp_4_4292(pub, pmc):
    ckpt = torch.load(tiny_release_folder("tiny-pubmedclip") / "PubMedCLIP_ViT32.pth", weights_only=True)
    assert float(pub.logit_scale) == pytest.approx(float(ckpt["state_dict"]["logit_scale"].exp()))
    assert float(pmc.logit_scale) == pytest.approx(math.exp(4.4292), rel=1e-6)  # 83.864
    assert float(pmc.logit_scale) == pytest.approx(float(torch.tensor(PMC_CLIP_LOGIT_SCALE).exp()))
    for b in (pub, pmc):  # OpenAI's normalisation, 224 px, context 77
        assert b.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
        assert b.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
        assert (b.image_size, b.context_length, b.num_patches) == (224, 77, 49)


# ------------------------------------------------------------------------------------------- what they compute
def test_pmc_clip_text_is_pooler_output_times_p_and_trimming_is_exact(pmc):
    folder = tiny_release_folder("tiny-pmc-clip")
    from transformers import BertConfig, BertModel, BertTokenizer

    bert = BertModel(BertConfig.from_json_file(folder / "config.json"), add_pooling_layer=True).eval()
    bert.load_state_dict(torch.load(folder / "text_encoder.pth", weights_only=True))
    P = torch.load(folder / "text_projection_layer.pth", weights_only=True)
    tok = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    enc = tok(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output @ P
        tokens = pmc.tokenize(PROMPTS)
        assert torch.equal(tokens, enc["input_ids"])
        got = pmc.encode_text_from_embeddings(pmc.token_embedding(tokens), tokens)
    assert pmc.text_length(tokens) == int(enc["attention_mask"].sum(1).max()) < 77  # trimmed, not padded to 77
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pmc_clip_patch_tokens_are_c_proj_of_v_proj_of_the_last_feature_map(pmc):
    visual = pmc.model.visual
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled, patches = pmc.encode_image(images)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        assert x.shape[-2:] == (7, 7)
        cells = x.flatten(2).transpose(1, 2)
        expected = visual.attnpool.c_proj(visual.attnpool.v_proj(cells))
        torch.testing.assert_close(pooled, visual(images), atol=0, rtol=0)
    torch.testing.assert_close(patches, expected, atol=0, rtol=0)
    assert patches.shape == (2, 49, pmc.embed_dim) and patches.std(dim=1).min() > 0  # the cells differ


def test_pmc_clip_refuses_deep_vision_prompts_in_one_line(pmc):
    with pytest.raises(BackboneError, match="convolutional ResNet.*MaPLe") as err:
        pmc.vision_blocks  # noqa: B018
    _one_line(err)
    with pytest.raises(BackboneError, match="MaPLe"):
        pmc.encode_image(torch.zeros(1, 3, 224, 224), prompts=[torch.zeros(2, pmc.vision_width)])
    assert isinstance(pmc._vision, ResNetVisionTower)


@pytest.mark.parametrize("which", ["pub", "pmc"])
def test_gradient_reaches_the_context_only(pub, pmc, which):
    b = {"pub": pub, "pmc": pmc}[which]
    tokens = b.tokenize(["x x " + p for p in PROMPTS])
    emb = b.token_embedding(tokens)
    ctx = torch.zeros(2, b.text_width, requires_grad=True)
    s = b.prompt_start
    x = torch.cat([emb[:, :s], ctx.expand(len(tokens), -1, -1), emb[:, s + 2:]], dim=1)
    image, _ = b.encode_image(torch.randn(1, 3, 224, 224))
    text = b.encode_text_from_embeddings(x, tokens)
    logits = b.logit_scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    logits.logsumexp(-1).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in b.parameters())


# ------------------------------------------------------------------------------------------- local copies
def test_local_copies_load_the_files_given(pub, pmc, tmp_path):
    file = _copy_pub(tmp_path)
    ckpt = torch.load(file, weights_only=True)
    ckpt["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, file)
    model, _, weights = _load_pub(file)
    assert weights == file
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["state_dict"].items())

    folder = _copy_pmc(tmp_path)
    P = torch.load(folder / "text_projection_layer.pth", weights_only=True)
    torch.save(P * 2, folder / "text_projection_layer.pth")
    other = _load_pmc(folder)[0].eval()
    tokens = pmc.tokenize(PROMPTS)
    torch.testing.assert_close(other.encode_text(tokens), 2 * pmc.encode_text(tokens))


def test_old_transformers_position_ids_buffer_is_accepted_when_it_is_0_to_n(pmc, tmp_path):
    folder = _copy_pmc(tmp_path)
    text = torch.load(folder / "text_encoder.pth", weights_only=True)
    torch.save({**text, "embeddings.position_ids": torch.arange(512).unsqueeze(0)}, folder / "text_encoder.pth")
    model = _load_pmc(folder)[0].eval()
    tokens = pmc.tokenize(PROMPTS)
    torch.testing.assert_close(model.encode_text(tokens), pmc.encode_text(tokens), atol=0, rtol=0)
    torch.save({**text, "embeddings.position_ids": torch.arange(512).flip(0)}, folder / "text_encoder.pth")
    with pytest.raises(BackboneError, match="position_ids") as err:
        _load_pmc(folder)
    _one_line(err)


# ------------------------------------------------------------------------------------------- bad input
def _edit(state: dict, how: str, key: str) -> dict:
    state = dict(state)
    if how == "missing":
        del state[key]
    elif how == "extra":
        state[key + "_extra"] = torch.zeros(1)
    else:
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    return state


@pytest.mark.parametrize("how", ["missing", "extra", "misshapen"])
def test_pubmedclip_state_dict_with_a_bad_key_is_refused_naming_it(tmp_path, how):
    file = _copy_pub(tmp_path)
    ckpt = torch.load(file, weights_only=True)
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    ckpt["state_dict"] = _edit(ckpt["state_dict"], how, key)
    torch.save(ckpt, file)
    with pytest.raises(BackboneError) as err:
        _load_pub(file)
    message = _one_line(err)
    named = key + "_extra" if how == "extra" else key
    assert f"'{named}'" in message and str(file) in message
    assert {"missing": "missing key", "extra": "unexpected key", "misshapen": "has shape"}[how] in message


@pytest.mark.parametrize("how", ["missing", "extra", "misshapen"])
@pytest.mark.parametrize("role,key", [("image", "layer2.0.conv2.weight"), ("text", "pooler.dense.weight")])
def test_pmc_clip_state_dict_with_a_bad_key_is_refused_naming_it(tmp_path, role, key, how):
    folder = _copy_pmc(tmp_path)
    path = folder / PMC_CLIP_FILES[role].filename
    torch.save(_edit(torch.load(path, weights_only=True), how, key), path)
    with pytest.raises(BackboneError) as err:
        _load_pmc(folder)
    message = _one_line(err)
    assert f"'{key + '_extra' if how == 'extra' else key}'" in message and str(path) in message


def test_pmc_clip_transposed_projection_is_refused(tmp_path):
    folder = _copy_pmc(tmp_path)
    path = folder / "text_projection_layer.pth"
    torch.save(torch.load(path, weights_only=True).t().contiguous(), path)
    with pytest.raises(BackboneError, match=r"holds \(16, 32\), not the \[32, 16\] text projection") as err:
        _load_pmc(folder)
    _one_line(err)


def test_pubmedclip_checkpoint_without_state_dict_is_refused(tmp_path):
    file = _copy_pub(tmp_path)
    torch.save(torch.load(file, weights_only=True)["state_dict"], file)  # the bare state dict, not the checkpoint
    with pytest.raises(BackboneError, match="has no 'state_dict' entry") as err:
        build_backbone(f"pubmedclip:{file}")
    assert str(file) in _one_line(err)


@pytest.mark.parametrize("missing", PMC_NAMES)
def test_pmc_clip_folder_missing_one_file_names_it(tmp_path, missing):
    folder = _copy_pmc(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(BackboneError, match="lacks") as err:
        build_backbone(f"pmc-clip:{folder}")
    message = _one_line(err)
    assert missing in message.split("lacks")[1].split(":")[0] and str(folder) in message


@pytest.mark.parametrize("target", ["pubmedclip", *PMC_NAMES])
def test_truncated_file_names_it_and_the_download_command(tmp_path, target):
    if target == "pubmedclip":
        path = _copy_pub(tmp_path)
        name, command = f"pubmedclip:{path}", "hf download sarahESL/PubMedCLIP 'PubMedCLIP_ViT32.pth' --force-download"
    else:
        folder = _copy_pmc(tmp_path)
        path = folder / target
        name, command = f"pmc-clip:{folder}", f"hf download axiong/pmc_oa '{target}' --repo-type dataset"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackboneError, match="damaged or truncated") as err:
        build_backbone(name)
    message = _one_line(err)
    assert str(path) in message and command in message


def test_damaged_tiny_twin_says_how_to_regenerate(tmp_path, monkeypatch):
    monkeypatch.setenv("OGKD_CACHE_DIR", str(tmp_path))
    folder = tiny_release_folder("tiny-pubmedclip")
    assert folder.is_relative_to(tmp_path)
    (folder / "PubMedCLIP_ViT32.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="delete the folder") as err:
        build_backbone("tiny-pubmedclip")
    assert str(folder) in _one_line(err)
    shutil.rmtree(folder)
    assert build_backbone("tiny-pubmedclip").family == "openai-clip"  # generated again


def test_missing_local_copy_is_named(tmp_path):
    with pytest.raises(BackboneError, match="missing file") as err:
        build_backbone(f"pubmedclip:{tmp_path / 'nope.pth'}")
    assert "nope.pth" in _one_line(err)
    with pytest.raises(BackboneError, match="folder not found"):
        build_backbone(f"pmc-clip:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------------------------------ the hub
@pytest.mark.parametrize("name", ["PubMedCLIP", "PMC-CLIP"])
def test_offline_without_cache_is_one_line_naming_the_files_and_where_to_put_them(name, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE is set") as err:
        build_backbone(name)
    message = _one_line(err)
    if name == "PubMedCLIP":
        assert "PubMedCLIP_ViT32.pth" in message and "sarahESL/PubMedCLIP" in message and "pubmedclip:" in message
    else:
        assert all(f in message for f in PMC_NAMES) and "axiong/pmc_oa" in message and "pmc-clip:<folder>" in message
        assert BIOMEDBERT_REPO in message


def test_pmc_clip_folder_without_the_text_tower_files_offline_says_where_to_put_them(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    folder = _copy_pmc(tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE is set") as err:
        build_backbone(f"pmc-clip:{folder}")
    message = _one_line(err)
    assert "config.json" in message and BIOMEDBERT_REPO in message and f"in {folder}." in message


def _fake_hub(cache: Path, repo: str, files: dict[str, Path], kind: str = "models") -> None:
    rev = "0" * 40
    root = cache / f"{kind}--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)


def test_names_load_the_released_files_from_the_hub_cache(pub, pmc):
    """``PubMedCLIP`` / ``PMC-CLIP`` go through hf_hub_download (the cache here, filled with the twins' files under the
    real repository and file names) and the same loaders."""
    cache = Path(os.environ["HF_HUB_CACHE"])
    pub_dir, pmc_dir = tiny_release_folder("tiny-pubmedclip"), tiny_release_folder("tiny-pmc-clip")
    _fake_hub(cache, "sarahESL/PubMedCLIP", {"PubMedCLIP_ViT32.pth": pub_dir / "PubMedCLIP_ViT32.pth"})
    _fake_hub(cache, "axiong/pmc_oa", {f: pmc_dir / f for f in PMC_NAMES}, kind="datasets")
    _fake_hub(cache, BIOMEDBERT_REPO, {f: pmc_dir / f for f in ("config.json", "vocab.txt", "tokenizer_config.json")})
    # the real PubMedCLIP is ViT-B/32: the tiny twin's file does not fit it, and says so naming a key
    with pytest.raises(BackboneError, match="PubMedCLIP_ViT32.pth.*missing key") as err:
        build_backbone("PubMedCLIP")
    assert "PubMedCLIP_ViT32.pth" in _one_line(err)
    # the real PMC-CLIP is RN50: likewise
    with pytest.raises(BackboneError, match="image_encoder\\(resnet50\\).pth") as err:
        build_backbone("PMC-CLIP")
    _one_line(err)


def test_tiny_twin_assets_are_not_written_into():
    from clip_backbones.released import TINY_RELEASED

    assert sorted(p.name for p in TINY_RELEASED["tiny-pubmedclip"].folder.iterdir()) == ["architecture.json"]
    assert sorted(p.name for p in TINY_RELEASED["tiny-pmc-clip"].folder.iterdir()) == [
        "architecture.json", "config.json", "tokenizer_config.json", "vocab.txt"]
    arch = json.loads((TINY_RELEASED["tiny-pmc-clip"].folder / "architecture.json").read_text())
    assert arch["pmc_clip"]["context_length"] == 77
