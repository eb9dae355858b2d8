"""Behaviour of clip_backbones on the tiny offline models (no network, no downloads)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub.constants import is_offline_mode
from safetensors.torch import save_file

from clip_backbones import BACKBONE_NAMES, Backbone, BackboneError, available_backbones, build_backbone
from clip_backbones.tiny import TINY_BACKBONES

TINY = ("tiny-biomedclip", "tiny-clip")
PROMPTS = [  # mixed lengths: the longest sets the trimmed length
    "glioma tumor.",
    "a photo of a meningioma tumor.",
    "normal brain",
    "an mri scan of the brain showing a pituitary tumor with cystic changes.",
]
CLASS_NAMES = ["glioma tumor", "meningioma tumor", "normal brain", "pituitary tumor", "no tumor"]


def _asset_cfg(name: str) -> dict:
    return json.loads((TINY_BACKBONES[name] / "open_clip_config.json").read_text())


@pytest.fixture(scope="module")
def backbones() -> dict[str, Backbone]:
    return {name: build_backbone(name) for name in TINY}


@pytest.fixture(scope="module")
def backbones64() -> dict[str, Backbone]:
    return {name: build_backbone(name).double() for name in TINY}


def _text_layer_input_lengths(backbone: Backbone, fn) -> list[int]:
    """Sequence lengths seen by the first text block while ``fn()`` runs."""
    seen: list[int] = []
    hook = backbone.text_blocks[0].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    try:
        fn()
    finally:
        hook.remove()
    return seen


def _untrimmed(backbone: Backbone, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The full-context (no trimming) text forward, written out here as the reference."""
    m = backbone.model
    if backbone.family == "hf-bert":
        mask = (tokens != m.text.config.pad_token_id).long()
        out = m.text.transformer(inputs_embeds=emb, attention_mask=mask)
        return m.text.proj(out.last_hidden_state[:, 0])
    x = m.transformer(emb + m.positional_embedding, attn_mask=m.attn_mask)
    x = m.ln_final(x)[torch.arange(len(tokens)), tokens.argmax(-1)]
    return x @ m.text_projection


# ------------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize("name", TINY)
def test_text_from_embeddings_equals_encode_text_and_trims(backbones, name):
    b = backbones[name]
    tokens = b.tokenize(PROMPTS)
    longest = max(b.num_tokens(p) for p in PROMPTS) + 2  # start + content + end
    assert tokens.shape == (len(PROMPTS), b.context_length) and longest < b.context_length

    ref = b.encode_text(tokens)
    out: list[torch.Tensor] = []
    lengths = _text_layer_input_lengths(b, lambda: out.append(b.encode_text_from_embeddings(b.token_embedding(tokens),
                                                                                           tokens)))
    assert lengths == [longest]  # the transformer ran on the trimmed context only
    assert out[0].shape == (len(PROMPTS), b.embed_dim)
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_trimming_is_exact_with_spliced_context(backbones64, name):
    b = backbones64[name]
    tokens = b.tokenize(["x x x x " + p for p in PROMPTS])
    emb = b.token_embedding(tokens)
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(4, b.text_width, generator=gen, dtype=emb.dtype) * 0.02
    start = b.prompt_start
    emb = torch.cat([emb[:, :start], ctx.expand(len(tokens), -1, -1), emb[:, start + 4:]], dim=1)
    with torch.no_grad():
        trimmed = b.encode_text_from_embeddings(emb, tokens)
        full = _untrimmed(b, emb, tokens)
        ref_ids = b.encode_text(tokens)
    assert trimmed.dtype == torch.float64
    torch.testing.assert_close(trimmed, full, atol=1e-12, rtol=1e-12)
    assert (trimmed - ref_ids).abs().max() > 1e-6  # the spliced context really changed the features


