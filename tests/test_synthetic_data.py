"""SynthMed generator: on-disk layout, counts, file-format mix, determinism, idempotence and the CLI script."""

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synth.synthmed import (
    DATASET_NAME,
    N_TEST_PER_CLASS,
    N_TRAIN_PER_CLASS,
    N_VAL_PER_CLASS,
    PROMPT_BANK_FILE,
    SYNTHMED_ATTRIBUTES,
    SYNTHMED_CLASS_SPECS,
    SYNTHMED_CLASSES,
    class_folder,
    is_valid_synthmed,
    make_synthmed,
    synthmed_prompt_bank,
)
from trainers.teacher import load_prompt_bank

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "make_synthetic_data.py"
SMALL = {"n_train": 3, "n_val": 2, "n_test": 2}


def _split(dataset_dir: Path) -> dict:
    return json.loads((dataset_dir / f"split_{DATASET_NAME}.json").read_text())


def _pixels(dataset_dir: Path) -> dict[str, np.ndarray]:
    """Decoded pixel arrays of every image in the split file, keyed by relative path."""
    out = {}
    for items in _split(dataset_dir).values():
        for relpath, _, _ in items:
            with Image.open(dataset_dir / DATASET_NAME / relpath) as im:
                out[relpath] = np.asarray(im)
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full default-size dataset, generated once for this module."""
    return make_synthmed(tmp_path_factory.mktemp("data"), seed=0)


def test_class_table() -> None:
    assert len(SYNTHMED_CLASSES) == 6
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)+", name) for name in SYNTHMED_CLASSES)
    assert list(SYNTHMED_ATTRIBUTES) == SYNTHMED_CLASSES
    # Every class has a distinct attribute combination, and every attribute value is used.
    combos = {(s.shape, s.texture, s.intensity) for s in SYNTHMED_CLASS_SPECS}
    assert len(combos) == len(SYNTHMED_CLASS_SPECS)
    assert {s.shape for s in SYNTHMED_CLASS_SPECS} == {"round", "spiky", "none"}
    assert {s.texture for s in SYNTHMED_CLASS_SPECS} == {"smooth", "stripes", "dots", "noise"}


def test_layout_and_counts(synth: Path) -> None:
    assert synth.name == DATASET_NAME
    split = _split(synth)
    assert list(split) == ["train", "val", "test"]
    expected = {"train": N_TRAIN_PER_CLASS, "val": N_VAL_PER_CLASS, "test": N_TEST_PER_CLASS}
    assert expected == {"train": 40, "val": 10, "test": 20}
    all_paths = []
    for name, items in split.items():
        counts = Counter(label for _, label, _ in items)
        assert counts == {label: expected[name] for label in range(6)}, name
        for relpath, label, classname in items:
            assert isinstance(relpath, str) and isinstance(label, int)
            assert classname == SYNTHMED_CLASSES[label]
            folder, _ = relpath.split("/")
            assert folder == class_folder(classname) == classname.replace(" ", "_")
            assert " " not in folder
            assert (synth / DATASET_NAME / relpath).is_file()
            all_paths.append(relpath)
    assert len(all_paths) == len(set(all_paths)), "file names must be unique across splits"
    folders = sorted(p.name for p in (synth / DATASET_NAME).iterdir())
    assert folders == sorted(c.replace(" ", "_") for c in SYNTHMED_CLASSES)
    n_files = sum(1 for p in (synth / DATASET_NAME).rglob("*") if p.is_file())
    assert n_files == len(all_paths)
    assert is_valid_synthmed(synth.parent)


def test_formats_modes_names_and_sizes(synth: Path) -> None:
    split = _split(synth)
    kinds: set[tuple[str, str]] = set()
    sizes = set()
    for items in split.values():
        for relpath, _, _ in items:
            with Image.open(synth / DATASET_NAME / relpath) as im:
                kinds.add((im.format, im.mode))
                sizes.add(im.size)
    expected = {
        ("PNG", "RGB"), ("PNG", "L"), ("PNG", "I;16"), ("PNG", "RGBA"), ("PNG", "P"),
        ("JPEG", "RGB"), ("JPEG", "L"), ("TIFF", "RGB"), ("TIFF", "L"), ("TIFF", "I;16"),
    }  # fmt: skip
    assert expected <= kinds
    names = [relpath.split("/")[1] for items in split.values() for relpath, _, _ in items]
    assert any(" " in n and "(" in n and ")" in n for n in names)
    assert any(re.fullmatch(r"case \d+\.\w+", n) for n in names)
    widths, heights = {w for w, _ in sizes}, {h for _, h in sizes}
    assert min(widths) >= 64 and max(widths) <= 128 and min(heights) >= 64 and max(heights) <= 128
    assert len(sizes) > 50 and sum(w != h for w, h in sizes) > len(sizes) // 2
    # Each split contains PNG, JPEG and TIFF files.
    for items in split.values():
        assert {Path(r).suffix for r, _, _ in items} >= {".png", ".jpg", ".tif"}


def test_16bit_images_use_the_full_range(synth: Path) -> None:
    relpaths = [r for items in _split(synth).values() for r, _, _ in items]
    for relpath in relpaths:
        with Image.open(synth / DATASET_NAME / relpath) as im:
            if im.mode == "I;16":
                assert np.asarray(im).max() > 255
                return
    pytest.fail("no 16-bit image found")


def test_same_seed_is_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = make_synthmed(tmp_path / "a", seed=7, **SMALL)
    b = make_synthmed(tmp_path / "b", seed=7, **SMALL)
    c = make_synthmed(tmp_path / "c", seed=8, **SMALL)
    split_file = f"split_{DATASET_NAME}.json"
    assert (a / split_file).read_bytes() == (b / split_file).read_bytes()
    banks = {(d / PROMPT_BANK_FILE).read_bytes() for d in (a, b, c)}
    assert len(banks) == 1, "the prompt bank depends on the classes only"
    pa, pb, pc = _pixels(a), _pixels(b), _pixels(c)
    assert pa.keys() == pb.keys()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert (a / split_file).read_bytes() != (c / split_file).read_bytes()
    assert pa.keys() == pc.keys()  # same file names, different content
    assert sum(pa[k].shape != pc[k].shape or not np.array_equal(pa[k], pc[k]) for k in pa) == len(pa)


def test_existing_dataset_is_kept_and_force_regenerates(tmp_path: Path) -> None:
    ds = make_synthmed(tmp_path, seed=1, **SMALL)
    split_before = (ds / f"split_{DATASET_NAME}.json").read_bytes()
    sentinel = ds / "split_fewshot" / "marker.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("kept")
    assert make_synthmed(tmp_path, seed=1, **SMALL) == ds
    assert sentinel.is_file(), "an existing valid dataset must not be touched without force"
    # A different request (seed or counts) on an existing folder is an error, not a silent reuse.
    with pytest.raises(FileExistsError, match="force"):
        make_synthmed(tmp_path, seed=2, **SMALL)
    with pytest.raises(FileExistsError, match="force"):
        make_synthmed(tmp_path, seed=1, n_train=4, n_val=2, n_test=2)
    assert make_synthmed(tmp_path, seed=1, force=True, **SMALL) == ds
    assert not sentinel.exists()
    assert (ds / f"split_{DATASET_NAME}.json").read_bytes() == split_before
    assert not (tmp_path / f".{DATASET_NAME}.partial").exists()


def test_invalid_existing_folder_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / DATASET_NAME).mkdir()
    assert not is_valid_synthmed(tmp_path)
    with pytest.raises(FileExistsError, match="no valid split"):
        make_synthmed(tmp_path, **SMALL)
    ds = make_synthmed(tmp_path, force=True, **SMALL)
    assert is_valid_synthmed(tmp_path)
    # A missing image makes the dataset invalid.
    first = _split(ds)["test"][0][0]
    (ds / DATASET_NAME / first).unlink()
    assert not is_valid_synthmed(tmp_path)
    with pytest.raises(ValueError, match="seed"):
        make_synthmed(tmp_path / "x", seed=-1)
    with pytest.raises(ValueError, match="≥ 1"):
        make_synthmed(tmp_path / "x", n_train=0)


def test_script_subprocess(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--root", str(tmp_path), "--seed", "3", "--n-train", "2", "--n-val", "1",
           "--n-test", "1"]  # fmt: skip
    proc = subprocess.run(cmd, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train 12, val 6, test 6" in proc.stdout
    assert str(tmp_path / DATASET_NAME) in proc.stdout
    assert is_valid_synthmed(tmp_path)


def test_script_main_idempotence_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_synthetic_data", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--root", str(tmp_path), "--seed", "3", "--n-train", "2", "--n-val", "1", "--n-test", "1"]

    assert script.main(args) == 0
    assert "wrote 6 classes" in capsys.readouterr().out
    marker = tmp_path / DATASET_NAME / "marker.txt"
    marker.write_text("x")

    assert script.main(args) == 0
    assert "already exists" in capsys.readouterr().out
    assert marker.exists()

    assert script.main([*args[:3], "4", *args[4:]]) == 2  # other seed without --force
    assert "--force" in capsys.readouterr().err
    assert marker.exists()

    assert script.main([*args, "--force"]) == 0
    assert "wrote 6 classes" in capsys.readouterr().out
    assert not marker.exists()


def test_prompt_bank_written_with_the_data(synth: Path) -> None:
    bank_path = synth / PROMPT_BANK_FILE
    assert PROMPT_BANK_FILE == "prompt_bank.json" and bank_path.is_file()
    bank = load_prompt_bank(bank_path)
    assert list(bank) == SYNTHMED_CLASSES
    assert bank == synthmed_prompt_bank()
    for name, sentences in bank.items():
        assert len(sentences) >= 50 and len(set(sentences)) == len(sentences), name
        for sentence in sentences:
            assert re.fullmatch(r"[a-z0-9 .,:;'()/-]+", sentence), sentence
            assert sentence == " ".join(sentence.split()) and sentence.endswith(".")
    every = [s for sentences in bank.values() for s in sentences]
    assert len(set(every)) == len(every), "no sentence may be shared by two classes"
    # Sentences describe the class: its name or its attributes appear in many of them.
    stripes = bank["striped fibrous tissue"]
    assert sum("striped fibrous tissue" in s for s in stripes) >= 5
    assert sum(any(w in s for w in ("stripe", "band", "streak", "striat")) for s in stripes) >= 30


def test_prompt_bank_is_deterministic() -> None:
    assert synthmed_prompt_bank() == synthmed_prompt_bank()
    assert [len(v) for v in synthmed_prompt_bank(100).values()] == [100] * 6
    small = synthmed_prompt_bank(5)
    assert all(small[k] == v[:5] for k, v in synthmed_prompt_bank().items())
    with pytest.raises(ValueError, match="≥ 1"):
        synthmed_prompt_bank(0)
    with pytest.raises(ValueError, match="distinct prompt sentences"):
        synthmed_prompt_bank(10**6)


def test_missing_prompt_bank_is_added_without_regenerating(tmp_path: Path) -> None:
    ds = make_synthmed(tmp_path, seed=1, **SMALL)
    bank_bytes = (ds / PROMPT_BANK_FILE).read_bytes()
    (ds / PROMPT_BANK_FILE).unlink()
    sentinel = ds / DATASET_NAME / "marker.txt"
    sentinel.write_text("kept")
    first = _split(ds)["train"][0][0]
    mtime = (ds / DATASET_NAME / first).stat().st_mtime_ns
    assert make_synthmed(tmp_path, seed=1, **SMALL) == ds
    assert (ds / PROMPT_BANK_FILE).read_bytes() == bank_bytes
    assert sentinel.is_file() and (ds / DATASET_NAME / first).stat().st_mtime_ns == mtime
    assert not list(ds.glob(".*.tmp"))


def test_script_unwritable_root_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_synthetic_data", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the root folder should be: works as root too
    assert script.main(["--root", str(blocker / "data"), "--n-train", "1", "--n-val", "1", "--n-test", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write the dataset under") and str(blocker) in err and "\n" not in err
