"""SynthLesion: a procedural lesion-image world in which prompt learning really learns (../shared/docs/SYNTHLESION.md).

Grayscale 64×64 images of one lesion near the centre, described by five attributes (``ATTRIBUTES``: shape, margin,
texture, brightness, size; 96 combinations). Ten downstream classes (``SYNTHLESION_CLASSES``) each fix four
attributes (size is free); their labels are medical names that never appear in pre-training captions, and their
class names (what the text encoder reads) are canonical attribute descriptions such as "dark round lesion with
smooth margins and homogeneous texture". The first five (labels 0–4) are the base classes of the base-to-novel
protocol, the last five the novel ones; every attribute combination of a novel class is excluded from the tiny
CLIP's pre-training (``pretraining_combinations``), so base-to-novel is also compositional generalisation.

An :class:`AcquisitionDomain` holds the imaging knobs (noise, contrast, background variation, gamma, jitter,
radius scale, texture amplitude). The pre-training world is ``SOURCE_DOMAIN``; the downstream benchmark
("another hospital") is ``TARGET_DOMAIN`` (gamma 2.0), where zero-shot accuracy drops and prompt learning has room.

``make_synthlesion(root, seed, domain)`` writes ``root/SynthLesion/`` in the real on-disk layout::

    root/SynthLesion/split_SynthLesion.json     {"train"|"val"|"test": [[relpath, label, classname], ...]}
    root/SynthLesion/SynthLesion/<class_folder>/<label>_<split>_<i>.png   8-bit grayscale PNG ("L")
    root/SynthLesion/synthlesion_info.json      generator version, seed, domain, counts and content hashes
    root/SynthLesion/prompt_bank.json           {classname: [50 paraphrases]}: the teacher bank of BiomedCoOp / OGKD

Rendering is vectorised float64 numpy over chunks of images and deterministic for a seed: every chunk draws from
its own ``numpy.random.Generator`` seeded with (seed, stream, chunk). numpy does not promise identical Generator
streams across versions, so the content hash of the default dataset (seed 0, target domain) is recorded in
``REFERENCE_HASHES`` and checked after rendering: a numpy change that alters the data is an error, not a drift.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.utils import atomic_write_text
from synth.synthmed import check_generator_args, class_folder

logger = logging.getLogger(__name__)

DATASET_NAME = "SynthLesion"  # registry key = folder name = split-file stem
IMAGE_SIZE = 64
GENERATOR_VERSION = 2  # bump when the rendering changes (and re-record REFERENCE_HASHES); 2: float64 arithmetic
N_TRAIN_PER_CLASS = 24  # K = 16 plus spare
N_VAL_PER_CLASS = 8
N_TEST_PER_CLASS = 100
SPLITS = ("train", "val", "test")
INFO_FILE = "synthlesion_info.json"
PROMPT_BANK_FILE = "prompt_bank.json"
N_BANK_PROMPTS = 50
CHUNK = 500  # images rendered per vectorised chunk

# ------------------------------------------------------------------------------------------------ attributes
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("round", "oval", "irregular", "spiculated"),
    "margin": ("smooth", "blurry"),
    "texture": ("homogeneous", "speckled", "striped"),
    "brightness": ("bright", "dark"),
    "size": ("small", "large"),
}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)
N_COMBINATIONS = math.prod(len(v) for v in ATTRIBUTES.values())  # 96


@dataclass(frozen=True)
class LesionClass:
    """A downstream class: a medical label and the four attributes it fixes (size is free)."""

    label: str  # medical name (never in pre-training captions)
    shape: str
    margin: str
    texture: str
    brightness: str

    @property
    def classname(self) -> str:
        """The canonical attribute description: the class name the text encoder reads."""
        return f"{self.brightness} {self.shape} lesion with {self.margin} margins and {self.texture} texture"

    def attributes(self) -> dict[str, str]:
        return {"shape": self.shape, "margin": self.margin, "texture": self.texture, "brightness": self.brightness}


# Label id = position. Base classes first: the protocol's base half (first ceil(10/2) labels) is these five.
SYNTHLESION_CLASSES: tuple[LesionClass, ...] = (
    LesionClass("simple cyst", "round", "smooth", "homogeneous", "dark"),
    LesionClass("fibroadenoma", "oval", "smooth", "homogeneous", "bright"),
    LesionClass("invasive carcinoma", "spiculated", "blurry", "speckled", "bright"),
    LesionClass("organizing hematoma", "irregular", "blurry", "striped", "dark"),
    LesionClass("calcified granuloma", "round", "smooth", "speckled", "bright"),
    LesionClass("complicated cyst", "round", "smooth", "speckled", "dark"),
    LesionClass("phyllodes tumor", "oval", "smooth", "striped", "bright"),
    LesionClass("abscess", "irregular", "blurry", "homogeneous", "dark"),
    LesionClass("lymphoma", "oval", "blurry", "homogeneous", "dark"),
    LesionClass("desmoid tumor", "spiculated", "smooth", "striped", "dark"),
)
N_BASE = 5
SYNTHLESION_CLASSNAMES: tuple[str, ...] = tuple(c.classname for c in SYNTHLESION_CLASSES)


def class_codes(cls: LesionClass) -> tuple[int, int, int, int]:
    """(shape, margin, texture, brightness) value indices of a class."""
    return tuple(ATTRIBUTES[a].index(v) for a, v in cls.attributes().items())  # type: ignore[return-value]


def all_combinations() -> np.ndarray:
    """Every attribute combination as value indices, [96, 5] int64 in ``ATTRIBUTE_NAMES`` order."""
    grids = np.meshgrid(*[np.arange(len(v)) for v in ATTRIBUTES.values()], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)


def pretraining_combinations() -> np.ndarray:
    """The 86 combinations allowed in pre-training: all but those of a novel class (any size)."""
    combos = all_combinations()
    novel = {class_codes(c) for c in SYNTHLESION_CLASSES[N_BASE:]}
    keep = [tuple(int(v) for v in row[:4]) not in novel for row in combos]
    return combos[np.array(keep)]


# ------------------------------------------------------------------------------------------------ domain
@dataclass(frozen=True)
class AcquisitionDomain:
    """Imaging knobs of one acquisition domain ("hospital"). Values are validated against ``DOMAIN_RANGES``."""

    noise: float = 0.06  # std of Gaussian pixel noise
    contrast: float = 1.0  # gain around mid-grey 0.5
    background_variation: float = 0.08  # amplitude of the smooth low-frequency background field
    gamma: float = 1.0  # intensity gamma applied last (2.0 darkens mid-tones: the target domain)
    jitter: float = 5.0  # max lesion offset from the centre, px
    radius_scale: float = 1.0  # multiplies the small (7–9.5 px) and large (13–17 px) radii
    texture_amplitude: float = 1.0  # multiplies the speckle and stripe contrast

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = DOMAIN_RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"domain knob {f.name!r} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"domain knob {f.name!r} = {value} is out of range [{low}, {high}]")

    @classmethod
    def from_dict(cls, overrides: dict[str, Any], base: AcquisitionDomain | None = None) -> AcquisitionDomain:
        """``base`` (default ``TARGET_DOMAIN``) with ``overrides``; an unknown knob is a one-line ``ValueError``."""
        if not isinstance(overrides, dict):
            raise ValueError(f"a domain must be a JSON object of knobs, got {type(overrides).__name__}")
        known = [f.name for f in fields(cls)]
        for key in overrides:
            if key not in known:
                from engine.registry import suggest

                raise ValueError(f"unknown domain knob {key!r}.{suggest(key, known)} Knobs: {', '.join(known)}")
        values = {k: float(v) if type(v) is int else v for k, v in overrides.items()}  # JSON 2 → 2.0
        return replace(base if base is not None else TARGET_DOMAIN, **values)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


DOMAIN_RANGES: dict[str, tuple[float, float]] = {
    "noise": (0.0, 0.5),
    "contrast": (0.05, 3.0),
    "background_variation": (0.0, 0.3),
    "gamma": (0.2, 5.0),
    "jitter": (0.0, 16.0),
    "radius_scale": (0.3, 1.8),
    "texture_amplitude": (0.0, 3.0),
}
SOURCE_DOMAIN = AcquisitionDomain()
TARGET_DOMAIN = AcquisitionDomain(gamma=2.0)


# ------------------------------------------------------------------------------------------------ renderer
def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] matrix of bilinear interpolation weights (upsampling ``x`` is ``M @ x @ M.T``)."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float64)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] row-normalised Gaussian blur matrix (separable smoothing is ``G @ x @ G.T``)."""
    idx = np.arange(n, dtype=np.float64)
    g = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
    return g / g.sum(axis=1, keepdims=True)


