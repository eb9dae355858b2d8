"""The teacher prompt bank shared by BiomedCoOp and OGKD: load, encode once, select per batch.

The bank holds LLM-written sentences per class (BiomedCoOp's ``BIOMEDCOOP_TEMPLATES``, the same sentences as
OGKD's ``PROMPT_TEMPLATES``; SPEC §1.6, §2.1, §7). It is read from JSON ``{classname: [sentences]}`` or from the
released Python module, which is parsed with :mod:`ast` and never imported or executed.

    bank = load_prompt_bank("prompts/biomedcoop.json")          # python scripts/download_prompts.py writes it
    feats, means = encode_prompt_bank(backbone, bank, classnames, n_prompts=50)   # once per run
    mask, fell_back = _select_prompts(image_features, feats, backbone.logit_scale, tau)  # per step, no sync
    t_sel = selected_teacher(feats, mask)

:func:`select_prompts` equals the released selection (SPEC §2.3) on identical inputs, except that it never
returns an empty mask: when MAD = 0, the selection is empty or the scores are not finite, every prompt is kept
(SPEC §2.5, "fixed") and one warning is logged per process.
"""

from __future__ import annotations

import ast
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clip_backbones import Backbone
from engine.registry import suggest
from engine.utils import track

logger = logging.getLogger(__name__)

BANK_VARIABLE_NAMES = ("BIOMEDCOOP_TEMPLATES", "PROMPT_TEMPLATES")  # preferred dict names in a released module
DEFAULT_PROMPT_BANK = Path(__file__).resolve().parents[1] / "prompts" / "biomedcoop.json"
DOWNLOAD_COMMAND = "python scripts/download_prompts.py"  # writes DEFAULT_PROMPT_BANK
_MAX_LISTED = 5  # problems / keys quoted in one error message

_fallback_warned = False  # select_prompts / warn_selection_fallback log the fallback once per process


class PromptBankError(ValueError):
    """A prompt bank is malformed or does not cover the requested classes; the message names file and problem."""


class PromptBankNotFoundError(PromptBankError, FileNotFoundError):
    """The prompt bank file does not exist; the message names the path and the command that creates it."""


# --------------------------------------------------------------------------------------------- loading


def _preview(items: Sequence[str], n: int = _MAX_LISTED) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", … ({len(items) - n} more)" if len(items) > n else "")


def validate_prompt_bank(obj: Any, source: str) -> dict[str, list[str]]:
    """Check that ``obj`` is ``{str: non-empty list of non-empty str}`` and return it as a plain dict.

    Raises:
        PromptBankError: naming ``source`` and every problem found (the first few quoted).
    """
    if not isinstance(obj, dict):
        raise PromptBankError(f"prompt bank {source}: expected a dict {{classname: [sentences]}}, "
                              f"got {type(obj).__name__}")
    if not obj:
        raise PromptBankError(f"prompt bank {source} is empty (no classes)")
    problems = []
    for key, value in obj.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is a {type(key).__name__}, not a string")
        elif not isinstance(value, list):
            problems.append(f"class {key!r}: value is a {type(value).__name__}, not a list of sentences")
        elif not value:
            problems.append(f"class {key!r} has no sentences")
        else:
            bad = [i for i, s in enumerate(value) if not isinstance(s, str)]
            if bad:
                problems.append(f"class {key!r}: item {bad[0]} is a {type(value[bad[0]]).__name__}, not a string"
                                + (f" ({len(bad)} non-string items)" if len(bad) > 1 else ""))
            else:
                empty = [i for i, s in enumerate(value) if not s.strip()]
                if empty:
                    problems.append(f"class {key!r}: sentence {empty[0]} is empty"
                                    + (f" ({len(empty)} of {len(value)} are empty)" if len(empty) > 1 else ""))
    if problems:
        more = f"; … ({len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise PromptBankError(f"prompt bank {source} is malformed: " + "; ".join(problems[:_MAX_LISTED]) + more)
    return {key: list(value) for key, value in obj.items()}


def _warn_duplicate_keys(keys: Sequence[Any], source: str) -> None:
    seen, dups = set(), []
    for key in keys:
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    if dups:
        logger.warning("prompt bank %s repeats the class key(s) %s; the last occurrence is used",
                       source, _preview(dups))


