"""Re-create the shipped tiny SynthLesion CLIP (``synthlesion-clip``) from nothing: render, pre-train, report.

Usage: ``python scripts/pretrain_tiny_clip.py --out DIR [--clinical] [--seed S] [--steps N] [--threads T]``

Renders the pre-training pool (source domain, the 86 allowed attribute combinations), pre-trains the tiny CLIP with
the recipe of ``synth/pretrain.py`` (defaults = the shipped model's settings; ~8–10 minutes on 2 idle
cores), saves an open_clip local-dir folder in DIR and prints its zero-shot accuracies (source domain 10-way /
base 5-way / novel 5-way; target domain). Use the result with ``MODEL.BACKBONE.NAME local-dir:DIR``; the shipped
copy is ``clip_backbones/assets/synthlesion-clip`` (name ``synthlesion-clip``). Deterministic for a seed and a
thread count on the CPU.

``--clinical`` pre-trains the clinical regime's model instead (``synthlesion-clinical-clip``, shipped as
``clip_backbones/assets/synthlesion-clinical-clip``): all 96 combinations, captions that name the medical labels
weakly and noisily (``--label-p``, ``--label-noise``), reported on the clinical benchmark domain with the class
names and with the prompt bank.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from synth import pretrain  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    attribute, clinical = pretrain.PretrainSettings(), pretrain.CLINICAL_SETTINGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (an open_clip local-dir)")
    p.add_argument("--clinical", action="store_true",
                   help="the clinical regime's model (synthlesion-clinical-clip): captions name the medical labels "
                        "weakly and noisily, all 96 combinations, its own defaults below")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default {attribute.seed})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimisation steps (default {attribute.steps}; --clinical: {clinical.steps})")
    p.add_argument("--pool-size", type=int, default=None,
                   help=f"rendered pre-training images (default {attribute.pool_size}; --clinical: "
                        f"{clinical.pool_size})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size (default {attribute.batch_size}; --clinical: {clinical.batch_size})")
    p.add_argument("--label-p", type=float, default=None,
                   help=f"--clinical: share of a class image's captions naming a label (default {clinical.label_p})")
    p.add_argument("--label-noise", type=float, default=None,
                   help=f"--clinical: share of those naming a confusable class's label (default "
                        f"{clinical.label_noise})")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads (default min(2, cores); results are reproducible for a fixed thread count)")
    args = p.parse_args(argv)
    defaults = clinical if args.clinical else attribute
    if not args.clinical and (args.label_p is not None or args.label_noise is not None):
        print("error: --label-p / --label-noise apply to --clinical only", file=sys.stderr)
        return 2
    for flag in ("seed", "steps", "pool_size", "batch_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "seed" else 1):
            print(f"error: --{flag.replace('_', '-')} must be {'≥ 0' if flag == 'seed' else '≥ 1'}, got {value}",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    given = {k: getattr(args, k) for k in ("seed", "steps", "pool_size", "batch_size", "label_p", "label_noise")
             if getattr(args, k) is not None}
    try:
        settings = replace(defaults, **given)
    except ValueError as err:
        print(f"error: --{str(err).replace('_', '-')}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    print(f"rendering the pre-training pool ({settings.pool_size} images) ...", flush=True)
    bar = tqdm(total=settings.steps, desc="pre-training", unit="step", file=sys.stdout, dynamic_ncols=True,
               mininterval=2.0)

    def progress(step: int, loss: float) -> None:
        if step == 0:
            bar.reset()  # rendering time is not part of the steps' ETA
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)

    model = pretrain.train(settings, progress)
    bar.close()
    train_s = time.perf_counter() - start
    report = pretrain.save(model, args.out, settings, extra={"wall_time_s": round(train_s, 1)})
    z = report["zero_shot"]
    print(f"saved {args.out} in {time.perf_counter() - start:.0f} s ({torch.get_num_threads()} threads)")
    print(f"zero-shot, source domain: 10-way {z['source_10way']:.1f} %, base 5-way {z['source_base']:.1f} %, "
          f"novel 5-way {z['source_novel']:.1f} %")
    domain = "clinical domain" if settings.clinical else "target domain (gamma 2.0)"
    print(f"zero-shot, {domain}: 10-way {z['target_10way']:.1f} %, base {z['target_base']:.1f} %, "
          f"novel {z['target_novel']:.1f} %")
    if settings.clinical:
        print(f"zero-shot with the prompt bank, clinical domain: 10-way {z['target_bank_10way']:.1f} %")
    for name, digest in report["sha256"].items():
        print(f"sha256 {name}: {digest}")
    print(f"use it with MODEL.BACKBONE.NAME local-dir:{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
