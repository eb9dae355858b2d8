"""Teacher prompt bank: loading (JSON and released modules, never executed), encoding, selection, download script."""


import importlib.util
import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trainers.teacher as teacher
from clip_backbones import build_backbone
from trainers.teacher import (
    PromptBankError,
    _select_prompts,
    encode_prompt_bank,
    load_prompt_bank,
    parse_prompt_module,
    prompt_scores,
    select_prompts,
    selected_teacher,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "download_prompts.py"

BANK = {
    "glioma tumor": ["a glioma in the brain.", "an mri of a glioma.", "an irregular brain mass.", "a glioma scan."],
    "meningioma tumor": ["a meningioma.", "an mri showing a meningioma.", "a dural tumor.", "a round mass."],
    "no tumor": ["a normal brain mri.", "healthy brain tissue.", "no tumor in the brain.", "a clear scan."],
}


def _module_text(name: str, bank: dict, marker: Path) -> str:
    """A released-style module: imports, side effects, functions and the bank dict among them."""
    return (
        "import os\n"
        "from pathlib import Path\n"
        f"open({str(marker)!r}, 'w').write('executed')\n"
        f"os.system('touch {marker}')\n"
        "OTHER = {'a': 1}\n"
        f"{name} = {bank!r}\n"
        "def helper(x):\n"
        "    return [s.format(x) for s in ['{}']]\n"
        "N = len(helper('y'))\n"
    )


# --------------------------------------------------------------------------------------------- loading


def test_load_json(tmp_path: Path) -> None:
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(BANK))
    assert load_prompt_bank(path) == BANK
    assert load_prompt_bank(str(path)) == BANK


