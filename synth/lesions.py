"""The SynthLesion world, in which prompt learning really learns (../shared/docs/SYNTHLESION.md): lesion attributes,
the ten classes, acquisition domains and the renderer.

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

Rendering is vectorised float64 numpy over chunks of images and deterministic for a seed: every chunk draws from
its own ``numpy.random.Generator`` seeded with (seed, stream, chunk). numpy does not promise identical Generator
streams across versions, so the content hash of the default dataset (seed 0, target domain) is recorded in
``REFERENCE_HASHES`` and checked after rendering: a numpy change that alters the data is an error, not a drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

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
