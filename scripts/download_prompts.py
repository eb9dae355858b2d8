"""Download BiomedCoOp's LLM prompt bank and store it as JSON.

Usage: ``python scripts/download_prompts.py [--url URL] [--out prompts/biomedcoop.json]``
   or: ``python scripts/download_prompts.py --from-file prompt_templates.py [--out ...]`` (offline conversion).

Fetches the released module (``BIOMEDCOOP_TEMPLATES`` in ``trainers/prompt_templates.py``: 50 sentences per
class, SPEC §7), parses it with ``trainers.teacher.parse_prompt_module`` (the module is never executed) and writes
``{classname: [sentences]}`` atomically. Exit code 0 on success, 1 on a download, parse or write error (one line
on stderr).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path

# Run as `python scripts/download_prompts.py` from anywhere: make the repo root importable.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine.utils import atomic_write_json  # noqa: E402
from trainers.teacher import (  # noqa: E402
    DEFAULT_PROMPT_BANK,
    PromptBankError,
    parse_prompt_module,
)

DEFAULT_URL = "https://raw.githubusercontent.com/HealthX-Lab/BiomedCoOp/main/trainers/prompt_templates.py"
TIMEOUT_S = 30.0


def _display(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (shorter messages), else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def fetch(url: str, timeout: float = TIMEOUT_S) -> str:
    """The text at ``url`` (UTF-8). Raises ``urllib.error.URLError``, ``OSError`` or ``http.client.HTTPException``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download BiomedCoOp's LLM prompt bank and write it as JSON.")
    parser.add_argument("--url", default=DEFAULT_URL, help="URL of the released prompt_templates.py")
    parser.add_argument("--from-file", type=Path, default=None,
                        help="convert a local copy of prompt_templates.py instead of downloading")
    parser.add_argument("--out", type=Path, default=DEFAULT_PROMPT_BANK,
                        help=f"output JSON (default {_display(DEFAULT_PROMPT_BANK)})")
    args = parser.parse_args(argv)
    out = _display(args.out)

    if args.from_file is not None:
        source = str(args.from_file)
        try:
            text = args.from_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            print(f"error: cannot read {source} ({err})", file=sys.stderr)
            return 1
    else:
        source = args.url
        try:
            text = fetch(args.url)
        except (urllib.error.URLError, OSError, http.client.HTTPException, UnicodeDecodeError, ValueError) as err:
            reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
            reason = " ".join(str(reason).split()) or type(err).__name__  # one line
            print(
                f"error: cannot download the prompt bank from {args.url} ({reason}); on a machine with network run: "
                f"python scripts/download_prompts.py --out {out} and copy {out} here, or download that URL by hand "
                f"and run: python scripts/download_prompts.py --from-file prompt_templates.py --out {out}",
                file=sys.stderr,
            )
            return 1

    try:
        bank = parse_prompt_module(text, source)
    except PromptBankError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        atomic_write_json(args.out, bank)
    except OSError as err:
        print(f"error: cannot write {out} ({err})", file=sys.stderr)
        return 1

    counts = [len(v) for v in bank.values()]
    print(f"prompt bank: {len(bank)} classes, {min(counts)}-{max(counts)} sentences per class, "
          f"{sum(counts)} in all; wrote {out} (from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
