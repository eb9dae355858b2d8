"""Test set-up: offline hub environment before any import, generated data, a CLI runner."""

from __future__ import annotations

import json
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
    from synth.synthmed import make_synthmed

    root = tmp_path_factory.mktemp("data")
    make_synthmed(root, seed=0)
    return root


@pytest.fixture(scope="session")
def synthlesion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default SynthLesion dataset (seed 0, target domain; checked against the recorded hashes), once per
    session; tests must not modify it."""
    from synth.synthlesion import make_synthlesion

    root = tmp_path_factory.mktemp("synthlesion")
    make_synthlesion(root, seed=0, check_hashes=True)
    return root


@pytest.fixture(scope="session")
def synthlesion_clinical_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default SynthLesionClinical dataset (seed 0, clinical domain; checked against the recorded hashes), once
    per session; tests must not modify it."""
    from synth.synthlesion import CLINICAL_WORLD, make_synthlesion

    root = tmp_path_factory.mktemp("synthlesion_clinical")
    make_synthlesion(root, seed=0, check_hashes=True, world=CLINICAL_WORLD)
    return root


@pytest.fixture(scope="session")
def btmri_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BTMRI tree in the released layout: 4 classes, 30 / 10 / 12 images per class (208 files)."""
    from PIL import Image

    from datasets.catalogue import get_info

    info = get_info("BTMRI")
    root = tmp_path_factory.mktemp("real_layout")
    images = root / "BTMRI" / "BTMRI"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    n = 0
    for label, cname in enumerate(info.classnames):
        folder = images / info.class_folder(cname)
        folder.mkdir(parents=True)
        for part, count in (("train", 30), ("val", 10), ("test", 12)):
            for i in range(count):
                n += 1
                name = f"image ({n}).jpg" if i % 3 else f"Te-{cname[:2]}_{n:04d}.png"
                Image.new("L" if i % 2 else "RGB", (8 + i % 5, 8), color=n % 255).save(folder / name)
                split[part].append([f"{info.class_folder(cname)}/{name}", label, cname])
    # released split lists are not grouped by class
    for part in split.values():
        part.sort(key=lambda e: e[0][::-1])
    (root / "BTMRI" / "split_BTMRI.json").write_text(json.dumps(split))
    return root
