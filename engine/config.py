"""Configuration: Dassl's keys and defaults, plus ours, with strict merging.

``get_cfg_default()`` returns the whole default tree, including the ``TRAINER.<NAME>`` node of every
registered trainer (each trainer module contributes its node through :func:`register_trainer_cfg`).
Merging is strict: an unknown key raises :class:`ConfigError` naming the nearest existing key, so a typo in
a YAML file or on the command line never silently does nothing.

Merge order (``setup_cfg``): defaults → dataset YAML → trainer YAML → CLI flags → trailing ``KEY VALUE`` pairs.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config key or value that cannot be merged (unknown key, wrong type, malformed list)."""


class ConfigRangeError(ConfigError):
    """A config value outside its allowed range (a usage error: train.py exits 2)."""


# --------------------------------------------------------------------------------------------------------------
# Defaults (Dassl's keys and values, SPEC §4.1, plus our additions marked "ours")
# --------------------------------------------------------------------------------------------------------------
def _base_defaults() -> CN:
    _C = CN()
    _C.VERSION = 1
    _C.OUTPUT_DIR = "./output"
    _C.RESUME = ""
    _C.SEED = -1  # a negative seed means "draw a random seed" (it is logged and saved); 0 is a valid fixed seed
    _C.USE_CUDA = True
    _C.VERBOSE = True
    _C.DETERMINISTIC = False  # ours: torch deterministic algorithms + cuDNN deterministic

    _C.INPUT = CN()
    _C.INPUT.SIZE = ()  # ours: empty → the backbone's own image size; Dassl default (224, 224)
    _C.INPUT.INTERPOLATION = ""  # ours: empty → the backbone's own interpolation (bicubic for CLIP/BiomedCLIP)
    _C.INPUT.TRANSFORMS = ()
    _C.INPUT.NO_TRANSFORM = False
    _C.INPUT.PIXEL_MEAN = ()  # ours: empty → the backbone's own normalisation
    _C.INPUT.PIXEL_STD = ()
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)
    _C.INPUT.CROP_PADDING = 4  # accepted for Dassl YAML compatibility; unused by our transforms
    _C.INPUT.CUTOUT_N = 1  # accepted for Dassl YAML compatibility; unused
    _C.INPUT.CUTOUT_LEN = 16  # accepted for Dassl YAML compatibility; unused

    _C.DATASET = CN()
    _C.DATASET.ROOT = ""
    _C.DATASET.NAME = ""
    _C.DATASET.SOURCE_DOMAINS = ()
    _C.DATASET.TARGET_DOMAINS = ()
    _C.DATASET.NUM_LABELED = -1
    _C.DATASET.NUM_SHOTS = -1
    _C.DATASET.VAL_PERCENT = 0.1
    _C.DATASET.SUBSAMPLE_CLASSES = "all"  # all / base / new (SPEC §3.2)

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = 8
    _C.DATALOADER.K_TRANSFORMS = 1
    _C.DATALOADER.RETURN_IMG0 = False
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_X.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_X.N_INS = 16
    _C.DATALOADER.TRAIN_U = CN()
    _C.DATALOADER.TRAIN_U.SAME_AS_X = True
    _C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_U.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_U.N_INS = 16
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    _C.DATALOADER.TEST.BATCH_SIZE = 100

    _C.MODEL = CN()
    _C.MODEL.INIT_WEIGHTS = ""
    _C.MODEL.BACKBONE = CN()
    _C.MODEL.BACKBONE.NAME = "BiomedCLIP"  # ours: selects the backbone (Dassl only printed it)
    _C.MODEL.BACKBONE.PRETRAINED = True  # accepted for Dassl YAML compatibility; named backbones load their weights
    # ours: precision of the frozen towers' no-grad passes (image features, teacher bank): "auto" = bf16 on CUDA,
    # fp32 on the CPU; or fp32 / bf16 / fp16. The learned parts follow TRAINER.<NAME>.PREC.
    _C.MODEL.BACKBONE.FROZEN_PREC = "auto"
    _C.MODEL.HEAD = CN()
    _C.MODEL.HEAD.NAME = ""
    _C.MODEL.HEAD.HIDDEN_LAYERS = ()
    _C.MODEL.HEAD.ACTIVATION = "relu"
    _C.MODEL.HEAD.BN = True
    _C.MODEL.HEAD.DROPOUT = 0.0

    _C.OPTIM = CN()
    _C.OPTIM.NAME = "sgd"
    _C.OPTIM.LR = 0.0003
    _C.OPTIM.WEIGHT_DECAY = 5e-4
    _C.OPTIM.MOMENTUM = 0.9
    _C.OPTIM.SGD_DAMPNING = 0.0
    _C.OPTIM.SGD_NESTEROV = False
    _C.OPTIM.RMSPROP_ALPHA = 0.99
    _C.OPTIM.ADAM_BETA1 = 0.9
    _C.OPTIM.ADAM_BETA2 = 0.999
    _C.OPTIM.STAGED_LR = False
    _C.OPTIM.NEW_LAYERS = ()
    _C.OPTIM.BASE_LR_MULT = 0.1
    _C.OPTIM.LR_SCHEDULER = "single_step"
    _C.OPTIM.STEPSIZE = (-1,)
    _C.OPTIM.GAMMA = 0.1
    _C.OPTIM.MAX_EPOCH = 10
    _C.OPTIM.WARMUP_EPOCH = -1
    _C.OPTIM.WARMUP_TYPE = "linear"
    _C.OPTIM.WARMUP_CONS_LR = 1e-5
    _C.OPTIM.WARMUP_MIN_LR = 1e-5
    _C.OPTIM.WARMUP_RECOUNT = True

    _C.TRAIN = CN()
    _C.TRAIN.CHECKPOINT_FREQ = 0
    _C.TRAIN.PRINT_FREQ = 10
    _C.TRAIN.COUNT_ITER = "train_x"
    # ours: trainers with a frozen, unprompted image tower encode each epoch's augmented views in no-grad batches of
    # this many images before the optimisation steps (same views, same results up to float rounding); 0 = encode
    # inside every step; -1 = auto: 256 on CUDA, 4 on the CPU (where a larger batch only costs memory: a ViT-B/16
    # image costs the same at 4 or 32 per pass). The same size bounds every no-grad pass of a frozen tower: test /
    # validation features (slices of a test batch) and the teacher bank's sentences (auto there: 256 on CUDA, 32 on
    # the CPU; 0: whole test batches, the bank's default of 256 sentences)
    _C.TRAIN.ENCODE_BATCH_SIZE = -1

    _C.CACHE = CN()  # ours: disk cache of frozen-tower outputs (evaluation image features, teacher prompt banks)
    _C.CACHE.ENABLED = True  # False (train.py --no-cache): compute everything, read and write nothing
    _C.CACHE.DIR = ""  # "" → $OGKD_CACHE_DIR, else $XDG_CACHE_HOME/ogkd-toolkit (~/.cache/ogkd-toolkit)

    _C.TEST = CN()
    _C.TEST.EVALUATOR = "Classification"  # the only evaluator
    _C.TEST.PER_CLASS_RESULT = False
    _C.TEST.COMPUTE_CMAT = False  # also write confusion_matrix.json next to metrics.json
    _C.TEST.NO_TEST = False
    _C.TEST.SPLIT = "test"
    _C.TEST.FINAL_MODEL = "last_step"  # last_step / best_val

    _C.ABLATION = CN()  # ours: the ablation point a run belongs to (engine/ablation.py; metrics.json "ablation")
    _C.ABLATION.NAME = ""  # "" = not an ablation run; else a variant ("coop", "+sccm", …, "full") or "<sweep>=<value>"

    _C.TRAINER = CN()
    _C.TRAINER.NAME = ""
    return _C


