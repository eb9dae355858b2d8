"""Shared parts of the frozen-feature baselines (LinearProbe, LPPlusPlus, CLIP_Adapter, TipAdapter; SPEC §1.9–§1.12).

The image tower is frozen, so these methods learn a small head on cached features instead of running the
Dassl epoch loop over images:

* **the one feature path** — :meth:`FeatureTrainer.train_passes` encodes every training image once per
  augmentation pass with the TRAIN transform (BiomedCoOp's main.py: RandomResizedCrop scale (0.5, 1), bicubic,
  flip 0.5, normalisation — the configs' ``INPUT`` settings); image i's augmentation in pass p is seeded from
  (SEED, p, i), so a run is reproducible whatever the batch size and number of workers.
  :meth:`FeatureTrainer.val_features` are the engine's validation features (test transform, feature cache). All
  are L2-normalised, batched, under ``no_grad`` on the trainer's device, and kept for the whole run (the C search,
  the α search and every epoch reuse them);
* **the test** goes through the standard evaluation path (``logits_from_features`` = head(f̂) over the cached
  test features), the same path ``--eval-only --model-dir`` takes, so a run's accuracy reproduces from its
  checkpoint;
* **the run directory** is the engine's (``config.yaml``, ``fewshot_split.json``, ``log.txt``, ``metrics.json``,
  ``<head>/model.pth.tar-<epoch>``). A head's parameters are its fitted state (weights found by sklearn, by
  gradient descent or by search); text weights and logit scale are non-persistent buffers rebuilt from the class
  names. These runs take seconds, so they do not resume: rerunning refits.

The frozen image tower runs under ``MODEL.BACKBONE.FROZEN_PREC``; the heads are fitted in fp32 on the cached
features (``PREC`` applies to the head's inference).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from yacs.config import CfgNode

from engine.config import ConfigError, get_cfg_default
from engine.data import Datum, read_image
from engine.trainer import TrainerBase
from engine.utils import derive_seed
from trainers.prompt_learner import zeroshot_classifier

logger = logging.getLogger(__name__)

TEXT_TEMPLATES = ("a photo of a {}.",)  # the single template of the BiomedCLIP benchmark (SPEC §1.1)


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of rows whose argmax equals the label (a 0-d int64 tensor on the logits' device: no host sync).

    logits: [..., M, C]; labels: [M]. Leading dimensions are kept (e.g. one count per α of a grid)."""
    return (logits.argmax(dim=-1) == labels).sum(dim=-1)


class BestState:
    """The best-scoring state of a module seen so far, tracked on the device without host syncs.

    ``update(score, epoch)`` keeps the module's current ``state_dict`` when ``score`` beats the best one
    (``prefer_later``: ties go to the later call; else strict improvement); ``restore()`` loads it back.
    Starts from the module's current state with score ``initial`` (-1: any first update wins)."""

    def __init__(self, module: nn.Module, *, prefer_later: bool, initial: torch.Tensor | int = -1) -> None:
        self.module = module
        self.prefer_later = prefer_later
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        device = next(iter(self.state.values())).device
        self.score = torch.as_tensor(initial, device=device).clone()
        self.epoch = torch.zeros((), dtype=torch.long, device=device)

    def update(self, score: torch.Tensor, epoch: int) -> None:
        better = score >= self.score if self.prefer_later else score > self.score
        for k, v in self.module.state_dict().items():
            self.state[k] = torch.where(better, v.detach(), self.state[k])
        self.score = torch.where(better, score, self.score)
        self.epoch = torch.where(better, torch.full_like(self.epoch, epoch), self.epoch)

    def restore(self) -> None:
        self.module.load_state_dict(self.state)


class _AugmentedPasses(Dataset):
    """(pass p, image i) pairs, pass-major; image i's augmentation in pass p is seeded from (seed, p, i)."""

    def __init__(self, items: Sequence[Datum], transform: Any, passes: Sequence[int], seed: int) -> None:
        self.items = list(items)
        self.transform = transform
        self.pairs = [(p, i) for p in passes for i in range(len(self.items))]
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, Any]:
        p, i = self.pairs[k]
        d = self.items[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "augment", p, i))
            img = self.transform(read_image(d.impath))
        return {"img": img, "label": d.label, "index": k}


