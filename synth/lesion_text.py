"""What SynthLesion's text encoder reads: pre-training captions, the teacher prompt banks, and the clinical regime's
medical labels, label-naming captions and LLM-style description bank (the images are those of :mod:`synth.lesions`)."""

from __future__ import annotations

import numpy as np

from synth.lesions import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    N_BANK_PROMPTS,
    SYNTHLESION_CLASSES,
    AcquisitionDomain,
    LesionClass,
    class_codes,
)

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
