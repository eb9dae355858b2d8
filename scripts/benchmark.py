#!/usr/bin/env python
"""Time a trainer's start-up and training step on SynthMed, offline, and print the numbers.

    python scripts/benchmark.py [--size full|tiny] [--trainer OGKD] [--device cpu|cuda] [--steps 5]

``--size full`` builds a randomly initialised model with BiomedCLIP's exact architecture and widths (BERT-base
text tower, 256-token context, ViT-B/16, 512-d joint space) in a temporary ``local-dir:`` folder, so the timings
are those of the real model without downloading it. Its vocabulary is the tiny model's (characters) plus every
word of the SynthMed prompt bank, so prompts have realistic token counts. ``--size tiny`` uses tiny-biomedclip.
Also reported: the text encoder on the padded 256-token context versus the trimmed one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

BIOMEDCLIP_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "initializer_range": 0.02}


def full_size_folder(root: Path, bank: dict[str, list[str]]) -> Path:
    """A local-dir folder with BiomedCLIP's architecture, random weights and a word-level vocabulary."""
    import open_clip

    from clip_backbones.tiny import TINY_BACKBONES

    tiny = TINY_BACKBONES["tiny-biomedclip"]
    folder = root / "biomedclip-architecture"
    folder.mkdir()
    vocab = (tiny / "vocab.txt").read_text().split("\n")
    vocab = [v for v in vocab if v]
    words = sorted({w for sents in bank.values() for s in sents for w in re.findall(r"[a-z0-9]+", s.lower())})
    vocab += [w for w in words if w not in set(vocab)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    shutil.copy(tiny / "tokenizer_config.json", folder)
    bert = json.loads((tiny / "config.json").read_text()) | BIOMEDCLIP_TEXT | {"vocab_size": len(vocab)}
    (folder / "config.json").write_text(json.dumps(bert))
    cfg = json.loads((tiny / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 512
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    for key in ("hf_model_name", "hf_tokenizer_name"):
        cfg["model_cfg"]["text_cfg"][key] = str(folder)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--trainer", default="OGKD")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up step)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prec", default="fp32", help="TRAINER.<NODE>.PREC (fp32 / amp / bf16)")
    args = p.parse_args(argv)

    from datasets.synthetic import PROMPT_BANK_FILE, make_synthmed
    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from engine.registry import TRAINER_REGISTRY
    from engine.trainer import build_trainer
    from engine.utils import setup_logger

    setup_logger(None, verbose=False)
    tmp = Path(tempfile.mkdtemp(prefix="ogkd-bench-"))
    try:
        data = tmp / "data"
        make_synthmed(data, seed=0)
        bank = json.loads((data / "SynthMed" / PROMPT_BANK_FILE).read_text())
        t0 = time.perf_counter()
        backbone = f"local-dir:{full_size_folder(tmp, bank)}" if args.size == "full" else "tiny-biomedclip"
        make_s = time.perf_counter() - t0
        config = Path(f"configs/trainers/{args.trainer}/few_shot/synthmed.yaml")
        if not config.is_file():
            config = Path(f"configs/trainers/{args.trainer}/few_shot.yaml")
        cfg = get_cfg_default()
        merge_from_file(cfg, "configs/datasets/synthmed.yaml")
        merge_from_file(cfg, config)
        merge_from_list(cfg, ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(tmp / "run"), "SEED", "1",
                              "TRAINER.NAME", args.trainer, "DATASET.NUM_SHOTS", "16", "MODEL.BACKBONE.NAME",
                              backbone, "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch), "DATALOADER.NUM_WORKERS",
                              "2", "USE_CUDA", str(args.device == "cuda"), "VERBOSE", "False"])
        node = TRAINER_REGISTRY.get(args.trainer).cfg_node
        if node and "PREC" in cfg.TRAINER[node]:
            merge_from_list(cfg, [f"TRAINER.{node}.PREC", args.prec])

        t0 = time.perf_counter()
        trainer = build_trainer(cfg)
        startup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        trainer.before_train()
        bank_s = time.perf_counter() - t0
        trainer.set_model_mode("train")
        batches = [b for _, b in zip(range(args.steps + 1), trainer.dm.train_loader_x)]
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        times = []
        for i, batch in enumerate(batches):
            sync()
            t0 = time.perf_counter()
            trainer.forward_backward(batch)
            sync()
            if i:
                times.append(time.perf_counter() - t0)

        bb = trainer.backbone
        pl = getattr(trainer, "prompt_learner", None)
        text_line = ""
        if pl is not None:
            prompts, tokens = pl().detach(), pl.tokenized_prompts
            with torch.no_grad():
                def clock(fn) -> float:
                    fn()
                    sync()
                    t = time.perf_counter()
                    for _ in range(3):
                        fn()
                    sync()
                    return (time.perf_counter() - t) / 3

                trimmed = clock(lambda: bb.encode_text_from_embeddings(prompts, tokens))
                full = clock(lambda: bb.encode_text(tokens))
            length = int((tokens != 0).sum(1).max())
            text_line = (f"text encoder, {len(tokens)} prompts: {full * 1e3:.1f} ms at {tokens.shape[1]} tokens, "
                         f"{trimmed * 1e3:.1f} ms trimmed to {length} ({full / trimmed:.1f}x)")
        n_params = sum(p.numel() for p in bb.parameters()) / 1e6
        print(f"{args.trainer} on SynthMed (6 classes, 16 shots), {args.size} BiomedCLIP architecture "
              f"({n_params:.1f}M parameters), {args.device}, batch {args.batch}, PREC {args.prec}, "
              f"torch threads {torch.get_num_threads()}")
        if args.size == "full":
            print(f"  random full-size checkpoint written in      {make_s:8.2f} s (not part of a real run)")
        print(f"  start-up (backbone load + data + model)     {startup_s:8.2f} s")
        print(f"  teacher bank encoding (before_train)        {bank_s:8.2f} s")
        if times:
            print(f"  training step (forward + backward)          {statistics.median(times):8.3f} s median "
                  f"of {len(times)} (min {min(times):.3f}, max {max(times):.3f})")
        if text_line:
            print(f"  {text_line}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