# Dassl keys we accept (so Dassl/CoOp YAML files load) but do not implement. Setting one to a non-default
# value is logged as a warning rather than silently ignored.
UNUSED_KEYS = (
    "INPUT.CROP_PADDING",
    "INPUT.CUTOUT_N",
    "INPUT.CUTOUT_LEN",
    "DATASET.SOURCE_DOMAINS",
    "DATASET.TARGET_DOMAINS",
    "DATASET.NUM_LABELED",
    "DATASET.VAL_PERCENT",
    "DATALOADER.K_TRANSFORMS",
    "DATALOADER.RETURN_IMG0",
    "DATALOADER.TRAIN_X.N_DOMAIN",
    "DATALOADER.TRAIN_X.N_INS",
    "DATALOADER.TRAIN_U.SAME_AS_X",
    "DATALOADER.TRAIN_U.SAMPLER",
    "DATALOADER.TRAIN_U.BATCH_SIZE",
    "DATALOADER.TRAIN_U.N_DOMAIN",
    "DATALOADER.TRAIN_U.N_INS",
    "DATALOADER.TRAIN_X.SAMPLER",
    "DATALOADER.TEST.SAMPLER",
    "MODEL.BACKBONE.PRETRAINED",
    "MODEL.INIT_WEIGHTS",
    "MODEL.HEAD.NAME",
    "MODEL.HEAD.HIDDEN_LAYERS",
    "MODEL.HEAD.ACTIVATION",
    "MODEL.HEAD.BN",
    "MODEL.HEAD.DROPOUT",
    "OPTIM.STAGED_LR",
    "OPTIM.NEW_LAYERS",
    "OPTIM.BASE_LR_MULT",
    "TRAIN.COUNT_ITER",
    "TEST.EVALUATOR",
)

