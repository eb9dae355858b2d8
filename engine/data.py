"""Data path with Dassl's semantics: Datum, DatasetBase, few-shot sampling, base/new split, transforms, loaders.

* Few-shot subsets are a deterministic function of (split, K, seed), drawn with a private ``random.Random``
  (never the global RNG, never pickled): K training and min(K, 4) validation items per class; test untouched.
* Base/new split (SPEC §3.2): sorted label ids of the training list, the first ceil(n/2) are "base", the rest
  "new"; each half is relabelled 0.. and the same split applies to train, val and test.
* Images are always converted to RGB (grayscale, RGBA, palette, 16-bit); an unreadable image raises
  :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torchvision import transforms as T
from yacs.config import CfgNode

from engine.registry import DATASET_REGISTRY
from engine.utils import derive_seed

logger = logging.getLogger(__name__)

SUBSAMPLE_CHOICES = ("all", "base", "new")
TRANSFORM_CHOICES = ("random_resized_crop", "random_flip", "center_crop", "normalize")
FEWSHOT_MAX_VAL = 4  # min(K, 4) validation items per class, as in CoOp / BiomedCoOp


class DatasetError(RuntimeError):
    """A dataset that cannot be built (missing folder or split file, missing images, bad entries)."""


class ImageReadError(RuntimeError):
    """An image file that cannot be opened or decoded. The message names the file."""


@dataclass(frozen=True)
class Datum:
    """One labelled image: absolute path, label id (in the current label space) and class name."""

    impath: str
    label: int
    classname: str
    domain: int = 0


# --------------------------------------------------------------------------------------------------------------
# Few-shot sampling and base/new subsampling
# --------------------------------------------------------------------------------------------------------------
def _group_by_label(items: Sequence[Datum]) -> OrderedDict[int, list[Datum]]:
    groups: OrderedDict[int, list[Datum]] = OrderedDict()  # order of first appearance, as Dassl
    for d in items:
        groups.setdefault(d.label, []).append(d)
    return groups


def sample_few_shot(items: Sequence[Datum], num_shots: int, *, split: str, seed: int) -> list[Datum]:
    """``num_shots`` items per class, a deterministic function of (split, num_shots, seed) and of ``items``.

    A private RNG is used, so the global Python / numpy / torch RNGs neither influence nor are consumed by the
    draw. A class with fewer items than ``num_shots`` keeps all of them (with a warning), as Dassl does.
    """
    if num_shots < 1:
        return list(items)
    rng = random.Random(f"fewshot|{split}|{num_shots}|{seed}")
    out: list[Datum] = []
    for label, group in _group_by_label(items).items():
        if len(group) >= num_shots:
            out.extend(rng.sample(group, num_shots))
        else:
            logger.warning(
                "class %r (label %d) has only %d %s items, fewer than %d shots: using all of them",
                group[0].classname, label, len(group), split, num_shots,
            )
            out.extend(group)
    return out


def select_labels(labels: Sequence[int], subsample: str) -> list[int]:
    """The label ids kept by ``subsample``: all, base (first ceil(n/2) sorted ids) or new (the rest)."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}")
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    selected = {"all": labels, "base": labels[:m], "new": labels[m:]}[subsample]
    if not selected:
        raise DatasetError(f"SUBSAMPLE_CLASSES={subsample}: no {subsample} classes among {len(labels)} classes")
    return selected


def subsample_classes(*splits: list[Datum], subsample: str = "all") -> tuple[list[Datum], ...]:
    """Keep the base (first ceil(n/2) sorted labels) or new (the rest) classes and relabel them 0.. (SPEC §3.2).

    The label set is read from the first split (the training list)."""
    selected = select_labels([d.label for d in splits[0]], subsample)
    if subsample == "all":
        return splits
    relabel = {old: new for new, old in enumerate(selected)}
    return tuple(
        [Datum(d.impath, relabel[d.label], d.classname, d.domain) for d in split if d.label in relabel]
        for split in splits
    )


