"""TrainerX-style base class with Dassl's contract.

A method implements ``build_model`` (build its module on ``self.backbone``, freeze what is not learned, call
``register_model``) and ``forward_backward(batch) -> dict of scalars``; for inference it may override
``model_inference(images) -> logits``. The base runs the epochs (LR stepped once per epoch, SPEC §4.3), a
progress bar, evaluation, eval-only, and Dassl's hooks (``before_train`` / ``after_epoch`` / ``after_train``).
What it delegates, one module each, mixed into :class:`TrainerBase`:

* :mod:`engine.frozen` — frozen-tower features: encoding passes, the feature cache, pass sizes, frozen precision;
* :mod:`engine.checkpoint` — save, load, provenance, resume, the pointer files;
* :mod:`engine.run_outputs` — the run directory's files (formats in :mod:`engine.runfiles`) and tensorboard.

Reproducibility: each epoch's shuffling and dropout are seeded from (SEED, epoch) and each training image's
augmentation from (SEED, epoch, item), so an interrupted run resumed from its last checkpoint ends with the same
numbers as an uninterrupted one, whatever the number of data-loader workers.

A training step never synchronises with the host: a non-finite loss is recorded on the device and raised as
``FloatingPointError`` at the next print point or at the end of the epoch, before any checkpoint is written.

The names that moved stay importable from here (``CheckpointError``, ``COST_KEYS``, ``AUTO_ENCODE_BATCH`` …).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm
from yacs.config import CfgNode

from engine.cache import FeatureCache
from engine.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_PREFIX,
    RESUME_NEUTRAL_KEYS,
    CheckpointError,
    Checkpoints,
    _checkpoint_path,
    _read_pointer,
)
from engine.config import ConfigRangeError
from engine.data import DataManager, read_image
from engine.evaluation import Classification
from engine.frozen import (
    AUTO_ENCODE_BATCH,
    AUTO_TEXT_ENCODE_BATCH,
    FROZEN_PRECISIONS,
    SYNC_TIMINGS_ENV,
    FrozenFeatures,
    autocast_context,
    items_digest,
)
from engine.optim import build_lr_scheduler, build_optimizer
from engine.registry import TRAINER_REGISTRY
from engine.run_outputs import RunOutputs
from engine.runfiles import COST_KEYS
from engine.utils import derive_seed, process_age_s, select_device, set_random_seed

__all__ = [
    "AUTO_ENCODE_BATCH", "AUTO_TEXT_ENCODE_BATCH", "BEST_CHECKPOINT", "CHECKPOINT_PREFIX", "COST_KEYS",
    "FROZEN_PRECISIONS", "PRECISIONS", "RESUME_NEUTRAL_KEYS", "SYNC_TIMINGS_ENV", "CheckpointError", "TrainerBase",
    "_checkpoint_path", "_read_pointer", "build_trainer", "items_digest",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "amp", "fp16", "bf16")


def _closing(obj: Any) -> contextlib.AbstractContextManager:
    """Close ``obj`` (if not None) when the block ends, however it ends."""
    return contextlib.closing(obj) if obj is not None else contextlib.nullcontext()


class TrainerBase(FrozenFeatures, Checkpoints, RunOutputs):
    """Base trainer: data, backbone, registered modules, loop, evaluation; frozen features, checkpoints and run
    files from its mixins (:mod:`engine.frozen`, :mod:`engine.checkpoint`, :mod:`engine.run_outputs`)."""

    #: the trainer's config node name under TRAINER (e.g. "COOP"); used for PREC
    cfg_node: str | None = None
    #: keys of TRAINER.<cfg_node> that shape the evaluated model: ``--eval-only`` refuses a checkpoint trained with
    #: other values of these only (None: of any key); training-only keys (loss weights, the teacher bank) may differ
    model_keys: tuple[str, ...] | None = None
    #: the method leaves the image tower frozen and unprompted: logits come from its features
    #: (:meth:`logits_from_features`), so evaluation runs on cached features
    frozen_image_tower: bool = False
    #: training steps accept pre-encoded frozen features (``batch["frozen"]``, see :meth:`encode_frozen`)
    batched_train_features: bool = False

    def __init__(self, cfg: CfgNode, backbone: Any, *, backbone_s: float = 0.0, started: float | None = None) -> None:
        """``backbone``: the frozen backbone the method builds on (``clip_backbones.build_backbone``), on the device
        ``cfg.USE_CUDA`` selects; it may be shared by consecutive runs (the grid runner), so a method never changes
        it beyond the modes it sets itself. ``backbone_s``: what building it cost this run (0 when reused).
        ``started``: the ``time.perf_counter()`` at which this run began (default: the process start)."""
        age = process_age_s() if started is None else time.perf_counter() - started
        self._origin = time.perf_counter() - age if age is not None else None
        # start → this trainer, less the backbone built just before it (reported as backbone_s)
        self.timings: dict[str, float] = {"process_start_s": round(age - backbone_s, 3)} if age is not None else {}
        self.counts: dict[str, int] = {}  # training steps run and images encoded ahead (metrics.json "counts")
        self.cfg = cfg
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.device = select_device(cfg.USE_CUDA)
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._optims: dict[str, torch.optim.Optimizer | None] = {}
        self._scheds: dict[str, Any] = {}
        self.start_epoch = 0
        self.epoch = 0
        self.max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        self.precision = self._precision()
        self._scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.frozen_precision = self._frozen_precision()
        self.encode_pass_size()  # a bad TRAIN.ENCODE_BATCH_SIZE fails here, not after the start-up
        self.cache = FeatureCache(cfg.CACHE.DIR or None, enabled=bool(cfg.CACHE.ENABLED))
        self._split_feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._nonfinite: torch.Tensor | None = None
        self._provenance: dict[str, Any] | None = None
        #: provenance differences an explicit override allowed (``--allow-mismatch``), recorded in metrics.json
        self.provenance_mismatch: dict[str, dict[str, Any]] = {}
        self.loaded_epoch: int | None = None  # the epoch of the last checkpoint load_model() read
        self._trained_epochs: int | None = None  # set when the final test follows training in this process
        self._writer: Any = None  # the open tensorboard SummaryWriter (training, final test), else None
        self._epoch_times: list[float] = []  # durations of the epochs run in this process (the log's ETA)

        name = getattr(backbone, "name", None)
        if name != cfg.MODEL.BACKBONE.NAME:
            raise ValueError(f"the backbone given to the trainer is {name!r}, the config asks for "
                             f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r}")
        on = {p.device for p in backbone.parameters()}
        if on and on != {self.device} and not (self.device.type == "cuda" and {d.type for d in on} == {"cuda"}):
            raise ValueError(f"the backbone is on {sorted(map(str, on))}, the run on {self.device}")
        if any(p.requires_grad for p in backbone.parameters()):
            raise ValueError("the backbone given to the trainer has trainable parameters: backbones are frozen "
                             "(clip_backbones.build_backbone), and a shared one must stay so")
        t0 = time.perf_counter()
        self.backbone = backbone.eval()  # a shared backbone starts every run in eval mode, as a fresh one does
        t1 = time.perf_counter()
        self.dm = DataManager(cfg, self.backbone)
        logger.info(self.dm.summary())
        t2 = time.perf_counter()
        self.classnames: list[str] = self.dm.classnames
        self.num_classes = self.dm.num_classes
        self.build_model()
        self.evaluator = Classification(self.classnames, per_class_result=cfg.TEST.PER_CLASS_RESULT)
        self.startup_time_s = time.perf_counter() - t0
        self.timings.update(backbone_s=backbone_s + t1 - t0, data_s=t2 - t1, model_s=time.perf_counter() - t2)
        logger.info("start-up (backbone + data + model): %.2f s", self.startup_time_s)
        if self.frozen_image_tower:
            logger.info(self.cache.describe())
        n_train = sum(p.numel() for m in self._models.values() for p in m.parameters() if p.requires_grad)
        logger.info("registered modules: %s; trainable parameters: %d", list(self._models) or "none", n_train)

    # ------------------------------------------------------------------ what a method implements
    def build_model(self) -> None:
        """Build the method's module(s) on ``self.backbone``; freeze; ``register_model(...)``."""
        raise NotImplementedError

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        """One training step on ``batch``; return scalars to log (tensors are fine: no host sync needed)."""
        raise NotImplementedError

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] for a batch of images (``frozen_image_tower`` trainers: from their frozen features)."""
        if self.frozen_image_tower:
            return self.logits_from_features(self.encode_frozen(images)["g"])
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for methods
    def _precision(self) -> str:
        node = self.cfg.TRAINER.get(self.cfg_node) if self.cfg_node else None
        prec = str(node.get("PREC", "fp32")) if node is not None else "fp32"
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.cfg_node}.PREC must be one of {PRECISIONS}, got {prec!r}")
        if prec != "fp32" and self.device.type != "cuda":
            logger.warning("PREC %s needs CUDA; running in fp32 on %s", prec, self.device)
            return "fp32"
        if prec != "fp32":
            logger.info("PREC %s: autocast to %s; frozen weights and learnable tensors stay fp32", prec,
                        "bfloat16" if prec == "bf16" else "float16")
        return prec

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        return autocast_context(self.device, self.precision)

    def register_model(
        self,
        name: str,
        module: nn.Module,
        optim: torch.optim.Optimizer | None = None,
        sched: Any | None = None,
    ) -> None:
        """Register a module whose trainable tensors are optimised, checkpointed and switched train/eval."""
        if name in self._models:
            raise ValueError(f"model name {name!r} is registered twice")
        self._models[name] = module.to(self.device)  # parameters and class-name buffers live on the run's device
        self._optims[name] = optim
        self._scheds[name] = sched

    def build_optim_sched(self, module: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        optim = build_optimizer(module, self.cfg.OPTIM)
        return optim, build_lr_scheduler(optim, self.cfg.OPTIM)

    def get_model_names(self) -> list[str]:
        return list(self._models)

    def set_model_mode(self, mode: str) -> None:
        for m in self._models.values():
            m.train(mode == "train")

    def get_current_lr(self) -> float:
        for optim in self._optims.values():
            if optim is not None:
                return optim.param_groups[0]["lr"]
        return 0.0

    def parse_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            batch["img"].to(self.device, non_blocking=True),
            batch["label"].to(self.device, non_blocking=True),
        )

    def record_nonfinite(self, loss: torch.Tensor) -> None:
        """Note on the device whether ``loss`` is infinite or NaN (no host sync); :meth:`check_finite` raises."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` if a loss since the start of the epoch was infinite or NaN (one host sync)."""
        if self._nonfinite is not None and bool(self._nonfinite):
            raise FloatingPointError(f"Loss is infinite or NaN! (epoch {self.epoch + 1})")

    def model_backward_and_update(self, loss: torch.Tensor, names: list[str] | None = None) -> None:
        """Zero grads, note whether the loss is finite, backward, step the optimizers of ``names`` (default: all)."""
        names = names or list(self._models)
        optims = [self._optims[n] for n in names if self._optims[n] is not None]
        for o in optims:
            o.zero_grad(set_to_none=True)
        self.record_nonfinite(loss)
        self._scaler.scale(loss).backward()
        for o in optims:
            self._scaler.step(o)
        self._scaler.update()

    def _step_schedulers(self) -> None:
        for s in self._scheds.values():
            if s is not None:
                s.step()

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any] | None:
        """Train (if there is anything to learn), then evaluate as TEST.FINAL_MODEL says."""
        t0 = time.perf_counter()
        resume_dir = Path(self.cfg.RESUME) if self.cfg.RESUME else self.output_dir
        if not self._models:
            self.write_run_files()
            logger.info("%s learns nothing: going straight to evaluation", self.cfg.TRAINER.NAME)
            return self._final_test(t0)
        if self.max_epoch < 1:
            raise ConfigRangeError(f"OPTIM.MAX_EPOCH {self.max_epoch} is out of range for {self.cfg.TRAINER.NAME}, "
                                   "which learns parameters (allowed: ≥ 1; 0 only for a trainer that learns nothing)")
        self.check_resumable(resume_dir)
        self.check_test_images()
        # the resume checkpoint is read before write_run_files() removes a finished run's files: an unreadable one
        # stops the run with those files untouched
        self.start_epoch = self.resume_if_possible(resume_dir)
        self.write_run_files()
        self.before_train()
        if self._origin is not None:
            self.timings["to_training_s"] = time.perf_counter() - self._origin  # start → the first epoch begins
        self._best_val = -1.0
        n_batches = len(self.dm.train_loader_x)
        total = (self.max_epoch - self.start_epoch) * n_batches
        writer = self._tensorboard()
        with tqdm(total=total, desc=f"{self.cfg.TRAINER.NAME}", unit="it", dynamic_ncols=True,
                  disable=not self.cfg.VERBOSE) as bar, _closing(writer):  # closed on errors too (grid workers)
            for epoch in range(self.start_epoch, self.max_epoch):
                self.epoch = epoch
                self.run_epoch(bar, writer)
                self.after_epoch()
        logger.info("Finish training (%s)", datetime.timedelta(seconds=round(time.perf_counter() - t0)))
        self.after_train()
        try:
            return self._final_test(t0)
        finally:
            self.close_tensorboard()

    def check_test_images(self) -> None:
        """Read every image of the test split before training, so an unreadable one stops the run now, not after
        the last epoch. Frozen-tower trainers encode the split's features here (they are needed for the final test
        anyway, and cached); the others decode each file once."""
        if self.cfg.TEST.NO_TEST:
            return
        split = self.cfg.TEST.SPLIT
        if self.frozen_image_tower:
            self.split_features(split)
            return
        t0 = time.perf_counter()
        items = self._items(split)
        for d in items:
            read_image(d.impath)
        logger.info("checked the %d %s images: all readable (%.1f s)", len(items), split, time.perf_counter() - t0)

    def before_train(self) -> None:
        """Hook: called once before the first epoch."""

    def after_train(self) -> None:
        """Hook: called once after the last epoch, before the final test."""

    def _seed_epoch(self) -> None:
        s = derive_seed(self.cfg.SEED, "epoch", self.epoch)
        set_random_seed(s)
        self.dm.set_epoch(self.epoch, s)
    def run_epoch(self, bar: tqdm, writer: Any) -> None:
        self.set_model_mode("train")
        self._seed_epoch()
        loader = self.dm.train_loader_x
        n = len(loader)
        sums: dict[str, torch.Tensor] = {}
        lr = self.get_current_lr()
        t_epoch = time.perf_counter()
        t_steps = 0.0
        for i, batch in enumerate(self.train_batches(loader)):
            t0 = time.perf_counter()
            out = self.forward_backward(batch)
            self.sync_for_timing()
            t_steps += time.perf_counter() - t0
            for k, v in out.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            if (i + 1) % self.cfg.TRAIN.PRINT_FREQ == 0 or i + 1 == n:
                self.check_finite()
                means = {k: float(v) / (i + 1) for k, v in sums.items()}  # host sync only here
                bar.set_postfix(epoch=f"{self.epoch + 1}/{self.max_epoch}", lr=f"{lr:.2e}",
                                **{k: f"{v:.4f}" for k, v in means.items()})
        self.check_finite()
        self.timings["steps_s"] = self.timings.get("steps_s", 0.0) + t_steps
        self.counts["steps"] = self.counts.get("steps", 0) + n
        means = {k: float(v) / max(n, 1) for k, v in sums.items()}
        took = time.perf_counter() - t_epoch
        logger.info(
            "epoch [%d/%d] %s\tlr %.6e\t(%.1fs, eta %s)", self.epoch + 1, self.max_epoch,
            "\t".join(f"{k} {v:.4f}" for k, v in means.items()), lr, took, self._eta(took),
        )
        if writer is not None:
            for k, v in means.items():
                writer.add_scalar(f"train/{k}", v, self.epoch + 1)
            writer.add_scalar("train/lr", lr, self.epoch + 1)
        self._step_schedulers()

    def _eta(self, seconds: float) -> str:
        """Remaining time of the training from the mean duration of the epochs run in this process."""
        times = self._epoch_times
        times.append(seconds)
        left = self.max_epoch - (self.epoch + 1)
        return str(datetime.timedelta(seconds=round(left * sum(times) / len(times))))

    def after_epoch(self) -> None:
        if self.cfg.TEST.FINAL_MODEL == "best_val" and not self.cfg.TEST.NO_TEST:
            if self.dm.val_loader is None:
                raise ValueError("TEST.FINAL_MODEL best_val needs a validation split, and this dataset has none")
            acc = self.test("val")["accuracy"]
            if acc > self._best_val:
                self._best_val = acc
                self.save_model(self.epoch + 1, self.output_dir, is_best=True)
                logger.info("new best val accuracy %.2f%% (epoch %d): saved %s", acc, self.epoch + 1, BEST_CHECKPOINT)
        self.save_model(self.epoch + 1, self.output_dir)

    def _final_test(self, t0: float) -> dict[str, Any] | None:
        if self.cfg.TEST.NO_TEST:
            logger.info("TEST.NO_TEST is set: no evaluation, no metrics.json")
            return None
        if self._models and self.cfg.TEST.FINAL_MODEL == "best_val":
            self.load_model(self.output_dir)  # model-best
        self._trained_epochs = int(self.max_epoch) if self._models else 0
        return self.test(self.cfg.TEST.SPLIT, wall_time_s=time.perf_counter() - t0)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def test(self, split: str = "test", *, wall_time_s: float | None = None) -> dict[str, Any]:
        """Evaluate on ``split`` ("val" or "test"); a test evaluation writes ``metrics.json``."""
        self.set_model_mode("eval")
        loader = self.dm.val_loader if split == "val" else self.dm.test_loader
        if loader is None:
            raise ValueError(f"the dataset has no {split} split to evaluate")
        self.evaluator.reset()
        t0 = time.perf_counter()
        if self.frozen_image_tower:  # the split's features, encoded once per run (and cached on disk)
            feats, labels = self.split_features(split)
            bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
            for i in range(0, len(labels), bs):
                with self.autocast():
                    logits = self.logits_from_features(feats[i:i + bs])
                self.evaluator.process(logits.float(), labels[i:i + bs])
        else:
            for batch in tqdm(loader, desc=f"eval {split}", leave=False, disable=not self.cfg.VERBOSE):
                images, labels = self.parse_batch(batch)
                with self.autocast():
                    logits = self.model_inference(images)
                self.evaluator.process(logits.float(), labels)
        self.timings[f"eval_{split}_s"] = self.timings.get(f"eval_{split}_s", 0.0) + time.perf_counter() - t0
        logger.info("Do evaluation on %s set", split)
        res = self.evaluator.evaluate()  # logs Dassl's "=> result" block
        self._tensorboard_eval(split, res)
        if split != "test":
            return res
        self.write_test_files(res, split, wall_time_s if wall_time_s is not None else time.perf_counter() - t0)
        return res


def build_trainer(cfg: CfgNode, backbone: Any, **kwargs: Any) -> TrainerBase:
    """Instantiate the trainer named ``cfg.TRAINER.NAME`` from the registry on ``backbone`` (keyword arguments: see
    :class:`TrainerBase`). The entry point registers the trainers (``import trainers``) and builds the backbone;
    ``trainers.build_trainer(cfg)`` does both."""
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg, backbone, **kwargs)
