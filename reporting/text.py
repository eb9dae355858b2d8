"""Text helpers shared by the tables and figures: seeds, K, trainer labels, marks, LaTeX escaping."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from reporting.runs import ALL_SHOTS

NO_RUN = "—"


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(seeds)))


def _seed_span(seeds: Iterable[int]) -> str:
    """``seed 1``, ``seeds 1–3`` (consecutive), ``seeds 1, 3``."""
    s = sorted(set(seeds))
    if len(s) == 1:
        return f"seed {s[0]}"
    if len(s) >= 3 and s == list(range(s[0], s[-1] + 1)):
        return f"seeds {s[0]}–{s[-1]}"
    return f"seeds {_seeds(s)}"


def _shots(k: int) -> str:
    return "all" if k == ALL_SHOTS else str(k)


def _shot_key(k: int) -> float:
    return math.inf if k == ALL_SHOTS else k


def _missing_mark(missing: Sequence[int]) -> str:
    return f" †(missing {_seeds(missing)})" if missing else ""


def _average_text(value: float | None, n_used: int, n_total: int) -> str:
    """``70.00``; ``70.00* (1/2 datasets)`` when only some datasets are complete; ``—* (0/2 datasets)``."""
    text = NO_RUN if value is None else f"{value:.2f}"
    return text if n_used == n_total else f"{text}* ({n_used}/{n_total} datasets)"


def _ranker(order: Sequence[str]) -> Callable[[str], int]:
    """Sort key: a trainer's first position in ``order`` (a repeated name keeps its first), the others after it."""
    rank: dict[str, int] = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return lambda trainer: rank.get(trainer, len(rank))


def _label(trainer: str, backbone: str | None, show_backbone: bool) -> str:
    return f"{trainer} ({backbone or 'unknown backbone'})" if show_backbone else trainer


def _seed_note(expected: Sequence[int], from_cli: bool) -> str:
    return f"seeds {_seeds(expected)}" + (" (--seeds)" if from_cli else " (every seed found)")


_TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "%": r"\%", "#": r"\#",
        "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$",
        "±": r"$\pm$", "†": r"$^\dagger$", "—": "---", "–": "--", "·": r"$\cdot$", "∈": r"$\in$", "…": r"\ldots{}",
        "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "§": r"\S{}",
        "Δ": r"$\Delta$", "−": r"$-$", "|": r"$|$"}


def signed(x: float) -> str:
    """``+1.25`` / ``-0.40`` with 2 decimals; a value that prints as zero is ``+0.00`` (never ``-0.00``)."""
    r = round(x, 2)
    return f"{(0.0 if r == 0 else r):+.2f}"


def _tex(text: str) -> str:
    """Plain text (names, titles, footnotes) as LaTeX text: specials escaped, the symbols used here as commands."""
    return "".join(_TEX.get(c, c) for c in text)