class FeatureTrainer(TrainerBase):
    """A head over cached frozen image features; subclasses implement :meth:`build_head` and :meth:`fit`.

    Not a :class:`~trainers.base.ClipTrainer`: there the class features are recomputed for every evaluation
    from a learned text side; here the text weights T (where a method uses them) are fixed, computed once by
    :meth:`text_weights` and held by the head."""

    #: name under which the head is registered (its checkpoint folder)
    model_name: str = "head"
    frozen_image_tower = True

    # ------------------------------------------------------------------ what a method implements
    def build_head(self) -> nn.Module:
        """The registered module; logits = head(f̂) for normalised image features f̂ [B, E]."""
        raise NotImplementedError

    def fit(self) -> None:
        """Fit ``self.head`` on the cached features (and select on the validation features)."""
        raise NotImplementedError

    def num_epochs(self) -> int:
        """Epochs the method trains for (the checkpoint's epoch and ``metrics.json``'s "epochs"); 0 = no epochs.
        A method that trains reads them from ``OPTIM.MAX_EPOCH``, the one epoch key of every trainer."""
        return 0

    def require_optim(self, *, why: str, **expected: str) -> None:
        """Refuse ``OPTIM.<KEY>`` values the method cannot honour (e.g. ``NAME="adamw"``): a clear error, never
        a setting that is silently ignored."""
        for key, want in expected.items():
            got = str(self.cfg.OPTIM[key]).lower()
            if got != want:
                raise ConfigError(f"OPTIM.{key} {got!r}: {why}, so {self.cfg.TRAINER.NAME} needs OPTIM.{key} "
                                  f"{want!r} (as its config sets); remove the override")

    def refuse_optim(self, key: str, *, why: str) -> None:
        """Refuse an ``OPTIM.<key>`` that differs from the default: the method does not use it."""
        default = get_cfg_default().OPTIM[key]
        if self.cfg.OPTIM[key] != default:
            raise ConfigError(f"OPTIM.{key} {self.cfg.OPTIM[key]!r} has no effect on {self.cfg.TRAINER.NAME}: {why}; "
                              f"remove the OPTIM.{key} override")

    # ------------------------------------------------------------------ engine hooks
    def build_model(self) -> None:
        self._train_passes: dict[int, torch.Tensor] = {}
        self._text: torch.Tensor | None = None
        self.max_epoch = self.num_epochs()
        if int(self.node.AUGMENT_EPOCHS) < 1:
            raise ValueError(f"TRAINER.{self.cfg_node}.AUGMENT_EPOCHS must be >= 1, got {self.node.AUGMENT_EPOCHS}")
        self.head = self.build_head().to(self.device)
        self.register_model(self.model_name, self.head)

    @property
    def node(self) -> CfgNode:
        """This trainer's ``TRAINER.<NODE>`` config."""
        return self.cfg.TRAINER[self.cfg_node]

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def train(self) -> dict[str, Any] | None:
        """Write the run files, extract features and fit the head, checkpoint it, then test."""
        t0 = time.perf_counter()
        self.check_test_images()
        self.write_run_files()
        self.set_model_mode("train")
        self.fit()
        self.save_model(self.max_epoch, self.output_dir)
        logger.info("Finish training (%s)", datetime.timedelta(seconds=round(time.perf_counter() - t0)))
        return self._final_test(t0)

    # ------------------------------------------------------------------ features (computed once per run)

    def train_passes(self, passes: Iterable[int]) -> list[torch.Tensor]:
        """Normalised features [N, E] of every training image (``train_x`` order) under each augmentation pass.

        Passes not cached yet are encoded together in one loader run; the augmentation of image i in pass p is
        seeded from (SEED, p, i), so it depends neither on the batch size nor on the number of workers."""
        passes = list(passes)
        todo = sorted(set(passes) - set(self._train_passes))
        if todo:
            t0 = time.perf_counter()
            items = self.dm.dataset.train_x
            loader = DataLoader(
                _AugmentedPasses(items, self.dm.tfm_train, todo, int(self.cfg.SEED)),
                batch_size=int(self.cfg.DATALOADER.TEST.BATCH_SIZE),
                shuffle=False,
                num_workers=self.dm.train_loader_x.num_workers,
                pin_memory=self.device.type == "cuda",
            )
            feats = self.encode_loader(loader, desc="encode train").view(len(todo), len(items), -1)
            self._train_passes.update(zip(todo, feats, strict=True))
            logger.info("encoded %d augmentation pass(es) of the %d training images (%.1fs)", len(todo), len(items),
                        time.perf_counter() - t0)
        return [self._train_passes[p] for p in passes]

    def train_pass(self, p: int) -> torch.Tensor:
        """Features [N, E] of augmentation pass ``p`` (see :meth:`train_passes`)."""
        return self.train_passes([p])[0]

    @property
    def train_labels(self) -> torch.Tensor:
        """Labels [N] of the training images, in the order of :meth:`train_pass`."""
        return torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long, device=self.device)

    def train_features(self, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Passes 0..passes-1 stacked as one training set: (features [passes·N, E], labels [passes·N])."""
        feats = torch.cat(self.train_passes(range(passes)))
        return feats, self.train_labels.repeat(passes)

    def val_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised validation features [Nv, E] (test transform) and labels [Nv], encoded once."""
        if self.dm.val_loader is None:
            raise ValueError(f"{self.cfg.TRAINER.NAME} selects its hyper-parameters on the validation split, "
                             "and this dataset has none")
        return self.split_features("val")

    @torch.no_grad()
    def text_weights(self) -> torch.Tensor:
        """Zero-shot text classifier T [C, E] ("a photo of a {}."), normalised, computed once."""
        if self._text is None:
            with self.autocast():
                self._text = zeroshot_classifier(self.backbone, self.classnames, TEXT_TEMPLATES).float()
        return self._text