# --------------------------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------------------------
class DatasetBase:
    """Train / val / test lists of :class:`Datum` with Dassl's derived attributes.

    ``classnames`` / ``lab2cname`` come from the label ids (the label order is the label-id order);
    ``num_classes`` is the number of distinct labels in the training list. After :meth:`apply_protocol`,
    ``classnames_all`` is the full label space and ``label_ids_in_all[i]`` the full label id of class i.
    """

    dataset_dir: str = ""  # set by subclasses: the folder holding the images

    def __init__(self, train_x: list[Datum], val: list[Datum] | None = None, test: list[Datum] | None = None) -> None:
        self.train_x = train_x
        self.val = val or []
        self.test = test or []
        self.lab2cname = self._lab2cname(train_x + self.val + self.test)
        self.classnames = [self.lab2cname[i] for i in sorted(self.lab2cname)]
        self.num_classes = len(self.classnames)

    @staticmethod
    def _lab2cname(items: Sequence[Datum]) -> dict[int, str]:
        mapping: dict[int, str] = {}
        for d in items:
            if mapping.setdefault(d.label, d.classname) != d.classname:
                raise DatasetError(
                    f"label {d.label} has two class names: {mapping[d.label]!r} and {d.classname!r} ({d.impath})"
                )
        labels = sorted(mapping)
        if labels != list(range(len(labels))):
            raise DatasetError(f"label ids must be 0..{len(labels) - 1}, got {labels}")
        return mapping

    def apply_protocol(self, num_shots: int, seed: int, subsample: str) -> None:
        """Few-shot subsets (train: K, val: min(K, 4) per class) then base/new subsampling, in Dassl's order."""
        train, val, test = self.train_x, self.val, self.test
        self.check_every_class_trains()
        if num_shots < 1:
            logger.info("DATASET.NUM_SHOTS %d ≤ 0: the whole training split is used (%d images; Dassl's semantics)",
                        num_shots, len(train))
        self.classnames_all = list(self.classnames)  # the label space before base/new subsampling
        self.label_ids_in_all = select_labels([d.label for d in train], subsample)  # current label → full label
        if num_shots >= 1:
            train = sample_few_shot(train, num_shots, split="train", seed=seed)
            val = sample_few_shot(val, min(num_shots, FEWSHOT_MAX_VAL), split="val", seed=seed)
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
        DatasetBase.__init__(self, train, val, test)

    def check_every_class_trains(self) -> None:
        """Every class of the label space (train ∪ val ∪ test) needs training images, in every protocol: the label
        space and the base / new halves are read from the training list, so a class missing there would be tested
        without ever being learned and would shift the halves. :class:`DatasetError` naming the class and split."""
        have = {d.label for d in self.train_x}
        for split, items in (("test", self.test), ("val", self.val)):
            missing = sorted({d.label for d in items} - have)
            if missing:
                where = getattr(self, "split_path", None) or type(self).__name__
                names = ", ".join(repr(self.lab2cname[i]) for i in missing[:5])
                n = sum(d.label == missing[0] for d in items)
                raise DatasetError(
                    f"{where}: class {names} (label {missing[0]}{', …' if len(missing) > 1 else ''}) has no images "
                    f"in the \"train\" split but {n} in \"{split}\": every class needs training images (add them to "
                    "\"train\", e.g. with scripts/make_split.py, or remove the class from every split)")

    def relpath(self, d: Datum) -> str:
        """``d.impath`` relative to the dataset's image folder (as written in split files)."""
        try:
            return Path(d.impath).relative_to(self.dataset_dir).as_posix()
        except ValueError:
            return d.impath

    def split_record(self) -> dict[str, list[list[Any]]]:
        """The training and validation items as split-file entries ``[relpath, label, classname]``."""
        return {
            name: [[self.relpath(d), d.label, d.classname] for d in items]
            for name, items in (("train", self.train_x), ("val", self.val))
        }


def build_dataset(cfg: CfgNode) -> DatasetBase:
    """Build ``cfg.DATASET.NAME`` from the dataset registry, with few-shot sampling and base/new subsampling
    applied (``DATASET.NUM_SHOTS``, ``SEED``, ``DATASET.SUBSAMPLE_CLASSES``). The entry point registers the datasets
    (``import datasets``)."""
    if not cfg.DATASET.NAME:
        raise DatasetError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<name>.yaml")
    dataset: DatasetBase = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    dataset.apply_protocol(cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.DATASET.SUBSAMPLE_CLASSES)
    return dataset


