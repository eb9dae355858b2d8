"""What a checkpoint was trained with, and the check that refuses to load it into something else.

Every checkpoint holds a ``"provenance"`` record (:func:`make_provenance`): the trainer, the backbone's name and
weights fingerprint, the dataset, its class subset and class names, the trainer's own config node
(``TRAINER.<NODE>``, without ``PREC``) and a hash of the whole config (without the keys that change nothing learned,
e.g. ``OUTPUT_DIR``). :func:`provenance_mismatches` lists what differs from the current run:

* ``resume``: everything must be the same (continuing other checkpoints would mix two runs);
* evaluation (``--eval-only``): the trainer, the backbone (name and weights), the keys of the trainer's config node
  that shape the evaluated model (its ``model_keys``: e.g. the context length and initialisation, not the loss
  weights or the teacher bank's path) and — for
  the same dataset and class subset — the class names. Evaluating a base-class checkpoint on the new classes
  (another ``DATASET.SUBSAMPLE_CLASSES``) is the base-to-novel protocol, not a mismatch. Anything else (another
  backbone, another dataset) needs the explicit override ``--allow-mismatch``, except another trainer, which is
  always refused: its numbers would be labelled with the wrong method.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from yacs.config import CfgNode

from engine.config import flat_items

#: provenance fields that no override can waive
ALWAYS_REFUSED = ("trainer",)


def config_hash(cfg: CfgNode, neutral: Iterable[str]) -> str:
    """SHA-256 (16 hex digits) of the flattened config without the ``neutral`` keys."""
    skip = set(neutral)
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in flat_items(cfg).items() if k not in skip}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trainer_node(cfg: CfgNode, node: str | None) -> dict[str, Any]:
    """``{"TRAINER.<node>.<KEY>": value}`` (without ``PREC``, which changes no learned value), JSON-friendly."""
    if not node or node not in cfg.TRAINER:
        return {}
    return {f"TRAINER.{node}.{k}": list(v) if isinstance(v, tuple) else v
            for k, v in flat_items(cfg.TRAINER[node]).items() if k != "PREC"}


def make_provenance(cfg: CfgNode, *, node: str | None, weights: str, classnames: list[str],
                    neutral: Iterable[str]) -> dict[str, Any]:
    """The record a checkpoint carries (see the module docstring)."""
    return {
        "trainer": cfg.TRAINER.NAME,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "weights": weights,
        "dataset": cfg.DATASET.NAME,
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "classnames": list(classnames),
        "trainer_cfg": trainer_node(cfg, node),
        "config_hash": config_hash(cfg, neutral),
    }


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:3]))}, … ({len(value)} in all)]"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def provenance_mismatches(saved: dict[str, Any], current: dict[str, Any], *, resume: bool,
                          node_keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{field: {"checkpoint": saved value, "run": current value}}`` for every field that must agree and does not.
    ``node_keys``: for an evaluation, the keys of the trainer's node that shape the evaluated model (the trainer's
    ``model_keys``; training-only keys such as loss weights or the teacher bank's path are not compared); None: all."""
    fields = ["trainer", "backbone", "weights"]
    if resume:
        fields += ["dataset", "subsample", "classnames", "config_hash"]
    else:
        fields += ["dataset"]
        if saved.get("dataset") == current.get("dataset") and saved.get("subsample") == current.get("subsample"):
            fields.append("classnames")
    out = {f: {"checkpoint": saved.get(f), "run": current.get(f)} for f in fields if saved.get(f) != current.get(f)}
    old_node, new_node = saved.get("trainer_cfg") or {}, current.get("trainer_cfg") or {}
    keys = set(old_node) | set(new_node)
    if node_keys is not None and not resume:
        keys = {k for k in keys if k.rsplit(".", 1)[-1] in set(node_keys)}
    for key in sorted(keys):
        if old_node.get(key) != new_node.get(key) and "trainer" not in out:
            out[key] = {"checkpoint": old_node.get(key), "run": new_node.get(key)}
    return out


def describe_mismatches(mismatches: dict[str, dict[str, Any]]) -> str:
    """One line: ``backbone: checkpoint 'tiny-clip', this run 'tiny-biomedclip'; …``."""
    return "; ".join(f"{f}: checkpoint {_short(v['checkpoint'])}, this run {_short(v['run'])}"
                     for f, v in mismatches.items())
