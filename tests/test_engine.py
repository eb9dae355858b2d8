"""Engine behaviour: strict config, registries, LR schedule, few-shot sampling, base/new split, image reading."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import ConfigError, get_cfg_default, merge_from_file, merge_from_list
from engine.data import (
    Datum,
    ImageReadError,
    build_dataset,
    read_image,
    sample_few_shot,
    subsample_classes,
)
from engine.optim import build_lr_scheduler, build_optimizer, lr_schedule
from engine.registry import DATASET_REGISTRY, TRAINER_REGISTRY, Registry, RegistryError


# ---------------------------------------------------------------------------------------------------- config
def test_defaults_contain_dassl_keys_and_trainer_nodes() -> None:
    cfg = get_cfg_default()
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and cfg.DATALOADER.TEST.BATCH_SIZE == 100
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.TEST.FINAL_MODEL == "last_step"
    for name in TRAINER_REGISTRY.registered_names():
        node = getattr(TRAINER_REGISTRY.get(name), "cfg_node", None)
        assert node is None or node in cfg.TRAINER, f"{name} has no TRAINER.{node} node"
    assert {"N_CTX", "CSC", "CTX_INIT", "CLASS_TOKEN_POSITION", "PREC"} <= set(cfg.TRAINER.COOP)


def test_unknown_key_on_command_line_suggests_nearest() -> None:
    cfg = get_cfg_default()
    with pytest.raises(ConfigError, match=r"Unknown config key 'OPTIM.MAX_EPOCHS'.*Did you mean 'OPTIM.MAX_EPOCH'"):
        merge_from_list(cfg, ["OPTIM.MAX_EPOCHS", "3"])
    with pytest.raises(ConfigError, match=r"Did you mean 'OPTIM.LR'"):
        merge_from_list(cfg, ["SOLVER.LR", "0.1"])


def test_unknown_key_in_yaml_names_file_and_nearest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("DATALOADER:\n  TRAIN_X:\n    BATCH_SIZ: 4\n")
    with pytest.raises(ConfigError, match=r"DATALOADER.TRAIN_X.BATCH_SIZ.*bad.yaml.*DATALOADER.TRAIN_X.BATCH_SIZE"):
        merge_from_file(get_cfg_default(), bad)


def test_type_mismatch_and_odd_overrides_are_errors() -> None:
    cfg = get_cfg_default()
    with pytest.raises(ConfigError):
        merge_from_list(cfg, ["OPTIM.MAX_EPOCH", "'many'"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        merge_from_list(cfg, ["OPTIM.LR"])


def test_released_style_yaml_loads(tmp_path: Path) -> None:
    """The layout of a released BiomedCoOp / CoOp YAML (tuple strings, '1e-5', MODEL.BACKBONE.NAME) merges."""
    y = tmp_path / "released.yaml"
    y.write_text(
        "DATALOADER:\n  TRAIN_X:\n    BATCH_SIZE: 32\n  TEST:\n    BATCH_SIZE: 100\n  NUM_WORKERS: 8\n"
        "INPUT:\n  SIZE: (224, 224)\n  INTERPOLATION: \"bicubic\"\n"
        "  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]\n  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]\n"
        "  TRANSFORMS: [\"random_resized_crop\", \"normalize\"]\n"
        "OPTIM:\n  NAME: \"sgd\"\n  LR: 0.002\n  MAX_EPOCH: 50\n  LR_SCHEDULER: \"cosine\"\n  WARMUP_EPOCH: 1\n"
        "  WARMUP_TYPE: \"constant\"\n  WARMUP_CONS_LR: 1e-5\n"
        "TRAIN:\n  PRINT_FREQ: 5\nMODEL:\n  BACKBONE:\n    NAME: \"ViT-B/16\"\n"
        "TRAINER:\n  COOP:\n    N_CTX: 4\n    CTX_INIT: \"a photo of a\"\n    PREC: \"fp32\"\n"
    )
    cfg = get_cfg_default()
    merge_from_file(cfg, y)
    assert cfg.INPUT.SIZE == (224, 224) and cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and cfg.TRAINER.COOP.N_CTX == 4


def test_shipped_yaml_configs_load() -> None:
    # an ablation sweep file is KEY + VALUES, not a config (tests/test_ablation.py checks those)
    configs = sorted(p for p in Path("configs").rglob("*.yaml") if "sweeps" not in p.parts)
    assert configs
    for path in configs:
        merge_from_file(get_cfg_default(), path)


# ---------------------------------------------------------------------------------------------------- registry
def test_registry_errors() -> None:
    reg = Registry("TRAINER")

    @reg.register()
    class CoOp:  # noqa: D401
        pass

    with pytest.raises(RegistryError, match="already registered"):
        reg.register(type("CoOp", (), {}))
    with pytest.raises(RegistryError, match=r"Did you mean 'CoOp'\?.*Registered trainers: CoOp"):
        reg.get("coop")
    assert reg.registered_names() == ["CoOp"]
    with pytest.raises(RegistryError, match="Did you mean 'ZeroshotCLIP'"):
        TRAINER_REGISTRY.get("ZeroShotCLIP")
    import datasets  # noqa: F401
    from engine.config import get_cfg_default
    from engine.data import DatasetError

    cfg = get_cfg_default()  # an unknown dataset without a split file: both ways to add it, and a suggestion
    with pytest.raises(DatasetError, match=r"Unknown dataset 'Synthmed'.*make_split\.py.*Did you mean 'SynthMed'"):
        DATASET_REGISTRY.get("Synthmed")(cfg)


# ---------------------------------------------------------------------------------------------------- LR
@pytest.mark.parametrize("base_lr,max_epoch", [(0.002, 100), (0.0025, 50), (0.002, 2)])
def test_lr_schedule_matches_spec(base_lr: float, max_epoch: int) -> None:
    cfg = get_cfg_default()
    merge_from_list(cfg, ["OPTIM.LR", str(base_lr), "OPTIM.MAX_EPOCH", str(max_epoch), "OPTIM.LR_SCHEDULER",
                          "cosine", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant"])
    param = torch.nn.Parameter(torch.zeros(3))
    optim = build_optimizer([param], cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    lrs = []
    for _ in range(max_epoch):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    # SPEC §4.3: epoch 1 = WARMUP_CONS_LR, epoch 2 = full LR, epoch e ≥ 2 = LR·½(1+cos(π(e−2)/E))
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[1] == pytest.approx(base_lr)
    assert lrs[-1] == pytest.approx(base_lr * 0.5 * (1 + math.cos(math.pi * (max_epoch - 2) / max_epoch)))
    if max_epoch == 100:
        assert lrs[-1] / base_lr == pytest.approx(9.87e-4, rel=1e-3)
    if (base_lr, max_epoch) == (0.0025, 50):
        assert lrs[-1] == pytest.approx(9.86e-6, rel=1e-3)
    f = lr_schedule(cfg.OPTIM)
    assert [f(i) for i in range(max_epoch)] == pytest.approx(lrs)


def test_torch_cosine_recursion_agrees_with_closed_form() -> None:
    """Dassl's recursive CosineAnnealingLR behind a 1-epoch constant warm-up gives the same LRs."""
    cfg = get_cfg_default()
    merge_from_list(cfg, ["OPTIM.LR", "0.002", "OPTIM.MAX_EPOCH", "10", "OPTIM.LR_SCHEDULER", "cosine",
                          "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.002)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    ref = [1e-5]
    opt.param_groups[0]["lr"] = 0.002  # warm-up over: Dassl restores the base lr, then the cosine counts from 0
    for _ in range(9):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        cos.step()
    f = lr_schedule(cfg.OPTIM)
    assert [f(i) for i in range(10)] == pytest.approx(ref)


# ---------------------------------------------------------------------------------------------------- data
def _items(n_per_class: int = 20, n_classes: int = 5) -> list[Datum]:
    return [Datum(f"/x/c{c}/{i}.png", c, f"class {c}") for i in range(n_per_class) for c in range(n_classes)]


def test_few_shot_is_deterministic_and_independent_of_global_rng() -> None:
    items = _items()
    random.seed(0)
    torch.manual_seed(0)
    np.random.seed(0)
    a = sample_few_shot(items, 4, split="train", seed=1)
    state = (random.getstate(), torch.get_rng_state(), np.random.get_state()[1].copy())
    random.seed(123)
    torch.manual_seed(123)
    b = sample_few_shot(items, 4, split="train", seed=1)
    assert a == b
    assert len(a) == 20 and all(sum(d.label == c for d in a) == 4 for c in range(5))
    assert sample_few_shot(items, 4, split="train", seed=2) != a
    assert sample_few_shot(items, 4, split="val", seed=1) != a
    # the draw does not consume the global RNGs
    random.seed(0)
    torch.manual_seed(0)
    np.random.seed(0)
    sample_few_shot(items, 4, split="train", seed=1)
    assert random.getstate() == state[0] and torch.equal(torch.get_rng_state(), state[1])
    assert np.array_equal(np.random.get_state()[1], state[2])


def test_base_new_split_relabels_halves() -> None:
    items = _items(2, 5)  # labels 0..4 → base {0,1,2}, new {3,4}
    (base,) = subsample_classes(items, subsample="base")
    (new,) = subsample_classes(items, subsample="new")
    assert sorted({d.label for d in base}) == [0, 1, 2]
    assert {d.classname for d in base} == {"class 0", "class 1", "class 2"}
    assert sorted({d.label for d in new}) == [0, 1]
    assert {(d.label, d.classname) for d in new} == {(0, "class 3"), (1, "class 4")}
    (same,) = subsample_classes(items, subsample="all")
    assert same == items
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        subsample_classes(items, subsample="novel")


def _synth_cfg(root: Path, shots: int = -1, seed: int = 1, subsample: str = "all"):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "DATASET.NUM_SHOTS", str(shots), "SEED", str(seed),
                          "DATASET.SUBSAMPLE_CLASSES", subsample])
    return cfg


