"""SynthLesion: a procedural lesion-image world in which prompt learning really learns (../shared/docs/SYNTHLESION.md).

The dataset on disk; the world itself (attributes, classes, domains, renderer) is :mod:`synth.lesions`, what its
text encoder reads (captions, prompt banks, the clinical regime's labels) :mod:`synth.lesion_text`; both are
re-exported here.

``make_synthlesion(root, seed, domain)`` writes ``root/SynthLesion/`` in the real on-disk layout::

    root/SynthLesion/split_SynthLesion.json     {"train"|"val"|"test": [[relpath, label, classname], ...]}
    root/SynthLesion/SynthLesion/<class_folder>/<label>_<split>_<i>.png   8-bit grayscale PNG ("L")
    root/SynthLesion/synthlesion_info.json      generator version, seed, domain, counts and content hashes
    root/SynthLesion/prompt_bank.json           {classname: [50 paraphrases]}: the teacher bank of BiomedCoOp / OGKD

The content hash of the default dataset (seed 0, target domain) is recorded in ``REFERENCE_HASHES`` and checked after
rendering: a numpy change that alters the data is an error, not a drift.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.utils import atomic_write_text
from synth.layout import check_generator_args, class_folder
from synth.lesion_text import (
    CLINICAL_CLASSNAMES,
    CLINICAL_DATASET_NAME,
    CLINICAL_DOMAIN,
    CONFUSABLE,
    GENERIC_SHARE,
    WRONG_SHARE,
    class_of_codes,
    clinical_consistency,
    clinical_prompt_bank,
    consistency,
    describe,
    prompt_bank,
    sample_captions,
    sample_clinical_captions,
)
from synth.lesions import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    CHUNK,
    DATASET_NAME,
    DOMAIN_RANGES,
    GENERATOR_VERSION,
    IMAGE_SIZE,
    INFO_FILE,
    N_BANK_PROMPTS,
    N_BASE,
    N_COMBINATIONS,
    N_TEST_PER_CLASS,
    N_TRAIN_PER_CLASS,
    N_VAL_PER_CLASS,
    PROMPT_BANK_FILE,
    SOURCE_DOMAIN,
    SPLITS,
    SYNTHLESION_CLASSES,
    SYNTHLESION_CLASSNAMES,
    TARGET_DOMAIN,
    AcquisitionDomain,
    LesionClass,
    all_combinations,
    class_codes,
    pretraining_combinations,
    render,
)

logger = logging.getLogger(__name__)

# the world and its text are re-exported: ``from synth import synthlesion as sl; sl.render(…)`` keeps working
__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_NAMES",
    "AcquisitionDomain",
    "CHUNK",
    "CLINICAL_CLASSNAMES",
    "CLINICAL_DATASET_NAME",
    "CLINICAL_DOMAIN",
    "CONFUSABLE",
    "DATASET_NAME",
    "DOMAIN_RANGES",
    "GENERATOR_VERSION",
    "GENERIC_SHARE",
    "IMAGE_SIZE",
    "INFO_FILE",
    "LesionClass",
    "N_BANK_PROMPTS",
    "N_BASE",
    "N_COMBINATIONS",
    "N_TEST_PER_CLASS",
    "N_TRAIN_PER_CLASS",
    "N_VAL_PER_CLASS",
    "PROMPT_BANK_FILE",
    "SOURCE_DOMAIN",
    "SPLITS",
    "SYNTHLESION_CLASSES",
    "SYNTHLESION_CLASSNAMES",
    "TARGET_DOMAIN",
    "WRONG_SHARE",
    "all_combinations",
    "class_codes",
    "class_of_codes",
    "clinical_consistency",
    "clinical_prompt_bank",
    "consistency",
    "describe",
    "pretraining_combinations",
    "prompt_bank",
    "render",
    "sample_captions",
    "sample_clinical_captions",
    "class_samples",
    "render_split",
    "content_hash",
    "REFERENCE_HASHES",
    "CLINICAL_REFERENCE_HASHES",
    "World",
    "ATTRIBUTE_WORLD",
    "CLINICAL_WORLD",
    "WORLDS",
    "HashMismatchError",
    "is_valid_synthlesion",
    "make_synthlesion",
    "parse_domain",
]


# ------------------------------------------------------------------------------------------------ dataset
def class_samples(label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Attribute codes ``[n, 5]`` of ``n`` images of class ``label`` (size drawn uniformly)."""
    codes = np.empty((n, 5), np.int64)
    codes[:, :4] = class_codes(SYNTHLESION_CLASSES[label])
    codes[:, 4] = rng.integers(0, 2, size=n)
    return codes


