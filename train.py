#!/usr/bin/env python
r"""Dassl / CoOp-compatible entry point: parse the CLI → config → trainer → train / evaluate.

    python train.py --root DATA --seed 1 --trainer CoOp \
        --dataset-config-file configs/datasets/synthmed.yaml \
        --config-file configs/trainers/CoOp/few_shot.yaml \
        --output-dir output/synthmed/CoOp/shots4/seed1 DATASET.NUM_SHOTS 4
    python train.py ... --eval-only --model-dir RUN_DIR [--load-epoch N]
    python train.py ... --resume RUN_DIR
    python train.py --list-trainers | --list-backbones | --list-datasets     (instant: no torch import)

Flags come before the trailing KEY VALUE config pairs. An expected failure (bad input, a refused or unreadable
checkpoint, an unwritable or full disk, a diverged loss or evaluation) ends with one line "error: …" and exit status 1
(2: bad command line or config, a value out of range; 130: Ctrl-C, rerun to resume); its traceback goes to the run's
log.txt (to the console too with --debug). The same command again on a complete run says "already complete" and
changes nothing (--force-eval evaluates it again).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=str, default="", help="dataset root (the folder holding <NAME>/)")
    p.add_argument("--output-dir", type=str, default="", help="run directory")
    p.add_argument("--resume", type=str, default="", help="resume from this run directory's latest checkpoint")
    p.add_argument("--seed", type=int, default=None, help="seed (0 is valid; negative = random)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains (Dassl; unused here)")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains (Dassl; unused here)")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="trainer config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="trainer name (see --list-trainers)")
    p.add_argument("--backbone", type=str, default="", help="backbone name (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", type=str, default="", help="head name (Dassl; unused here)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluation only (needs --model-dir unless nothing is learned)")
    p.add_argument("--model-dir", type=str, default="", help="run directory to load the model from")
    p.add_argument("--load-epoch", type=int, default=None, help="checkpoint epoch to load (default: the final one)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="--eval-only: evaluate a checkpoint trained with another backbone, dataset, class set or "
                        "trainer settings (recorded in metrics.json as provenance_mismatch); never another trainer")
    p.add_argument("--force-eval", action="store_true",
                   help="evaluate a run that is already complete again (its metrics.json and predictions.npz are "
                        "rewritten, training is not redone); without it the same command again only says "
                        "'already complete'")
    p.add_argument("--debug", action="store_true", help="show the traceback of an expected error on the console")
    p.add_argument("--no-train", action="store_true", help="build everything, then stop")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the feature cache (CACHE.ENABLED False): compute every frozen feature")
    p.add_argument("--list-trainers", action="store_true", help="print the registered trainers and exit")
    p.add_argument("--list-backbones", action="store_true", help="print the backbone names and exit")
    p.add_argument("--list-datasets", action="store_true", help="print the catalogue's datasets and exit")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """defaults → dataset YAML → trainer YAML → CLI flags → trailing KEY VALUE pairs."""
    from engine.config import check_ranges, get_cfg_default, merge_from_file, merge_from_list

    cfg = get_cfg_default()
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file(cfg, args.config_file)
        _warn_released_backbone_label(args.config_file)
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.no_cache:
        cfg.CACHE.ENABLED = False
    merge_from_list(cfg, args.opts or [])
    check_ranges(cfg)  # once, on the merged result of every source
    return cfg


def _warn_released_backbone_label(path: str) -> None:
    """Released BiomedCLIP YAMLs say MODEL.BACKBONE.NAME "ViT-B/16" as a label; here it selects OpenAI CLIP."""
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    name = ((raw.get("MODEL") or {}).get("BACKBONE") or {}).get("NAME")
    if name == "ViT-B/16":
        logger.warning("%s sets MODEL.BACKBONE.NAME 'ViT-B/16', which here builds OpenAI CLIP (in the released "
                       "BiomedCLIP code it was only a label): add MODEL.BACKBONE.NAME BiomedCLIP to use BiomedCLIP",
                       path)


def error_line(e: BaseException) -> str:
    """The one-line message of an expected error. An error raised in a data-loader worker arrives wrapped as
    "Caught X in DataLoader worker process N. Original Traceback …": its last line is the original message."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1].strip()
        name = type(e).__name__
        text = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return " ".join(text.split())