def test_build_dataset_synthmed_few_shot_and_base_new(synth_root: Path) -> None:
    full = build_dataset(_synth_cfg(synth_root))
    assert full.num_classes == 6 and len(full.train_x) == 6 * 40 and len(full.val) == 60 and len(full.test) == 120
    assert all(" " in c for c in full.classnames)
    assert all(Path(d.impath).is_file() for d in full.test)
    fs = build_dataset(_synth_cfg(synth_root, shots=8, seed=3))
    assert len(fs.train_x) == 6 * 8 and len(fs.val) == 6 * 4 and len(fs.test) == 120
    assert fs.train_x == build_dataset(_synth_cfg(synth_root, shots=8, seed=3)).train_x
    base = build_dataset(_synth_cfg(synth_root, shots=4, seed=1, subsample="base"))
    new = build_dataset(_synth_cfg(synth_root, shots=4, seed=1, subsample="new"))
    assert base.classnames == full.classnames[:3] and new.classnames == full.classnames[3:]
    assert len(base.test) == 60 and {d.label for d in new.test} == {0, 1, 2}


def test_missing_root_names_expected_path_and_command(tmp_path: Path) -> None:
    from engine.data import DatasetError

    with pytest.raises(DatasetError, match=r"split_SynthMed.json.*make_synthetic_data.py --root"):
        build_dataset(_synth_cfg(tmp_path / "nowhere"))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "I", "F", "1", "CMYK", "LA"])
