"""One generic dataset class for every catalogue row: reads ``ROOT/<NAME>/split_<NAME>.json``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from datasets.catalogue import DatasetInfo
from engine.data import DatasetBase, DatasetError, Datum

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_LISTED_MISSING = 5


def read_split_file(split_path: Path, image_dir: Path) -> dict[str, list[Datum]]:
    """Parse a split file ``{"train"|"val"|"test": [[relpath, label, classname], ...]}`` into Datum lists.

    Every listed image must exist; missing ones are reported with their split entry."""
    try:
        with open(split_path, encoding="utf-8") as f:
            raw: Any = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"Split file {split_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or any(s not in raw for s in SPLITS):
        raise DatasetError(f"Split file {split_path} must have the keys {list(SPLITS)}")
    out: dict[str, list[Datum]] = {}
    missing: list[str] = []
    n_missing = 0
    for split in SPLITS:
        items = []
        for i, entry in enumerate(raw[split]):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int)):
                raise DatasetError(
                    f"{split_path}: {split}[{i}] = {entry!r} is not [relative path, integer label, class name]"
                )
            rel, label, classname = entry
            path = image_dir / rel
            if not os.path.isfile(path):
                n_missing += 1
                if len(missing) < MAX_LISTED_MISSING:
                    missing.append(f"{split}[{i}] {entry!r} → {path}")
                continue
            items.append(Datum(impath=str(path), label=label, classname=classname))
        out[split] = items
    if n_missing:
        raise DatasetError(
            f"{n_missing} image(s) listed in {split_path} are missing, e.g.:\n  " + "\n  ".join(missing)
        )
    if not out["train"]:
        raise DatasetError(f"{split_path}: the \"train\" split is empty; a run needs training images of every "
                           "class (list them there, e.g. with scripts/make_split.py)")
    return out


class BiomedDataset(DatasetBase):
    """A dataset in the benchmark's layout, described by one :class:`DatasetInfo` row."""

    def __init__(self, cfg: CfgNode, info: DatasetInfo) -> None:
        self.info = info
        if not cfg.DATASET.ROOT:
            raise DatasetError(f"DATASET.ROOT is empty: pass --root DIR (the folder that holds {info.name}/)")
        root = Path(cfg.DATASET.ROOT).expanduser().resolve()
        folder = root / info.name
        split_path = folder / info.split_file
        self.dataset_dir = str(folder / info.name)
        if not split_path.is_file():
            what = "folder" if not folder.is_dir() else "split file"
            raise DatasetError(
                f"{info.name}: {what} not found: expected {split_path} and images under {self.dataset_dir}/. "
                f"Get it with: {info.how_to_get(str(cfg.DATASET.ROOT))}"
            )
        splits = read_split_file(split_path, Path(self.dataset_dir))
        self.split_path = split_path  # named by the dataset's errors
        super().__init__(splits["train"], splits["val"], splits["test"])
        if info.classnames and tuple(self.classnames) != info.classnames:
            logger.warning("%s: the split file's classes %s differ from the catalogue's %s (using the split file's)",
                           info.name, self.classnames, list(info.classnames))
