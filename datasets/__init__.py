"""Datasets: every catalogue row is registered in ``DATASET_REGISTRY`` under its name.

A dataset without a catalogue row is served by the same generic class when its split file exists
(``ROOT/<NAME>/split_<NAME>.json``, e.g. written by ``scripts/make_split.py``): class names come from the split
file, and the run's log says so. :func:`check_dataset` finds an unknown name before anything expensive is built.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from yacs.config import CfgNode

from datasets.biomed import BiomedDataset
from datasets.catalogue import CATALOGUE, DatasetInfo, get_info
from engine.data import DatasetError
from engine.registry import DATASET_REGISTRY, suggest

logger = logging.getLogger(__name__)

for _row in CATALOGUE:
    if _row.name not in DATASET_REGISTRY:
        DATASET_REGISTRY.register(partial(BiomedDataset, info=_row), name=_row.name)


def split_file_path(root: str, name: str) -> Path:
    """Where the generic class looks for ``name``'s split file: ``ROOT/<name>/split_<name>.json``."""
    return Path(root).expanduser() / name / f"split_{name}.json"


def unknown_dataset_message(name: str, root: str) -> str:
    """The one-line error for a name with neither a catalogue row nor a split file: both ways to add it."""
    shown = root or "DATA"
    return (f"Unknown dataset {name!r}: no catalogue row and no split file {split_file_path(shown, name)}. Either "
            f"put the images in {Path(shown) / name / name}/<class_folder>/ and write the split file with "
            f"`python scripts/make_split.py --root {shown} --name {name}` (no code edit needed), or add a row to "
            f"CATALOGUE in datasets/catalogue.py.{suggest(name, DATASET_REGISTRY.registered_names())} "
            f"Catalogue: {', '.join(DATASET_REGISTRY.registered_names())}")


def generic_info(name: str) -> DatasetInfo:
    """The catalogue row used for a dataset without one (class names: those of the split file)."""
    return DatasetInfo(name=name, config=name.lower(), modality="unknown", classnames=(),
                       get_command="python scripts/make_split.py --root {root} --name {name}")


def _generic_dataset(cfg: CfgNode, name: str) -> BiomedDataset:
    path = split_file_path(cfg.DATASET.ROOT, name)
    if not cfg.DATASET.ROOT or not path.is_file():
        raise DatasetError(unknown_dataset_message(name, cfg.DATASET.ROOT))
    logger.info("dataset %s has no catalogue row: loading %s with the generic dataset class (class names from the "
                "split file)", name, path)
    return BiomedDataset(cfg, generic_info(name))


def _fallback(name: str) -> partial:
    return partial(_generic_dataset, name=name)


DATASET_REGISTRY.set_fallback(_fallback)


def check_dataset(cfg: CfgNode) -> None:
    """Fail early (before the backbone is built) on a ``DATASET.NAME`` that is neither in the catalogue nor has a
    split file under ``DATASET.ROOT``; the error names both ways to add it."""
    name = cfg.DATASET.NAME
    if not name:
        raise DatasetError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<name>.yaml "
                           "(or DATASET.NAME <name>)")
    if name in DATASET_REGISTRY:
        return
    if not cfg.DATASET.ROOT or not split_file_path(cfg.DATASET.ROOT, name).is_file():
        raise DatasetError(unknown_dataset_message(name, cfg.DATASET.ROOT))


__all__ = ["CATALOGUE", "BiomedDataset", "DatasetInfo", "check_dataset", "generic_info", "get_info",
           "split_file_path", "unknown_dataset_message"]
