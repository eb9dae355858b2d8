"""The shell commands of README.md and docs/*.md against the code (how to mark a block: docs/contributing.md).

Every fenced ```bash block is read. Each command in it is checked: the script it names exists, each ``--flag`` it
passes is one the script's argument parser (its source, or a repository file it imports or calls) knows, every
repository path and config file named exists, every ``NAME=value`` environment knob is read by the code and every
``KEY.NAME`` config key exists in the full default config. Then the blocks not marked
``<!-- docs-test: skip (reason) -->`` are run, command by command, in a temporary copy of the repository's layout
that holds a small tree of finished runs (``output/few_shot``, ``output/base_to_novel``); each must exit 0 within
its time limit. The slow ones (downloads, trainings, grids, the demo, the whole suite) are marked skip in the docs,
each with its reason, and are only checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import trainers  # noqa: F401  (registers every trainer's TRAINER.<NODE> config keys)
from engine.config import flat_items, get_cfg_default
from engine.results import write_metrics

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_TIMEOUT_S = 60  # per command; a block that needs more must be marked skip

pytestmark = pytest.mark.cheap  # the whole file takes a few seconds

SKIP_RE = re.compile(r"<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
FENCE_RE = re.compile(r"^(?P<ticks>`{3,})(?P<info>[\w+-]*)\s*$")
ENV_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)
CONFIG_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+$")
PLACEHOLDER = re.compile(r"[<>{}*$…\[\]]")
REPO_PATH_PREFIXES = ("configs/", "scripts/", "tests/", "docs/", "engine/", "trainers/", "datasets/",
                      "clip_backbones/", "requirements")
OPERATORS = {"&&", "||", ";", "|"}
# commands that are not this repository's: nothing to check in their arguments
EXTERNAL = {"cd", "export", ".", "source", "ls", "cat", "mkdir", "cp", "hf", "git", "tensorboard", "nvidia-smi"}
# environment variables of Python, torch, the allocator and the Hugging Face libraries, not of this code
STANDARD_ENV = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                "PYTHONPATH", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_",
                "MKL_DISABLE_FAST_MM"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    commands: tuple[str, ...]
    skip: str | None  # the reason, when marked skip

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The ```bash blocks of a Markdown file (fences of 4+ backticks may hold them as text: not blocks)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, info, start = len(m["ticks"]), m["info"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^`{{{ticks},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        if info != "bash":
            continue
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = SKIP_RE.search(lines[j]) if j >= 0 else None
        skip = None if marker is None else (marker["reason"] or "").strip()
        blocks.append(Block(path, start + 1, tuple(join_lines(body)), skip))
    return blocks


def join_lines(body: list[str]) -> list[str]:
    """Shell lines with ``\\`` continuations joined; blank and comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for line in body:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        full = pending + line.strip()
        pending = ""
        if full.strip() and not full.lstrip().startswith("#"):
            out.append(full.strip())
    if pending.strip():
        out.append(pending.strip())
    return out


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && || ; |), as words; comments removed."""
    words = shlex.split(command, comments=True)
    segs: list[list[str]] = [[]]
    for w in words:
        if w in OPERATORS:
            segs.append([])
        elif w.endswith(";") and len(w) > 1:
            segs[-1].append(w[:-1])
            segs.append([])
        else:
            segs[-1].append(w)
    return [s for s in segs if s]


ALL_BLOCKS = [b for f in DOC_FILES for b in read_blocks(f)]


# ---------------------------------------------------------------------------------------------------- the checks
_IMPORT_RE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)
_CALLED_RE = re.compile(r"([\w./-]+\.(?:sh|py))|-m\s+([\w.]+)")


def _module_file(name: str, near: Path) -> Path | None:
    rel = Path(*name.split("."))
    for base in (REPO, near.parent):
        for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def source_closure(script: Path, depth: int = 3) -> list[Path]:
    """The script and the repository files it imports (Python) or calls (shell: named .sh / .py / -m modules)."""
    seen: list[Path] = []
    todo = [(script, 0)]
    while todo:
        path, d = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        if d >= depth:
            continue
        text = path.read_text(encoding="utf-8")
        found: list[Path | None] = []
        if path.suffix == ".py":
            found = [_module_file(a or b, path) for a, b in _IMPORT_RE.findall(text)]
        else:
            for file, module in _CALLED_RE.findall(text):
                if module:
                    found.append(_module_file(module, path))
                else:
                    found += [p for p in (REPO / file, path.parent / Path(file).name) if p.is_file()][:1]
        todo += [(p, d + 1) for p in found if p is not None]
    return seen


def flag_known(flag: str, script: Path) -> bool:
    pattern = re.compile(re.escape(flag) + r"(?![\w-])")
    return any(pattern.search(p.read_text(encoding="utf-8")) for p in source_closure(script))


_CODE_TEXT: str | None = None


def code_text() -> str:
    global _CODE_TEXT
    if _CODE_TEXT is None:
        files = [p for ext in ("*.py", "*.sh") for p in REPO.rglob(ext)
                 if not {"output", "data", ".git", ".venv"} & set(p.relative_to(REPO).parts)
                 and p.resolve() != Path(__file__).resolve()]
        _CODE_TEXT = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return _CODE_TEXT


_CONFIG_KEYS: set[str] | None = None


def config_keys() -> set[str]:
    global _CONFIG_KEYS
    if _CONFIG_KEYS is None:
        _CONFIG_KEYS = set(flat_items(get_cfg_default()))
    return _CONFIG_KEYS


def check_words(words: list[str]) -> list[str]:
    """Config keys and repository paths anywhere in the words (also inside quoted values such as EXTRA="…")."""
    problems = []
    for word in words:
        for part in word.split():
            if ENV_RE.match(part):
                part = ENV_RE.match(part)["value"]
            if CONFIG_KEY_RE.match(part) and part not in config_keys():
                problems.append(f"unknown config key {part}")
            if part.startswith(REPO_PATH_PREFIXES) and not PLACEHOLDER.search(part) and not (REPO / part).exists():
                problems.append(f"no such file in the repository: {part}")
    return problems


def check_script_args(script: Path, args: list[str]) -> list[str]:
    problems = []
    for a in args:
        if a.startswith("--") and len(a) > 2:
            flag = a.split("=", 1)[0]
            if not flag_known(flag, script):
                problems.append(f"{script.relative_to(REPO)} has no option {flag}")
    return problems


def check_segment(words: list[str]) -> list[str]:
    problems = check_words(words)
    while words and ENV_RE.match(words[0]):
        name = ENV_RE.match(words[0])["name"]
        if name not in STANDARD_ENV and not re.search(rf"\b{name}\b", code_text()):
            problems.append(f"environment variable {name} is read nowhere in the code")
        words = words[1:]
    if not words:
        return problems
    cmd, args = words[0], words[1:]
    if cmd in ("python", "python3"):
        if args[:1] == ["-m"]:
            module = args[1] if len(args) > 1 else ""
            path = _module_file(module, REPO)
            if path is not None:
                problems += check_script_args(path, args[2:])
            elif importlib.util.find_spec(module.split(".")[0]) is None:
                problems.append(f"no module {module!r}")
        elif not args or not (REPO / args[0]).is_file():
            problems.append(f"no such script: {args[:1]}")
        else:
            problems += check_script_args(REPO / args[0], args[1:])
    elif cmd == "bash":
        if not args or not (REPO / args[0]).is_file():
            problems.append(f"no such script: {args[:1]}")
        else:
            problems += check_script_args(REPO / args[0], args[1:])
    elif cmd == "pip":
        for i, a in enumerate(args):
            if a == "-r" and (i + 1 >= len(args) or not (REPO / args[i + 1]).is_file()):
                problems.append(f"no requirements file {args[i + 1:i + 2]}")
    elif cmd not in EXTERNAL:
        problems.append(f"unknown command {cmd!r}: teach tests/test_docs_commands.py about it, or use a plain block")
    return problems


def test_there_are_blocks_to_check() -> None:
    """The extraction itself: README's first block is the set-up / demo one, and some blocks are run."""
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md"]
    assert readme and "bash scripts/demo.sh" in readme[0].commands[0]
    assert any(b.skip is None for b in ALL_BLOCKS)


