"""Parity of PubMedCLIP and PMC-CLIP, at full size with random weights, against a plain re-implementation written
here of what the releases compute (BACKBONES.md §7): OpenAI's CLIP ViT-B/32 (QuickGELU, EOT pooling) and PMC-CLIP
(OpenAI ModifiedResNet-50 with attention pooling; BERT-base pooler output @ P; padding to 77 with the attention
mask; logits = exp(4.4292) · cos). The weights are written in the released file formats and loaded by the toolkit's
loader; the reference loads the same files strictly into its own modules. Image and text features agree to float
tolerance, and so do the zero-shot logits.

Full size = the released widths and depths; only PMC-CLIP's BERT vocabulary is the tiny one (158 tokens instead of
30522: the rows of the embedding table never change what a token computes), to keep the files small."""

from __future__ import annotations

import json
import math
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clip_backbones import build_backbone
from clip_backbones.hf_text import HFTextBackbone
from clip_backbones.openai_clip import OpenAIClipBackbone
from clip_backbones.released import ASSETS_DIR, load_pmc_clip

pytestmark = pytest.mark.slow

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the releases' normalisation (OpenAI CLIP's)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["a photo of a glioma tumor.", "a photo of a meningioma tumor.", "a photo of a normal brain.",
           "an mri scan of the brain showing a pituitary tumor with cystic changes."]


# ----------------------------------------------------------------------------- OpenAI CLIP ViT-B/32, plainly
class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(d, 4 * d), gelu=QuickGELU(), c_proj=nn.Linear(4 * d, d)))
        self.ln_2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # [L, N, D]
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class ViT(nn.Module):
    def __init__(self, size: int = 224, patch: int = 32, d: int = 768, layers: int = 12, out: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, d, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d) * d ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn((size // patch) ** 2 + 1, d) * d ** -0.5)
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = Transformer(d, layers, d // 64)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, out) * d ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class OpenAIClip(nn.Module):
    """OpenAI's CLIP ViT-B/32, the module names of its state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = ViT()
        self.transformer = Transformer(512, 12, 8)
        self.token_embedding = nn.Embedding(49408, 512)
        self.positional_embedding = nn.Parameter(torch.randn(77, 512) * 0.01)
        self.ln_final = nn.LayerNorm(512)
        self.text_projection = nn.Parameter(torch.randn(512, 512) * 512 ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = torch.full((77, 77), float("-inf")).triu_(1)
        x = (self.token_embedding(tokens) + self.positional_embedding).transpose(0, 1)
        x = self.ln_final(self.transformer(x, mask).transpose(0, 1))
        return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ self.text_projection


# ------------------------------------------------------------------------------- OpenAI ModifiedResNet, plainly
class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)), ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class AttentionPool2d(nn.Module):
    def __init__(self, spatial: int, d: int, heads: int, out: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial ** 2 + 1, d) / d ** 0.5)
        self.k_proj, self.q_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.c_proj = nn.Linear(d, out)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        x = torch.cat([x.mean(1, keepdim=True), x], 1) + self.positional_embedding
        n, length, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, t.shape[1], h, d // h).transpose(1, 2)

        q = split(self.q_proj(x[:, :1]))  # only the mean token's output is used: its query alone
        att = (q @ split(self.k_proj(x)).transpose(-1, -2) / math.sqrt(d // h)).softmax(-1)
        return self.c_proj((att @ split(self.v_proj(x))).transpose(1, 2).reshape(n, d))


class ModifiedResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width: int = 64, heads: int = 8, out: int = 768, size: int = 224) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2)
        self.conv2, self.bn2 = nn.Conv2d(width // 2, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2)
        self.conv3, self.bn3 = nn.Conv2d(width // 2, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)] + [Bottleneck(planes * 4, planes)
                                                                          for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4
        self.attnpool = AttentionPool2d(size // 32, width * 32, heads, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in (1, 2, 3):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _logits(scale: torch.Tensor | float, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


# ----------------------------------------------------------------------------------------------------- tests
def test_pubmedclip_full_size_matches_openai_clip_vit_b32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = OpenAIClip().eval()
    file = tmp_path / "PubMedCLIP_ViT32.pth"
    torch.save({"epoch": 1, "state_dict": ref.state_dict()}, file)

    b = build_backbone(f"pubmedclip:{file}")
    assert isinstance(b, OpenAIClipBackbone) and b.embed_dim == 512 and b.num_patches == 49
    assert b.mean == pytest.approx(OPENAI_MEAN) and b.std == pytest.approx(OPENAI_STD) and b.image_size == 224
    assert float(b.logit_scale) == pytest.approx(1 / 0.07)  # the checkpoint's own
    tokens = b.tokenize(PROMPTS)
    import open_clip

    assert torch.equal(tokens, open_clip.tokenize(PROMPTS))  # OpenAI's BPE, 77 tokens
    with torch.no_grad():
        image_ref, text_ref = ref.visual(_images()), ref.encode_text(tokens)
        image, _ = b.encode_image(_images())
        text = b.encode_text_from_embeddings(b.token_embedding(tokens), tokens)
    torch.testing.assert_close(image, image_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(text, text_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_logits(b.logit_scale, image, text), _logits(ref.logit_scale.exp(), image_ref, text_ref),
                               atol=1e-3, rtol=1e-4)


def test_pmc_clip_full_size_matches_the_release(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    folder = tmp_path / "pmc"
    folder.mkdir()
    tiny = ASSETS_DIR / "tiny-pmc-clip"
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tiny / f, folder / f)
    bert_cfg = json.loads((tiny / "config.json").read_text()) | {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "initializer_range": 0.02}  # BERT-base, as BiomedBERT
    (folder / "config.json").write_text(json.dumps(bert_cfg))

    resnet = ModifiedResNet().eval()
    _randomise_bn(resnet, gen)
    bert = BertModel(BertConfig(**bert_cfg), add_pooling_layer=True).eval()
    P = torch.randn(768, 768, generator=gen) / 768 ** 0.5
    torch.save(resnet.state_dict(), folder / "image_encoder(resnet50).pth")
    torch.save(bert.state_dict(), folder / "text_encoder.pth")
    torch.save(P, folder / "text_projection_layer.pth")

    b = build_backbone(f"pmc-clip:{folder}")
    assert isinstance(b, HFTextBackbone) and b.embed_dim == 768 and b.num_patches == 49 and b.context_length == 77
    assert b.mean == pytest.approx(OPENAI_MEAN) and b.std == pytest.approx(OPENAI_STD)
    assert float(b.logit_scale) == pytest.approx(math.exp(4.4292))
    model, _, _ = load_pmc_clip(folder)  # the loader itself: counts the parameters of the release's architecture
    assert sum(p.numel() for p in model.visual.parameters()) == sum(p.numel() for p in resnet.parameters())

    tok = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    enc = tok(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    tokens = b.tokenize(PROMPTS)
    assert torch.equal(tokens, enc["input_ids"])
    with torch.no_grad():
        image_ref = resnet(_images())
        text_ref = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output @ P
        image, patches = b.encode_image(_images())
        text = b.encode_text_from_embeddings(b.token_embedding(tokens), tokens)
    torch.testing.assert_close(image, image_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(text, text_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_logits(b.logit_scale, image, text), _logits(math.exp(4.4292), image_ref, text_ref),
                               atol=1e-3, rtol=1e-4)
    assert patches.shape == (2, 49, 768)
