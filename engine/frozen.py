"""Frozen features: what the frozen image tower gives a run, paid once.

A trainer whose image tower stays frozen and unprompted (``frozen_image_tower``: all but MaPLe) gets:

* evaluation on the split's image features, encoded once per run (:meth:`FrozenFeatures.split_features`) and kept
  in the disk cache (:mod:`engine.cache`) under a key covering the backbone's weights, the test-time preprocessing,
  the exact image files, the device type and the frozen precision, so a second run on the same data only reads
  them;
* with ``batched_train_features`` (the prompt learners) each epoch's augmented views — the very views the per-step
  loop would draw — encoded in no-grad batches of ``TRAIN.ENCODE_BATCH_SIZE`` images before the optimisation
  steps (:meth:`FrozenFeatures.train_batches`), which then run on the stored features (``batch["frozen"]``).

The frozen towers' no-grad passes run under ``MODEL.BACKBONE.FROZEN_PREC`` autocast (:meth:`frozen_autocast`).
:class:`FrozenFeatures` is a mixin of :class:`engine.trainer.TrainerBase`, which sets the attributes it declares.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F
from yacs.config import CfgNode

from engine.cache import FeatureCache
from engine.data import DataManager, Datum
from engine.utils import package_versions, track

logger = logging.getLogger(__name__)

FROZEN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: TRAIN.ENCODE_BATCH_SIZE -1 (auto), by "is the device CUDA": images per no-grad pass of the image tower, and
#: sentences per pass of the text tower (a sentence has ~20-40 tokens, an image 197: the CPU's text passes are
#: fastest at 32-64 sentences, its image passes equally fast at 4-32 images, where larger passes only cost memory)
AUTO_ENCODE_BATCH = {True: 256, False: 4}
AUTO_TEXT_ENCODE_BATCH = {True: 256, False: 32}
#: environment variable: wait for the device at the boundaries of the timed phases (``scripts/benchmark.py`` sets
#: it), so ``metrics.json``'s ``timings_s`` are exact on CUDA; off by default, since it costs a little speed
SYNC_TIMINGS_ENV = "OGKD_SYNC_TIMINGS"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 ("bf16") or fp16 ("amp", "fp16") on ``device``; a no-op for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def items_digest(items: Sequence[Datum]) -> str:
    """SHA-256 over the image files of ``items`` (path, size, modification time), in order."""
    h = hashlib.sha256()
    for d in items:
        st = os.stat(d.impath)
        h.update(f"{d.impath}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class FrozenFeatures:
    """Encoding passes of the frozen image tower, their cache calls, pass sizes and precision (mixin)."""

    # set by TrainerBase (class attributes and __init__)
    frozen_image_tower: bool
    batched_train_features: bool
    cfg: CfgNode
    device: torch.device
    backbone: Any
    dm: DataManager
    cache: FeatureCache
    frozen_precision: str
    timings: dict[str, float]
    counts: dict[str, int]
    _split_feats: dict[str, tuple[torch.Tensor, torch.Tensor]]

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
        return autocast_context(self.device, self.frozen_precision)

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
