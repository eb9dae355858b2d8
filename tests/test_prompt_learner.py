"""The shared CoOp prompt learner: layouts with real class-name token counts, init, class-specific context."""

from __future__ import annotations

import pytest
import torch

from clip_backbones import build_backbone
from trainers.prompt_learner import PromptLearner, text_features, zeroshot_classifier

NAMES = ["glioma tumor", "pituitary_tumor", "normal brain", "x"]


@pytest.fixture(scope="module", params=["tiny-biomedclip", "tiny-clip"])
def backbone(request: pytest.FixtureRequest):
    return build_backbone(request.param)


def test_init_from_words_reproduces_the_handwritten_prompt(backbone) -> None:
    """With CTX_INIT "a photo of a" the untrained prompt is exactly "a photo of a {class}."."""
    pl = PromptLearner(backbone, NAMES, n_ctx=4, ctx_init="a photo of a")
    assert pl.n_ctx == backbone.num_tokens("a photo of a")
    tokens = backbone.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
    assert torch.equal(pl.tokenized_prompts.cpu(), tokens)
    assert torch.equal(pl(), backbone.token_embedding(tokens))
    with torch.no_grad():
        feats = text_features(backbone, pl(), pl.tokenized_prompts)
    zs = zeroshot_classifier(backbone, NAMES, ["a photo of a {}."])
    torch.testing.assert_close(feats, zs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_class_token_positions_use_real_token_counts(backbone, position: str) -> None:
    n_ctx = 4
    pl = PromptLearner(backbone, NAMES, n_ctx=n_ctx, class_token_position=position)
    start = backbone.prompt_start
    prompts = pl()
    ref = backbone.token_embedding(backbone.tokenize([f"X X X X {n.replace('_', ' ')}." for n in NAMES]))
    for i, name in enumerate(NAMES):
        k = backbone.num_tokens(name.replace("_", " "))
        assert k == pl.name_lens[i] and k >= 1
        name_emb = ref[i, start + n_ctx:start + n_ctx + k]
        rest = ref[i, start + n_ctx + k:]
        p = prompts[i]
        assert torch.equal(p[:start], ref[i, :start])
        if position == "end":
            seq = [pl.ctx, name_emb]
        elif position == "front":
            seq = [name_emb, pl.ctx]
        else:
            seq = [pl.ctx[: n_ctx // 2], name_emb, pl.ctx[n_ctx // 2:]]
        expected = torch.cat([ref[i, :start], *seq, rest])
        assert torch.equal(p, expected), f"{position}: {name}"
    # the real token counts differ between these names, so a 1-token assumption would misplace them
    assert len(set(pl.name_lens)) > 1


def test_class_specific_context_and_gradients(backbone) -> None:
    pl = PromptLearner(backbone, NAMES, n_ctx=2, csc=True)
    assert pl.ctx.shape == (len(NAMES), 2, backbone.text_width)
    feats = text_features(backbone, pl(), pl.tokenized_prompts)
    feats[0].sum().backward()
    assert pl.ctx.grad[0].abs().sum() > 0 and pl.ctx.grad[1:].abs().sum() == 0
    assert all(p.grad is None for p in backbone.parameters())
    assert [n for n, p in pl.named_parameters()] == ["ctx"]
    assert list(pl.state_dict()) == ["ctx"]  # class-name buffers are never checkpointed


def test_generic_context_with_batched_shift(backbone) -> None:
    """``assemble`` accepts per-image contexts [B, C, n_ctx, W] (CoCoOp-style) and matches the loop."""
    pl = PromptLearner(backbone, NAMES, n_ctx=4, class_token_position="middle")
    shift = torch.randn(3, 1, 1, backbone.text_width)
    ctx = pl.ctx.unsqueeze(0).unsqueeze(0) + shift
    batched = pl.assemble(ctx.expand(3, len(NAMES), -1, -1))
    for b in range(3):
        assert torch.allclose(batched[b], pl.assemble(pl.ctx + shift[b, 0]))


def test_bad_position_is_an_error(backbone) -> None:
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        PromptLearner(backbone, NAMES, n_ctx=4, class_token_position="start")
