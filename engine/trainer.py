"""TrainerX-style base class with Dassl's contract.

A method implements ``build_model`` (build its module on ``self.backbone``, freeze what is not learned, call
``register_model``) and ``forward_backward(batch) -> dict of scalars``; for inference it may override
``model_inference(images) -> logits``. The base runs the epochs (LR stepped once per epoch, SPEC §4.3), a
progress bar, evaluation, checkpoints of the registered modules' trainable tensors, resume, eval-only and the
run directory (``config.yaml``, ``log.txt``, ``metrics.json``, ``fewshot_split.json``).

Reproducibility: each epoch's shuffling and dropout are seeded from (SEED, epoch) and each training image's
augmentation from (SEED, epoch, item), so an interrupted run resumed from its last checkpoint ends with the same
numbers as an uninterrupted one, whatever the number of data-loader workers.

Frozen towers are paid once (``frozen_image_tower`` trainers: all but MaPLe):

* evaluation runs on the split's image features, encoded once per run (``split_features``) and kept in the disk
  cache (:mod:`engine.cache`) under a key covering the backbone's weights, the test-time preprocessing, the exact
  image files, the device type and the frozen precision, so a second run on the same data only reads them;
* with ``batched_train_features`` (the prompt learners) each epoch's augmented views — the very views the per-step
  loop would draw — are encoded in no-grad batches of ``TRAIN.ENCODE_BATCH_SIZE`` images before the optimisation
  steps, which then run on the stored features (``batch["frozen"]``).

A training step never synchronises with the host: a non-finite loss is recorded on the device and raised as
``FloatingPointError`` at the next print point or at the end of the epoch, before any checkpoint is written.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm
from yacs.config import CfgNode

from engine.cache import FeatureCache
from engine.config import flat_items
from engine.data import DataManager, Datum, read_image
from engine.evaluation import Classification
from engine.optim import build_lr_scheduler, build_optimizer
from engine.plotdata import PREDICTIONS_FILE, save_predictions
from engine.provenance import ALWAYS_REFUSED, describe_mismatches, make_provenance, provenance_mismatches
from engine.registry import TRAINER_REGISTRY
from engine.results import write_metrics
from engine.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    derive_seed,
    git_commit,
    package_versions,
    peak_memory_mib,
    process_age_s,
    select_device,
    set_random_seed,
    track,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"
PRECISIONS = ("fp32", "amp", "fp16", "bf16")
FROZEN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: TRAIN.ENCODE_BATCH_SIZE -1 (auto), by "is the device CUDA": images per no-grad pass of the image tower, and
#: sentences per pass of the text tower (a sentence has ~20-40 tokens, an image 197: the CPU's text passes are
#: fastest at 32-64 sentences, its image passes equally fast at 4-32 images, where larger passes only cost memory)
AUTO_ENCODE_BATCH = {True: 256, False: 4}
AUTO_TEXT_ENCODE_BATCH = {True: 256, False: 32}
#: metrics.json keys that measure the run's cost (they differ between two runs with identical results), and the checksum
#: that covers them
COST_KEYS = ("wall_time_s", "timings_s", "counts", "peak_rss_mib", "peak_gpu_mib", "checksum")
#: environment variable: wait for the device at the boundaries of the timed phases (``scripts/benchmark.py`` sets
#: it), so ``metrics.json``'s ``timings_s`` are exact on CUDA; off by default, since it costs a little speed
SYNC_TIMINGS_ENV = "OGKD_SYNC_TIMINGS"
#: config keys that change neither what a run learns nor its numbers: a run may resume across them
RESUME_NEUTRAL_KEYS = ("OUTPUT_DIR", "RESUME", "VERBOSE", "CACHE.ENABLED", "CACHE.DIR")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 ("bf16") or fp16 ("amp", "fp16") on ``device``; a no-op for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _closing(obj: Any) -> contextlib.AbstractContextManager:
    """Close ``obj`` (if not None) when the block ends, however it ends."""
    return contextlib.closing(obj) if obj is not None else contextlib.nullcontext()


def items_digest(items: Sequence[Datum]) -> str:
    """SHA-256 over the image files of ``items`` (path, size, modification time), in order."""
    h = hashlib.sha256()
    for d in items:
        st = os.stat(d.impath)
        h.update(f"{d.impath}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the model."""