def _assigned_dicts(tree: ast.Module) -> list[tuple[str, ast.Dict]]:
    """(name, dict node) for every top-level ``NAME = {...}`` / ``NAME: T = {...}``, in source order."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            found += [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict)
              and isinstance(node.target, ast.Name)):
            found.append((node.target.id, node.value))
    return found


def _literal(node: ast.AST) -> Any:
    """``ast.literal_eval`` plus string concatenation with ``+`` (``"a " + "b"``), which some hand-written
    prompt modules use; still nothing is executed."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        raise ValueError(f"only strings can be concatenated in a prompt bank (line {node.lineno})")
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError(f"'**' unpacking is not supported in a prompt bank (line {node.lineno})")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def _is_bank_literal(node: ast.Dict) -> bool:
    try:
        value = _literal(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return bool(value) and all(
        isinstance(k, str) and isinstance(v, list) and v and all(isinstance(s, str) for s in v)
        for k, v in value.items()
    )


def parse_prompt_module(text: str, source: str) -> dict[str, list[str]]:
    """Read the prompt dict from the source text of a released Python module, without executing it.

    The dict assigned to ``BIOMEDCOOP_TEMPLATES`` or ``PROMPT_TEMPLATES`` (in that order of preference; the last
    assignment of that name wins, as in Python) is evaluated with :func:`ast.literal_eval`. Without either name,
    the module must hold exactly one top-level assignment of a dict literal of lists of strings.

    Args:
        text: the module's source code.
        source: where it came from (a path or URL), quoted in errors.
    Raises:
        PromptBankError: syntax error, no (or several candidate) dicts, a non-literal value, or a malformed bank.
    """
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as err:
        raise PromptBankError(f"prompt bank {source} is not valid Python (line {err.lineno}: {err.msg})") from err
    assigned = _assigned_dicts(tree)
    chosen: tuple[str, ast.Dict] | None = None
    for name in BANK_VARIABLE_NAMES:
        matches = [a for a in assigned if a[0] == name]
        if matches:
            chosen = matches[-1]
            break
    if chosen is None:
        candidates = [a for a in assigned if _is_bank_literal(a[1])]
        if not candidates:
            raise PromptBankError(
                f"prompt bank {source}: no top-level dict of sentence lists found; expected "
                f"{' or '.join(BANK_VARIABLE_NAMES)} = {{classname: [sentences, ...], ...}}"
            )
        if len({name for name, _ in candidates}) > 1:
            raise PromptBankError(
                f"prompt bank {source}: several dicts could be the bank ({_preview([n for n, _ in candidates])}); "
                f"name the bank {BANK_VARIABLE_NAMES[0]} or convert it to JSON"
            )
        chosen = candidates[-1]
    name, node = chosen
    try:
        value = _literal(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise PromptBankError(
            f"prompt bank {source}: {name} (line {node.lineno}) is not a plain literal ({err}); only strings, "
            "lists and dicts are read, nothing is executed"
        ) from err
    _warn_duplicate_keys([k.value if isinstance(k, ast.Constant) else None for k in node.keys], f"{source} ({name})")
    return validate_prompt_bank(value, f"{source} ({name})")


def parse_prompt_json(text: str, source: str) -> dict[str, list[str]]:
    """Read a JSON prompt bank ``{classname: [sentences]}`` from text (``source`` is quoted in errors)."""
    keys: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys[:] = [k for k, _ in pairs]  # the outermost object is decoded last: its keys are what remains
        return dict(pairs)

    try:
        obj = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as err:
        raise PromptBankError(f"prompt bank {source} is not valid JSON (line {err.lineno}: {err.msg})") from err
    _warn_duplicate_keys(keys, source)
    return validate_prompt_bank(obj, source)


def resolve_bank_path(value: str, dataset_root: str) -> Path:
    """A ``PROMPT_BANK`` config value as a path: ``{root}`` → DATASET.ROOT; a relative path is taken from the
    working directory, else from the repository root."""
    path = Path(value.replace("{root}", dataset_root)).expanduser()
    repo = DEFAULT_PROMPT_BANK.parents[1]
    if not path.is_absolute() and not path.exists() and (repo / path).exists():
        return repo / path
    return path


def load_prompt_bank(path: str | Path) -> dict[str, list[str]]:
    """Load a prompt bank ``{classname: [sentences]}`` from JSON or from a released Python module.

    ``.json`` files are read as JSON, ``.py`` files with :func:`parse_prompt_module` (parsed, never executed);
    any other suffix is read as JSON when its text starts with ``{``, else as a module.

    Raises:
        PromptBankNotFoundError: the file does not exist (the message gives the command that creates the default).
        PromptBankError: unreadable or malformed file (the message names the file and the problem).
    """
    path = Path(path)
    if not path.exists():
        hint = (f"create it with: {DOWNLOAD_COMMAND}" if path.resolve() == DEFAULT_PROMPT_BANK
                else f"create it with: {DOWNLOAD_COMMAND} --out {path}")
        raise PromptBankNotFoundError(f"prompt bank not found: {path}; {hint} (or place BiomedCoOp's "
                                      "trainers/prompt_templates.py or a JSON {classname: [sentences]} there)")
    if not path.is_file():
        raise PromptBankError(f"prompt bank {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptBankError(f"cannot read prompt bank {path}: {err}") from err
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix != ".py" and text.lstrip().startswith("{")):
        return parse_prompt_json(text, str(path))
    return parse_prompt_module(text, str(path))


# --------------------------------------------------------------------------------------------- encoding


def bank_keys_for(bank: dict[str, list[str]], classnames: Sequence[str], n_prompts: int) -> list[str]:
    """The bank key of each class: the exact name, else the name with "_" replaced by " ".

    Raises:
        PromptBankError: listing every class missing from the bank, or every class with fewer than ``n_prompts``.
    """
    keys, missing = [], []
    for name in classnames:
        if name in bank:
            keys.append(name)
        elif name.replace("_", " ") in bank:
            keys.append(name.replace("_", " "))
        else:
            missing.append(name)
    if missing:
        available = sorted(bank)
        hints = "".join(f" For {m!r}:{hint}" for m in missing[:_MAX_LISTED] if (hint := suggest(m, available, n=1)))
        raise PromptBankError(
            f"prompt bank has no sentences for {len(missing)} of {len(classnames)} classes: "
            f"{', '.join(repr(m) for m in missing)} (keys are case-sensitive; '_' is also tried as ' '). "
            f"The bank has {len(available)} classes, e.g. {_preview(available)}.{hints}"
        )
    short = [(name, key) for name, key in zip(classnames, keys) if len(bank[key]) < n_prompts]
    if short:
        listed = ", ".join(f"{key!r} has {len(bank[key])}" for _, key in short)
        raise PromptBankError(
            f"N_PROMPTS = {n_prompts} sentences per class requested, but the prompt bank has fewer for "
            f"{len(short)} class(es): {listed}; lower N_PROMPTS or add sentences"
        )
    return keys


@torch.no_grad()
def encode_prompt_bank(
    backbone: Backbone,
    bank: dict[str, list[str]],
    classnames: Sequence[str],
    n_prompts: int,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Encode the first ``n_prompts`` sentences of every class once, batched (SPEC §1.6, §2.1).

    The text tower runs in eval mode (no dropout; the previous train / eval flags are restored) through the
    trimmed path ``encode_text_from_embeddings(token_embedding(tokens), tokens)``. Sentences are encoded in
    order of token length, so each batch is trimmed tightly; results are put back in bank order.

    Args:
        backbone: the (frozen) backbone that encodes the teacher text.
        bank: ``{classname: [sentences]}`` from :func:`load_prompt_bank`.
        classnames: C class names in label order; looked up exactly, else with "_" replaced by " ".
        n_prompts: T, sentences used per class (the first T, in order).
        batch_size: sentences per forward pass.
        progress: show a progress bar over the sentences (a log line reports the time in any case).
    Returns:
        (Tensor[C, T, E] L2-normalised per-sentence features,
         Tensor[C, E] class means t̄_c = normalize(mean_i t_{c,i})), on the backbone's device.
    Raises:
        PromptBankError: classes missing from the bank (all listed) or with fewer than ``n_prompts`` sentences.
        ValueError: ``n_prompts`` or ``batch_size`` below 1, or no classes.
    """
    if n_prompts < 1 or batch_size < 1:
        raise ValueError(f"n_prompts and batch_size must be ≥ 1, got n_prompts={n_prompts}, batch_size={batch_size}")
    if not classnames:
        raise ValueError("encode_prompt_bank needs at least one class name")
    start = time.perf_counter()
    keys = bank_keys_for(bank, classnames, n_prompts)
    sentences = [s for key in keys for s in bank[key][:n_prompts]]
    tokens = backbone.tokenize(sentences)  # [C*T, L] on the CPU
    order = torch.argsort((tokens != 0).sum(dim=1), stable=True)  # similar lengths together: tight trimming

    modes = {m: m.training for m in backbone.modules()}
    backbone.eval()
    try:
        chunks = []
        starts = range(0, len(sentences), batch_size)
        for i in track(starts, total=len(sentences), desc="encode teacher bank", unit="sentences", bar=progress,
                       size=lambda i: min(batch_size, len(sentences) - i), summary=False):
            chunk = tokens[order[i:i + batch_size]]
            chunks.append(backbone.encode_text_from_embeddings(backbone.token_embedding(chunk), chunk))
    finally:
        for module, training in modes.items():
            module.training = training
    feats = torch.cat(chunks)
    feats = torch.empty_like(feats).index_copy_(0, order.to(feats.device), feats)  # back to bank order
    feats = F.normalize(feats, dim=-1).reshape(len(keys), n_prompts, -1)
    means = F.normalize(feats.mean(dim=1), dim=-1)
    logger.info("teacher prompt bank: %d classes x %d sentences (%d-d) encoded in %.2fs on %s",
                len(keys), n_prompts, feats.shape[-1], time.perf_counter() - start, feats.device)
    return feats, means


# --------------------------------------------------------------------------------------------- selection


def prompt_scores(image_features: Tensor, bank: Tensor, logit_scale: float | Tensor) -> Tensor:
    """score_i = mean_b max_c s·f_b·t_{c,i} (SPEC §2.3 step 1).

    Args:
        image_features: Tensor[B, E], used as given (callers pass L2-normalised features).
        bank: Tensor[C, T, E], L2-normalised per-sentence features.
        logit_scale: s, a float or a 0-d tensor.
    Returns:
        Tensor[T], in float32 at least (half-precision inputs are upcast and autocast is off here, so a mixed-
        precision step selects the same prompts as the fp32 release).
    """
    C, T, E = bank.shape
    dtype = torch.promote_types(torch.promote_types(image_features.dtype, bank.dtype), torch.float32)
    with torch.autocast(device_type=bank.device.type, enabled=False):
        sims = (image_features.to(dtype) @ bank.to(dtype).reshape(C * T, E).T).reshape(-1, C, T)  # [B, C, T]
        return (logit_scale * sims).amax(dim=1).mean(dim=0)


@torch.no_grad()
def _select_prompts(
    image_features: Tensor, bank: Tensor, logit_scale: float | Tensor, tau: float
) -> tuple[Tensor, Tensor]:
    """The prompt selection of :func:`select_prompts` without any host sync or logging.

    Returns:
        (BoolTensor[T] mask, BoolTensor[] ``fell_back``: True when all prompts were kept because MAD = 0, the
        selection was empty or something was not finite). Both on the bank's device.
    """
    score = prompt_scores(image_features, bank, logit_scale)
    m = torch.median(score)  # torch's lower median, as the release
    d = torch.median((score - m).abs())  # MAD, lower median
    z = (score - m) / d
    u = (z - z.mean()) / z.std()  # unbiased std
    keep = u.abs() <= tau
    ok = (d > 0) & keep.any() & torch.isfinite(u).all()
    fell_back = ~ok
    return torch.where(fell_back, torch.ones_like(keep), keep), fell_back


def warn_selection_fallback(n_prompts: int) -> None:
    """Log the selection-fallback warning, once per process (later calls do nothing)."""
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        logger.warning("teacher prompt selection fell back to all %d prompts (MAD = 0 or empty selection); "
                       "further fallbacks are not logged", n_prompts)


def select_prompts(image_features: Tensor, bank: Tensor, logit_scale: float | Tensor, tau: float) -> Tensor:
    """Outlier-pruned teacher prompt selection (SPEC §2.3, with the §2.5 fix).

    score_i = mean_b max_c s·f_b·t_{c,i}; m = lower median(score); d = lower median|score − m|;
    z = (score − m)/d; keep_i = |(z_i − mean z)/std z| ≤ tau (unbiased std). Equal to the released code on
    identical inputs, except: when d = 0, the selection is empty or a value is not finite, all prompts are kept
    and a warning is logged (once per process). Training loops should call :func:`_select_prompts`, which never
    syncs with the device, and report its ``fell_back`` flag themselves (:func:`warn_selection_fallback`).

    Args:
        image_features: Tensor[B, E], used as given (pass L2-normalised features).
        bank: Tensor[C, T, E], L2-normalised per-sentence teacher features.
        logit_scale: s = exp(logit_scale), a float or a 0-d tensor.
        tau: the threshold TAU.
    Returns:
        BoolTensor[T], never all False.
    """
    mask, fell_back = _select_prompts(image_features, bank, logit_scale, tau)
    if not _fallback_warned and bool(fell_back):  # syncs only until the first fallback has been logged
        warn_selection_fallback(mask.numel())
    return mask


def selected_teacher(bank: Tensor, mask: Tensor) -> Tensor:
    """t_c^sel = normalize(mean over kept i of t_{c,i}), as a masked sum (no boolean indexing, no sync).

    Args:
        bank: Tensor[C, T, E].
        mask: BoolTensor[T] with at least one True (as :func:`select_prompts` returns).
    Returns:
        Tensor[C, E], L2-normalised.
    """
    weights = mask.to(bank.dtype)
    mean = (bank * weights[None, :, None]).sum(dim=1) / weights.sum()
    return F.normalize(mean, dim=-1)
