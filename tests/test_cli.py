"""train.py's command line: --help keeps the usage block; the --list-* answers come from a static table that equals
the registries and import no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine import listing

REPO = Path(__file__).resolve().parents[1]


def test_static_listing_equals_the_registries() -> None:
    import datasets
    import trainers  # noqa: F401
    from clip_backbones import available_backbones
    from clip_backbones.factory import BIOMEDCLIP_ID
    from engine.registry import TRAINER_REGISTRY

    assert sorted(listing.TRAINERS) == TRAINER_REGISTRY.registered_names()
    assert list(listing.BACKBONES) == available_backbones()
    assert listing.BACKBONES["BiomedCLIP"] == BIOMEDCLIP_ID
    rows = [(r.name, r.config, r.modality, r.num_classes) for r in datasets.CATALOGUE]
    assert list(listing.DATASETS) == rows


def test_list_flags_print_the_tables_without_importing_torch() -> None:
    code = ("import sys, train; rc = train.main(['--list-trainers', '--list-backbones', '--list-datasets']); "
            "heavy = [m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    lines = proc.stdout.splitlines()
    names = {line.split()[0] for line in lines if line.strip()}
    assert {"OGKD", "ZeroshotCLIP", "BiomedCLIP", "ViT-B/16", "local-dir:<folder>", "BTMRI", "SynthLesion"} <= names


def test_help_keeps_the_usage_block() -> None:
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    out = proc.stdout.splitlines()
    assert "    python train.py --root DATA --seed 1 --trainer CoOp \\" in out
    assert "        --dataset-config-file configs/datasets/synthmed.yaml \\" in out
    assert "    python train.py ... --eval-only --model-dir RUN_DIR [--load-epoch N]" in out
    assert any("--list-datasets" in line for line in out)