_COARSE = 5  # control points per side of the background field
_UPSAMPLE = _bilinear_matrix(IMAGE_SIZE, _COARSE)
_BLUR = _gaussian_matrix(IMAGE_SIZE, 1.0)
_MAX_SPIKES = 11


def render(codes: np.ndarray, rng: np.random.Generator, domain: AcquisitionDomain = SOURCE_DOMAIN) -> np.ndarray:
    """Render lesion images for attribute codes ``[N, 5]`` (``ATTRIBUTE_NAMES`` order) as uint8 ``[N, 64, 64]``.

    All randomness comes from ``rng`` in a fixed order, so equal (codes, rng state, domain) give equal pixels. The
    arithmetic is float64: float32 transcendental functions (exp, sin, hypot, …) and matrix products differ in their
    last bits between CPUs (numpy's SIMD level, the BLAS kernel), which flipped a few pixels' rounding (generator
    version 1 rendered differently on AVX2 and AVX-512 machines); float64 leaves ~1e-13 of headroom per pixel.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for start in range(0, n, CHUNK):
        out[start:start + CHUNK] = _render_chunk(codes[start:start + CHUNK], rng, domain)
    return out


def _render_chunk(codes: np.ndarray, rng: np.random.Generator, d: AcquisitionDomain) -> np.ndarray:
    n = codes.shape[0]
    f32, f64 = np.float32, np.float64
    shape, margin, texture, bright, size = (codes[:, i][:, None, None] for i in range(5))

    def u(low: float, high: float, *extra: int) -> np.ndarray:
        return rng.uniform(low, high, size=(n, *extra))

    # every draw happens for every image (fixed order), whatever its attributes
    background = u(0.42, 0.58)[:, None, None]
    coarse = u(-1.0, 1.0, _COARSE, _COARSE)
    centre = u(-1.0, 1.0, 2) * d.jitter + (IMAGE_SIZE - 1) / 2
    rotation = u(0.0, 2 * np.pi)[:, None, None]
    radius = np.where(size == 0, u(7.0, 9.5)[:, None, None], u(13.0, 17.0)[:, None, None]) * d.radius_scale
    aspect = u(1.9, 2.5)[:, None, None]
    harm_amp = u(0.08, 0.18, 4)
    harm_phase = u(0.0, 2 * np.pi, 4)
    n_spikes = rng.integers(7, 12, size=n)
    spike_angle = u(0.0, 2 * np.pi, _MAX_SPIKES)
    spike_len = u(0.6, 0.9)[:, None, None]
    edge = np.where(margin == 0, 0.6, u(2.8, 3.8)[:, None, None])
    offset = u(0.22, 0.32)[:, None, None] * np.where(bright == 0, 1.0, -1.0)
    speckle_noise = rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=f32).astype(f64)
    stripe_period = u(5.0, 6.5)[:, None, None]
    stripe_dir = u(0.0, np.pi)[:, None, None]
    stripe_phase = u(0.0, 2 * np.pi)[:, None, None]
    pixel_noise = rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=f32).astype(f64)

    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(f64)
    dx = xx[None] - centre[:, 0, None, None]
    dy = yy[None] - centre[:, 1, None, None]
    rho = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx) - rotation

    # radial boundary R(phi): each shape's formula evaluated on its own images only
    boundary = np.broadcast_to(radius, rho.shape).copy()  # round
    oval = shape[:, 0, 0] == 1
    if oval.any():
        r, a, p = radius[oval], aspect[oval], phi[oval]
        major, minor = r * a ** 0.35, r * a ** -0.65
        boundary[oval] = major * minor / np.sqrt((minor * np.cos(p)) ** 2 + (major * np.sin(p)) ** 2)
    irregular = shape[:, 0, 0] == 2
    if irregular.any():
        p = phi[irregular]
        wave = sum(harm_amp[irregular, j, None, None] * np.cos((j + 2) * p + harm_phase[irregular, j, None, None])
                   for j in range(4))
        boundary[irregular] = radius[irregular] * (1.0 + wave)
    spiculated = shape[:, 0, 0] == 3
    if spiculated.any():
        p = phi[spiculated][:, None]
        diff = np.abs(np.mod(p - spike_angle[spiculated][:, :, None, None] + np.pi, 2 * np.pi) - np.pi)
        active = np.arange(_MAX_SPIKES)[None, :, None, None] < n_spikes[spiculated][:, None, None, None]
        spikes = np.where(active, np.clip(1.0 - diff / 0.13, 0.0, 1.0) ** 2, 0.0).max(axis=1)
        r = radius[spiculated]
        boundary[spiculated] = 0.7 * r + spike_len[spiculated] * r * spikes
    # soft edge: the 10–90 % rise spans ~2.2 edge widths
    mask = 1.0 / (1.0 + np.exp(np.clip(-2.0 * (boundary - rho) / edge, -30.0, 30.0)))

    # texture inside the lesion, signed against the lesion's own offset
    smooth = _BLUR @ speckle_noise @ _BLUR.T
    smooth /= smooth.std(axis=(1, 2), keepdims=True) + 1e-6
    speckle = (smooth > 1.0).astype(f64) - 0.16
    angle = 2 * np.pi * (xx[None] * np.cos(stripe_dir) + yy[None] * np.sin(stripe_dir)) / stripe_period
    stripes = np.sin(angle + stripe_phase)
    amp = d.texture_amplitude
    tex = np.select([texture == 1, texture == 2], [0.22 * amp * speckle, 0.12 * amp * stripes], 0.0)
    lesion = offset - np.sign(offset) * tex

    field = background + d.background_variation * (_UPSAMPLE @ coarse @ _UPSAMPLE.T)
    img = field + mask * lesion + d.noise * pixel_noise
    img = np.clip(0.5 + d.contrast * (img - 0.5), 0.0, 1.0) ** d.gamma
    return np.round(img * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ captions
_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"round": ("round", "circular", "rounded"), "oval": ("oval", "elliptical", "elongated"),
              "irregular": ("irregular", "irregularly shaped", "lobulated"),
              "spiculated": ("spiculated", "spiky", "stellate")},
    "margin": {"smooth": ("smooth", "sharp", "well-defined"), "blurry": ("blurry", "fuzzy", "ill-defined")},
    "texture": {"homogeneous": ("homogeneous", "uniform", "even"), "speckled": ("speckled", "granular", "dotted"),
                "striped": ("striped", "banded", "streaked")},
    "brightness": {"bright": ("bright", "hyperintense", "light"), "dark": ("dark", "hypointense", "black")},
    "size": {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")},
}
_NOUNS = ("lesion", "mass", "nodule", "tumor")
_PREFIXES = ("", "a ", "a photo of a ", "a scan showing a ", "an image of a ", "there is a ", "ultrasound of a ",
             "a picture of a ")
_MENTION_P = 0.8


def _article(text: str) -> str:
    """Fix "a" before a vowel ("a oval" → "an oval") at the start and after the prefixes."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][:1] in "aeiou" else "a"
    return " ".join(words)


