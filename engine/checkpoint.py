"""Checkpoints: save, load, provenance, resume, and the pointer files.

Each registered module is saved to ``<run dir>/<name>/model.pth.tar-<epoch>`` (``model-best.pth.tar`` for the best
validation epoch) with only its trainable tensors, its optimizer and scheduler state, the epoch, the class names
and the run's provenance (:mod:`engine.provenance`); ``<name>/checkpoint`` names the latest epoch's file (Dassl's
pointer file). A checkpoint is refused, in one line naming both sides, when it was trained with another trainer,
backbone, class set or config (:meth:`Checkpoints.check_provenance`), when it does not fit the module, and, to
resume, when the folder's ``config.yaml`` differs from this run's (:meth:`Checkpoints.check_resumable`).
:class:`Checkpoints` is a mixin of :class:`engine.trainer.TrainerBase`, which sets the attributes it declares.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from yacs.config import CfgNode

from engine.cache import FeatureCache
from engine.config import flat_items
from engine.provenance import ALWAYS_REFUSED, describe_mismatches, make_provenance, provenance_mismatches
from engine.runfiles import read_config
from engine.utils import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"
#: config keys that change neither what a run learns nor its numbers: a run may resume across them
RESUME_NEUTRAL_KEYS = ("OUTPUT_DIR", "RESUME", "VERBOSE", "CACHE.ENABLED", "CACHE.DIR")
#: in each module's folder: the name of its latest epoch's checkpoint (Dassl's pointer file)
POINTER_FILE = "checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the model."""


def _read_pointer(folder: Path) -> str | None:
    """The latest checkpoint's file name in a module's folder, if its pointer file names an existing one."""
    pointer = folder / POINTER_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return name if (folder / name).is_file() else None


def config_differences(saved: CfgNode, cfg: CfgNode) -> list[str]:
    """The keys (sorted) in which two configs differ, but those of :data:`RESUME_NEUTRAL_KEYS`."""
    def norm(c: CfgNode) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in flat_items(c).items()}

    old, new = norm(saved), norm(cfg)
    return [k for k in sorted(set(old) | set(new)) if k not in RESUME_NEUTRAL_KEYS and old.get(k) != new.get(k)]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors on the CPU); :class:`CheckpointError` naming the file when it cannot be
    read (truncated, damaged, not a checkpoint: torch's zip reader, unpickler and I/O errors come in many types)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every way a file can fail to be a checkpoint, named in one line
        why = " ".join(str(e).split())[:200]
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {why}): it is truncated or "
                              "damaged; delete it (and its folder's 'checkpoint' pointer) to retrain from the "
                              "previous one, or retrain in a new --output-dir") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is unreadable: not a checkpoint of this toolkit (no state_dict / "
                              "epoch); retrain in a new --output-dir")
    return ckpt


def latest_checkpoints(run_dir: Path) -> list[Path]:
    """The latest checkpoint of every module folder of ``run_dir`` (the files its pointer files name)."""
    out = []
    for pointer in sorted(Path(run_dir).glob(f"*/{POINTER_FILE}")):
        name = _read_pointer(pointer.parent)
        if name:
            out.append(pointer.parent / name)
    return out


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


class Checkpoints:
    """Save / load / resume the registered modules' trainable tensors, checked against the run (mixin)."""

    # set by TrainerBase (class attributes and __init__)
    model_keys: tuple[str, ...] | None
    cfg: CfgNode
    cfg_node: str | None
    backbone: Any
    cache: FeatureCache
    classnames: list[str]
    max_epoch: int
    _models: OrderedDict[str, nn.Module]
    _optims: dict[str, torch.optim.Optimizer | None]
    _scheds: dict[str, Any]
    _provenance: dict[str, Any] | None
    provenance_mismatch: dict[str, dict[str, Any]]
    loaded_epoch: int | None

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
            atomic_write_text(folder / POINTER_FILE, fname + "\n")
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
            ckpt = read_checkpoint(path)
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
        if not any(_read_pointer(directory / n) for n in self._models):
            return
        saved = read_config(directory)
        if saved is None:
            return
        diff = config_differences(saved, self.cfg)
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
            ckpt = read_checkpoint(path)
            self.check_provenance(ckpt, path, resume=True)
            self._load_trainable(module, ckpt["state_dict"], path)
            if self._optims[name] is not None and ckpt["optimizer"] is not None:
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt["scheduler"] is not None:
                self._scheds[name].load_state_dict(ckpt["scheduler"])
            epoch = int(ckpt["epoch"])
        logger.info("resumed from %s at epoch %d/%d", directory, epoch, self.max_epoch)
        return epoch