# --------------------------------------------------------------------------------------------------------------
# Images and transforms
# --------------------------------------------------------------------------------------------------------------
_NONFINITE_WARNED: set[str] = set()


def _warn_nonfinite(path: str, n: int, total: int) -> None:
    """Warn once per file (and process) that a float image holds NaN / infinite pixels."""
    if path not in _NONFINITE_WARNED:
        _NONFINITE_WARNED.add(path)
        logger.warning("%s: %d of %d pixels are NaN or infinite; they are shown as the minimum (black) and the "
                       "image is scaled by its finite pixels", path, n, total)


def read_image(path: str) -> Image.Image:
    """Open ``path`` as an RGB PIL image, whatever its mode.

    16-bit grayscale is mapped to 8 bits by its full range (value / 257); 32-bit integer and float images are
    min–max scaled over their finite pixels (NaN / infinite ones become 0, with a warning).
    Any failure raises :class:`ImageReadError` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(img, dtype=np.float64) / 257.0
                img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            elif img.mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                finite = np.isfinite(arr)
                if not finite.all():
                    _warn_nonfinite(path, int((~finite).sum()), arr.size)
                    arr = np.where(finite, arr, np.nan)
                lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if finite.any() else (0.0, 0.0)
                arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
                arr = np.nan_to_num(arr, nan=0.0)
                img = Image.fromarray(arr.astype(np.uint8))
            elif img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any decoder error becomes one clear message
        raise ImageReadError(f"Cannot read image {path}: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class Preprocessing:
    """Image size, normalisation and interpolation; by default the backbone's own."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def resolve_preprocessing(cfg: CfgNode, backbone: Any) -> Preprocessing:
    """INPUT.* values where set, else the backbone's own (``image_size``, ``mean``, ``std``, ``interpolation``)."""
    size = tuple(cfg.INPUT.SIZE) or (backbone.image_size, backbone.image_size)
    if len(size) != 2:
        raise ValueError(f"INPUT.SIZE must be (height, width), got {cfg.INPUT.SIZE}")
    interp = (cfg.INPUT.INTERPOLATION or backbone.interpolation).lower()
    if interp not in INTERPOLATIONS:
        raise ValueError(f"INPUT.INTERPOLATION must be one of {list(INTERPOLATIONS)}, got {interp!r}")
    return Preprocessing(
        size=(int(size[0]), int(size[1])),
        mean=tuple(cfg.INPUT.PIXEL_MEAN) or tuple(backbone.mean),
        std=tuple(cfg.INPUT.PIXEL_STD) or tuple(backbone.std),
        interpolation=interp,
    )


def build_transform(cfg: CfgNode, pre: Preprocessing, *, is_train: bool) -> T.Compose:
    """Dassl's transforms. Train: [random_resized_crop | Resize] → [random_flip] → ToTensor → [normalize].
    Test: Resize(shorter side) → CenterCrop → ToTensor → [normalize]."""
    names = list(cfg.INPUT.TRANSFORMS)
    unknown = [n for n in names if n not in TRANSFORM_CHOICES]
    if unknown:
        raise ValueError(f"Unknown INPUT.TRANSFORMS {unknown}; supported: {', '.join(TRANSFORM_CHOICES)}")
    interp = INTERPOLATIONS[pre.interpolation]
    normalize = [T.Normalize(mean=pre.mean, std=pre.std)] if "normalize" in names else []
    if cfg.INPUT.NO_TRANSFORM:
        return T.Compose([T.Resize(pre.size, interpolation=interp), T.ToTensor(), *normalize])
    if not is_train:
        return T.Compose(
            [T.Resize(max(pre.size), interpolation=interp), T.CenterCrop(pre.size), T.ToTensor(), *normalize]
        )
    tfm: list[Any] = []
    if "random_resized_crop" in names:
        tfm.append(T.RandomResizedCrop(pre.size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
    elif "center_crop" in names:
        tfm += [T.Resize(max(pre.size), interpolation=interp), T.CenterCrop(pre.size)]
    else:
        tfm.append(T.Resize(pre.size, interpolation=interp))
    if "random_flip" in names:
        tfm.append(T.RandomHorizontalFlip())
    return T.Compose([*tfm, T.ToTensor(), *normalize])


class DatasetWrapper(Dataset):
    """Datum list + transform → dicts ``{"img", "label", "impath", "index"}``.

    With ``seed`` set (the training set, indexed by (epoch, i) pairs from :class:`EpochSampler`), item i's random
    augmentation in epoch e is drawn from its own stream, seeded from (seed, e, i) under a forked RNG: the views
    depend neither on the batch order, the number of workers nor on anything else that draws random numbers (text
    dropout), and the global RNG is left untouched."""

    def __init__(self, items: Sequence[Datum], transform: T.Compose, *, seed: int | None = None) -> None:
        self.items = list(items)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, idx = key if isinstance(key, tuple) else (0, key)
        d = self.items[idx]
        img = read_image(d.impath)
        if self.seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "augment", epoch, idx))
                x = self.transform(img)
        return {"img": x, "label": d.label, "impath": d.impath, "index": idx}