def _problems(command: str) -> list[str]:
    return [p for seg in segments(command) for p in check_segment(seg)]


def test_the_checker_accepts_what_exists() -> None:
    assert _problems('WORKERS=2 EXTRA="OPTIM.MAX_EPOCH 10" bash scripts/run_fewshot.sh --datasets btmri '
                     "--keep-going") == []
    assert _problems("python train.py --root DATA --config-file configs/trainers/CoOp/few_shot.yaml "
                     "--output-dir out/x TRAINER.OGKD.LAMBDA_GAD 1.0  # a comment --not-a-flag") == []
    assert _problems("pip install -r requirements-dev.txt && python -m pytest -q") == []
    assert _problems("python train.py --config-file configs/datasets/<name>.yaml") == []  # a placeholder


@pytest.mark.parametrize(("command", "expected"), [
    ("python train.py --list-trainerz", "train.py has no option --list-trainerz"),
    ("bash scripts/run_fewshot.sh --datasetz btmri", "run_fewshot.sh has no option --datasetz"),
    ("python scripts/summarize.py output --layuot paper", "summarize.py has no option --layuot"),
    ("NO_SUCH_KNOB_XYZ=1 bash scripts/run_fewshot.sh", "environment variable NO_SUCH_KNOB_XYZ is read nowhere"),
    ('EXTRA="OPTIM.MAX_EPOCHS 10" bash scripts/run_fewshot.sh', "unknown config key OPTIM.MAX_EPOCHS"),
    ("python train.py DATASET.NUM_SHOTZ 4", "unknown config key DATASET.NUM_SHOTZ"),
    ("python train.py --config-file configs/trainers/CoOp/nope.yaml", "no such file in the repository"),
    ("python scripts/no_such_script.py", "no such script"),
    ("python -m no_such_module_xyz", "no module 'no_such_module_xyz'"),
    ("pip install -r requirements-nope.txt", "no requirements file"),
    ("frobnicate --all", "unknown command 'frobnicate'"),
])
def test_the_checker_names_what_drifted(command: str, expected: str) -> None:
    problems = _problems(command)
    assert any(expected in p for p in problems), problems


