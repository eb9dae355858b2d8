"""Re-create the shipped tiny SynthLesion CLIP (``synthlesion-clip``) from nothing: render, pre-train, report.

Usage: ``python scripts/pretrain_tiny_clip.py --out DIR [--seed S] [--steps N] [--threads T]``

Renders the pre-training pool (source domain, the 86 allowed attribute combinations), pre-trains the tiny CLIP with
the recipe of ``synth/pretrain.py`` (defaults = the shipped model's settings; ~8–10 minutes on 2 idle
cores), saves an open_clip local-dir folder in DIR and prints its zero-shot accuracies (source domain 10-way /
base 5-way / novel 5-way; target domain). Use the result with ``MODEL.BACKBONE.NAME local-dir:DIR``; the shipped
copy is ``clip_backbones/assets/synthlesion-clip`` (name ``synthlesion-clip``). Deterministic for a seed and a
thread count on the CPU.
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
    defaults = pretrain.PretrainSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (an open_clip local-dir)")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default {defaults.seed})")
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"optimisation steps (default {defaults.steps})")
    p.add_argument("--pool-size", type=int, default=defaults.pool_size,
                   help=f"rendered pre-training images (default {defaults.pool_size})")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help=f"batch size (default {defaults.batch_size})")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads (default min(2, cores); results are reproducible for a fixed thread count)")
    args = p.parse_args(argv)
    for flag in ("seed", "steps", "pool_size", "batch_size", "threads"):
        value = getattr(args, flag)
        if value < (0 if flag == "seed" else 1):
            print(f"error: --{flag.replace('_', '-')} must be {'≥ 0' if flag == 'seed' else '≥ 1'}, got {value}",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    settings = replace(defaults, seed=args.seed, steps=args.steps, pool_size=args.pool_size,
                       batch_size=args.batch_size)

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
    print(f"zero-shot, target domain (gamma 2.0): 10-way {z['target_10way']:.1f} %, base {z['target_base']:.1f} %, "
          f"novel {z['target_novel']:.1f} %")
    for name, digest in report["sha256"].items():
        print(f"sha256 {name}: {digest}")
    print(f"use it with MODEL.BACKBONE.NAME local-dir:{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