class TrainerBase:
    """Base trainer: data, backbone, registered modules, loop, evaluation, checkpoints."""

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
        return _autocast(self.device, self.precision)

    def _frozen_precision(self) -> str:
        prec = str(self.cfg.MODEL.BACKBONE.FROZEN_PREC).lower()
        if prec not in FROZEN_PRECISIONS:
            raise ValueError(f"MODEL.BACKBONE.FROZEN_PREC must be one of {FROZEN_PRECISIONS}, got {prec!r}")
        if prec == "auto":
            prec = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if prec != "fp32":
            logger.info("frozen towers (no-grad image features, teacher bank) run under %s autocast", prec)
        return prec

    def frozen_autocast(self) -> contextlib.AbstractContextManager:
        """The context of the frozen towers' no-grad passes (``MODEL.BACKBONE.FROZEN_PREC``)."""
        return _autocast(self.device, self.frozen_precision)

    # ------------------------------------------------------------------ frozen features
    @torch.no_grad()
    def encode_frozen(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a step needs from the frozen image tower for ``images`` [B, 3, H, W]: ``{"g": normalised global
        features [B, E] (fp32)}``; subclasses may add entries (OGKD: patch tokens)."""
        with self.frozen_autocast():
            g, _ = self.backbone.encode_image(images)
        return {"g": F.normalize(g.float(), dim=-1)}

    def frozen_features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's frozen features: pre-encoded (batched per epoch) or encoded now from ``batch["img"]``."""
        if "frozen" in batch:
            return batch["frozen"]
        return self.encode_frozen(batch["img"].to(self.device, non_blocking=True))

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from normalised global image features [B, E] (``frozen_image_tower`` trainers)."""
        raise NotImplementedError

    def cache_key(self, kind: str, **parts: Any) -> dict[str, Any]:
        """A feature-cache key: ``parts`` plus what every frozen-tower output depends on (the backbone's name,
        weights and architecture, the device type, the frozen precision, the library versions)."""
        return {"kind": kind, **parts, "backbone": self.cfg.MODEL.BACKBONE.NAME,
                "weights": self.cache.weights_fingerprint(self.backbone),
                "architecture": self.backbone.architecture_digest(), "device": self.device.type,
                "precision": self.frozen_precision, "versions": package_versions()}

    def cached(self, key: Callable[[], dict[str, Any]], compute: Callable[[], dict[str, torch.Tensor]],
               what: str) -> dict[str, torch.Tensor]:
        """``compute()`` through the disk cache: read under ``key()`` if present, else compute and store.

        ``key`` is a function so that nothing is hashed when the cache is off."""
        if not self.cache.enabled:
            return compute()
        k = key()
        hit = self.cache.get(k, self.device)
        if hit is not None:
            logger.info("%s: read from the feature cache (%s)", what, self.cache.path(k).name[:12])
            return hit
        out = compute()
        path = self.cache.put(k, out)
        if path is not None:
            logger.info("%s: stored in the feature cache (%s, %.1f MiB)", what, path.name[:12],
                        path.stat().st_size / 2**20)
        return out

    def _items(self, split: str) -> list[Datum]:
        return self.dm.dataset.val if split == "val" else self.dm.dataset.test

    def split_features(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised image features [N, E], labels [N]) of the ``split`` ("val" / "test") under the test-time
        transform: from memory, the disk cache, or encoded once now (then cached)."""
        if split not in self._split_feats:
            loader = self.dm.val_loader if split == "val" else self.dm.test_loader
            if loader is None:
                raise ValueError(f"the dataset has no {split} split to evaluate")
            items = self._items(split)
            t0 = time.perf_counter()
            feats = self.cached(
                lambda: self.cache_key("image-features", split=split, dataset=self.cfg.DATASET.NAME,
                                       items=items_digest(items), n=len(items), transform=repr(self.dm.tfm_test)),
                lambda: {"features": self.encode_loader(loader, desc=f"encode {split}")},
                f"{split} image features ({len(items)} images)",
            )["features"]
            labels = torch.tensor([d.label for d in items], dtype=torch.long, device=self.device)
            self._split_feats[split] = (feats.to(self.device), labels)
            self.sync_for_timing()
            self.timings[f"{split}_features_s"] = time.perf_counter() - t0
        return self._split_feats[split]

    @torch.no_grad()
    def encode_loader(self, loader: Iterable[dict[str, Any]], desc: str = "encode") -> torch.Tensor:
        """Normalised global features [N, E] of every image a loader yields, in order (with a progress bar), in
        no-grad passes of at most :meth:`encode_pass_size` images (bounds the activations' memory)."""
        size = self.encode_pass_size()
        total = len(loader.dataset) if hasattr(loader, "dataset") else 0
        feats = [self.encode_frozen(part.to(self.device, non_blocking=True))["g"]
                 for batch in track(loader, total=total, desc=desc, bar=bool(self.cfg.VERBOSE),
                                    size=lambda b: len(b["img"]))
                 for part in (batch["img"].split(size) if size else (batch["img"],))]
        return torch.cat(feats)

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
                "provenance": self.provenance(),
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

    def provenance(self) -> dict[str, Any]:
        """What this run's checkpoints record about how they were trained (:mod:`engine.provenance`)."""
        if self._provenance is None:
            self._provenance = make_provenance(self.cfg, node=self.cfg_node,
                                               weights=self.cache.weights_fingerprint(self.backbone),
                                               classnames=self.classnames, neutral=RESUME_NEUTRAL_KEYS)
        return self._provenance

    def check_provenance(self, ckpt: dict[str, Any], path: Path, *, resume: bool, allow_mismatch: bool = False) -> None:
        """Refuse a checkpoint trained with another trainer, backbone, class set or config (one line naming both
        sides); with ``allow_mismatch`` (evaluation only) a backbone / dataset / class / node difference is allowed,
        logged and recorded in ``metrics.json`` as ``provenance_mismatch``."""
        saved = ckpt.get("provenance")
        if saved is None:
            mismatch = {"provenance": {"checkpoint": None, "run": "recorded"}}
            if allow_mismatch and not resume:
                logger.warning("%s has no provenance record; evaluating it anyway (--allow-mismatch)", path)
                self.provenance_mismatch.update(mismatch)
                return
            raise CheckpointError(
                f"{path} has no provenance record (written by an older version, which did not record its backbone, "
                "trainer and classes), so it cannot be checked against this run: retrain it"
                + ("" if resume else ", or pass --allow-mismatch to evaluate it anyway (recorded in metrics.json)"))
        mismatch = provenance_mismatches(saved, self.provenance(), resume=resume, node_keys=self.model_keys)
        if not mismatch:
            return
        text = describe_mismatches(mismatch)
        if resume:
            raise CheckpointError(f"cannot resume from {path}: it was trained with {text}. Use a new --output-dir, "
                                  "or delete the old run directory")
        if any(f in ALWAYS_REFUSED for f in mismatch):
            raise CheckpointError(f"cannot evaluate {path} as {self.cfg.TRAINER.NAME}: it was trained with {text}. "
                                  f"Pass --trainer {saved.get('trainer')} (and its config)")
        if not allow_mismatch:
            raise CheckpointError(f"{path} was trained with a different setting: {text}. Evaluate it with the "
                                  "checkpoint's settings, or pass --allow-mismatch to evaluate it across them "
                                  "(recorded in metrics.json)")
        logger.warning("evaluating %s across a mismatch (--allow-mismatch): %s", path, text)
        self.provenance_mismatch.update(mismatch)

    def load_model(self, directory: str | Path, epoch: int | None = None, *, allow_mismatch: bool = False) -> int:
        """Load the registered modules from a run directory; returns the checkpoint's epoch.

        ``epoch`` None → ``model-best.pth.tar`` if the run selected on val and it exists, else the latest. The
        checkpoint's provenance must match this run (:meth:`check_provenance`)."""
        directory = Path(directory)
        loaded_epoch = 0
        if not self._models:
            logger.info("%s has no learned parameters: nothing to load", self.cfg.TRAINER.NAME)
            return 0
        for name, module in self._models.items():
            path = _checkpoint_path(directory / name, epoch, prefer_best=self.cfg.TEST.FINAL_MODEL == "best_val")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            self.check_provenance(ckpt, path, resume=False, allow_mismatch=allow_mismatch)
            self._load_trainable(module, ckpt["state_dict"], path)
            loaded_epoch = int(ckpt["epoch"])
            logger.info("loaded %s from %s (epoch %d)", name, path, loaded_epoch)
        self.loaded_epoch = loaded_epoch
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
        diff = [k for k in sorted(set(old) | set(new)) if k not in RESUME_NEUTRAL_KEYS and old.get(k) != new.get(k)]
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
            self.check_provenance(ckpt, path, resume=True)
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
            self.check_test_images()
        self.write_run_files()
        if not self._models:
            logger.info("%s learns nothing: going straight to evaluation", self.cfg.TRAINER.NAME)
            return self._final_test(t0)
        self.start_epoch = self.resume_if_possible(resume_dir)
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

    def encode_pass_size(self, text: bool = False) -> int:
        """``TRAIN.ENCODE_BATCH_SIZE`` resolved: images (``text``: teacher sentences) per no-grad pass of a frozen
        tower; -1 = auto (256 on CUDA; on the CPU 4 images / 32 sentences); 0 = no limit."""
        size = int(self.cfg.TRAIN.ENCODE_BATCH_SIZE)
        if size < -1:
            raise ValueError(f"TRAIN.ENCODE_BATCH_SIZE must be ≥ 0, or -1 for auto (256 on CUDA, 4 on the CPU); "
                             f"0 encodes inside each step. Got {size}")
        if size != -1:
            return size
        return (AUTO_TEXT_ENCODE_BATCH if text else AUTO_ENCODE_BATCH)[self.device.type == "cuda"]

    def encode_batch_size(self) -> int:
        """Images per no-grad encoding pass of the training views; 0 = encode inside each step."""
        return self.encode_pass_size() if self.batched_train_features else 0

    def train_batches(self, loader: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The loader's batches; with batched encoding, their frozen features are computed ahead, in no-grad passes
        over up to ``TRAIN.ENCODE_BATCH_SIZE`` images (the loader draws the same views either way)."""
        size = self.encode_batch_size()
        if size == 0:
            yield from loader
            return
        pending: list[dict[str, Any]] = []
        count = 0
        for batch in loader:
            pending.append(batch)
            count += len(batch["label"])
            if count >= size:
                yield from self._encoded(pending)
                pending, count = [], 0
        yield from self._encoded(pending)

    def sync_for_timing(self) -> None:
        """Wait for the device, only when ``OGKD_SYNC_TIMINGS`` is set (benchmarks): exact phase timings on CUDA."""
        if self.device.type == "cuda" and os.environ.get(SYNC_TIMINGS_ENV):
            torch.cuda.synchronize(self.device)

    def _encoded(self, batches: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not batches:
            return
        t0 = time.perf_counter()
        images = torch.cat([b["img"] for b in batches]).to(self.device, non_blocking=True)
        feats = self.encode_frozen(images)
        self.sync_for_timing()
        self.counts["encoded_images"] = self.counts.get("encoded_images", 0) + len(images)
        self.timings["encode_s"] = self.timings.get("encode_s", 0.0) + time.perf_counter() - t0
        start = 0
        for b in batches:
            k = len(b["label"])
            out = {key: v for key, v in b.items() if key != "img"}
            out["frozen"] = {name: f[start:start + k] for name, f in feats.items()}
            start += k
            yield out

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
        if self.cfg.TEST.COMPUTE_CMAT:
            atomic_write_json(self.output_dir / "confusion_matrix.json",
                              {"classnames": self.classnames, "rows_true_cols_pred": res["confusion_matrix"]})
        pred, label, conf = self.evaluator.samples()
        res["predictions_sha256"] = save_predictions(self.output_dir / PREDICTIONS_FILE, label=label, pred=pred,
                                                     confidence=conf, classnames=self.classnames,
                                                     n_bins=self.evaluator.n_bins)
        self.write_metrics(res, split, wall_time_s if wall_time_s is not None else time.perf_counter() - t0)
        return res

    # ------------------------------------------------------------------ run directory
    def write_run_files(self) -> None:
        """``config.yaml`` and ``fewshot_split.json`` (written before training, so a crashed run is auditable).

        Called once a run has passed its checks and commits to producing new results: a ``metrics.json`` left in the
        folder is removed here, never earlier, so a refused command cannot destroy a finished run's result."""
        (self.output_dir / "metrics.json").unlink(missing_ok=True)  # a failed run must not leave stale results
        (self.output_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
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
            "shots_all": int(cfg.DATASET.NUM_SHOTS) < 1,  # NUM_SHOTS ≤ 0: the whole training split (Dassl)
            "train_images": len(self.dm.dataset.train_x),
            "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
            "epochs": self._metrics_epochs(),
            "wall_time_s": round(float(wall_time_s), 3),
            "timings_s": {k: round(float(v), 3) for k, v in self.timings.items()},
            "counts": dict(self.counts),
            **peak_memory_mib(self.device),
            "versions": package_versions(),
            "git_commit": git_commit(),
        }
        if self.provenance_mismatch:  # an evaluation across a mismatch allowed by --allow-mismatch
            metrics["provenance_mismatch"] = self.provenance_mismatch
        if "predictions_sha256" in res:  # the figures' data (engine/plotdata.py), written just before
            metrics["predictions"] = {"file": PREDICTIONS_FILE, "sha256": res["predictions_sha256"]}
        write_metrics(self.output_dir / "metrics.json", metrics)  # atomic, with a checksum of its content
        logger.info("wrote %s", self.output_dir / "metrics.json")

    def _metrics_epochs(self) -> int:
        """metrics.json "epochs": 0 for a method with nothing to learn; the epochs just trained after training; in
        an evaluation-only run, the epoch of the checkpoint loaded (not the config's OPTIM.MAX_EPOCH)."""
        if not self._models:
            return 0
        if self._trained_epochs is not None:
            return self._trained_epochs
        return self.loaded_epoch if self.loaded_epoch is not None else int(self.max_epoch)

    def _tensorboard(self) -> Any:
        """The run's tensorboard writer (``OUTPUT_DIR/tensorboard``), opened once; None without tensorboard."""
        if self._writer is not None:
            return self._writer
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: no tensorboard scalars (pip install tensorboard)")
            return None
        self._writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
        return self._writer

    def close_tensorboard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def hparams(self) -> dict[str, Any]:
        """The run's hyper-parameters for tensorboard's HPARAMS tab: what identifies the run, the optimisation
        settings and every ``TRAINER.<this trainer's node>`` key (scalars and strings only)."""
        cfg = self.cfg
        hp: dict[str, Any] = {
            "trainer": cfg.TRAINER.NAME, "dataset": cfg.DATASET.NAME, "backbone": cfg.MODEL.BACKBONE.NAME,
            "seed": int(cfg.SEED), "shots": int(cfg.DATASET.NUM_SHOTS), "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
            "epochs": self._metrics_epochs(), "optim": cfg.OPTIM.NAME, "lr": float(cfg.OPTIM.LR),
            "batch_size": int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE),
        }
        node = cfg.TRAINER.get(self.cfg_node) if self.cfg_node else None
        for key, value in flat_items(node).items() if node is not None else ():
            if isinstance(value, bool | int | float | str):
                hp[f"{self.cfg_node}.{key}"] = value
        return hp

    def _tensorboard_eval(self, split: str, res: dict[str, Any]) -> None:
        """``val/*`` scalars at the current epoch (training with best_val); for the test, ``test/*`` scalars and the
        hyper-parameters with the test metrics (tensorboard's HPARAMS tab)."""
        if split == "val" and self._writer is None:
            return
        writer = self._tensorboard()
        if writer is None:
            return
        step = self.epoch + 1 if split == "val" else self._metrics_epochs()
        for key in ("accuracy", "macro_f1", "ece"):
            writer.add_scalar(f"{split}/{key}", float(res[key]), step)
        if split == "test":
            writer.add_hparams(self.hparams(), {f"hparam/{k}": float(res[k]) for k in ("accuracy", "macro_f1", "ece")},
                               run_name=".", global_step=step)
            self.close_tensorboard()  # the test is the run's last word


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


def build_trainer(cfg: CfgNode, backbone: Any, **kwargs: Any) -> TrainerBase:
    """Instantiate the trainer named ``cfg.TRAINER.NAME`` from the registry on ``backbone`` (keyword arguments: see
    :class:`TrainerBase`). The entry point registers the trainers (``import trainers``) and builds the backbone;
    ``trainers.build_trainer(cfg)`` does both."""
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg, backbone, **kwargs)