def describe(values: dict[str, str], rng: np.random.Generator) -> str:
    """One random caption mentioning the attributes in ``values`` (a subset of ``ATTRIBUTE_NAMES``)."""
    pick = {a: _SYNONYMS[a][v][int(rng.integers(len(_SYNONYMS[a][v])))] for a, v in values.items()}
    adjectives = [pick[a] for a in ("size", "brightness", "shape") if a in pick]
    if len(adjectives) > 1 and rng.random() < 0.3:
        adjectives = [adjectives[i] for i in rng.permutation(len(adjectives))]
    clauses = []
    if "margin" in pick:
        clauses.append(f"{pick['margin']} margins")
    if "texture" in pick:
        clauses.append(f"{pick['texture']} texture")
    if len(clauses) == 2 and rng.random() < 0.4:
        clauses.reverse()
    noun = _NOUNS[int(rng.integers(len(_NOUNS)))]
    text = " ".join([*adjectives, noun])
    if clauses:
        text += " with " + " and ".join(clauses)
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    text = _article(prefix + text)
    return text + "." if rng.random() < 0.5 else text


def sample_captions(codes: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """A fresh caption per image of ``codes [N, 5]``: each attribute mentioned with probability 0.8.

    Returns the captions and the mention mask ``[N, 5]`` (bool), from which caption/image consistency follows.
    """
    mentioned = rng.random(codes.shape) < _MENTION_P
    captions = []
    for row, mask in zip(codes, mentioned):
        values = {a: ATTRIBUTES[a][int(row[i])] for i, a in enumerate(ATTRIBUTE_NAMES) if mask[i]}
        captions.append(describe(values, rng))
    return captions, mentioned


def consistency(image_codes: np.ndarray, caption_codes: np.ndarray, mentioned: np.ndarray) -> np.ndarray:
    """``[N_img, N_cap]`` bool: caption j fits image i (every attribute it mentions has the image's value)."""
    same = image_codes[:, None, :] == caption_codes[None, :, :]
    return np.all(same | ~mentioned[None, :, :], axis=-1)


# ------------------------------------------------------------------------------------------------ prompt bank
_BANK_TEMPLATES = (
    "a {size}{brightness} {shape} {noun} with {margin} margins and {texture} texture.",
    "a {size}{shape} {noun} that is {brightness}, with {texture} texture and {margin} margins.",
    "a scan showing a {size}{brightness} {shape} {noun} with {texture} texture and {margin} margins.",
    "an image of a {brightness} {size}{shape} {noun} with {margin} margins and {texture} texture.",
    "there is a {size}{shape} {brightness} {noun} with {margin} margins and {texture} texture.",
    "a {brightness} {noun}, {shape} in shape, with {margin} margins and {texture} texture.",
)
_BANK_SIZES = ("", "small ", "large ")


def prompt_bank(n: int = N_BANK_PROMPTS) -> dict[str, list[str]]:
    """``{classname: [n distinct paraphrases]}``: synonyms, word order and optional size mentions of each class's
    four attributes, deterministic (a fixed RNG per class). Plays the role of BiomedCoOp's LLM sentences."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sentences per class must be an integer ≥ 1, got {n!r}")
    bank: dict[str, list[str]] = {}
    for label, cls in enumerate(SYNTHLESION_CLASSES):
        rng = np.random.default_rng([7, label])
        syn = {a: _SYNONYMS[a][v] for a, v in cls.attributes().items()}
        sentences: list[str] = []
        seen: set[str] = set()
        for _ in range(100 * n):
            words = {a: s[int(rng.integers(len(s)))] for a, s in syn.items()}
            template = _BANK_TEMPLATES[int(rng.integers(len(_BANK_TEMPLATES)))]
            sentence = _article(template.format(size=_BANK_SIZES[int(rng.integers(3))],
                                                noun=_NOUNS[int(rng.integers(len(_NOUNS)))], **words))
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
                if len(sentences) == n:
                    break
        else:
            raise ValueError(f"class {cls.label!r} has only {len(sentences)} distinct paraphrases; {n} requested")
        bank[cls.classname] = sentences
    return bank


# ------------------------------------------------------------------------------------------------ clinical regime
# The same images and classes, but the text encoder reads the medical labels, which pre-training grounds only weakly:
# a label is named in a fraction of the captions of its class's images (``PretrainSettings.label_p``), and a share of
# those names are another, attribute-sharing class's label (``label_noise``: a confusion a report writer makes).
# The attribute words stay strongly grounded, the teacher bank is LLM-style descriptions of each label's appearance,
# and the benchmark images come from a domain near the pre-training one (``CLINICAL_DOMAIN``).
CLINICAL_DATASET_NAME = "SynthLesionClinical"
CLINICAL_CLASSNAMES: tuple[str, ...] = tuple(c.label for c in SYNTHLESION_CLASSES)
CLINICAL_DOMAIN = AcquisitionDomain(gamma=1.3, noise=0.08, background_variation=0.1)


def _shared(a: LesionClass, b: LesionClass) -> int:
    return sum(x == y for x, y in zip(class_codes(a), class_codes(b)))


#: label id → the other classes sharing at least two attributes with it (the labels a noisy caption confuses it with)
CONFUSABLE: tuple[tuple[int, ...], ...] = tuple(
    tuple(j for j, other in enumerate(SYNTHLESION_CLASSES) if j != i and _shared(cls, other) >= 2)
    for i, cls in enumerate(SYNTHLESION_CLASSES))


def class_of_codes(codes: np.ndarray) -> np.ndarray:
    """``[N]`` int64: the label whose four attributes the codes ``[N, ≥4]`` have, or −1 (no class's combination)."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.full(len(codes), -1, np.int64)
    for label, cls in enumerate(SYNTHLESION_CLASSES):
        out[np.all(codes[:, :4] == np.array(class_codes(cls)), axis=1)] = label
    return out


_LABEL_ONLY = ("{a} {label}", "a scan showing {a} {label}", "{label}", "an image of {a} {label}",
               "ultrasound of {a} {label}", "findings consistent with {label}")


def sample_clinical_captions(codes: np.ndarray, rng: np.random.Generator, label_p: float,
                             label_noise: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Captions of the clinical regime's pre-training: as :func:`sample_captions`, but the caption of an image of a
    class's combination names a label with probability ``label_p`` — the wrong (a confusable class's) label with
    probability ``label_noise`` — either alone (no attribute then) or next to the attribute caption.

    Returns the captions, the mention mask ``[N, 5]`` and the named label ``[N]`` (−1: none).
    """
    n = len(codes)
    classes = class_of_codes(codes)
    mentioned = rng.random(codes.shape) < _MENTION_P
    name_it = (rng.random(n) < label_p) & (classes >= 0)
    wrong = rng.random(n) < label_noise
    form = rng.random(n)
    pick = rng.random(n)
    named = np.full(n, -1, np.int64)
    captions = []
    for i, row in enumerate(codes):
        if name_it[i]:
            c = int(classes[i])
            named[i] = CONFUSABLE[c][int(pick[i] * len(CONFUSABLE[c]))] if wrong[i] else c
            label = SYNTHLESION_CLASSES[int(named[i])].label
            if form[i] < 0.4:  # the label alone
                mentioned[i] = False
                template = _LABEL_ONLY[int(form[i] / 0.4 * len(_LABEL_ONLY))]
                captions.append(_article(template.format(a="a", label=label)))
                continue
        values = {a: ATTRIBUTES[a][int(row[j])] for j, a in enumerate(ATTRIBUTE_NAMES) if mentioned[i, j]}
        text = describe(values, rng).rstrip(".")
        if named[i] >= 0:
            label = SYNTHLESION_CLASSES[int(named[i])].label
            text = f"{label}: {text}" if form[i] < 0.7 else f"{text}, consistent with {label}"
        captions.append(text)
    return captions, mentioned, named


def clinical_consistency(image_codes: np.ndarray, caption_codes: np.ndarray, mentioned: np.ndarray,
                         named: np.ndarray) -> np.ndarray:
    """``[N, N]`` bool for one batch (caption i belongs to image i): caption j fits image i if its attributes fit
    (:func:`consistency`) and the label it names, if any, is image i's class; a caption always fits its own image,
    even when it names the wrong label (that is the label noise)."""
    match = consistency(image_codes, caption_codes, mentioned)
    classes = class_of_codes(image_codes)
    match &= (named[None, :] < 0) | (classes[:, None] == named[None, :])
    np.fill_diagonal(match, True)
    return match


_GENERIC = ("{label} is a common finding on breast imaging.", "a typical case of {label}.",
            "an image showing {label}.", "{label} as seen on a routine scan.", "a lesion diagnosed as {label}.",
            "{label}, a frequent diagnosis in this clinic.", "this scan shows {label}.",
            "{label} is usually followed up with imaging.")
_DESCRIPTIVE = ("{label} appears as {a} {phrase}.", "{a} {phrase}, typical of {label}.", "{label}: {a} {phrase}.",
                "on imaging, {label} shows {a} {phrase}.", "{a} {phrase}.", "usually {a} {phrase}.",
                "{label} typically presents as {a} {phrase}.", "look for {a} {phrase}.")
GENERIC_SHARE = 0.12  # bank sentences that describe no attribute
WRONG_SHARE = 0.1  # bank sentences with one attribute wrong


def _phrase(values: dict[str, str], rng: np.random.Generator) -> str:
    """Adjectives + noun + "with …" clauses for the attributes in ``values`` (random synonyms and order)."""
    pick = {a: _SYNONYMS[a][v][int(rng.integers(len(_SYNONYMS[a][v])))] for a, v in values.items()}
    adjectives = [pick[a] for a in ("brightness", "shape") if a in pick]
    if len(adjectives) > 1 and rng.random() < 0.5:
        adjectives.reverse()
    clauses = [f"{pick['margin']} margins"] if "margin" in pick else []
    if "texture" in pick:
        clauses.append(f"{pick['texture']} {('texture', 'echotexture', 'internal pattern')[int(rng.integers(3))]}")
    if len(clauses) == 2 and rng.random() < 0.5:
        clauses.reverse()
    text = " ".join([*adjectives, _NOUNS[int(rng.integers(len(_NOUNS)))]])
    return text + (" with " + " and ".join(clauses) if clauses else "")


def clinical_prompt_bank(n: int = N_BANK_PROMPTS) -> dict[str, list[str]]:
    """``{label: [n distinct sentences]}``, LLM-style descriptions of each label's appearance: most describe two to
    four of its attributes in varied words (often naming the label), ``GENERIC_SHARE`` describe none, and
    ``WRONG_SHARE`` have one attribute wrong. Deterministic (a fixed RNG per class)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sentences per class must be an integer ≥ 1, got {n!r}")
    bank: dict[str, list[str]] = {}
    for label_id, cls in enumerate(SYNTHLESION_CLASSES):
        rng = np.random.default_rng([11, label_id])
        truth = cls.attributes()
        sentences: list[str] = []
        seen: set[str] = set()
        for _ in range(100 * n):
            kind = rng.random()
            if kind < GENERIC_SHARE:
                sentence = _GENERIC[int(rng.integers(len(_GENERIC)))].format(label=cls.label)
            else:
                k = 3 if kind < GENERIC_SHARE + WRONG_SHARE else int(rng.integers(2, 5))
                chosen = [list(truth)[j] for j in sorted(rng.permutation(4)[:k])]
                values = {a: truth[a] for a in chosen}
                if kind < GENERIC_SHARE + WRONG_SHARE:
                    a = chosen[int(rng.integers(k))]
                    others = [v for v in ATTRIBUTES[a] if v != truth[a]]
                    values[a] = others[int(rng.integers(len(others)))]
                template = _DESCRIPTIVE[int(rng.integers(len(_DESCRIPTIVE)))]
                sentence = _article(template.format(label=cls.label, a="a", phrase=_phrase(values, rng)))
            sentence = sentence[0].upper() + sentence[1:] if rng.random() < 0.5 else sentence
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
                if len(sentences) == n:
                    break
        else:
            raise ValueError(f"class {cls.label!r} has only {len(sentences)} distinct sentences; {n} requested")
        bank[cls.label] = sentences
    return bank


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
