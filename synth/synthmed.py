"""SynthMed: a small, deterministic, generated stand-in for the 11 biomedical benchmark datasets.

``make_synthmed(root, seed)`` writes ``root/SynthMed/`` in the real on-disk layout (SPEC §5)::

    root/SynthMed/split_SynthMed.json        {"train": [[relpath, label, classname], ...], "val": …, "test": …}
    root/SynthMed/SynthMed/<class_folder>/…  images; class folder = classname with " " → "_"
    root/SynthMed/synthmed_info.json         generator parameters (seed, counts), used to detect a mismatch
    root/SynthMed/prompt_bank.json           {classname: [60 descriptive sentences]}: the teacher prompt bank
                                             of BiomedCoOp / OGKD for these classes (``synthmed_prompt_bank``)

Six classes are defined by a combination of three attributes (``SYNTHMED_CLASS_SPECS``): an object *shape*
(round blob, spiky star or none), a *texture* (smooth, stripes, dots, smooth noise) and an *intensity*
relative to the background (dark, medium, bright). Every image also gets a random size (64–128 px per side,
rarely square), position, scale, rotation, background level, contrast, gamma, pixel noise and faint
distractor patterns that belong to other classes, so the classes are separable but not trivially.

Files deliberately mix formats and PIL modes (PNG "RGB"/"L"/"I;16"/"RGBA"/"P", JPEG "RGB"/"L", TIFF
"RGB"/"L"/"I;16") and some names contain spaces and parentheses (``scan (3).png``, ``case 12.jpg``), to
exercise image loaders. 16-bit images use the full 0–65535 range, so a loader that calls
``Image.convert("RGB")`` on them without rescaling gets a saturated image.

Determinism: each image is drawn from its own ``numpy.random.Generator`` seeded with
``(seed, class index, split index, item index)``; no global RNG is touched. The same seed gives a
byte-identical split file and identical pixel arrays (PIL's JPEG/TIFF encoders are deterministic).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from engine.utils import atomic_write_text
from synth.layout import check_generator_args, class_folder

logger = logging.getLogger(__name__)

DATASET_NAME = "SynthMed"  # registry key = folder name = split-file stem
N_TRAIN_PER_CLASS = 40
N_VAL_PER_CLASS = 10
N_TEST_PER_CLASS = 20
MIN_SIDE = 64  # image height / width are drawn uniformly from [MIN_SIDE, MAX_SIDE]
MAX_SIDE = 128
SPLITS = ("train", "val", "test")
INFO_FILE = "synthmed_info.json"
GENERATOR_VERSION = 1  # bump when the rendering changes, so stale folders are detected
PROMPT_BANK_FILE = "prompt_bank.json"  # root/SynthMed/<this>: the LLM-style prompt bank of the SynthMed classes
N_BANK_PROMPTS = 60  # sentences per class written to PROMPT_BANK_FILE (BiomedCoOp / OGKD use the first 50)

Shape = Literal["round", "spiky", "none"]
Texture = Literal["smooth", "stripes", "dots", "noise"]
Intensity = Literal["dark", "medium", "bright"]


@dataclass(frozen=True)
class SynthClassSpec:
    """The visual attributes that define one SynthMed class."""

    name: str  # class name as written in the split JSON (lowercase letters and spaces)
    shape: Shape  # object drawn on the background: "round" blob, "spiky" star, or "none" (texture only)
    texture: Texture  # pattern inside the object, or over the whole image when shape == "none"
    intensity: Intensity  # object / texture brightness relative to the background


# Label id = position in this tuple.
SYNTHMED_CLASS_SPECS: tuple[SynthClassSpec, ...] = (
    SynthClassSpec("round cyst lesion", shape="round", texture="smooth", intensity="dark"),
    SynthClassSpec("spiculated mass lesion", shape="spiky", texture="smooth", intensity="bright"),
    SynthClassSpec("striped fibrous tissue", shape="none", texture="stripes", intensity="medium"),
    SynthClassSpec("dotted granular tissue", shape="none", texture="dots", intensity="medium"),
    SynthClassSpec("bright calcified nodule", shape="round", texture="dots", intensity="bright"),
    SynthClassSpec("normal background tissue", shape="none", texture="noise", intensity="medium"),
)
SYNTHMED_CLASSES: list[str] = [spec.name for spec in SYNTHMED_CLASS_SPECS]
SYNTHMED_ATTRIBUTES: dict[str, SynthClassSpec] = {spec.name: spec for spec in SYNTHMED_CLASS_SPECS}

# (extension, PIL mode) cycled through per class, so every class and split sees every format.
FILE_FORMATS: tuple[tuple[str, str], ...] = (
    ("png", "RGB"),
    ("jpg", "RGB"),
    ("png", "L"),
    ("tif", "RGB"),
    ("jpeg", "L"),
    ("png", "I;16"),
    ("png", "RGBA"),
    ("tiff", "L"),
    ("png", "P"),
    ("jpg", "RGB"),
    ("tif", "I;16"),
    ("png", "RGB"),
)
# File-name stems cycled through; several contain spaces and parentheses.
NAME_PATTERNS: tuple[str, ...] = ("img_{k:04d}", "scan ({k})", "case {k}", "{folder}_{k:03d}", "IM-{k:04d} (1)")


# --------------------------------------------------------------------------------------------- prompt bank

# Phrasings of each attribute value (pairwise disjoint across values, so different classes never share a sentence).
_OBJECT_PHRASES: dict[str, tuple[str, ...]] = {
    "round": ("round lesion", "rounded blob", "oval focal lesion", "circular structure", "round, well defined spot"),
    "spiky": ("spiky mass", "spiculated lesion", "star shaped structure", "jagged focal mass",
              "lesion with radiating spikes"),
    "none": ("tissue pattern without a focal lesion", "diffuse tissue", "texture that fills the whole field",
             "tissue with no distinct object", "widespread tissue pattern"),
}
_TEXTURE_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "smooth": ("smooth", "homogeneous", "featureless", "evenly filled"),
    "stripes": ("striped", "banded", "streaked", "fibrous, striated"),
    "dots": ("dotted", "granular", "speckled", "punctate"),
    "noise": ("mottled", "blotchy", "grainy, irregular", "faintly noisy"),
}
_TEXTURE_NOUNS: dict[str, tuple[str, ...]] = {
    "smooth": ("a smooth texture", "a homogeneous interior", "no internal pattern", "an even, uniform fill"),
    "stripes": ("parallel stripes", "oriented bands", "linear streaks", "a fibrous striped pattern"),
    "dots": ("many small dots", "a granular pattern", "scattered specks", "fine punctate spots"),
    "noise": ("a mottled texture", "irregular blotches", "soft random mottling", "a faint grainy pattern"),
}
_INTENSITY_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "dark": ("dark", "hypointense", "low intensity", "darker than the background"),
    "medium": ("medium gray", "isointense", "intermediate intensity", "mid gray"),
    "bright": ("bright", "hyperintense", "high intensity", "brighter than the background"),
}
_INTENSITY_PHRASES: dict[str, tuple[str, ...]] = {
    "dark": ("low intensity", "a dark appearance", "low signal", "reduced brightness"),
    "medium": ("medium intensity", "an intensity close to the background", "intermediate signal",
               "moderate brightness"),
    "bright": ("high intensity", "a bright appearance", "high signal", "increased brightness"),
}
_MODALITIES: tuple[str, ...] = ("scan", "image", "synthetic scan", "grayscale image", "medical image", "slide",
                                "picture")
# Each template names the class or states all three attributes (obj holds the shape, tex/texn the texture,
# inten/intp the intensity), so sentences of different classes always differ.
_BANK_TEMPLATES: tuple[str, ...] = (
    "a {mod} showing a {inten} {obj} with {texn}.",
    "a {mod} of {name}.",
    "{name}: a {inten} {obj} with {texn}, seen in a {mod}.",
    "a {mod} with a {tex} {obj} of {intp}.",
    "this {mod} shows {name}, which appears as a {inten} {obj}.",
    "an example of {name} on a {mod}, with {texn} and {intp}.",
    "a {mod} in which a {obj} appears {inten} and {tex}.",
    "a {tex}, {inten} {obj} is visible in this {mod}.",
    "a {mod} of {name} with {texn}.",
    "the {mod} shows {intp} and {texn} in a {obj}.",
    "{name} on a {mod}: {texn}, {intp}.",
    "a close up {mod} of a {obj} with {intp} and {texn}.",
)
_BANK_STRIDE = 7919  # prime step through the phrase combinations (coprime with their count), so neighbours differ


def _with_articles(sentence: str) -> str:
    """Turn "a" into "an" before a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", sentence)