@pytest.mark.parametrize("name", TINY)
def test_gradient_reaches_embeddings_only(backbones, name):
    b = backbones[name]
    tokens = b.tokenize(["x x " + c + "." for c in CLASS_NAMES])
    emb = b.token_embedding(tokens)
    ctx = torch.zeros(2, b.text_width, requires_grad=True)
    start = b.prompt_start
    x = torch.cat([emb[:, :start], ctx.expand(len(tokens), -1, -1), emb[:, start + 2:]], dim=1)
    feats = b.encode_text_from_embeddings(x, tokens)
    image, _ = b.encode_image(torch.randn(1, 3, b.image_size, b.image_size))
    logits = b.logit_scale * torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(
        feats, dim=-1).T
    logits.logsumexp(-1).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in b.parameters())
    assert all(p.grad is None for p in b.parameters())
    assert not b.training and not b.model.training


def test_bert_dropout_follows_text_tower_mode(backbones):
    b = backbones["tiny-biomedclip"]
    tokens = b.tokenize(PROMPTS)
    emb = b.token_embedding(tokens)
    eval_a, eval_b = (b.encode_text_from_embeddings(emb, tokens) for _ in range(2))
    assert torch.equal(eval_a, eval_b)
    b.model.text.train()
    try:
        train_a, train_b = (b.encode_text_from_embeddings(emb, tokens) for _ in range(2))
    finally:
        b.model.text.eval()
    assert not torch.equal(train_a, train_b)


@pytest.mark.parametrize("name", TINY)
def test_tokenizer_distinguishes_class_names(backbones, name):
    b = backbones[name]
    tokens = b.tokenize(CLASS_NAMES)
    contents = [tuple(t[b.prompt_start:b.prompt_start + b.num_tokens(c)].tolist()) for t, c in zip(tokens, CLASS_NAMES)]
    assert len(set(contents)) == len(CLASS_NAMES)
    end_tokens = {int(t[b.prompt_start + b.num_tokens(c)]) for t, c in zip(tokens, CLASS_NAMES)}
    assert len(end_tokens) == 1  # the end token follows the content directly
    if b.family == "hf-bert":
        hf = b.tokenizer.tokenizer
        assert end_tokens == {hf.sep_token_id} and tokens[0, 0] == hf.cls_token_id
        odd = ["covid-19 pneumonia", "alzheimer's disease", "grade (ii) / iii: astrocytoma; x_ray", "zebra quartz"]
        assert not (b.tokenize(odd) == hf.unk_token_id).any()
        for text in CLASS_NAMES + odd:
            assert b.num_tokens(text) == len(hf.tokenize(text))


def test_tokenize_takes_a_sequence(backbones):
    with pytest.raises(TypeError, match="sequence of strings"):
        backbones["tiny-clip"].tokenize("a photo")