@pytest.mark.parametrize("name", ["BIOMEDCOOP_TEMPLATES", "PROMPT_TEMPLATES"])
def test_load_module_without_executing_it(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "executed.txt"
    path = tmp_path / "prompt_templates.py"
    path.write_text(_module_text(name, BANK, marker))
    assert load_prompt_bank(path) == BANK
    assert parse_prompt_module(path.read_text(), "x.py") == BANK
    assert not marker.exists(), "the module must be parsed, never executed"


def test_module_name_preference_and_single_dict(tmp_path: Path) -> None:
    other = {"x": ["a sentence."]}
    text = f"EXTRA = {other!r}\nPROMPT_TEMPLATES = {other!r}\nBIOMEDCOOP_TEMPLATES = {BANK!r}\n"
    assert parse_prompt_module(text, "m.py") == BANK
    # No preferred name: the single dict of sentence lists (non-bank dicts are ignored).
    assert parse_prompt_module(f"CFG = {{'lr': 0.1}}\nMY_BANK: dict = {BANK!r}\n", "m.py") == BANK
    with pytest.raises(PromptBankError, match=r"m\.py.*several dicts.*'A'.*'B'"):
        parse_prompt_module(f"A = {BANK!r}\nB = {other!r}\n", "m.py")


@pytest.mark.parametrize(
    ("filename", "content", "problem"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("list.json", json.dumps([["a"]]), "expected a dict"),
        ("empty.json", "{}", "empty"),
        ("empty_class.json", json.dumps({"a": ["x."], "b": []}), "'b' has no sentences"),
        ("not_list.json", json.dumps({"a": "a sentence."}), "'a': value is a str"),
        ("not_str.json", json.dumps({"a": ["x.", 3]}), "'a': item 1 is a int"),
        ("syntax.py", "BIOMEDCOOP_TEMPLATES = {'a': [", "not valid Python"),
        ("no_dict.py", "import os\nX = 3\n", "no top-level dict"),
        ("call.py", "BIOMEDCOOP_TEMPLATES = {'a': [str(1)]}\n", "not a plain literal"),
        ("int_key.py", "PROMPT_TEMPLATES = {1: ['x.']}\n", "key 1 is a int"),
    ],
)
def test_malformed_banks_name_the_file(tmp_path: Path, filename: str, content: str, problem: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    with pytest.raises(PromptBankError) as info:
        load_prompt_bank(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_names_path_and_command(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "bank.json"
    with pytest.raises(FileNotFoundError) as info:
        load_prompt_bank(path)
    assert isinstance(info.value, PromptBankError)
    assert str(path) in str(info.value) and "python scripts/download_prompts.py" in str(info.value)


# --------------------------------------------------------------------------------------------- encoding


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("tiny-biomedclip")


def test_encode_matches_untrimmed_reference(backbone) -> None:
    classes = ["no tumor", "glioma tumor"]
    feats, means = encode_prompt_bank(backbone, BANK, classes, n_prompts=3, batch_size=4)
    E = backbone.embed_dim
    assert feats.shape == (2, 3, E) and means.shape == (2, E)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 3), atol=1e-6)
    assert torch.allclose(means.norm(dim=-1), torch.ones(2), atol=1e-6)
    sentences = [s for c in classes for s in BANK[c][:3]]
    with torch.no_grad():
        ref = F.normalize(backbone.encode_text(backbone.tokenize(sentences)), dim=-1).reshape(2, 3, E)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(means, F.normalize(ref.mean(dim=1), dim=-1), atol=1e-5, rtol=0)
    assert feats.device == means.device == backbone.logit_scale.device
    assert not feats.requires_grad


def test_encode_runs_in_eval_mode_and_restores_mode(backbone) -> None:
    classes = list(BANK)
    eval_feats, _ = encode_prompt_bank(backbone, BANK, classes, n_prompts=4)
    backbone.train()
    try:
        train_feats, _ = encode_prompt_bank(backbone, BANK, classes, n_prompts=4, batch_size=5)
        assert all(m.training for m in backbone.modules())
    finally:
        backbone.eval()
    torch.testing.assert_close(train_feats, eval_feats, atol=1e-5, rtol=0)


def test_encode_class_lookup_and_errors(backbone) -> None:
    bank = {**BANK, "pituitary_tumor": ["x."] * 4}
    # "_" falls back to " ", an exact key wins.
    a, _ = encode_prompt_bank(backbone, BANK, ["no_tumor"], n_prompts=2)
    b, _ = encode_prompt_bank(backbone, BANK, ["no tumor"], n_prompts=2)
    torch.testing.assert_close(a, b)
    c, _ = encode_prompt_bank(backbone, bank, ["pituitary_tumor"], n_prompts=1)
    assert c.shape[:2] == (1, 1)

    with pytest.raises(PromptBankError) as info:
        encode_prompt_bank(backbone, BANK, ["glioma tumor", "Glioma tumor", "pituitary", "normal"], n_prompts=2)
    msg = str(info.value)
    assert "3 of 4 classes" in msg and all(repr(n) in msg for n in ("Glioma tumor", "pituitary", "normal"))
    assert "'glioma tumor'" in msg  # a few available keys are shown
    with pytest.raises(PromptBankError, match=r"N_PROMPTS = 5.*'no tumor' has 4"):
        encode_prompt_bank(backbone, BANK, ["no tumor"], n_prompts=5)


# --------------------------------------------------------------------------------------------- selection


def _known_scores(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [1, 2] and a bank [1, T, 2] (float64) whose raw scores f·t_i are exactly ``x`` (|x| ≤ 1)."""
    x = x.double()
    bank = torch.stack([x, (1 - x**2).clamp_min(0).sqrt()], dim=-1)[None]
    return torch.tensor([[1.0, 0.0]], dtype=torch.float64), bank


def _released_selection(f: torch.Tensor, bank: torch.Tensor, s: float, tau: float) -> torch.Tensor:
    """The released loop, written out per template (SPEC §2.3, no guard)."""
    scores = torch.stack([(s * f @ bank[:, i].T).max(dim=1).values.mean() for i in range(bank.shape[1])])
    m = torch.median(scores)
    d = torch.median((scores - m).abs())
    z = (scores - m) / d
    return ((z - z.mean()) / z.std()).abs() <= tau


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [1.0, 1.25, 1.5, 2.0])
def test_selection_equals_plain_rule_and_release(seed: int, tau: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(50, generator=g) * 1.6 - 0.8
    f, bank = _known_scores(x)
    s = 4.0
    torch.testing.assert_close(prompt_scores(f, bank, s), s * x.double(), atol=1e-12, rtol=0)
    mask = select_prompts(f, bank, s, tau)
    score = s * x.double()
    plain = ((score - score.mean()) / score.std()).abs() <= tau
    assert mask.dtype == torch.bool and mask.shape == (50,)
    assert torch.equal(mask, plain)
    assert torch.equal(mask, _released_selection(f, bank, s, tau))
    if tau <= 1.5:
        assert 0 < int(mask.sum()) < 50, "some prompts must be dropped"

    # Batched, several classes, a 0-d tensor scale: still the released selection.
    feats = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    tbank = F.normalize(torch.randn(5, 50, 16, generator=g), dim=-1)
    mask2, fell_back = _select_prompts(feats, tbank, torch.tensor(20.0), tau)
    assert not bool(fell_back)
    assert torch.equal(mask2, _released_selection(feats, tbank, 20.0, tau))


def test_lower_median_semantics() -> None:
    # Even length: torch.median takes the lower of the two middle values (0 here, not 0.5). So MAD = 0 and the
    # selection falls back, although with the averaged median (m = 0.5, MAD = 0.5) it would drop the last prompt.
    score = torch.tensor([0.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    assert torch.median(score).item() == 0.0
    assert torch.median((score - 0.0).abs()).item() == 0.0
    f, bank = _known_scores(score / 2)
    mask, fell_back = _select_prompts(f, bank, 2.0, 1.0)
    assert bool(fell_back) and mask.all()
    # [0, 1, 2, 2]: lower median 1, MAD = lower median of [1, 0, 1, 1] = 1 > 0 → the normal path.
    f, bank = _known_scores(torch.tensor([0.0, 1.0, 2.0, 2.0]) / 2)
    mask, fell_back = _select_prompts(f, bank, 2.0, 1.0)
    assert not bool(fell_back)
    assert mask.tolist() == [False, True, True, True]  # u = [-1.31, -0.26, 0.78, 0.78]


def test_mad_zero_falls_back_and_warns_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(teacher, "_fallback_warned", False)
    g = torch.Generator().manual_seed(3)
    bank = F.normalize(torch.randn(3, 10, 8, generator=g), dim=-1)
    bank[:, 1:6] = bank[:, :1]  # 6 of 10 prompts identical → MAD = 0
    feats = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    with caplog.at_level(logging.WARNING, logger="trainers.teacher"):
        mask = select_prompts(feats, bank, 10.0, 1.5)
        mask_again = select_prompts(feats, bank, 10.0, 1.5)
    assert mask.dtype == torch.bool and mask.shape == (10,) and mask.all() and mask_again.all()
    records = [r for r in caplog.records if "fell back to all 10 prompts" in r.getMessage()]
    assert len(records) == 1
    t_sel = selected_teacher(bank, mask)
    assert torch.isfinite(t_sel).all()
    # Non-finite inputs: all prompts, flagged, no exception.
    mask_nan, fell_back = _select_prompts(torch.full((2, 8), float("nan")), bank, 10.0, 1.5)
    assert mask_nan.all() and bool(fell_back)


def test_selected_teacher_hand_case() -> None:
    bank = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
                         [[0.6, 0.8], [0.6, -0.8], [0.0, 1.0]]])
    out = selected_teacher(bank, torch.tensor([True, True, False]))
    s = 2**-0.5
    torch.testing.assert_close(out, torch.tensor([[s, s], [1.0, 0.0]]))
    out = selected_teacher(bank, torch.tensor([False, False, True]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))


# --------------------------------------------------------------------------------------------- download script


@pytest.fixture()
def script():
    spec = importlib.util.spec_from_file_location("download_prompts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_script_writes_json(script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "executed.txt"
    text = _module_text("BIOMEDCOOP_TEMPLATES", BANK, marker)
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(text.encode("utf-8"))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    out = tmp_path / "prompts" / "bank.json"
    assert script.main(["--url", "https://example.org/p.py", "--out", str(out)]) == 0
    assert calls == [("https://example.org/p.py", script.TIMEOUT_S)]
    assert json.loads(out.read_text()) == BANK
    assert load_prompt_bank(out) == BANK
    assert not marker.exists()
    stdout = capsys.readouterr().out
    assert "3 classes" in stdout and "4-4 sentences" in stdout and str(out) in stdout
    assert not list(out.parent.glob(".*tmp"))


def test_download_script_offline(script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "bank.json"
    assert script.main(["--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download")
    assert "Name or service not known" in lines[0] and "--from-file" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


def test_download_script_from_file(script, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "prompt_templates.py"
    src.write_text(_module_text("PROMPT_TEMPLATES", BANK, tmp_path / "m"))
    out = tmp_path / "bank.json"
    assert script.main(["--from-file", str(src), "--out", str(out)]) == 0
    assert load_prompt_bank(out) == BANK
    src.write_text("X = 1\n")
    assert script.main(["--from-file", str(src), "--out", str(tmp_path / "other.json")]) == 1
    assert "no top-level dict" in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()


def test_synthmed_bank_encodes_with_the_tiny_tokenizer(backbone) -> None:
    from synth.synthmed import SYNTHMED_CLASSES, synthmed_prompt_bank

    bank = synthmed_prompt_bank()
    tokens = backbone.tokenize([s for sentences in bank.values() for s in sentences])
    assert not (tokens == backbone.tokenizer.tokenizer.unk_token_id).any()
    assert bool((tokens[:, -1] == 0).all()), "no sentence may be truncated"
    feats, means = encode_prompt_bank(backbone, bank, SYNTHMED_CLASSES, n_prompts=50)
    assert feats.shape == (6, 50, backbone.embed_dim) and torch.isfinite(feats).all()


def test_selection_ignores_autocast_and_half_inputs() -> None:
    g = torch.Generator().manual_seed(5)
    feats = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    bank = F.normalize(torch.randn(4, 50, 16, generator=g), dim=-1)
    ref = prompt_scores(feats, bank, 30.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = prompt_scores(feats, bank, 30.0)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, ref)
    assert prompt_scores(feats.bfloat16(), bank.bfloat16(), 30.0).dtype == torch.float32


def test_module_with_string_concatenation_parses_without_running(tmp_path: Path) -> None:
    from trainers.teacher import parse_prompt_module

    marker = tmp_path / "ran"
    text = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
            "BIOMEDCOOP_TEMPLATES = {\n  'normal brain': ['a scan ' + 'of a healthy brain.', 'clear' ' image.'],\n}\n")
    assert parse_prompt_module(text, "m.py") == {"normal brain": ["a scan of a healthy brain.", "clear image."]}
    assert not marker.exists()
    with pytest.raises(PromptBankError, match="only strings"):
        parse_prompt_module("PROMPT_TEMPLATES = {'a': ['x' + 1]}\n", "m.py")