def _class_sentences(spec: SynthClassSpec, n: int, offset: int) -> list[str]:
    slots = {
        "tmpl": _BANK_TEMPLATES,
        "mod": _MODALITIES,
        "obj": _OBJECT_PHRASES[spec.shape],
        "tex": _TEXTURE_ADJECTIVES[spec.texture],
        "texn": _TEXTURE_NOUNS[spec.texture],
        "inten": _INTENSITY_ADJECTIVES[spec.intensity],
        "intp": _INTENSITY_PHRASES[spec.intensity],
    }
    sizes = [len(v) for v in slots.values()]
    total = math.prod(sizes)
    stride = _BANK_STRIDE
    while math.gcd(stride, total) != 1:
        stride += 2
    sentences: list[str] = []
    seen: set[str] = set()
    for k in range(total):  # a fixed permutation of all combinations; the first n distinct sentences are kept
        index = (k * stride + offset) % total
        choice = {}
        for key, options in slots.items():
            index, digit = divmod(index, len(options))
            choice[key] = options[digit]
        sentence = _with_articles(choice.pop("tmpl").format(name=spec.name, **choice))
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
            if len(sentences) == n:
                return sentences
    raise ValueError(f"SynthMed class {spec.name!r} has only {len(sentences)} distinct prompt sentences; "
                     f"{n} were requested")


