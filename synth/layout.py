"""What the synthetic worlds' generators share: the class-folder rule of the released on-disk layout and the check of
a generator's seed and image counts."""

from __future__ import annotations

import numpy as np


def class_folder(classname: str) -> str:
    """The on-disk folder of a class: the class name with spaces replaced by underscores."""
    return classname.replace(" ", "_")


def check_generator_args(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    """Validate a generator's seed and per-class counts (``ValueError``); return the counts by split."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1}
    if bad:
        raise ValueError(f"images per class must be integers ≥ 1, got {bad}")
    return {k: int(v) for k, v in counts.items()}