def render_split(seed: int, split_index: int, n_per_class: int,
                 domain: AcquisitionDomain) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10·n, 64, 64], labels [10·n]) of one split, class-major, from its own RNG stream."""
    rng = np.random.default_rng([seed, 1000 + split_index])
    labels = np.repeat(np.arange(len(SYNTHLESION_CLASSES)), n_per_class)
    codes = np.concatenate([class_samples(c, n_per_class, rng) for c in range(len(SYNTHLESION_CLASSES))])
    return render(codes, rng, domain), labels


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of a split's pixels and labels (what a numpy change in the RNG streams would alter)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return h.hexdigest()


# Content hashes of the default dataset (seed 0, TARGET_DOMAIN, default counts, GENERATOR_VERSION 2), recorded
# with numpy 2.4.6 and checked equal on one x86-64 CPU with numpy's SIMD dispatch at X86_V2 and X86_V3 and OpenBLAS
# kernels Nehalem, Sandybridge and Haswell, under Python 3.11 and 3.12. A mismatch means this numpy draws different
# streams (or the renderer changed).
REFERENCE_HASHES: dict[str, str] = {
    "train": "b6ada3aacf01999af37072fe2d0c79d4270a79391d80cf4b8f113a66ef3b728f",
    "val": "09f43b443d114bf13613c02ccde0dd39698127ec1ef7a3663cdfc34deb5df801",
    "test": "a27d4fbcb5dfc6ff7a8d4a70f9199caa6301584782f904e4b9ed1023132fd181",
    "split_file": "ff795261f54d448a313293ca8de6fdd9bab22db4c5c3e6cbafac6348d99e1d07",
}


# The clinical regime's default dataset (seed 0, CLINICAL_DOMAIN, default counts, GENERATOR_VERSION 2), recorded the
# same way (numpy 2.4.6).
CLINICAL_REFERENCE_HASHES: dict[str, str] = {
    "train": "681680ba449a5e0c306c2b69019f8f70d1c75a7aaf787d04327dee7e75b794bd",
    "val": "be1a77e040a56c5a669ac6cc6e6d73a49f066ddcfa8e788f71d7887beb8a5547",
    "test": "c45ee430ccd0771b6d595f92ea7e997fcf0f9135f9a5ec67ff691a3796572144",
    "split_file": "003e4406d6b9f4237b85f806dce920d5ae3f7e7cac5efaaf7d9f2c9d1cd40aeb",
}


@dataclass(frozen=True)
class World:
    """One regime of SynthLesion: what the dataset is called, what the text encoder reads, where the benchmark
    images come from and which teacher bank goes with them. The images and labels are the same in both."""

    name: str  # registry key = folder name = split-file stem
    key: str  # make_synthetic_data.py --dataset / catalogue config name
    classnames: tuple[str, ...]
    domain: AcquisitionDomain  # the benchmark's default acquisition domain
    reference_hashes: dict[str, str]
    hashes_name: str  # where the reference hashes are recorded (for the error message)
    backbone: str  # the shipped model pre-trained for this regime
    bank: Callable[[], dict[str, list[str]]]


ATTRIBUTE_WORLD = World(DATASET_NAME, "synthlesion", SYNTHLESION_CLASSNAMES, TARGET_DOMAIN, REFERENCE_HASHES,
                        "REFERENCE_HASHES", "synthlesion-clip", prompt_bank)
CLINICAL_WORLD = World(CLINICAL_DATASET_NAME, "synthlesion_clinical", CLINICAL_CLASSNAMES, CLINICAL_DOMAIN,
                       CLINICAL_REFERENCE_HASHES, "CLINICAL_REFERENCE_HASHES", "synthlesion-clinical-clip",
                       clinical_prompt_bank)
WORLDS: dict[str, World] = {w.key: w for w in (ATTRIBUTE_WORLD, CLINICAL_WORLD)}


class HashMismatchError(RuntimeError):
    """The rendered data differ from the recorded reference (numpy version or renderer change)."""


def _check_reference(hashes: dict[str, str], seed: int, domain: AcquisitionDomain, counts: dict[str, int],
                     world: World = ATTRIBUTE_WORLD) -> None:
    default = (seed == 0 and domain == world.domain
               and counts == {"train": N_TRAIN_PER_CLASS, "val": N_VAL_PER_CLASS, "test": N_TEST_PER_CLASS})
    reference = world.reference_hashes
    if not default or not all(reference.values()):
        return
    bad = [s for s in reference if hashes[s] != reference[s]]
    if bad:
        raise HashMismatchError(
            f"{world.name} {', '.join(bad)} rendered differently from the recorded reference "
            f"({world.hashes_name} in synth/synthlesion.py, recorded with numpy 2.4.6; this is numpy "
            f"{np.__version__}): results would not be comparable. Install numpy 2.4.6, or pass --allow-new-data "
            f"to accept the new data knowingly")


def _read_info(dataset_dir: Path, name: str = DATASET_NAME) -> dict | None:
    try:
        info = json.loads((dataset_dir / INFO_FILE).read_text())
        split = json.loads((dataset_dir / f"split_{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(split, dict) or set(split) != set(SPLITS):
        return None
    image_dir = dataset_dir / name
    if not all(isinstance(items, list) and items and all((image_dir / it[0]).is_file() for it in items)
               for items in split.values()):
        return None
    return info if isinstance(info, dict) else None


def is_valid_synthlesion(root: str | Path, world: World = ATTRIBUTE_WORLD) -> bool:
    """True if ``root/<world.name>`` holds a split file whose images all exist, and its info file."""
    return _read_info(Path(root) / world.name, world.name) is not None


def make_synthlesion(root: str | Path, seed: int = 0, domain: AcquisitionDomain | None = None, *,
                     n_train: int = N_TRAIN_PER_CLASS, n_val: int = N_VAL_PER_CLASS,
                     n_test: int = N_TEST_PER_CLASS, force: bool = False, check_hashes: bool = True,
                     world: World = ATTRIBUTE_WORLD) -> Path:
    """Write SynthLesion (``world``: ``ATTRIBUTE_WORLD``, or ``CLINICAL_WORLD`` for SynthLesionClinical) under
    ``root`` and return ``root/<world.name>``. ``domain`` defaults to the world's benchmark domain.

    An existing complete folder made with the same (version, seed, domain, counts) is kept; one made with other
    settings raises ``FileExistsError`` unless ``force``. Writing goes to ``root/.SynthLesion.partial`` and is
    renamed at the end, so a crash never leaves a half-written dataset. ``check_hashes`` compares the default
    dataset with the world's reference hashes (``HashMismatchError`` on a difference).
    """
    counts = check_generator_args(seed, n_train, n_val, n_test)
    domain = world.domain if domain is None else domain
    name = world.name
    root = Path(root)
    dataset_dir = root / name
    wanted = {"version": GENERATOR_VERSION, "seed": int(seed), "domain": domain.as_dict(),
              "counts": {k: int(v) for k, v in counts.items()}}
    if dataset_dir.exists() and not force:
        info = _read_info(dataset_dir, name)
        if info is None:
            raise FileExistsError(f"{dataset_dir} exists but is not a complete {name} dataset; remove it or "
                                  "pass --force to regenerate")
        found = {k: info.get(k) for k in wanted}
        if found != wanted:
            changed = ", ".join(f"{k}: {found[k]} → {wanted[k]}" for k in wanted if found[k] != wanted[k])
            raise FileExistsError(f"{dataset_dir} was generated with other settings ({changed}); pass --force to "
                                  "regenerate")
        logger.info("%s already exists with these settings; nothing to do", dataset_dir)
        return dataset_dir

    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    image_dir = partial / name
    for classname in world.classnames:
        (image_dir / class_folder(classname)).mkdir(parents=True)
    split: dict[str, list[list]] = {}
    hashes: dict[str, str] = {}
    for split_index, split_name in enumerate(SPLITS):
        images, labels = render_split(int(seed), split_index, int(counts[split_name]), domain)
        hashes[split_name] = content_hash(images, labels)
        items = []
        for i, (img, label) in enumerate(zip(images, labels)):
            classname = world.classnames[int(label)]
            relpath = f"{class_folder(classname)}/{split_name}_{i:05d}.png"
            Image.fromarray(img, mode="L").save(image_dir / relpath, format="PNG")
            items.append([relpath, int(label), classname])
        order = np.random.default_rng([int(seed), 2000 + split_index]).permutation(len(items))
        split[split_name] = [items[j] for j in order]  # real split files are not grouped by class
    split_text = json.dumps(split, indent=4, separators=(",", ": "))
    hashes["split_file"] = hashlib.sha256(split_text.encode()).hexdigest()
    if check_hashes:
        _check_reference(hashes, int(seed), domain, counts, world)
    (partial / f"split_{name}.json").write_text(split_text)
    (partial / PROMPT_BANK_FILE).write_text(json.dumps(world.bank(), indent=2) + "\n")
    info = {**wanted, "generator": __name__, "hashes": hashes, "numpy": np.__version__,
            "labels": {c: cls.label for c, cls in zip(world.classnames, SYNTHLESION_CLASSES)}}
    atomic_write_text(partial / INFO_FILE, json.dumps(info, indent=2) + "\n")
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    partial.rename(dataset_dir)
    return dataset_dir


def parse_domain(text: str | None, base: AcquisitionDomain = TARGET_DOMAIN) -> AcquisitionDomain:
    """A domain from a JSON object of overrides (``--domain '{"gamma": 1.6}'``); ``None`` → ``base``."""
    if not text:
        return base
    try:
        overrides = json.loads(text)
    except ValueError as err:
        raise ValueError(f"--domain is not valid JSON ({err}); expected e.g. '{{\"gamma\": 1.6}}'") from err
    return AcquisitionDomain.from_dict(overrides, base)
