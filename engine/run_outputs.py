"""What a trainer writes into its run directory, through :mod:`engine.runfiles`, and its tensorboard scalars.

Before training (:meth:`RunOutputs.write_run_files`): ``config.yaml`` and ``fewshot_split.json``, so a crashed run
is auditable. After the test evaluation (:meth:`RunOutputs.write_test_files`): ``predictions.npz``, then
``metrics.json`` (a :class:`engine.runfiles.RunMetrics`) and, with ``TEST.COMPUTE_CMAT``, ``confusion_matrix.json``.
Tensorboard (``tensorboard/``, when installed): ``train/*`` per epoch, ``val/*`` with best-val selection, ``test/*``
and the run's hyper-parameters (the HPARAMS tab).
:class:`RunOutputs` is a mixin of :class:`engine.trainer.TrainerBase`, which sets the attributes it declares.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from engine.config import flat_items
from engine.data import DataManager
from engine.evaluation import Classification
from engine.plotdata import PREDICTIONS_FILE, save_predictions
from engine.runfiles import (
    CONFUSION_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    FewShotSplit,
    NonFiniteResultError,
    RunMetrics,
    nonfinite_results,
    write_config,
    write_confusion_matrix,
    write_metrics,
    write_split,
)
from engine.utils import git_commit, package_versions, peak_memory_mib

logger = logging.getLogger(__name__)


class RunOutputs:
    """The run directory's files and the tensorboard writer of one run (mixin)."""

    # set by TrainerBase.__init__
    cfg: CfgNode
    cfg_node: str | None
    device: torch.device
    output_dir: Path
    dm: DataManager
    evaluator: Classification
    classnames: list[str]
    epoch: int
    max_epoch: int
    timings: dict[str, float]
    counts: dict[str, int]
    provenance_mismatch: dict[str, dict[str, Any]]
    loaded_epoch: int | None
    _models: OrderedDict[str, nn.Module]
    _trained_epochs: int | None
    _writer: Any

    def write_run_files(self) -> None:
        """``config.yaml`` and ``fewshot_split.json`` (written before training, so a crashed run is auditable).

        Called once a run has passed its checks (and read its resume checkpoint) and commits to producing new
        results: the result files left in the folder (``metrics.json``, ``predictions.npz``, ``confusion_matrix.json``)
        are removed here, never earlier, so a refused command cannot destroy a finished run's result."""
        (self.output_dir / METRICS_FILE).unlink(missing_ok=True)  # a failed run must not leave stale results
        (self.output_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
        (self.output_dir / CONFUSION_FILE).unlink(missing_ok=True)
        write_config(self.output_dir, self.cfg)
        cfg = self.cfg
        write_split(self.output_dir, FewShotSplit(
            dataset=cfg.DATASET.NAME, num_shots=int(cfg.DATASET.NUM_SHOTS), seed=int(cfg.SEED),
            subsample_classes=cfg.DATASET.SUBSAMPLE_CLASSES, classnames=self.classnames,
            **self.dm.dataset.split_record(),
        ))

    def write_test_files(self, res: dict[str, Any], split: str, wall_time_s: float) -> None:
        """After the test evaluation ``res``: the confusion matrix (``TEST.COMPUTE_CMAT``), ``predictions.npz`` (its
        SHA-256 goes into ``res["predictions_sha256"]``), then ``metrics.json``. A NaN or infinite metric or
        confidence (a model that diverged after its last loss check) writes none of them:
        :class:`engine.runfiles.NonFiniteResultError`."""
        pred, label, conf = self.evaluator.samples()
        bad = nonfinite_results(res)
        n_bad = int((~np.isfinite(np.asarray(conf, dtype=np.float64))).sum())
        if n_bad:
            bad.append(f"confidence ({n_bad} of {len(conf)} predictions)")
        if bad:
            raise NonFiniteResultError(f"the {split} evaluation gave a non-finite {', '.join(bad)}: the model "
                                       "diverged after its last loss check; no result was written to "
                                       f"{self.output_dir}")
        if self.cfg.TEST.COMPUTE_CMAT:
            write_confusion_matrix(self.output_dir, self.classnames, res["confusion_matrix"])
        res["predictions_sha256"] = save_predictions(self.output_dir / PREDICTIONS_FILE, label=label, pred=pred,
                                                     confidence=conf, classnames=self.classnames,
                                                     n_bins=self.evaluator.n_bins)
        self.write_metrics(res, split, wall_time_s)

    def write_metrics(self, res: dict[str, Any], split: str, wall_time_s: float) -> None:
        """``metrics.json`` of the evaluation ``res`` on ``split`` (atomic, with a checksum of its content)."""
        cfg = self.cfg
        shots = int(cfg.DATASET.NUM_SHOTS)
        predictions = None
        if "predictions_sha256" in res:  # the figures' data (engine/plotdata.py), written just before
            predictions = {"file": PREDICTIONS_FILE, "sha256": res["predictions_sha256"]}
        metrics = RunMetrics(
            split=split, accuracy=res["accuracy"], macro_f1=res["macro_f1"], ece=res["ece"],
            num_samples=res["num_samples"], per_class_accuracy=res["per_class_accuracy"],
            trainer=cfg.TRAINER.NAME, dataset=cfg.DATASET.NAME, backbone=cfg.MODEL.BACKBONE.NAME,
            seed=int(cfg.SEED), shots=shots, shots_all=shots < 1, train_images=len(self.dm.dataset.train_x),
            subsample=cfg.DATASET.SUBSAMPLE_CLASSES, ablation=cfg.ABLATION.NAME or None,
            epochs=self._metrics_epochs(), wall_time_s=round(float(wall_time_s), 3),
            timings_s={k: round(float(v), 3) for k, v in self.timings.items()}, counts=dict(self.counts),
            **peak_memory_mib(self.device), versions=package_versions(), git_commit=git_commit(),
            # an evaluation across a mismatch allowed by --allow-mismatch
            provenance_mismatch=self.provenance_mismatch or None, predictions=predictions,
        )
        path = self.output_dir / METRICS_FILE
        write_metrics(path, metrics)
        logger.info("wrote %s", path)

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
        self._writer = SummaryWriter(log_dir=str(self.output_dir / TENSORBOARD_DIR))
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
