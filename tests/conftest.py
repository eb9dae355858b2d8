"""Test set-up: offline hub environment before any import, generated data, a CLI runner."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# a private, empty Hugging Face cache: tests that exercise the hub path fill it with tiny files themselves
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="ogkd-hf-cache-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# a private feature cache for the session (never the user's ~/.cache); tests that need their own pass CACHE.DIR
os.environ["OGKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="ogkd-feature-cache-")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

# the engine registers nothing itself: like train.py, the test session registers every trainer and dataset
import datasets  # noqa: E402,F401
import trainers  # noqa: E402,F401


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SynthMed dataset in the real layout (generated once per session; tests must not modify it)."""
    from datasets.synthetic import make_synthmed

    root = tmp_path_factory.mktemp("data")
    make_synthmed(root, seed=0)
    return root


@pytest.fixture(scope="session")
def synthlesion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default SynthLesion dataset (seed 0, target domain; checked against the recorded hashes), once per
    session; tests must not modify it."""
    from datasets.synthlesion import make_synthlesion

    root = tmp_path_factory.mktemp("synthlesion")
    make_synthlesion(root, seed=0, check_hashes=True)
    return root