def test_read_image_converts_every_mode_to_rgb(tmp_path: Path, mode: str) -> None:
    arr = (np.arange(32 * 24).reshape(24, 32) % 255).astype(np.uint8)
    img = Image.fromarray(arr, "L").convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 257)
    elif mode in ("I", "F"):
        img = Image.fromarray(arr.astype(np.int32 if mode == "I" else np.float32))
    ext = ".tif" if mode in ("I", "F", "CMYK") else ".png"
    path = tmp_path / f"img {mode.replace(';', '_')} (1){ext}"
    img.save(path)
    out = read_image(str(path))
    assert out.mode == "RGB" and out.size == (32, 24)
    if mode in ("L", "RGB", "I;16"):
        assert np.array_equal(np.asarray(out)[..., 0], arr)  # 16-bit maps back exactly by value/257


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken scan (2).png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"broken scan \(2\)\.png"):
        read_image(str(bad))


def test_track_logs_progress_with_eta_and_a_summary(caplog: pytest.LogCaptureFixture,
                                                    capsys: pytest.CaptureFixture) -> None:
    import logging

    from engine.utils import track

    batches = [[0] * 4, [0] * 4, [0] * 2]
    with caplog.at_level(logging.INFO):
        seen = list(track(batches, total=10, desc="encode test", bar=True, size=len, log_every_s=0.0))
    assert seen == batches
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encode test")]
    assert lines[0].startswith("encode test: 4/10 images (40%)") and ", eta " in lines[0]
    assert lines[1].startswith("encode test: 8/10 images (80%)")
    assert lines[-1].startswith("encode test: 10 images in ") and len(lines) == 3
    assert "encode test" in capsys.readouterr().err  # the console bar
