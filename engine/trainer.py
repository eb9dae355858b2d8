"""TrainerX-style base class with Dassl's contract.

A method implements ``build_model`` (build its module on ``self.backbone``, freeze what is not learned, call
``register_model``) and ``forward_backward(batch) -> dict of scalars``; for inference it may override
``model_inference(images) -> logits``. The base runs the epochs (LR stepped once per epoch, SPEC §4.3), a
progress bar, evaluation, checkpoints of the registered modules' trainable tensors, resume, eval-only and the
run directory (``config.yaml``, ``log.txt``, ``metrics.json``, ``fewshot_split.json``).

Reproducibility: each epoch's shuffling, augmentation and dropout are seeded from (SEED, epoch), so an
interrupted run resumed from its last checkpoint ends with the same numbers as an uninterrupted one.
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

from engine.config import flat_items
from engine.data import DataManager
from engine.evaluation import Classification
from engine.optim import build_lr_scheduler, build_optimizer
from engine.registry import TRAINER_REGISTRY
from engine.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    derive_seed,
    git_commit,
    package_versions,
    select_device,
    set_random_seed,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"
PRECISIONS = ("fp32", "amp", "fp16", "bf16")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the model."""


class TrainerBase:
    """Base trainer: data, backbone, registered modules, loop, evaluation, checkpoints."""

    #: the trainer's config node name under TRAINER (e.g. "COOP"); used for PREC
    cfg_node: str | None = None

    def __init__(self, cfg: CfgNode) -> None:
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

        t0 = time.perf_counter()
        self.backbone = self.build_backbone()
        self.dm = DataManager(cfg, self.backbone)
        logger.info(self.dm.summary())
        self.classnames: list[str] = self.dm.classnames
        self.num_classes = self.dm.num_classes
        self.build_model()
        self.evaluator = Classification(self.classnames, per_class_result=cfg.TEST.PER_CLASS_RESULT)
        self.startup_time_s = time.perf_counter() - t0
        logger.info("start-up (backbone + data + model): %.2f s", self.startup_time_s)
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
        """Logits [B, C] for a batch of images."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for methods
    def build_backbone(self) -> Any:
        from clip_backbones import build_backbone

        return build_backbone(self.cfg.MODEL.BACKBONE.NAME, device=self.device)

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
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

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

    def model_backward_and_update(self, loss: torch.Tensor, names: list[str] | None = None) -> None:
        """Zero grads, check the loss is finite, backward, step the optimizers of ``names`` (default: all)."""
        names = names or list(self._models)
        optims = [self._optims[n] for n in names if self._optims[n] is not None]
        for o in optims:
            o.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Loss is infinite or NaN! (epoch {self.epoch + 1})")
        self._scaler.scale(loss).backward()
        for o in optims:
            self._scaler.step(o)
        self._scaler.update()

    def _step_schedulers(self) -> None:
        for s in self._scheds.values():
            if s is not None:
                s.step()

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def trainable_state(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
        """Only the tensors that are learned: parameters with requires_grad (never the frozen backbone,
        never class-name buffers)."""
        names = {n for n, p in module.named_parameters() if p.requires_grad}
        return OrderedDict((k, v.detach().cpu()) for k, v in module.state_dict().items() if k in names)

    def _keep_epoch(self, epoch: int) -> bool:
        """Checkpoints that stay in the run directory: the last epoch and every TRAIN.CHECKPOINT_FREQ-th."""
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        return epoch == self.max_epoch or (freq > 0 and epoch % freq == 0)

    def save_model(self, epoch: int, directory: Path, *, is_best: bool = False) -> None:
        """Save every registered module to ``directory/<name>/model.pth.tar-<epoch>`` (or model-best).

        The latest epoch is always saved (so an interrupted run can resume); the previous one is removed
        unless :meth:`_keep_epoch` says it stays."""
        for name, module in self._models.items():
            sched = self._scheds[name]
            optim = self._optims[name]
            state = {
                "state_dict": self.trainable_state(module),
                "epoch": epoch,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "classnames": list(self.classnames),
                "trainer": self.cfg.TRAINER.NAME,
                "backbone": self.cfg.MODEL.BACKBONE.NAME,
            }
            folder = directory / name
            fname = BEST_CHECKPOINT if is_best else f"{CHECKPOINT_PREFIX}{epoch}"
            atomic_torch_save(state, folder / fname)
            if is_best:
                continue
            previous = _read_pointer(folder)
            atomic_write_text(folder / "checkpoint", fname + "\n")
            if previous and previous != fname and not self._keep_epoch(int(previous[len(CHECKPOINT_PREFIX):])):
                (folder / previous).unlink(missing_ok=True)

    def load_model(self, directory: str | Path, epoch: int | None = None) -> int:
        """Load the registered modules from a run directory; returns the checkpoint's epoch.

        ``epoch`` None → ``model-best.pth.tar`` if the run selected on val and it exists, else the latest."""
        directory = Path(directory)
        loaded_epoch = 0
        if not self._models:
            logger.info("%s has no learned parameters: nothing to load", self.cfg.TRAINER.NAME)
            return 0
        for name, module in self._models.items():
            path = _checkpoint_path(directory / name, epoch, prefer_best=self.cfg.TEST.FINAL_MODEL == "best_val")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            self._load_trainable(module, ckpt["state_dict"], path)
            loaded_epoch = int(ckpt["epoch"])
            logger.info("loaded %s from %s (epoch %d)", name, path, loaded_epoch)
        return loaded_epoch

    def _load_trainable(self, module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
        expected = self.trainable_state(module)
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{path} does not fit {type(module).__name__}: missing {missing or 'none'}, unexpected "
                f"{unexpected or 'none'} (was it written by trainer {self.cfg.TRAINER.NAME}?)"
            )
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise CheckpointError(
                    f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}"
                )
        module.load_state_dict(state, strict=False)

    def check_resumable(self, directory: Path) -> None:
        """Refuse to continue checkpoints written under a different config (Dassl resumes silently)."""
        saved = directory / "config.yaml"
        if not saved.is_file() or not any(_read_pointer(directory / n) for n in self._models):
            return
        def norm(cfg: CfgNode) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in flat_items(cfg).items()}

        old, new = norm(CfgNode.load_cfg(saved.read_text())), norm(self.cfg)
        ignore = ("OUTPUT_DIR", "RESUME", "VERBOSE")
        diff = [k for k in sorted(set(old) | set(new)) if k not in ignore and old.get(k) != new.get(k)]
        if diff:
            raise CheckpointError(
                f"{directory} holds checkpoints of a run with a different config (differs in {', '.join(diff[:5])}): "
                "resuming would mix two runs. Use a new --output-dir, or delete the old run directory."
            )

    def resume_if_possible(self, directory: Path) -> int:
        """Resume from the latest checkpoint in ``directory`` if every registered module has one."""
        if not self._models or not all(_read_pointer(directory / n) for n in self._models):
            return 0
        epoch = 0
        for name, module in self._models.items():
            path = directory / name / _read_pointer(directory / name)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            self._load_trainable(module, ckpt["state_dict"], path)
            if self._optims[name] is not None and ckpt["optimizer"] is not None:
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt["scheduler"] is not None:
                self._scheds[name].load_state_dict(ckpt["scheduler"])
            epoch = int(ckpt["epoch"])
        logger.info("resumed from %s at epoch %d/%d", directory, epoch, self.max_epoch)
        return epoch

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any] | None:
        """Train (if there is anything to learn), then evaluate as TEST.FINAL_MODEL says."""
        t0 = time.perf_counter()
        resume_dir = Path(self.cfg.RESUME) if self.cfg.RESUME else self.output_dir
        if self._models:
            self.check_resumable(resume_dir)
        self.write_run_files()
        if not self._models:
            logger.info("%s learns nothing: going straight to evaluation", self.cfg.TRAINER.NAME)
            return self._final_test(t0)
        self.start_epoch = self.resume_if_possible(resume_dir)
        self.before_train()
        self._best_val = -1.0
        n_batches = len(self.dm.train_loader_x)
        total = (self.max_epoch - self.start_epoch) * n_batches
        writer = self._tensorboard()
        with tqdm(total=total, desc=f"{self.cfg.TRAINER.NAME}", unit="it", dynamic_ncols=True,
                  disable=not self.cfg.VERBOSE) as bar:
            for epoch in range(self.start_epoch, self.max_epoch):
                self.epoch = epoch
                self.run_epoch(bar, writer)
                self.after_epoch()
        if writer is not None:
            writer.close()
        logger.info("Finish training (%s)", datetime.timedelta(seconds=round(time.perf_counter() - t0)))
        self.after_train()
        return self._final_test(t0)

    def before_train(self) -> None:
        """Hook: called once before the first epoch."""

    def after_train(self) -> None:
        """Hook: called once after the last epoch, before the final test."""

    def _seed_epoch(self) -> None:
        s = derive_seed(self.cfg.SEED, "epoch", self.epoch)
        set_random_seed(s)
        self.dm.generator.manual_seed(s)

    def run_epoch(self, bar: tqdm, writer: Any) -> None:
        self.set_model_mode("train")
        self._seed_epoch()
        loader = self.dm.train_loader_x
        n = len(loader)
        sums: dict[str, torch.Tensor] = {}
        lr = self.get_current_lr()
        t_epoch = time.perf_counter()
        for i, batch in enumerate(loader):
            out = self.forward_backward(batch)
            for k, v in out.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            if (i + 1) % self.cfg.TRAIN.PRINT_FREQ == 0 or i + 1 == n:
                means = {k: float(v) / (i + 1) for k, v in sums.items()}  # host sync only here
                bar.set_postfix(epoch=f"{self.epoch + 1}/{self.max_epoch}", lr=f"{lr:.2e}",
                                **{k: f"{v:.4f}" for k, v in means.items()})
        means = {k: float(v) / max(n, 1) for k, v in sums.items()}
        logger.info(
            "epoch [%d/%d] %s\tlr %.6e\t(%.1fs)", self.epoch + 1, self.max_epoch,
            "\t".join(f"{k} {v:.4f}" for k, v in means.items()), lr, time.perf_counter() - t_epoch,
        )
        if writer is not None:
            for k, v in means.items():
                writer.add_scalar(f"train/{k}", v, self.epoch + 1)
            writer.add_scalar("train/lr", lr, self.epoch + 1)
        self._step_schedulers()

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
        for batch in tqdm(loader, desc=f"eval {split}", leave=False, disable=not self.cfg.VERBOSE):
            images, labels = self.parse_batch(batch)
            with self.autocast():
                logits = self.model_inference(images)
            self.evaluator.process(logits.float(), labels)
        logger.info("Do evaluation on %s set", split)
        res = self.evaluator.evaluate()  # logs Dassl's "=> result" block
        if split != "test":
            return res
        if self.cfg.TEST.COMPUTE_CMAT:
            atomic_write_json(self.output_dir / "confusion_matrix.json",
                              {"classnames": self.classnames, "rows_true_cols_pred": res["confusion_matrix"]})
        self.write_metrics(res, split, wall_time_s if wall_time_s is not None else time.perf_counter() - t0)
        return res

    # ------------------------------------------------------------------ run directory
    def write_run_files(self) -> None:
        """``config.yaml`` and ``fewshot_split.json`` (written before training, so a crashed run is auditable).

        Called once a run has passed its checks and commits to producing new results: a ``metrics.json`` left in the
        folder is removed here, never earlier, so a refused command cannot destroy a finished run's result."""
        (self.output_dir / "metrics.json").unlink(missing_ok=True)  # a failed run must not leave stale results
        atomic_write_text(self.output_dir / "config.yaml", self.cfg.dump())
        record = {
            "dataset": self.cfg.DATASET.NAME,
            "num_shots": int(self.cfg.DATASET.NUM_SHOTS),
            "seed": int(self.cfg.SEED),
            "subsample_classes": self.cfg.DATASET.SUBSAMPLE_CLASSES,
            "classnames": self.classnames,
            **self.dm.dataset.split_record(),
        }
        atomic_write_json(self.output_dir / "fewshot_split.json", record)

    def write_metrics(self, res: dict[str, Any], split: str, wall_time_s: float) -> None:
        cfg = self.cfg
        metrics = {
            "split": split,
            "accuracy": res["accuracy"],
            "macro_f1": res["macro_f1"],
            "ece": res["ece"],
            "num_samples": res["num_samples"],
            "per_class_accuracy": res["per_class_accuracy"],
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "seed": int(cfg.SEED),
            "shots": int(cfg.DATASET.NUM_SHOTS),
            "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
            "epochs": int(self.max_epoch) if self._models else 0,
            "wall_time_s": round(float(wall_time_s), 3),
            "versions": package_versions(),
            "git_commit": git_commit(),
        }
        atomic_write_json(self.output_dir / "metrics.json", metrics)
        logger.info("wrote %s", self.output_dir / "metrics.json")

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: no tensorboard scalars (pip install tensorboard)")
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))


def _read_pointer(folder: Path) -> str | None:
    pointer = folder / "checkpoint"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return name if (folder / name).is_file() else None


def _checkpoint_path(folder: Path, epoch: int | None, *, prefer_best: bool) -> Path:
    if epoch is not None:
        path = folder / f"{CHECKPOINT_PREFIX}{epoch}"
    elif prefer_best and (folder / BEST_CHECKPOINT).is_file():
        path = folder / BEST_CHECKPOINT
    else:
        latest = _read_pointer(folder)
        path = folder / (latest or f"{CHECKPOINT_PREFIX}?")
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("model*.pth.tar*")) if folder.is_dir() else []
        raise CheckpointError(f"checkpoint not found: {path} (available in {folder}: {have or 'none'})")
    return path


def build_trainer(cfg: CfgNode) -> TrainerBase:
    """Instantiate the trainer named ``cfg.TRAINER.NAME`` from the registry."""
    import trainers  # noqa: F401  (registers every trainer)

    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
