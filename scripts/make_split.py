#!/usr/bin/env python
"""Write a split file for your own data laid out as one folder per class.

    python scripts/make_split.py --root DATA --name MyXray [--val 0.2 --test 0.2 --seed 0]

expects images in ``DATA/<name>/<name>/<class_folder>/…`` (class folder = class name with "_" for " ") and writes
``DATA/<name>/split_<name>.json`` ({"train"|"val"|"test": [[relative path, label, class name], ...]}), the format
of the benchmark datasets. Labels follow the sorted class folders; each class is split separately (stratified),
deterministically from the seed. It then prints how to train on it: nothing has to be added (a dataset with a split
file and no catalogue row is loaded by the generic class), a dataset YAML for the grid scripts, and the optional
catalogue row (complete Python) that also checks the class names.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


def make_split(root: Path, name: str, val: float, test: float, seed: int) -> dict[str, list[list]]:
    image_dir = root / name / name
    if not image_dir.is_dir():
        raise SystemExit(f"error: {image_dir} not found: put the images in {image_dir}/<class_folder>/")
    folders = sorted(p for p in image_dir.iterdir() if p.is_dir())
    if len(folders) < 2:
        raise SystemExit(f"error: {image_dir} needs at least two class folders, found {len(folders)}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SystemExit("error: --val and --test are fractions with val + test < 1")
    split: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 3:
            raise SystemExit(f"error: class folder {folder} has {len(files)} images; at least 3 are needed")
        random.Random(f"{name}|{folder.name}|{seed}").shuffle(files)
        n_test, n_val = max(1, round(len(files) * test)), max(1, round(len(files) * val))
        parts = {"test": files[:n_test], "val": files[n_test:n_test + n_val], "train": files[n_test + n_val:]}
        classname = folder.name.replace("_", " ")
        for part, items in parts.items():
            split[part] += [[p.relative_to(image_dir).as_posix(), label, classname] for p in sorted(items)]
    return split


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--name", required=True, help="dataset name = folder name = DATASET.NAME")
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modality", default="unknown", help="imaging modality, for the printed catalogue row")
    p.add_argument("--force", action="store_true", help="overwrite an existing split file")
    args = p.parse_args(argv)
    out = args.root / args.name / f"split_{args.name}.json"
    if out.exists() and not args.force:
        print(f"error: {out} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    split = make_split(args.root, args.name, args.val, args.test, args.seed)
    out.write_text(json.dumps(split, indent=1))
    classes = sorted({(e[1], e[2]) for e in split["train"]})
    print(f"wrote {out}: {len(classes)} classes, train {len(split['train'])}, val {len(split['val'])}, "
          f"test {len(split['test'])}")
    classnames = tuple(c for _, c in classes)
    lower = args.name.lower()
    row = (f"    DatasetInfo(name={args.name!r}, config={lower!r}, modality={args.modality!r},\n"
           f"                classnames={classnames!r},\n"
           f"                get_command=\"python scripts/make_split.py --root {{root}} --name {args.name}\"),")
    print(f"\nNo code edit is needed: train.py loads {args.name} with the generic dataset class (class names from the "
          f"split file), e.g.\n"
          f"    python train.py --root {args.root} --trainer CoOp --config-file configs/trainers/CoOp/few_shot.yaml "
          f"--output-dir output/{lower} DATASET.NAME {args.name} DATASET.NUM_SHOTS 4\n"
          f"For a config file (and `--datasets {lower}` in the grid scripts) create configs/datasets/{lower}.yaml:\n"
          f"    DATASET:\n      NAME: \"{args.name}\"\n"
          f"Optionally, to check the class names and record the modality, add this row to CATALOGUE in "
          f"datasets/catalogue.py:\n{row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
