"""Generate a synthetic dataset in the benchmark's on-disk layout.

Usage::

    python scripts/make_synthetic_data.py --root DIR [--dataset synthmed|synthlesion|synthlesion_clinical] [--seed S]
    python scripts/make_synthetic_data.py --root DIR --dataset synthlesion [--domain '{"gamma": 1.6}']

``synthmed`` (default): ``DIR/SynthMed/``, 6 classes in mixed file formats (``synth/synthmed.py``), for unit tests.
``synthlesion``: ``DIR/SynthLesion/``, the 10-class lesion benchmark of the pre-trained ``synthlesion-clip``
(``synth/synthlesion.py``), rendered in the target acquisition domain (gamma 2.0) unless ``--domain`` overrides
knobs (a JSON object; knobs: noise, contrast, background_variation, gamma, jitter, radius_scale, texture_amplitude).
``synthlesion_clinical``: ``DIR/SynthLesionClinical/``, the same images in SynthLesion's clinical regime for the
pre-trained ``synthlesion-clinical-clip``: class names are the medical labels, the prompt bank is LLM-style
descriptions, and the images come from a domain near the pre-training one (``CLINICAL_DOMAIN``: gamma 1.3, noise 0.08,
background variation 0.1) unless ``--domain`` overrides knobs.
An existing dataset made with the same settings is left alone; ``--force`` regenerates.
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

from synth import synthlesion, synthmed  # noqa: E402


def _synthmed(args: argparse.Namespace) -> tuple[Path, bool]:
    existed = synthmed.is_valid_synthmed(args.root) and not args.force
    counts = {k: v if v is not None else d for k, v, d in (
        ("n_train", args.n_train, synthmed.N_TRAIN_PER_CLASS), ("n_val", args.n_val, synthmed.N_VAL_PER_CLASS),
        ("n_test", args.n_test, synthmed.N_TEST_PER_CLASS))}
    return synthmed.make_synthmed(args.root, args.seed, force=args.force, **counts), existed


def _synthlesion(args: argparse.Namespace) -> tuple[Path, bool]:
    world = synthlesion.WORLDS[args.dataset]
    domain = synthlesion.parse_domain(args.domain, world.domain)
    existed = synthlesion.is_valid_synthlesion(args.root, world) and not args.force
    counts = {k: v if v is not None else d for k, v, d in (
        ("n_train", args.n_train, synthlesion.N_TRAIN_PER_CLASS),
        ("n_val", args.n_val, synthlesion.N_VAL_PER_CLASS),
        ("n_test", args.n_test, synthlesion.N_TEST_PER_CLASS))}
    path = synthlesion.make_synthlesion(args.root, args.seed, domain, force=args.force,
                                        check_hashes=not args.allow_new_data, world=world, **counts)
    return path, existed


GENERATORS = {"synthmed": (synthmed.DATASET_NAME, _synthmed),
              **{key: (world.name, _synthlesion) for key, world in synthlesion.WORLDS.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path, help="data root; the dataset goes to ROOT/<NAME>")
    parser.add_argument("--dataset", choices=sorted(GENERATORS), default="synthmed", help="which dataset")
    parser.add_argument("--seed", type=int, default=0, help="non-negative generation seed (default 0)")
    parser.add_argument("--force", action="store_true", help="delete and regenerate an existing dataset")
    parser.add_argument("--domain", default=None,
                        help="synthlesion*: JSON object of acquisition-domain knobs overriding the benchmark domain")
    parser.add_argument("--allow-new-data", action="store_true",
                        help="synthlesion*: accept data that differ from the recorded reference hashes")
    parser.add_argument("--n-train", type=int, default=None, help="train images per class")
    parser.add_argument("--n-val", type=int, default=None, help="val images per class")
    parser.add_argument("--n-test", type=int, default=None, help="test images per class")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.domain is not None and args.dataset not in synthlesion.WORLDS:
        print(f"error: --domain applies to --dataset {' / '.join(synthlesion.WORLDS)} only", file=sys.stderr)
        return 2

    name, generate = GENERATORS[args.dataset]
    start = time.perf_counter()
    try:
        dataset_dir, existed = generate(args)
    except (FileExistsError, ValueError, synthlesion.HashMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an unwritable or missing parent folder, a full disk
        print(f"error: cannot write the dataset under {args.root}: {err.strerror or err}"
              f"{f': {err.filename}' if err.filename else ''} (choose another --root, or free space)", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start

    split = json.loads((dataset_dir / f"split_{name}.json").read_text())
    counts = ", ".join(f"{s} {len(items)}" for s, items in split.items())
    if existed:
        print(f"{name} already exists at {dataset_dir} ({counts}); nothing done (use --force to regenerate)")
    else:
        n_classes = len({item[1] for item in split["train"]})
        print(f"{name}: wrote {n_classes} classes ({counts}) to {dataset_dir} in {elapsed:.1f}s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