# Keys that once existed and now live elsewhere: a config that still sets one gets an error that names the new key.
MOVED_KEYS = {
    "TRAINER.CLIP_ADAPTER.EPOCHS": "OPTIM.MAX_EPOCH",
    "TRAINER.CLIP_ADAPTER.LR": "OPTIM.LR",
    "TRAINER.CLIP_ADAPTER.WARMUP_EPOCH": "OPTIM.WARMUP_EPOCH",
    "TRAINER.CLIP_ADAPTER.WARMUP_CONS_LR": "OPTIM.WARMUP_CONS_LR",
    "TRAINER.TIPADAPTER.EPOCHS": "OPTIM.MAX_EPOCH",
    "TRAINER.TIPADAPTER.LR": "OPTIM.LR",
    "TRAINER.TIPADAPTER.WEIGHT_DECAY": "OPTIM.WEIGHT_DECAY",
    "TRAINER.LPPLUSPLUS.EPOCHS": "OPTIM.MAX_EPOCH",
}

# Each trainer module registers a function that adds its TRAINER.<NAME> node (called by get_cfg_default()).
_TRAINER_CFG_HOOKS: dict[str, Callable[[CN], None]] = {}


def register_trainer_cfg(node_name: str) -> Callable[[Callable[[CN], None]], Callable[[CN], None]]:
    """Decorator: ``fn(cfg)`` adds ``cfg.TRAINER.<node_name>`` to the default tree."""

    def deco(fn: Callable[[CN], None]) -> Callable[[CN], None]:
        if node_name in _TRAINER_CFG_HOOKS and _TRAINER_CFG_HOOKS[node_name] is not fn:
            raise ConfigError(f"TRAINER.{node_name} config node is registered twice")
        _TRAINER_CFG_HOOKS[node_name] = fn
        return fn

    return deco


def get_cfg_default() -> CN:
    """Return a fresh copy of the full default config, with the ``TRAINER.<NAME>`` node of every trainer registered
    so far (entry points import ``trainers`` first, which registers them all)."""
    cfg = _base_defaults()
    for _, hook in sorted(_TRAINER_CFG_HOOKS.items()):
        hook(cfg)
    return cfg


# --------------------------------------------------------------------------------------------------------------
# Strict merging
# --------------------------------------------------------------------------------------------------------------
def _unknown_key_error(key: str, cfg: CN, source: str) -> ConfigError:
    if key in MOVED_KEYS:
        return ConfigError(f"Config key {key!r} in {source} is now {MOVED_KEYS[key]!r} (every trainer reads its epochs "
                           f"and learning rate from OPTIM): set {MOVED_KEYS[key]} instead")
    known = list(flat_items(cfg))
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.0)
    # prefer a key whose last component matches exactly (e.g. OPTIM.LR written as SOLVER.LR)
    tail = key.rsplit(".", 1)[-1]
    same_tail = [k for k in known if k.rsplit(".", 1)[-1] == tail]
    nearest = difflib.get_close_matches(key, same_tail, n=1, cutoff=0.0) if same_tail else close
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    return ConfigError(f"Unknown config key {key!r} in {source}.{hint}")


def _check_keys(incoming: dict[str, Any], node: CN, root: CN, source: str, prefix: str = "") -> None:
    for k, v in incoming.items():
        full = f"{prefix}{k}"
        if k not in node:
            raise _unknown_key_error(full, root, source)
        if isinstance(node[k], CN):
            if not isinstance(v, dict):
                raise ConfigError(f"Config key {full!r} in {source} is a group; give it sub-keys, not {v!r}")
            _check_keys(v, node[k], root, source, full + ".")
        elif isinstance(v, dict):
            raise ConfigError(f"Config key {full!r} in {source} is a value, not a group")


def _merge(cfg: CN, incoming: CN, source: str) -> None:
    _check_keys(incoming, cfg, cfg, source)
    try:
        cfg.merge_from_other_cfg(incoming)
    except (KeyError, ValueError, TypeError) as e:  # yacs type-coercion errors
        raise ConfigError(f"Cannot merge {source}: {e}") from None


