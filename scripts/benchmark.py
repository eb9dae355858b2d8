#!/usr/bin/env python
"""Measure what a run costs, phase by phase, offline — and project the paper grid from it.

    python scripts/benchmark.py [--size full|tiny] [--backbone BiomedCLIP|PubMedCLIP|PMC-CLIP] [--trainer OGKD]
                                [--device cpu|cuda] [--prec fp32|bf16]
                                [--shots 16] [--epochs 1] [--repeats 3] [--json FILE] [--project-grid]

Real ``train.py`` processes on SynthMed (6 classes), side by side in one invocation:

1. **cold** — an empty feature cache: the test features and the teacher bank are encoded and stored;
2. **warm** — the same command again, ``--repeats`` times (default 3): both are read from the cache; the warm
   column is the median of each phase and of the peak memory over the repeats (each repeat is listed too);
3. **per-step** — warm, with ``TRAIN.ENCODE_BATCH_SIZE 0``: the frozen image tower runs inside every step (the
   released code's loop), for comparing the step cost with the batched encoding's share counted; also
   ``--repeats`` times, each right after a warm run (warm 1, per-step 1, warm 2, …), and its column the median, so
   that a drift of a shared machine's load between the runs does not pass for a difference between the paths.

Each run's ``metrics.json`` holds its phase timings (``OGKD_SYNC_TIMINGS=1`` makes them exact on CUDA): process
start (interpreter + imports), backbone load, data, model, teacher bank, start → training, encoding passes,
optimisation steps, test features and evaluation, and the peak RSS / GPU memory. ``--size full`` builds a randomly
initialised model with BiomedCLIP's exact architecture (BERT-base text tower with BiomedBERT's 30522-token
vocabulary, 256-token context, ViT-B/16, 512-d; 195.9M parameters) in a temporary ``local-dir:`` folder, so the
timings and memory are those of the real model without downloading it. ``--backbone PubMedCLIP`` / ``PMC-CLIP``
measure those architectures the same way: random full-size weights written in the release's own file format
(``PubMedCLIP_ViT32.pth``; PMC-CLIP's three files beside a BiomedBERT-sized word-level vocabulary) and loaded by the
toolkit's loader for that format (``pubmedclip:<file>`` / ``pmc-clip:<folder>``).

``--project-grid`` turns the measured per-image, per-step and per-run costs into the wall time of the full OGKD
paper grid on this device — few-shot (11 datasets × K ∈ {1, 2, 4, 8, 16} × 3 seeds) and base-to-novel
(10 datasets × 3 seeds, base training + novel evaluation) — from the catalogue's real split sizes and the OGKD
configs' epochs and batch sizes, once as this toolkit runs it (cache, batched encoding) and once with the
released code's run structure (every run encodes its test split and the bank, the image tower runs in every step).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

BIOMEDCLIP_VOCAB = 30522  # BiomedBERT's vocabulary: 23.4M of BiomedCLIP's 195.9M parameters
BIOMEDCLIP_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "initializer_range": 0.02}
SHOTS = (1, 2, 4, 8, 16)
SEEDS = 3
PHASES = (  # metrics.json timings_s key, label
    ("process_start_s", "process start (interpreter + imports)"),
    ("backbone_s", "backbone load"),
    ("data_s", "data (split, few-shot sampling, loaders)"),
    ("model_s", "model (prompt learner)"),
    ("bank_s", "teacher bank (encode or cache read)"),
    ("to_training_s", "start → training begins"),
    ("encode_s", "encoding passes (training views)"),
    ("steps_s", "optimisation steps"),
    ("test_features_s", "test features (encode or cache read; before training)"),
    ("eval_test_s", "evaluation (on the test features)"),
)


def _biomedbert_files(folder: Path, bank: dict[str, list[str]]) -> dict[str, Any]:
    """BiomedBERT-sized text-tower files in ``folder``: a word-level vocabulary (the tiny model's tokens and the
    bank's words, padded with ``[unusedN]`` tokens to BiomedBERT's 30522 entries, so the token embedding — and the
    parameter count — is BiomedBERT's), the tokenizer settings and a BERT-base config.json; returns the config."""
    from clip_backbones.tiny import TINY_BACKBONES

    tiny = TINY_BACKBONES["tiny-biomedclip"]
    vocab = (tiny / "vocab.txt").read_text().split("\n")
    vocab = [v for v in vocab if v]
    words = sorted({w for sents in bank.values() for s in sents for w in re.findall(r"[a-z0-9]+", s.lower())})
    vocab += [w for w in words if w not in set(vocab)]
    if len(vocab) > BIOMEDCLIP_VOCAB:
        raise SystemExit(f"the bank has {len(vocab)} distinct words, more than BiomedBERT's {BIOMEDCLIP_VOCAB}")
    vocab += [f"[unused{i}]" for i in range(BIOMEDCLIP_VOCAB - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    shutil.copy(tiny / "tokenizer_config.json", folder)
    bert = json.loads((tiny / "config.json").read_text()) | BIOMEDCLIP_TEXT | {"vocab_size": len(vocab)}
    (folder / "config.json").write_text(json.dumps(bert))
    return bert


def full_size_folder(root: Path, bank: dict[str, list[str]]) -> Path:
    """A local-dir folder with BiomedCLIP's architecture, random weights and a word-level vocabulary
    (``_biomedbert_files``: the parameter count, 195.9M, is BiomedCLIP's)."""
    import open_clip

    from clip_backbones.tiny import TINY_BACKBONES

    tiny = TINY_BACKBONES["tiny-biomedclip"]
    folder = root / "biomedclip-architecture"
    folder.mkdir()
    _biomedbert_files(folder, bank)
    cfg = json.loads((tiny / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 512
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    for key in ("hf_model_name", "hf_tokenizer_name"):
        cfg["model_cfg"]["text_cfg"][key] = str(folder)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def pubmedclip_file(root: Path) -> Path:
    """PubMedCLIP's released format with random weights: ``{"state_dict": OpenAI CLIP ViT-B/32 state dict}``."""
    import open_clip

    from clip_backbones.released import PUBMEDCLIP_ARCH, PUBMEDCLIP_FILE

    folder = root / "pubmedclip-architecture"
    folder.mkdir()
    model = open_clip.create_model(PUBMEDCLIP_ARCH, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, folder / PUBMEDCLIP_FILE.filename)
    return folder / PUBMEDCLIP_FILE.filename


def pmc_clip_folder(root: Path, bank: dict[str, list[str]]) -> Path:
    """PMC-CLIP's three released files with random weights (ModifiedResNet-50, BERT-base with BiomedBERT's 30522-token
    vocabulary size, P 768×768), beside the text tower's config and a word-level vocabulary."""
    from clip_backbones.released import PMC_CLIP_ARCH, PMC_CLIP_FILES, pmc_clip_model

    folder = root / "pmc-clip-architecture"
    folder.mkdir()
    _biomedbert_files(folder, bank)
    model = pmc_clip_model(PMC_CLIP_ARCH, folder, device="cpu")
    torch.save(model.visual.state_dict(), folder / PMC_CLIP_FILES["image"].filename)
    torch.save(model.text.transformer.state_dict(), folder / PMC_CLIP_FILES["text"].filename)
    torch.save(model.text.proj.weight.detach().t().contiguous(), folder / PMC_CLIP_FILES["projection"].filename)
    return folder


TINY_TWINS = {"BiomedCLIP": "tiny-biomedclip", "PubMedCLIP": "tiny-pubmedclip", "PMC-CLIP": "tiny-pmc-clip"}
FULL_SIZE = {  # --backbone -> (folder name under --keep-model, builder, backbone name for the folder / file)
    "BiomedCLIP": ("biomedclip-architecture", lambda root, bank: full_size_folder(root, bank), "local-dir:{}"),
    "PubMedCLIP": ("pubmedclip-architecture", lambda root, bank: pubmedclip_file(root).parent, "pubmedclip:{}"),
    "PMC-CLIP": ("pmc-clip-architecture", pmc_clip_folder, "pmc-clip:{}"),
}


def full_size_backbone(name: str, root: Path, bank: dict[str, list[str]], reuse: bool) -> str:
    """The MODEL.BACKBONE.NAME of a randomly initialised full-size ``name`` written under ``root`` (reused if
    ``reuse`` and already there)."""
    sub, build, spec = FULL_SIZE[name]
    folder = root / sub
    if not (reuse and folder.is_dir()):
        root.mkdir(parents=True, exist_ok=True)
        folder = build(root, bank)
    if name == "PubMedCLIP":
        from clip_backbones.released import PUBMEDCLIP_FILE

        return spec.format(folder / PUBMEDCLIP_FILE.filename)
    return spec.format(folder)


def trainer_config(trainer: str, protocol: str, dataset: str) -> Path:
    per_dataset = REPO / "configs" / "trainers" / trainer / protocol / f"{dataset}.yaml"
    return per_dataset if per_dataset.is_file() else REPO / "configs" / "trainers" / trainer / f"{protocol}.yaml"


def train_run(argv: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``train.py`` process; returns its metrics.json plus the process's own wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--output-dir", str(out), *argv], cwd=REPO,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"benchmark run failed (exit {proc.returncode}): train.py {' '.join(argv)}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["process_wall_s"] = round(wall, 3)
    return metrics


# ------------------------------------------------------------------------------------------------ projection
def unit_costs(cold: dict[str, Any], warm: dict[str, Any], step: dict[str, Any]) -> dict[str, float]:
    """Per-image, per-step and per-run costs on this device, from the three measured runs."""
    t, c = warm["timings_s"], warm["counts"]
    tc = cold["timings_s"]
    n_test = cold["num_samples"]
    bank_sentences = len(cold["per_class_accuracy"]) * 50  # classes × N_PROMPTS (OGKD's default)
    return {
        "run_overhead_s": sum(t.get(k, 0.0) for k in ("process_start_s", "backbone_s", "data_s", "model_s")),
        "bank_cold_per_sentence_s": tc.get("bank_s", 0.0) / bank_sentences,
        "bank_warm_s": t.get("bank_s", 0.0),
        "encode_per_image_s": t.get("encode_s", 0.0) / max(c.get("encoded_images", 0), 1),
        "step_s": t.get("steps_s", 0.0) / max(c.get("steps", 0), 1),
        "per_step_path_step_s": step["timings_s"].get("steps_s", 0.0) / max(step["counts"].get("steps", 0), 1),
        "test_cold_per_image_s": tc.get("test_features_s", 0.0) / n_test,
        "test_warm_s": t.get("test_features_s", 0.0),
        "finish_s": t.get("eval_test_s", 0.0),
    }


def grid_runs() -> list[dict[str, Any]]:
    """Every run of the OGKD paper grid: (dataset, protocol, classes trained, train images, test images, epochs,
    batch size, whether it trains)."""
    import trainers  # noqa: F401  (registers the trainers' config nodes)
    from datasets.catalogue import BENCHMARK
    from engine.config import get_cfg_default, merge_from_file

    runs = []
    for info in BENCHMARK:
        n_cls = info.num_classes
        test_per_class = info.sizes[2] / n_cls
        for protocol in ("few_shot", "base_to_novel"):
            if protocol == "base_to_novel" and not info.base_to_novel:
                continue
            cfg = get_cfg_default()
            merge_from_file(cfg, trainer_config("OGKD", protocol, info.config))
            epochs, batch = int(cfg.OPTIM.MAX_EPOCH), int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
            if protocol == "few_shot":
                for k in SHOTS:
                    runs += [dict(dataset=info.name, protocol=protocol, train=n_cls * k, test=info.sizes[2],
                                  classes=n_cls, epochs=epochs, batch=batch, trains=True)] * SEEDS
            else:
                n_base = len(info.base_classes)
                runs += [dict(dataset=info.name, protocol="base", train=n_base * 16,
                              test=round(test_per_class * n_base), classes=n_base, epochs=epochs, batch=batch,
                              trains=True)] * SEEDS
                runs += [dict(dataset=info.name, protocol="novel", train=0,
                              test=round(test_per_class * (n_cls - n_base)), classes=n_cls - n_base, epochs=0,
                              batch=batch, trains=False)] * SEEDS
    return runs


def project(costs: dict[str, float]) -> dict[str, Any]:
    """Projected wall time (s) of the OGKD paper grid, as this toolkit runs it and with the released structure."""
    ours = released = 0.0
    seen: set[tuple[str, str]] = set()
    runs = grid_runs()
    for r in runs:
        full = r["train"] >= r["batch"]  # drop_last: only full batches, unless the set is smaller than one batch
        per_epoch = (r["train"] // r["batch"] if full else 1) if r["trains"] else 0
        steps = r["epochs"] * per_epoch
        images = r["epochs"] * (per_epoch * r["batch"] if full else r["train"]) if r["trains"] else 0
        bank_cold = costs["bank_cold_per_sentence_s"] * r["classes"] * 50
        test_cold = costs["test_cold_per_image_s"] * r["test"]
        first = (r["dataset"], r["protocol"]) not in seen
        seen.add((r["dataset"], r["protocol"]))
        ours += costs["run_overhead_s"] + costs["finish_s"]
        ours += (bank_cold if first else costs["bank_warm_s"]) if r["trains"] else 0.0
        ours += test_cold if first else costs["test_warm_s"]
        ours += images * costs["encode_per_image_s"] + steps * costs["step_s"]
        released += costs["run_overhead_s"] + costs["finish_s"] + (bank_cold if r["trains"] else 0.0) + test_cold
        released += steps * costs["per_step_path_step_s"]
    return {"runs": len(runs), "ours_s": ours, "released_structure_s": released}


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def step_cost_ratio(batched: dict[str, Any], per_step: dict[str, Any], batch: int) -> float:
    """A training step's cost on the batched path (step + its share of the encoding passes) over the per-step path's
    (the image tower inside the step), from one run of each."""
    t, c = batched["timings_s"], batched["counts"]
    cost = t.get("steps_s", 0.0) / max(c.get("steps", 0), 1) + t.get("encode_s", 0.0) / max(
        c.get("encoded_images", 0), 1) * batch
    return cost / max(per_step["timings_s"].get("steps_s", 0.0) / max(per_step["counts"].get("steps", 0), 1), 1e-9)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's metrics with every timing, the peak memory and the wall time replaced by their medians over
    ``runs`` (identical settings; the counts and results are the first run's)."""
    out = dict(runs[0])
    out["timings_s"] = {k: median([r["timings_s"][k] for r in runs if k in r["timings_s"]])
                        for k in runs[0]["timings_s"]}
    for key in ("peak_rss_mib", "peak_gpu_mib", "process_wall_s"):
        if key in runs[0]:
            out[key] = median([r[key] for r in runs])
    return out


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:d}:{m:02d}:{s:02d}"


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="model size (default: full)")
    p.add_argument("--trainer", default="OGKD")
    p.add_argument("--backbone", choices=tuple(FULL_SIZE), default="BiomedCLIP",
                   help="architecture measured (random weights in the release's own file format; default BiomedCLIP); "
                        "--size tiny uses its tiny twin")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prec", default="auto", help="MODEL.BACKBONE.FROZEN_PREC: auto (bf16 on CUDA) / fp32 / bf16")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=4, help="training batch size (OGKD's paper value: 4)")
    p.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--repeats", type=int, default=3,
                   help="warm runs, and per-step runs alternating with them; each column is their median (default 3)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--keep-model", type=Path, metavar="DIR",
                   help="write the full-size model folder to DIR (reused if there) and keep it, e.g. for a grid")
    p.add_argument("--project-grid", action="store_true", help="print the projected OGKD paper-grid time")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    if args.repeats < 1:
        p.error(f"--repeats must be ≥ 1, got {args.repeats}")

    from synth.synthmed import PROMPT_BANK_FILE, make_synthmed

    tmp = Path(tempfile.mkdtemp(prefix="ogkd-bench-"))
    try:
        data = tmp / "data"
        make_synthmed(data, seed=0)
        bank = json.loads((data / "SynthMed" / PROMPT_BANK_FILE).read_text())
        backbone = TINY_TWINS[args.backbone]
        if args.size == "full":
            backbone = full_size_backbone(args.backbone, args.keep_model or tmp, bank, reuse=bool(args.keep_model))
            print(f"full-size model: {backbone}", flush=True)
        env = {**os.environ, "OGKD_CACHE_DIR": str(tmp / "cache"), "OGKD_SYNC_TIMINGS": "1"}
        common = ["--root", str(data), "--seed", "1", "--trainer", args.trainer,
                  "--dataset-config-file", str(REPO / "configs/datasets/synthmed.yaml"),
                  "--config-file", str(trainer_config(args.trainer, "few_shot", "synthmed")),
                  "DATASET.NUM_SHOTS", str(args.shots), "OPTIM.MAX_EPOCH", str(args.epochs),
                  "MODEL.BACKBONE.NAME", backbone, "MODEL.BACKBONE.FROZEN_PREC", args.prec,
                  "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch), "DATALOADER.NUM_WORKERS", str(args.workers),
                  "USE_CUDA", str(args.device == "cuda"), "VERBOSE", "False"]
        runs: dict[str, Any] = {}
        # the warm and per-step runs alternate (warm 1, per-step 1, warm 2, …): on a shared machine whose load
        # drifts, paths measured minutes apart differ by more than the paths do
        plan = [("cold", [])] + [(f"{kind} {i + 1}/{args.repeats}", extra) for i in range(args.repeats)
                                 for kind, extra in (("warm", []), ("per-step", ["TRAIN.ENCODE_BATCH_SIZE", "0"]))]
        for name, extra in plan:
            print(f"[{name}] train.py ...", flush=True)
            runs[name] = train_run([*common, *extra], tmp / name.replace(" ", "-").replace("/", "-of-"), env)
        for kind in ("warm", "per-step"):
            runs[f"{kind} repeats"] = [runs.pop(name) for name, _ in plan[1:] if name.startswith(f"{kind} ")]
            runs[kind] = median_run(runs[f"{kind} repeats"])
        report(args, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> None:
    cold, warm, step = runs["cold"], runs["warm"], runs["per-step"]
    costs = unit_costs(cold, warm, step)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n{args.trainer} on SynthMed (6 classes, {args.shots} shots, {args.epochs} epoch(s), batch {args.batch}), "
          f"{args.size} {args.backbone} architecture, {device}, FROZEN_PREC {args.prec}")
    print(f"  {'phase':42s} {'cold':>9s} {'warm':>9s} {'per-step':>9s}   "
          f"(warm, per-step: medians of {len(runs['warm repeats'])})")
    for key, label in PHASES:
        vals = [r["timings_s"].get(key) for r in (cold, warm, step)]
        print(f"  {label:42s} " + " ".join(f"{v:8.2f}s" if v is not None else f"{'-':>9s}" for v in vals))
    print(f"  {'whole process':42s} " + " ".join(f"{r['process_wall_s']:8.2f}s" for r in (cold, warm, step)))
    mem = "peak_gpu_mib" if args.device == "cuda" else "peak_rss_mib"
    print(f"  {mem:42s} " + " ".join(f"{r.get(mem, 0) / 1024:7.2f}Gi" for r in (cold, warm, step)))
    print(f"  {'accuracy (equal up to float rounding)':42s} "
          + " ".join(f"{r['accuracy']:8.2f}%" for r in (cold, warm, step)))
    batched = costs["step_s"] + costs["encode_per_image_s"] * args.batch
    print("\n  per training step: batched path "
          f"{batched:.3f} s ({costs['step_s']:.3f} step + {costs['encode_per_image_s'] * args.batch:.3f} encoding "
          f"share) vs per-step path {costs['per_step_path_step_s']:.3f} s "
          f"({batched / max(costs['per_step_path_step_s'], 1e-9):.2f}x; medians of {args.repeats})")
    pairs = [step_cost_ratio(w, s, args.batch) for w, s in zip(runs["warm repeats"], runs["per-step repeats"])]
    print("  batched / per-step step cost, each warm run against the per-step run after it: "
          + ", ".join(f"{r:.2f}x" for r in pairs) + f" (median {median(pairs):.2f}x)")
    ev_cold, ev_warm = (sum(r["timings_s"].get(k, 0.0) for k in ("test_features_s", "eval_test_s"))
                        for r in (cold, warm))
    print(f"  evaluation (test features + evaluation), second run / first run: {ev_warm:.2f} s / {ev_cold:.2f} s "
          f"= {100 * ev_warm / max(ev_cold, 1e-9):.1f}%")
    repeats = runs["warm repeats"]
    print(f"  start → training begins, warm cache: {warm['timings_s'].get('to_training_s', float('nan')):.2f} s "
          f"(median of {len(repeats)}: " + ", ".join(f"{r['timings_s'].get('to_training_s', 0.0):.2f}" for r in repeats)
          + " s)")
    print(f"  {mem}, warm: {warm.get(mem, 0) / 1024:.2f} GiB (median of {len(repeats)}: "
          + ", ".join(f"{r.get(mem, 0) / 1024:.2f}" for r in repeats) + " GiB)")
    if len({r["accuracy"] for r in (cold, *repeats, step)}) > 1:
        print("  note: the runs' accuracies differ (float rounding between the batched and per-step paths)")
    out: dict[str, Any] = {"settings": vars(args) | {"json": str(args.json) if args.json else None,
                                                      "device_name": device},
                           "runs": runs, "unit_costs": costs}
    if args.project_grid:
        proj = project(costs)
        out["projection"] = proj
        print(f"\n  projected OGKD paper grid on this device ({proj['runs']} runs: 165 few-shot, 30 base + 30 novel):")
        print(f"    this toolkit (feature cache, batched encoding):        {hms(proj['ours_s'])}")
        print(f"    released run structure (re-encode test + bank per run, "
              f"image tower in every step): {hms(proj['released_structure_s'])}")
        print("    (one process at a time; per-run overhead as measured here; "
              "the real split sizes and OGKD configs' epochs and batch sizes)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\n  wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