def synthmed_prompt_bank(n: int = N_BANK_PROMPTS) -> dict[str, list[str]]:
    """A deterministic prompt bank ``{classname: [n distinct sentences]}`` for the SynthMed classes.

    Sentences are built from each class's attributes (shape, texture, intensity) with several templates,
    phrasings and modality words, in the style of BiomedCoOp's LLM prompts (lowercase ASCII, basic
    punctuation). All sentences of a class are distinct and no sentence is shared by two classes.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sentences per class must be an integer ≥ 1, got {n!r}")
    return {spec.name: _class_sentences(spec, n, offset=label) for label, spec in enumerate(SYNTHMED_CLASS_SPECS)}


def _bank_json() -> str:
    return json.dumps(synthmed_prompt_bank(), indent=2) + "\n"


# --------------------------------------------------------------------------------------------- rendering


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small [gh, gw] grid to [h, w] (numpy only)."""
    gh, gw = grid.shape
    ys = np.linspace(0.0, gh - 1.0, h)
    xs = np.linspace(0.0, gw - 1.0, w)
    y0 = np.minimum(ys.astype(np.int64), gh - 2)
    x0 = np.minimum(xs.astype(np.int64), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] with ``cells`` control points along the longer side."""
    gh = max(2, round(cells * h / max(h, w)) + 1)
    gw = max(2, round(cells * w / max(h, w)) + 1)
    return _upsample(rng.uniform(-1.0, 1.0, size=(gh, gw)), h, w)


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Oriented sinusoidal stripes in [0, 1], random period, angle and phase."""
    period = rng.uniform(5.0, 12.0)
    angle = rng.uniform(0.0, np.pi)
    phase = rng.uniform(0.0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    return 0.5 + 0.5 * np.tanh(2.0 * wave)  # sharpened towards bands


def _dots(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Granular dots in [0, 1]: at most one jittered disc per cell of a random-size grid."""
    h, w = yy.shape
    cell = int(rng.integers(6, 10))
    ny, nx = h // cell + 1, w // cell + 1
    cy = (yy // cell).astype(np.int64)
    cx = (xx // cell).astype(np.int64)
    jitter_y = rng.uniform(1.5, cell - 1.5, size=(ny, nx))
    jitter_x = rng.uniform(1.5, cell - 1.5, size=(ny, nx))
    radius = rng.uniform(0.9, 2.2, size=(ny, nx)) * (rng.random((ny, nx)) < 0.75)
    dist = np.hypot(yy - (cy * cell + jitter_y[cy, cx]), xx - (cx * cell + jitter_x[cy, cx]))
    return np.clip(radius[cy, cx] - dist + 0.5, 0.0, 1.0)


def _object_mask(rng: np.random.Generator, shape: Shape, yy: np.ndarray, xx: np.ndarray, *, scale: float) -> np.ndarray:
    """Soft [0, 1] mask of a round blob or a spiky star at a random position, size and rotation."""
    h, w = yy.shape
    r0 = scale * min(h, w)
    margin = 0.6 * r0
    y_c = rng.uniform(margin, h - margin)
    x_c = rng.uniform(margin, w - margin)
    rot = rng.uniform(0.0, 2 * np.pi)
    dy, dx = yy - y_c, xx - x_c
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    if shape == "round":
        v = v / rng.uniform(0.65, 1.0)  # ellipse aspect ratio
        theta = np.arctan2(v, u)
        radius = r0 * (1.0 + 0.07 * np.sin(3 * theta + rng.uniform(0, 2 * np.pi)))
    else:
        theta = np.arctan2(v, u)
        n_spikes = int(rng.integers(5, 10))
        spikes = np.maximum(np.cos(n_spikes * theta), 0.0) ** rng.uniform(4.0, 8.0)
        radius = r0 * (0.5 + rng.uniform(0.5, 0.8) * spikes)
    edge = rng.uniform(0.8, 2.0)
    return np.clip((radius - np.hypot(u, v)) / edge + 0.5, 0.0, 1.0)


def render_image(spec: SynthClassSpec, rng: np.random.Generator) -> np.ndarray:
    """Render one grayscale image of class ``spec`` as float32 [H, W] in [0, 1]."""
    h = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    w = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    background = rng.uniform(0.3, 0.55)
    img = background + rng.uniform(0.03, 0.10) * _smooth_noise(rng, h, w, cells=int(rng.integers(3, 8)))

    # Faint distractors borrowed from other classes (never the defining strength).
    if rng.random() < 0.3:
        img += rng.uniform(0.02, 0.05) * (_stripes(rng, yy, xx) - 0.5)
    if rng.random() < 0.3:
        img += rng.uniform(0.02, 0.05) * _dots(rng, yy, xx)
    if rng.random() < 0.25:
        blob = _object_mask(rng, "round", yy, xx, scale=rng.uniform(0.06, 0.12))
        img += rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.10) * blob

    # The class-defining texture, over the whole image (tissue) or inside the object.
    if spec.texture == "stripes":
        pattern = _stripes(rng, yy, xx) - 0.5
        amplitude = rng.uniform(0.10, 0.25)
    elif spec.texture == "dots":
        pattern = _dots(rng, yy, xx)
        amplitude = rng.uniform(0.12, 0.30)
    elif spec.texture == "noise":
        pattern = _smooth_noise(rng, h, w, cells=int(rng.integers(8, 16)))
        amplitude = rng.uniform(0.04, 0.10)
    else:  # smooth
        pattern = np.zeros((h, w))
        amplitude = 0.0

    if spec.shape == "none":
        patchiness = 0.75 + 0.25 * _smooth_noise(rng, h, w, cells=3)
        img += amplitude * patchiness * pattern
    else:
        mask = _object_mask(rng, spec.shape, yy, xx, scale=rng.uniform(0.15, 0.30))
        if spec.intensity == "dark":
            level = background - rng.uniform(0.12, 0.28)
        elif spec.intensity == "bright":
            level = background + rng.uniform(0.18, 0.38)
        else:
            level = background
        inside = level + amplitude * pattern + 0.03 * _smooth_noise(rng, h, w, cells=6)
        img = img * (1 - mask) + inside * mask

    # Acquisition: contrast, offset, gamma, pixel noise.
    mean = float(img.mean())
    img = (img - mean) * rng.uniform(0.7, 1.3) + mean + rng.uniform(-0.08, 0.08)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.05), size=(h, w))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _to_pil(gray: np.ndarray, mode: str, rng: np.random.Generator) -> Image.Image:
    """Convert a float [H, W] image in [0, 1] to a PIL image of ``mode`` (colour modes get a random tint)."""
    if mode == "I;16":
        return Image.fromarray(np.round(gray * 65535.0).astype(np.uint16))
    if mode == "L":
        return Image.fromarray(np.round(gray * 255.0).astype(np.uint8))
    gains = rng.uniform(0.8, 1.1, size=3)
    offsets = rng.uniform(-0.05, 0.08, size=3)
    rgb = np.clip(gray[..., None] * gains + offsets, 0.0, 1.0)
    rgb8 = np.round(rgb * 255.0).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb8)
    if mode == "RGBA":
        alpha = np.full(gray.shape + (1,), 255, dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb8, alpha], axis=-1))
    if mode == "P":
        return Image.fromarray(rgb8).quantize(colors=64)
    raise ValueError(f"Unsupported image mode {mode!r}; expected one of {sorted({m for _, m in FILE_FORMATS})}")


def _save(image: Image.Image, path: Path, ext: str) -> None:
    if ext in ("jpg", "jpeg"):
        image.save(path, format="JPEG", quality=90)
    elif ext in ("tif", "tiff"):
        image.save(path, format="TIFF")
    else:
        image.save(path, format="PNG")


# --------------------------------------------------------------------------------------------- layout


def _read_valid_split(dataset_dir: Path) -> dict[str, list] | None:
    """The split dict if ``dataset_dir`` holds a well-formed split file whose images all exist, else None."""
    split_path = dataset_dir / f"split_{DATASET_NAME}.json"
    try:
        split = json.loads(split_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(split, dict) or set(split) != set(SPLITS):
        return None
    image_dir = dataset_dir / DATASET_NAME
    for items in split.values():
        if not isinstance(items, list) or not items:
            return None
        for item in items:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
                return None
            if not (image_dir / item[0]).is_file():
                return None
    return split


def is_valid_synthmed(root: str | Path) -> bool:
    """True if ``root/SynthMed`` holds a well-formed split file whose images all exist."""
    return _read_valid_split(Path(root) / DATASET_NAME) is not None


def _generate(out_dir: Path, seed: int, counts: dict[str, int]) -> None:
    """Write images, split file and info file into ``out_dir`` (which must not exist)."""
    image_dir = out_dir / DATASET_NAME
    split: dict[str, list[list]] = {s: [] for s in SPLITS}
    for label, spec in enumerate(SYNTHMED_CLASS_SPECS):
        folder = class_folder(spec.name)
        (image_dir / folder).mkdir(parents=True)
        k = 0  # running index per class, so file names are unique across splits
        for split_idx, split_name in enumerate(SPLITS):
            for i in range(counts[split_name]):
                rng = np.random.default_rng([seed, label, split_idx, i])
                ext, mode = FILE_FORMATS[(k + 5 * label) % len(FILE_FORMATS)]
                stem = NAME_PATTERNS[(k + label) % len(NAME_PATTERNS)].format(k=k, folder=folder)
                relpath = f"{folder}/{stem}.{ext}"
                _save(_to_pil(render_image(spec, rng), mode, rng), image_dir / relpath, ext)
                split[split_name].append([relpath, label, spec.name])
                k += 1
    # Real split files are not grouped by class; shuffle each split with its own generator.
    for split_idx, split_name in enumerate(SPLITS):
        order = np.random.default_rng([seed, len(SYNTHMED_CLASS_SPECS), split_idx]).permutation(len(split[split_name]))
        split[split_name] = [split[split_name][j] for j in order]
    # Same formatting as Dassl's write_json.
    (out_dir / f"split_{DATASET_NAME}.json").write_text(json.dumps(split, indent=4, separators=(",", ": ")))
    info = {"generator": __name__, "version": GENERATOR_VERSION, "seed": seed}
    info.update({f"n_{s}": counts[s] for s in SPLITS})
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=4, sort_keys=True))
    (out_dir / PROMPT_BANK_FILE).write_text(_bank_json())


def make_synthmed(
    root: str | Path,
    seed: int = 0,
    *,
    n_train: int = N_TRAIN_PER_CLASS,
    n_val: int = N_VAL_PER_CLASS,
    n_test: int = N_TEST_PER_CLASS,
    force: bool = False,
) -> Path:
    """Generate the SynthMed dataset under ``root`` and return the dataset directory ``root/SynthMed``.

    Args:
        root: the DATA_ROOT; the dataset is written to ``root/SynthMed``.
        seed: non-negative seed; the same seed gives byte-identical split JSON and identical pixels.
        n_train, n_val, n_test: images per class in each split (each ≥ 1).
        force: delete and regenerate an existing ``root/SynthMed``.

    Precedence: with ``force=False`` an existing folder with a valid split file is kept as is (logged) — unless
    its ``synthmed_info.json`` records a different seed, counts or generator version, which raises
    ``FileExistsError``; an existing folder without a valid split file also raises ``FileExistsError``.
    Generation writes to ``root/.SynthMed.partial`` and renames at the end, so a crash never leaves a
    half-written dataset behind.
    """
    counts = check_generator_args(seed, n_train, n_val, n_test)
    root = Path(root)
    dataset_dir = root / DATASET_NAME

    if dataset_dir.exists() and not force:
        if _read_valid_split(dataset_dir) is None:
            raise FileExistsError(
                f"{dataset_dir} exists but holds no valid split_{DATASET_NAME}.json with all its images; "
                f"remove it or pass force=True (--force) to regenerate"
            )
        expected = {"version": GENERATOR_VERSION, "seed": int(seed), **{f"n_{s}": int(counts[s]) for s in SPLITS}}
        info_path = dataset_dir / INFO_FILE
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            found = {k: info.get(k) for k in expected}
            if found != expected:
                raise FileExistsError(
                    f"{dataset_dir} was generated with {found}, not the requested {expected}; "
                    f"pass force=True (--force) to regenerate"
                )
        bank_path = dataset_dir / PROMPT_BANK_FILE
        if not bank_path.is_file():
            atomic_write_text(bank_path, _bank_json())
            logger.info("%s already exists with a valid split file; wrote the missing %s", dataset_dir,
                        PROMPT_BANK_FILE)
        else:
            logger.info("%s already exists with a valid split file; nothing to do (force=True regenerates)",
                        dataset_dir)
        return dataset_dir

    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{DATASET_NAME}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    logger.info("Generating %s (seed=%d, per class: %s)", dataset_dir, seed, counts)
    _generate(partial, int(seed), {k: int(v) for k, v in counts.items()})
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    partial.rename(dataset_dir)
    return dataset_dir