def merge_from_file(cfg: CN, path: str | Path) -> None:
    """Merge a YAML file into ``cfg`` strictly (unknown key → :class:`ConfigError` with a suggestion)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Cannot parse YAML file {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys, not {type(raw).__name__}")
    # yacs decodes string literals such as "(224, 224)" or "1e-5" while merging
    _merge(cfg, CN(raw), f"config file {path}")


def merge_from_list(cfg: CN, opts: Sequence[str]) -> None:
    """Merge ``KEY VALUE`` pairs (command line) strictly."""
    opts = list(opts)
    flags = [o for o in opts if str(o).startswith("--")]
    if flags:
        raise ConfigError(f"{flags[0]} comes after the KEY VALUE config pairs: put every --flag before them "
                          f"(python train.py --flags … KEY VALUE …)")
    if len(opts) % 2:
        raise ConfigError(f"Config overrides must be KEY VALUE pairs; got an odd number of items: {opts}")
    for key in opts[0::2]:
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, CN) or part not in node:
                raise _unknown_key_error(key, cfg, "the command line")
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], CN):
            raise ConfigError(f"Config key {key!r} on the command line is a group, not a value")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"Cannot apply command-line overrides: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# Value ranges (checked once, after every config source is merged)
# --------------------------------------------------------------------------------------------------------------
#: count-like keys: (pattern over the dotted key, smallest allowed value, what the smallest documented values mean).
#: A key not listed accepts any value of its type (e.g. DATASET.NUM_SHOTS: ≤ 0 is Dassl's "the whole training split";
#: OPTIM.WARMUP_EPOCH -1: no warm-up). ``TRAINER.*`` covers every trainer's node.
RANGES: tuple[tuple[str, int, str], ...] = (
    ("OPTIM.MAX_EPOCH", 0, "0 only for a trainer that learns nothing"),
    ("OPTIM.WARMUP_EPOCH", -1, "-1: no warm-up"),
    ("DATALOADER.TRAIN_X.BATCH_SIZE", 1, ""),
    ("DATALOADER.TEST.BATCH_SIZE", 1, ""),
    ("DATALOADER.NUM_WORKERS", 0, "0: load in the main process"),
    ("TRAIN.PRINT_FREQ", 1, ""),
    ("TRAIN.CHECKPOINT_FREQ", 0, "0: keep only the last epoch's checkpoint"),
    ("TRAIN.ENCODE_BATCH_SIZE", -1, "-1: auto, 0: inside every step"),
    ("TRAINER.*.N_CTX", 1, ""),
    ("TRAINER.*.N_PROMPTS", 1, ""),
    ("TRAINER.*.BATCH_SIZE", 1, ""),
    ("TRAINER.*.AUGMENT_EPOCHS", 1, ""),
    ("TRAINER.*.PROMPTS_PER_PASS", 1, ""),
    ("TRAINER.*.PROMPT_DEPTH", 1, ""),
    ("TRAINER.*.REDUCTION", 1, ""),
    ("TRAINER.*.MAX_ITER", 1, ""),
    ("TRAINER.*.BISECTION_STEPS", 0, ""),
    ("TRAINER.*.ALPHA_UPDATE_EVERY", 1, ""),
    ("TRAINER.*.INIT_ALPHA_SCALE", 1, ""),
)


def check_ranges(cfg: CN) -> None:
    """Refuse a count-like key below its smallest allowed value (:data:`RANGES`): :class:`ConfigRangeError` naming
    the key, the value and the allowed range; and a learning rate that is not a finite positive number for a run
    that trains."""
    import fnmatch
    import math

    for key, value in flat_items(cfg).items():
        for pattern, low, meaning in RANGES:
            if fnmatch.fnmatchcase(key, pattern) and isinstance(value, int) and not isinstance(value, bool):
                if value < low:
                    note = f"; {meaning}" if meaning else ""
                    raise ConfigRangeError(f"{key} {value} is out of range (allowed: ≥ {low}{note})")
                break
    lr = cfg.OPTIM.LR
    if cfg.OPTIM.MAX_EPOCH > 0 and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigRangeError(f"OPTIM.LR {lr} is out of range (allowed: a finite number > 0 for a run that trains)")


def changed_unused_keys(cfg: CN) -> list[str]:
    """Keys from :data:`UNUSED_KEYS` whose value differs from the default (they have no effect here)."""
    default = _base_defaults()
    out = []
    for key in UNUSED_KEYS:
        a, b = cfg, default
        for part in key.split("."):
            a, b = a[part], b[part]
        if a != b:
            out.append(key)
    return out


def cfg_to_yaml(cfg: CN) -> str:
    """The resolved config as YAML text."""
    return cfg.dump()


def flat_items(cfg: CN) -> dict[str, Any]:
    """All leaves of ``cfg`` as ``{dotted key: value}``."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, CN):
            out.update({f"{k}.{kk}": vv for kk, vv in flat_items(v).items()})
        else:
            out[k] = v
    return out