def test_block_extraction_markers_and_nested_fences(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("""text

<!-- docs-test: skip (needs the network) -->

```bash
python scripts/download_data.py \\
  --root data   # all of them
# a comment line
```

````markdown
```bash
python inside_a_quoted_example.py
```
````

```bash
python train.py --list-trainers
```

<!-- docs-test: skip -->
```
not bash
```
""", encoding="utf-8")
    blocks = read_blocks(doc)
    assert [(b.line, b.commands, b.skip) for b in blocks] == [
        (5, ("python scripts/download_data.py --root data   # all of them",), "needs the network"),
        (17, ("python train.py --list-trainers",), None),
    ]


def test_every_skip_marker_gives_a_reason() -> None:
    bare = [b.where for b in ALL_BLOCKS if b.skip == ""]
    assert not bare, f"<!-- docs-test: skip --> without a (reason): {bare}"


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.where for b in ALL_BLOCKS])
def test_commands_name_what_exists(block: Block) -> None:
    problems = [f"{block.where}: `{c}`: {p}" for c in block.commands for s in segments(c) for p in check_segment(s)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------- the runs
def _finished_run(folder: Path, *, dataset: str, trainer: str, seed: int, shots: int, subsample: str,
                  accuracy: float) -> None:
    folder.mkdir(parents=True)
    write_metrics(folder / "metrics.json", {
        "split": "test", "accuracy": accuracy, "macro_f1": accuracy - 5.0, "ece": 4.0, "num_samples": 100,
        "per_class_accuracy": {}, "trainer": trainer, "dataset": dataset, "backbone": "BiomedCLIP", "seed": seed,
        "shots": shots, "subsample": subsample, "epochs": 2, "wall_time_s": 1.0})


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's top level as links, plus output/ with 2 trainers × 3 seeds, few-shot and base-to-novel."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    for entry in REPO.iterdir():
        if entry.name not in {".git", "output", "data"}:
            (root / entry.name).symlink_to(entry)
    for t, trainer in enumerate(("CoOp", "OGKD")):
        for seed in (1, 2, 3):
            acc = 60.0 + 5 * t + seed
            _finished_run(root / f"output/few_shot/btmri/{trainer}/shots16/seed{seed}", dataset="BTMRI",
                          trainer=trainer, seed=seed, shots=16, subsample="all", accuracy=acc)
            for sub, delta in (("base", 10.0), ("new", -10.0)):
                _finished_run(root / f"output/base_to_novel/btmri/{trainer}/shots16/seed{seed}/{sub}",
                              dataset="BTMRI", trainer=trainer, seed=seed, shots=16, subsample=sub,
                              accuracy=acc + delta)
    return root


RUN_BLOCKS = [b for b in ALL_BLOCKS if b.skip is None]


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.where for b in RUN_BLOCKS])
def test_unmarked_commands_run(block: Block, sandbox: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for command in block.commands:
        try:
            r = subprocess.run(["bash", "-c", command], cwd=sandbox, env=env, capture_output=True, text=True,
                               timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.where}: `{command}` ran over {RUN_TIMEOUT_S} s: mark its block "
                        "<!-- docs-test: skip (reason) --> or make it faster")
        output = r.stdout[-2000:] + r.stderr[-2000:]
        assert r.returncode == 0, f"{block.where}: `{command}` exited {r.returncode}:\n{output}"


# ---------------------------------------------------------------------------------------------------- the links
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens (fenced code ignored)."""
    anchors, fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOC_FILES, ids=[str(p.relative_to(REPO)) for p in DOC_FILES])
def test_links_point_to_files_and_headings(doc: Path) -> None:
    broken = []
    for target in LINK_RE.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked (offline)
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


# ---------------------------------------------------------------------------------------------------- spec citations
CITE_RE = re.compile(r"(?:SPEC|docs/spec\.md) (§.*)")
SECTION_RE = re.compile(r"§\s*(\d+(?:\.\d+)?)|[–-]\s*(\d+\.\d+)")


def spec_sections() -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (REPO / "docs" / "spec.md").read_text(encoding="utf-8"), re.M)
    return set(heads)


def test_every_spec_citation_in_the_code_names_a_section_of_docs_spec_md() -> None:
    """``SPEC §2.3`` (or ``docs/spec.md §2.3``) in a .py / .sh / .yaml file must be a numbered heading of the spec."""
    sections = spec_sections()
    assert {"1.0", "1.13", "2", "2.7", "3.2", "4.3", "7"} <= sections
    missing, cited = [], 0
    for ext in ("*.py", "*.sh", "*.yaml"):
        for path in REPO.rglob(ext):
            if {"output", "data", ".git", ".venv"} & set(path.relative_to(REPO).parts):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for tail in CITE_RE.findall(line):
                    for a, b in SECTION_RE.findall(tail):
                        cited += 1
                        if (a or b) not in sections:
                            missing.append(f"{path.relative_to(REPO)}:{n}: §{a or b}")
    assert cited > 0 and not missing, missing
