"""Datasets: every catalogue row is registered in ``DATASET_REGISTRY`` under its name."""

from __future__ import annotations

from functools import partial

from datasets.biomed import BiomedDataset
from datasets.catalogue import CATALOGUE, DatasetInfo, get_info
from engine.registry import DATASET_REGISTRY

for _row in CATALOGUE:
    if _row.name not in DATASET_REGISTRY:
        DATASET_REGISTRY.register(partial(BiomedDataset, info=_row), name=_row.name)

__all__ = ["CATALOGUE", "BiomedDataset", "DatasetInfo", "get_info"]