# ----------------------------------------------------------------------------------------------- image
@pytest.mark.parametrize("name", TINY)
def test_encode_image_global_and_patches(backbones, name):
    b = backbones[name]
    images = torch.randn(2, 3, b.image_size, b.image_size, generator=torch.Generator().manual_seed(0))
    pooled, patches = b.encode_image(images)
    vision_cfg = _asset_cfg(name)["model_cfg"]["vision_cfg"]
    patch = vision_cfg.get("patch_size") or b.model.visual.trunk.patch_embed.patch_size[0]
    assert b.num_patches == (vision_cfg["image_size"] // patch) ** 2
    assert patches.shape == (2, b.num_patches, b.embed_dim)
    torch.testing.assert_close(pooled, b.model.encode_image(images), atol=0, rtol=0)

    visual = b.model.visual
    if b.family == "hf-bert":  # timm trunk: final-norm tokens through open_clip's head projection
        feats = visual.trunk.forward_features(images)
        expected = visual.head.proj(feats[:, visual.trunk.num_prefix_tokens:])
        torch.testing.assert_close(patches, expected)
        torch.testing.assert_close(pooled, visual.head.proj(feats[:, 0]))
    else:  # open_clip ViT: its own token output (ln_post applied) times proj
        visual.output_tokens = True
        try:
            _, tokens = visual(images)
        finally:
            visual.output_tokens = False
        torch.testing.assert_close(patches, tokens @ visual.proj)


@pytest.mark.parametrize("name", TINY)
def test_empty_deep_prompts_are_the_plain_forward(backbones, name):
    """``deep_prompts=()`` / ``prompts=()`` take the model's own forward pass: bit-identical to omitting them."""
    b = backbones[name]
    tokens = b.tokenize(PROMPTS)
    emb = b.token_embedding(tokens)
    images = torch.randn(2, 3, b.image_size, b.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(b.encode_text_from_embeddings(emb, tokens, deep_prompts=()),
                           b.encode_text_from_embeddings(emb, tokens))
        for with_kw, without in zip(b.encode_image(images, prompts=()), b.encode_image(images), strict=True):
            assert torch.equal(with_kw, without)


# ----------------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("name", TINY)
def test_attributes_read_from_model_match_asset_config(backbones, name):
    b = backbones[name]
    cfg = _asset_cfg(name)
    model_cfg, pp = cfg["model_cfg"], cfg["preprocess_cfg"]
    assert b.embed_dim == model_cfg["embed_dim"]
    assert b.context_length == model_cfg["text_cfg"]["context_length"]
    assert b.image_size == model_cfg["vision_cfg"]["image_size"]
    assert b.mean == pytest.approx(tuple(pp["mean"])) and b.std == pytest.approx(tuple(pp["std"]))
    assert b.interpolation == "bicubic" and b.prompt_start == 1
    if b.family == "hf-bert":
        bert = json.loads((TINY_BACKBONES[name] / "config.json").read_text())
        assert b.text_width == bert["hidden_size"] and len(b.text_blocks) == bert["num_hidden_layers"]
        vocab = (TINY_BACKBONES[name] / "vocab.txt").read_text().splitlines()
        assert bert["vocab_size"] == len(vocab) and vocab[bert["pad_token_id"]] == "[PAD]"
        assert b.vision_width == b.model.visual.trunk.embed_dim
    else:
        assert b.text_width == model_cfg["text_cfg"]["width"]
        assert len(b.text_blocks) == model_cfg["text_cfg"]["layers"]
        assert b.vision_width == model_cfg["vision_cfg"]["width"]
        assert len(b.vision_blocks) == model_cfg["vision_cfg"]["layers"]
    scale = b.logit_scale
    assert scale.dim() == 0 and not scale.requires_grad
    assert scale == b.model.logit_scale.exp()
    assert all(p.device.type == "cpu" for p in b.parameters())


def test_names():
    assert set(TINY) <= set(available_backbones()) == set(BACKBONE_NAMES)
    assert {"BiomedCLIP", "ViT-B/16"} <= set(BACKBONE_NAMES)


# -------------------------------------------------------------------------------------------- building
@pytest.mark.parametrize("name", TINY)
def test_builds_are_identical_and_leave_caller_rng_alone(name):
    torch.manual_seed(123)
    first = build_backbone(name).state_dict()
    torch.manual_seed(999)
    second = build_backbone(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    build_backbone(name)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", TINY)
def test_local_dir_round_trip(backbones, name, tmp_path):
    b = backbones[name]
    for f in TINY_BACKBONES[name].iterdir():
        shutil.copy(f, tmp_path / f.name)
    gen = torch.Generator().manual_seed(3)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in b.model.state_dict().items()}  # not the seeded init: proves the file is loaded
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")

    loaded = build_backbone(f"local-dir:{tmp_path}")
    assert loaded.family == b.family and loaded.context_length == b.context_length
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    tokens = loaded.tokenize(PROMPTS)
    assert torch.equal(tokens, b.tokenize(PROMPTS))
    images = torch.randn(2, 3, b.image_size, b.image_size)
    reference = build_backbone(name)
    reference.model.load_state_dict(state)
    torch.testing.assert_close(loaded.encode_text(tokens), reference.encode_text(tokens), atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_image(images), reference.encode_image(images), atol=0, rtol=0)
    assert not torch.allclose(loaded.encode_text(tokens), b.encode_text(tokens))
    # built on the meta device and assigned: every tensor is real, the non-persistent buffers rebuilt exactly
    buffers = dict(reference.model.named_buffers())
    assert {n: t.is_meta for n, t in loaded.model.named_buffers()} == {n: False for n in buffers}
    assert all(torch.equal(t, buffers[n]) for n, t in loaded.model.named_buffers())
    assert all(not p.is_meta and not p.requires_grad for p in loaded.model.parameters())


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_checkpoint_weights_are_memory_mapped_from_the_file(backbones, suffix, tmp_path):
    """The loaded tensors are the file's pages (not a copy): the file is mapped, and the values are the file's."""
    for f in TINY_BACKBONES["tiny-biomedclip"].iterdir():
        shutil.copy(f, tmp_path / f.name)
    state = {k: v.contiguous() for k, v in backbones["tiny-biomedclip"].model.state_dict().items()}
    path = tmp_path / ("open_clip_pytorch_model.bin" if suffix == ".bin" else "open_clip_model.safetensors")
    torch.save(state, path) if suffix == ".bin" else save_file(state, path)
    loaded = build_backbone(f"local-dir:{tmp_path}")
    assert loaded.weights_file == path.resolve()
    mapped = {line.split(maxsplit=5)[-1].strip() for line in Path("/proc/self/maps").read_text().splitlines()
              if len(line.split(maxsplit=5)) == 6}
    assert str(path.resolve()) in mapped
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    assert backbones["tiny-biomedclip"].weights_file is None  # random weights: no file


@pytest.mark.parametrize("name", TINY)
def test_local_dir_half_precision_checkpoint_loads_as_float32(backbones, name, tmp_path):
    """A fp16 checkpoint gives the model's own dtype, as a copying load would (the values upcast exactly)."""
    for f in TINY_BACKBONES[name].iterdir():
        shutil.copy(f, tmp_path / f.name)
    state = {k: v.half() if v.is_floating_point() else v for k, v in backbones[name].model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "open_clip_model.safetensors")
    loaded = build_backbone(f"local-dir:{tmp_path}")
    got = loaded.model.state_dict()
    assert all(got[k].dtype == backbones[name].model.state_dict()[k].dtype for k in state)
    assert all(torch.equal(got[k], v.to(got[k].dtype)) for k, v in state.items())


def test_local_dir_checkpoint_of_another_architecture_is_refused(backbones, tmp_path):
    for f in TINY_BACKBONES["tiny-biomedclip"].iterdir():
        shutil.copy(f, tmp_path / f.name)
    state = dict(backbones["tiny-biomedclip"].model.state_dict())
    dropped = next(k for k in state if k.startswith("visual."))
    del state[dropped]
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(BackboneError, match="does not fit the model's architecture") as err:
        build_backbone(f"local-dir:{tmp_path}")
    assert "open_clip_pytorch_model.bin" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("missing", ["open_clip_config.json", "open_clip_pytorch_model.bin", "config.json",
                                     "tokenizer_config.json", "vocab.txt"])
def test_local_dir_missing_file_is_named(tmp_path, missing):
    for f in TINY_BACKBONES["tiny-biomedclip"].iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"")  # never read: validation fails first
    (tmp_path / missing).unlink()
    with pytest.raises(BackboneError, match=missing.replace(".", r"\.")) as err:
        build_backbone(f"local-dir:{tmp_path}")
    assert "open_clip_config.json" in str(err.value)  # says what the folder must contain


def test_local_dir_missing_folder(tmp_path):
    with pytest.raises(BackboneError, match="folder not found"):
        build_backbone(f"local-dir:{tmp_path / 'nowhere'}")


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(BackboneError, match=r"Did you mean 'BiomedCLIP'") as err:
        build_backbone("biomedclip")
    assert all(n in str(err.value) for n in BACKBONE_NAMES) and "local-dir:" in str(err.value)
    with pytest.raises(BackboneError, match=r"Did you mean 'ViT-B/16'"):
        build_backbone("ViT-B-16")


@pytest.mark.skipif(not is_offline_mode(), reason="needs HF_HUB_OFFLINE=1 so that no network is tried")
def test_hub_offline_error_is_clear():
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE is set") as err:
        build_backbone("hf-hub:clip-backbones-tests/no-such-model")
    message = str(err.value)
    assert "clip-backbones-tests/no-such-model" in message and "local-dir:" in message and "\n" not in message


def test_builds_write_nothing_into_the_asset_folders(backbones):
    shipped = {name: sorted(p.name for p in Path(TINY_BACKBONES[name]).iterdir()) for name in TINY}
    assert shipped == {
        "tiny-biomedclip": ["config.json", "open_clip_config.json", "tokenizer_config.json", "vocab.txt"],
        "tiny-clip": ["open_clip_config.json"],
    }


def _fake_hub_repo(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> None:
    """Lay out ``repo_id`` in the Hugging Face cache format (refs/main -> snapshots/<rev>/files)."""
    rev = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snap / name)
        else:
            (snap / name).write_bytes(content)


def test_production_biomedclip_id_loads_from_the_hub_cache(backbones):
    """``BiomedCLIP`` resolves to the real hub id and loads through open_clip's hub path (offline cache here,
    filled with the tiny model's files under the real repository names)."""
    from clip_backbones.factory import BIOMEDCLIP_ID

    cache = Path(os.environ["HF_HUB_CACHE"])
    tiny = backbones["tiny-biomedclip"]
    assets = TINY_BACKBONES["tiny-biomedclip"]
    text_repo = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    cfg = _asset_cfg("tiny-biomedclip")
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = text_repo
    cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = text_repo
    state = {k: v + 0.01 for k, v in tiny.model.state_dict().items()} | {
        k: v for k, v in tiny.model.state_dict().items() if not v.is_floating_point()}
    weights = cache / "weights.bin"
    torch.save(state, weights)
    _fake_hub_repo(cache, BIOMEDCLIP_ID.removeprefix("hf-hub:"),
                   {"open_clip_config.json": json.dumps(cfg).encode(), "open_clip_pytorch_model.bin": weights})
    _fake_hub_repo(cache, text_repo, {f: assets / f for f in ("config.json", "vocab.txt", "tokenizer_config.json")})

    b = build_backbone("BiomedCLIP")
    assert b.family == "hf-bert" and b.context_length == 256 and b.name == "BiomedCLIP"
    assert all(torch.equal(b.model.state_dict()[k], v) for k, v in state.items())
    tokens = b.tokenize(PROMPTS)
    assert torch.equal(tokens, tiny.tokenize(PROMPTS))
    reference = build_backbone("tiny-biomedclip")
    reference.model.load_state_dict(state)
    torch.testing.assert_close(b.encode_text(tokens), reference.encode_text(tokens), atol=0, rtol=0)


def test_build_from_a_run_config(backbones):
    from engine.config import get_cfg_default, merge_from_list

    cfg = get_cfg_default()
    merge_from_list(cfg, ["MODEL.BACKBONE.NAME", "tiny-clip", "USE_CUDA", "False"])
    b = build_backbone(cfg)
    assert b.name == "tiny-clip" and b.family == "openai-clip"
    assert next(b.parameters()).device.type == "cpu"
    tokens = b.tokenize(PROMPTS)
    torch.testing.assert_close(b.encode_text(tokens), backbones["tiny-clip"].encode_text(tokens), atol=0, rtol=0)