def os_error_line(e: OSError) -> str:
    """An ``OSError`` from writing the run (or reading its inputs) as one line that says what to do."""
    what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):
        hint = ("the disk is full or a file-size limit was reached: free space (or raise the limit) and rerun the "
                "same command; the run resumes from its last complete checkpoint")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the path is not writable: choose another --output-dir or fix its permissions"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        hint = "a file is in the way of a folder the run needs (or the reverse): move it or choose another --output-dir"
    else:
        hint = "check the path and the disk, then rerun"
    return f"{what} ({hint})"


def report_error(message: str, exc: BaseException, *, debug: bool) -> None:
    """One ``error: …`` line on the console; the traceback to log.txt only (to the console too with ``--debug``)."""
    logger.error("error: %s", message)
    logger.error("traceback of the error above:", exc_info=exc, extra={"file_only": not debug})


def main(argv: list[str] | None = None, *, backbones: dict[Any, Any] | None = None) -> int:
    """Run train.py with ``argv`` (default: the command line). ``backbones``: a cache of built backbones that
    consecutive calls in one process share (the grid runner's workers; the run's timings then start at this call,
    not at the process start); None builds the run's own."""
    started = time.perf_counter() if backbones is not None else None
    args = build_parser().parse_args(argv)
    listings = [kind for kind in ("trainers", "backbones", "datasets") if getattr(args, f"list_{kind}")]
    if listings:  # a static table kept equal to the registries by tests: no torch import, instant
        from engine.listing import listing

        print("\n\n".join(listing(kind) for kind in listings))
        return 0
    import datasets  # noqa: F401  (registration belongs to the entry point: every dataset,
    import trainers  # noqa: F401  every trainer and its config node)
    from engine.config import ConfigError, changed_unused_keys
    from engine.registry import TRAINER_REGISTRY, RegistryError
    from engine.utils import resolve_seed, setup_logger

    setup_logger(None)
    try:
        cfg = setup_cfg(args)
        if not cfg.TRAINER.NAME:
            raise ConfigError("no trainer given: pass --trainer NAME (see --list-trainers)")
        TRAINER_REGISTRY.get(cfg.TRAINER.NAME)  # fail fast on an unknown trainer
        if cfg.RESUME:
            check_resume_dir(Path(cfg.RESUME))
    except (ConfigError, RegistryError) as e:
        report_error(error_line(e), e, debug=args.debug)
        return 2
    cfg.SEED = resolve_seed(cfg.SEED)
    cfg.freeze()
    out = Path(cfg.OUTPUT_DIR)
    try:
        setup_logger(str(out))
    except OSError as e:
        report_error(f"cannot write the run directory {out}: {os_error_line(e)}", e, debug=args.debug)
        return 1
    logger.info("=" * 30 + " %s " + "=" * 30, time.strftime("%Y-%m-%d %H:%M:%S"))
    logger.info("command: %s", " ".join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])]))
    for key in changed_unused_keys(cfg):
        logger.warning("config key %s is accepted for Dassl compatibility but has no effect here", key)
    try:
        return run(cfg, args, backbones, started)
    except KeyboardInterrupt as e:  # Ctrl-C: as the grid says it; the last complete checkpoint is kept
        report_error(f"interrupted (Ctrl-C): {out} is not complete; rerun the same command to resume from its last "
                     "complete checkpoint", e, debug=args.debug)
        return 130


def check_resume_dir(folder: Path) -> None:
    """``--resume DIR``: DIR must hold a checkpoint pointer file (``<module>/checkpoint``), else ConfigError."""
    from engine.checkpoint import latest_checkpoints
    from engine.config import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"--resume: nothing to resume in {folder}: no such folder (give the run directory that "
                          "holds the checkpoints, or leave --resume out to train from scratch)")
    if not latest_checkpoints(folder):
        raise ConfigError(f"--resume: nothing to resume in {folder}: it holds no checkpoint (no <module>/checkpoint "
                          "pointer naming an existing model.pth.tar-N); leave --resume out to train from scratch")


