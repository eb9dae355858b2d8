"""Generate the SynthMed synthetic dataset.

Usage: ``python scripts/make_synthetic_data.py --root DIR [--seed S] [--force]``.

Writes ``DIR/SynthMed/split_SynthMed.json`` and ``DIR/SynthMed/SynthMed/<class_folder>/…`` (see
``datasets/synthetic.py``). An existing valid dataset is left alone unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

# Run as `python scripts/make_synthetic_data.py` from anywhere: make the repo root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.synthetic import (
    DATASET_NAME,
    N_TEST_PER_CLASS,
    N_TRAIN_PER_CLASS,
    N_VAL_PER_CLASS,
    SYNTHMED_CLASSES,
    is_valid_synthmed,
    make_synthmed,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the SynthMed synthetic dataset.")
    parser.add_argument("--root", required=True, type=Path, help=f"data root; the dataset goes to ROOT/{DATASET_NAME}")
    parser.add_argument("--seed", type=int, default=0, help="non-negative generation seed (default 0)")
    parser.add_argument("--force", action="store_true", help="delete and regenerate an existing dataset")
    parser.add_argument("--n-train", type=int, default=N_TRAIN_PER_CLASS, help="train images per class")
    parser.add_argument("--n-val", type=int, default=N_VAL_PER_CLASS, help="val images per class")
    parser.add_argument("--n-test", type=int, default=N_TEST_PER_CLASS, help="test images per class")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    existed = is_valid_synthmed(args.root) and not args.force
    start = time.perf_counter()
    try:
        dataset_dir = make_synthmed(
            args.root, args.seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, force=args.force
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start

    split = json.loads((dataset_dir / f"split_{DATASET_NAME}.json").read_text())
    counts = ", ".join(f"{name} {len(items)}" for name, items in split.items())
    if existed:
        print(f"{DATASET_NAME} already exists at {dataset_dir} ({counts}); nothing done (use --force to regenerate)")
    else:
        print(
            f"{DATASET_NAME}: wrote {len(SYNTHMED_CLASSES)} classes ({counts}) to {dataset_dir} "
            f"in {elapsed:.1f}s (seed {args.seed})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