class EpochSampler(Sampler):
    """A ``RandomSampler`` shuffling with its own ``generator`` (reseeded every epoch), yielding (epoch, i) pairs.

    The order depends only on the generator, whatever the number of workers, and the epoch reaches
    :class:`DatasetWrapper` through the indices, so persistent workers (started once per run, not once per epoch)
    still seed each view from (SEED, epoch, i)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.inner = RandomSampler(range(n), generator=generator)
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


# --------------------------------------------------------------------------------------------------------------
# DataManager
# --------------------------------------------------------------------------------------------------------------
class DataManager:
    """Dataset + transforms + loaders, as Dassl's DataManager.

    ``train_loader_x`` shuffles with its own ``torch.Generator`` (reseeded by the trainer each epoch, so an
    epoch's batches and augmentations depend only on (seed, epoch)); ``drop_last`` when the training set is at
    least one batch, as Dassl."""

    def __init__(self, cfg: CfgNode, backbone: Any, dataset: DatasetBase | None = None) -> None:
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        self.preprocessing = resolve_preprocessing(cfg, backbone)
        self.tfm_train = build_transform(cfg, self.preprocessing, is_train=True)
        self.tfm_test = build_transform(cfg, self.preprocessing, is_train=False)
        workers = int(cfg.DATALOADER.NUM_WORKERS)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if workers > cpus:
            logger.info("DATALOADER.NUM_WORKERS %d > %d available CPUs: using %d workers", workers, cpus, cpus)
            workers = cpus
        self.generator = torch.Generator()
        ds = self.dataset

        def loader(items: list[Datum], tfm: T.Compose, batch: int, train: bool) -> DataLoader | None:
            if not items:
                return None
            return DataLoader(
                DatasetWrapper(items, tfm, seed=int(cfg.SEED) if train else None),
                batch_size=batch,
                sampler=EpochSampler(len(items), self.generator) if train else None,
                # the loader draws its workers' base seed from its own generator: never from the global RNG (text
                # dropout) nor from the shuffling's (so the order does not depend on the number of workers)
                generator=torch.Generator().manual_seed(0) if train else None,
                num_workers=workers,
                drop_last=train and len(items) >= batch,
                persistent_workers=train and workers > 0,  # the training loader's workers live for the whole run
                pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
            )

        self.train_loader_x = loader(ds.train_x, self.tfm_train, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, True)
        self.val_loader = loader(ds.val, self.tfm_test, cfg.DATALOADER.TEST.BATCH_SIZE, False)
        self.test_loader = loader(ds.test, self.tfm_test, cfg.DATALOADER.TEST.BATCH_SIZE, False)
        self.num_classes = ds.num_classes
        self.lab2cname = ds.lab2cname
        self.classnames = ds.classnames

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Seed the training loader's shuffling from ``seed`` and its augmentations from (SEED, ``epoch``, item)."""
        self.generator.manual_seed(seed)
        if self.train_loader_x is not None:
            self.train_loader_x.sampler.epoch = epoch

    def summary(self) -> str:
        ds = self.dataset
        return (
            f"{type(ds).__name__}: {self.num_classes} classes, train {len(ds.train_x)}, val {len(ds.val)}, "
            f"test {len(ds.test)}; input {self.preprocessing.size} {self.preprocessing.interpolation}"
        )