def already_complete(cfg: CfgNode, args: argparse.Namespace) -> bool:
    """True when the run directory already holds a complete result of this config (same command again): its
    checkpoints are checked readable (an unreadable one: CheckpointError naming it), nothing is rewritten.
    ``--eval-only`` into the model's own folder, with ``--allow-mismatch`` or of another ``--load-epoch`` is an
    explicit evaluation and goes on (the evaluated checkpoint is read before anything is written)."""
    from engine.checkpoint import config_differences, latest_checkpoints, read_checkpoint
    from engine.results import read_metrics, run_is_complete
    from engine.runfiles import RunFileError, read_config

    out = Path(cfg.OUTPUT_DIR)
    opt = {k: getattr(args, k, None) for k in ("force_eval", "no_train", "eval_only", "allow_mismatch", "model_dir",
                                               "load_epoch")}
    if opt["force_eval"] or opt["no_train"] or not run_is_complete(out):
        return False
    if opt["eval_only"] and (opt["allow_mismatch"] or not opt["model_dir"]
                             or Path(opt["model_dir"]).resolve() == out.resolve()):
        return False  # evaluating a run in its own folder, or across a mismatch: an explicit request, as before
    try:
        saved = read_config(out)
    except RunFileError:
        return False
    if saved is None or config_differences(saved, cfg):
        return False  # another config: the usual checks (refusal, or a training-free rerun) decide
    m = read_metrics(out)
    if opt["eval_only"] and opt["load_epoch"] is not None and m.get("epochs") != opt["load_epoch"]:
        return False  # another checkpoint of the same run: evaluate it
    for path in latest_checkpoints(out):
        read_checkpoint(path)
    logger.info("%s is already complete (%s accuracy %.2f%%): nothing to do; pass --force-eval to evaluate it "
                "again (rewrites its metrics.json), or use a new --output-dir", out, m.get("split", "test"),
                m["accuracy"])
    return True


def shared_backbone(cfg: CfgNode, backbones: dict[Any, Any] | None) -> tuple[Any, float]:
    """(the run's backbone, seconds spent building it): from ``backbones`` if it holds this name on this device
    (then 0 s), else built now (and kept there, replacing any other: one backbone in memory)."""
    from engine.utils import select_device
    from trainers import build_cfg_backbone

    key = (cfg.MODEL.BACKBONE.NAME, str(select_device(cfg.USE_CUDA, announce=False)))
    if backbones is not None and key in backbones:
        logger.info("backbone %s: reused (built earlier in this process)", key[0])
        return backbones[key], 0.0
    backbone, seconds = build_cfg_backbone(cfg)
    if backbones is not None:
        backbones.clear()
        backbones[key] = backbone
    return backbone, seconds


def run(cfg: CfgNode, args: argparse.Namespace, backbones: dict[Any, Any] | None = None,
        started: float | None = None) -> int:
    from clip_backbones import BackboneError
    from engine.config import ConfigError, ConfigRangeError
    from engine.data import DatasetError, ImageReadError
    from engine.registry import RegistryError
    from engine.runfiles import NonFiniteResultError
    from engine.trainer import CheckpointError, build_trainer
    from engine.utils import set_deterministic, set_random_seed

    expected = (BackboneError, ConfigError, DatasetError, ImageReadError, RegistryError, CheckpointError, ValueError)
    debug = bool(getattr(args, "debug", False))
    try:
        if already_complete(cfg, args):
            return 0
        from datasets import check_dataset

        check_dataset(cfg)  # an unknown dataset fails here, before the backbone is built
        set_random_seed(cfg.SEED)
        set_deterministic(cfg.DETERMINISTIC)
        backbone, backbone_s = shared_backbone(cfg, backbones)
        trainer = build_trainer(cfg, backbone, backbone_s=backbone_s, started=started)
        if args.eval_only:
            if args.model_dir:
                trainer.load_model(args.model_dir, epoch=args.load_epoch, allow_mismatch=args.allow_mismatch)
            elif trainer.get_model_names():
                raise ConfigError(f"--eval-only with trainer {cfg.TRAINER.NAME} needs --model-dir RUN_DIR")
            if Path(args.model_dir or "") .resolve() != Path(cfg.OUTPUT_DIR).resolve():
                trainer.write_run_files()
            trainer.test(cfg.TEST.SPLIT)
            return 0
        if args.no_train:
            logger.info("--no-train: built trainer %s, stopping", cfg.TRAINER.NAME)
            return 0
        trainer.train()
    except ConfigRangeError as e:  # a value out of range only the trainer can judge (e.g. 0 epochs for CoOp)
        report_error(error_line(e), e, debug=debug)
        return 2
    except expected as e:
        report_error(error_line(e), e, debug=debug)
        return 1
    except FloatingPointError as e:
        after = ("its checkpoints hold the diverged model: rerun in a new --output-dir"
                 if isinstance(e, NonFiniteResultError) else "no checkpoint of the diverged epoch was written")
        report_error(f"{error_line(e)}: training diverged; lower OPTIM.LR (now {cfg.OPTIM.LR:g}) or check the data "
                     f"({after})", e, debug=debug)
        return 1
    except OSError as e:
        report_error(os_error_line(e), e, debug=debug)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
