"""Frozen towers paid once: the feature cache, batched training features, no host sync in a step.

Each fast path must give the numbers of the plain path: cached vs recomputed evaluation features (exactly),
per-epoch batched encoding vs encoding inside every step (within float tolerance), with augmentation on, in both
protocols."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from engine.cache import FeatureCache, fingerprint_module
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.trainer import AUTO_ENCODE_BATCH, AUTO_TEXT_ENCODE_BATCH, COST_KEYS
from trainers import build_trainer

TINY = ["MODEL.BACKBONE.NAME", "tiny-biomedclip", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATASET.NUM_SHOTS", "3", "OPTIM.MAX_EPOCH", "2", "VERBOSE", "False"]
BATCHED = ("CoOp", "CoCoOp", "KgCoOp", "ProGrad", "BiomedCoOp", "OGKD")
EXTRA = {  # small settings per trainer; OGKD with its patch loss on, so the patch tokens go through the batched path
    "CoCoOp": ["DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "2"],
    "OGKD": ["TRAINER.OGKD.LAMBDA_LGD", "1.0"],
}


def config_file(name: str, protocol: str = "few_shot") -> str:
    folder = Path("configs/trainers") / name / protocol
    return str(folder / "synthmed.yaml") if (folder / "synthmed.yaml").is_file() else f"{folder}.yaml"


def cli(name: str, root: Path, out: Path, *opts: str, flags: tuple[str, ...] = (),
        protocol: str = "few_shot") -> dict:
    argv = ["--root", str(root), "--seed", "1", "--trainer", name, "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", config_file(name, protocol),
            *flags, *TINY, *EXTRA.get(name, []), *opts]
    assert train.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def results(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in (*COST_KEYS, "git_commit")}


def context(out: Path) -> dict[str, torch.Tensor]:
    folder = next(p for p in out.iterdir() if p.is_dir() and (p / "checkpoint").is_file())
    name = (folder / "checkpoint").read_text().strip()
    return torch.load(folder / name, map_location="cpu", weights_only=True)["state_dict"]


def make_trainer(name: str, root: Path, out: Path, *opts: str):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, config_file(name))
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(out), "SEED", "1", "TRAINER.NAME", name,
                          *TINY, *EXTRA.get(name, []), *opts])
    return build_trainer(cfg)


# ------------------------------------------------------------------------------------------------ batched encoding
@pytest.mark.parametrize("name", BATCHED)
def test_batched_epoch_encoding_equals_the_per_step_path(name: str, synth_root: Path, tmp_path: Path) -> None:
    per_step = cli(name, synth_root, tmp_path / "step", "TRAIN.ENCODE_BATCH_SIZE", "0", flags=("--no-cache",))
    # chunks of 5 images with batches of 4 (2 for CoCoOp): a chunk ends inside the epoch, the epoch in a chunk
    batched = cli(name, synth_root, tmp_path / "batched", "TRAIN.ENCODE_BATCH_SIZE", "5", flags=("--no-cache",))
    a, b = context(tmp_path / "step"), context(tmp_path / "batched")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert batched["accuracy"] == per_step["accuracy"]
    assert batched["macro_f1"] == pytest.approx(per_step["macro_f1"], abs=1e-6)
    assert batched["ece"] == pytest.approx(per_step["ece"], abs=1e-3)


def test_batched_encoding_base_to_novel_with_folding(synth_root: Path, tmp_path: Path) -> None:
    opts = ("DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.OGKD.FOLD_NOVEL", "True")
    per_step = cli("OGKD", synth_root, tmp_path / "step", *opts, "TRAIN.ENCODE_BATCH_SIZE", "0",
                   flags=("--no-cache",), protocol="base_to_novel")
    batched = cli("OGKD", synth_root, tmp_path / "batched", *opts, flags=("--no-cache",), protocol="base_to_novel")
    assert torch.allclose(context(tmp_path / "step")["ctx"], context(tmp_path / "batched")["ctx"], atol=1e-5)
    assert batched["accuracy"] == per_step["accuracy"] and batched["subsample"] == "base"


def test_augmentation_is_seeded_per_item_whatever_the_workers(synth_root: Path, tmp_path: Path) -> None:
    t0 = make_trainer("CoOp", synth_root, tmp_path / "a", "DATALOADER.NUM_WORKERS", "0")
    t2 = make_trainer("CoOp", synth_root, tmp_path / "b", "DATALOADER.NUM_WORKERS", "2")
    views = []
    for t in (t0, t2):
        t.epoch = 3
        t._seed_epoch()
        views.append({int(i): img for b in t.dm.train_loader_x for i, img in zip(b["index"], b["img"], strict=True)})
    assert views[0].keys() == views[1].keys()
    assert all(torch.equal(views[0][i], views[1][i]) for i in views[0])
    # each epoch draws other views, also in the persistent workers (started once per run)
    assert t2.dm.train_loader_x.persistent_workers
    for t in (t0, t2):
        t.epoch = 4
        t._seed_epoch()
    other = [{int(i): img for b in t.dm.train_loader_x for i, img in zip(b["index"], b["img"], strict=True)}
             for t in (t0, t2)]
    assert not all(torch.equal(other[0][i], views[0][i]) for i in other[0])
    assert all(torch.equal(other[0][i], other[1][i]) for i in other[0])


# ------------------------------------------------------------------------------------------------ no host sync
SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-step"])
@pytest.mark.parametrize("name", BATCHED)
def test_a_training_step_never_syncs_with_the_host(name: str, batched: bool, synth_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(name, synth_root, tmp_path, "TRAIN.ENCODE_BATCH_SIZE", "8" if batched else "0")
    trainer.set_model_mode("train")
    trainer.before_train()
    trainer._seed_epoch()
    batches = list(trainer.train_batches(trainer.dm.train_loader_x))
    assert ("frozen" in batches[0]) == batched
    calls: list[str] = []
    for method in SYNC_METHODS:
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _name=method, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counting)
    for batch in batches[:2]:
        trainer.forward_backward(batch)
    monkeypatch.undo()
    assert calls == [], f"{name}: host syncs in a step: {calls}"


def test_a_nan_loss_is_raised_at_the_end_of_the_epoch_before_any_checkpoint(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    argv = ["--root", str(synth_root), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", config_file("CoOp"),
            *TINY, "OPTIM.LR", "1e38", "OPTIM.WARMUP_EPOCH", "0"]
    assert train.main(argv) != 0
    assert "Loss is infinite or NaN" in (out / "log.txt").read_text()
    assert not (out / "metrics.json").exists() and not (out / "prompt_learner").exists()


# ------------------------------------------------------------------------------------------------ the disk cache
@pytest.mark.parametrize("name", ["ZeroshotCLIP", "CoOp", "CoCoOp", "OGKD", "LinearProbe"])
def test_metrics_equal_with_cold_warm_and_no_cache(name: str, synth_root: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cache = ("CACHE.DIR", str(tmp_path / "cache"))
    extra = ("TRAINER.LINEARPROBE.AUGMENT_EPOCHS", "1") if name == "LinearProbe" else ()
    off = cli(name, synth_root, tmp_path / "off", *extra, flags=("--no-cache",))
    assert not (tmp_path / "cache").exists()
    cold = cli(name, synth_root, tmp_path / "cold", *cache, *extra)
    entries = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert entries  # the test features (+ val, + the teacher bank) were stored
    with caplog.at_level(logging.INFO):
        warm = cli(name, synth_root, tmp_path / "warm", *cache, *extra)
    assert "test image features (120 images): read from the feature cache" in caplog.text
    if name == "OGKD":
        assert "teacher prompt bank (6 classes x 50): read from the feature cache" in caplog.text
    assert sorted((tmp_path / "cache").glob("*.safetensors")) == entries  # nothing new written
    assert results(off) == results(cold) == results(warm)


def test_a_second_run_does_not_encode_the_test_images(synth_root: Path, tmp_path: Path) -> None:
    cache = ("CACHE.DIR", str(tmp_path / "cache"))
    first = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "a", *cache)
    res = first.test()
    second = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "b", *cache)
    second.backbone.encode_image = None  # any image encoding would fail
    again = second.test()
    assert again["accuracy"] == res["accuracy"] and second.cache.hits == 1


def test_eval_only_of_a_cached_run_reproduces_it(synth_root: Path, tmp_path: Path) -> None:
    m = cli("OGKD", synth_root, tmp_path / "run")
    out = tmp_path / "eval"
    argv = ["--root", str(synth_root), "--seed", "1", "--trainer", "OGKD", "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", config_file("OGKD"),
            "--eval-only", "--model-dir", str(tmp_path / "run"), *TINY, *EXTRA["OGKD"]]  # the run's settings
    assert train.main(argv) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert (again["accuracy"], again["macro_f1"], again["ece"]) == (m["accuracy"], m["macro_f1"], m["ece"])


def test_the_key_covers_the_images_the_preprocessing_and_the_weights(synth_root: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "a", "CACHE.DIR", str(tmp_path / "cache"))
    t.split_features("test")
    assert t.cache.misses == 1
    items = t.dm.dataset.test
    # another file at the same path (a different modification time) → another key
    os.utime(items[0].impath, ns=(1, 1))
    t2 = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "b", "CACHE.DIR", str(tmp_path / "cache"))
    t2.split_features("test")
    assert (t2.cache.hits, t2.cache.misses) == (0, 1)
    # another test-time preprocessing → another key
    t3 = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "c", "CACHE.DIR", str(tmp_path / "cache"),
                      "INPUT.INTERPOLATION", "bilinear")
    t3.split_features("test")
    assert (t3.cache.hits, t3.cache.misses) == (0, 1)
    # other weights → another fingerprint → another key
    before = fingerprint_module(t.backbone.model)
    with torch.no_grad():
        next(t.backbone.model.parameters()).add_(1e-3)
    assert fingerprint_module(t.backbone.model) != before
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3


def test_the_weights_fingerprint_is_memoised_per_unchanged_weights_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A backbone loaded from a file is hashed once per file identity; the memo gives the same fingerprint, a
    changed file (here: its modification time) is hashed again, and random weights or --no-cache always are."""
    import shutil

    import engine.cache as cache_module
    from clip_backbones import build_backbone
    from clip_backbones.tiny import TINY_BACKBONES

    folder = tmp_path / "model"
    shutil.copytree(TINY_BACKBONES["tiny-biomedclip"], folder)
    torch.save(build_backbone("tiny-biomedclip").model.state_dict(), folder / "open_clip_pytorch_model.bin")
    calls: list[int] = []
    real = cache_module.fingerprint_module
    monkeypatch.setattr(cache_module, "fingerprint_module", lambda m: calls.append(1) or real(m))

    def fingerprint(enabled: bool = True, name: str = f"local-dir:{folder}") -> str:
        return FeatureCache(tmp_path / "cache", enabled=enabled).weights_fingerprint(build_backbone(name))

    first = fingerprint()
    assert first == real(build_backbone(f"local-dir:{folder}").model) and len(calls) == 1
    cache = FeatureCache(tmp_path / "cache")
    assert fingerprint() == first and len(calls) == 1  # adopted from the memo, not hashed
    assert (cache.hits, cache.misses) == (0, 0) and cache.describe().endswith("(0 entries, 0.0 MiB)")
    os.utime(folder / "open_clip_pytorch_model.bin", ns=(1, 1))  # another file identity: hashed again
    assert fingerprint() == first and len(calls) == 2
    assert fingerprint(enabled=False) == first and len(calls) == 3  # --no-cache: no memo
    assert fingerprint(name="tiny-biomedclip") == first and len(calls) == 4  # random weights: no file to key on
    assert len(list((tmp_path / "cache" / "weights").glob("*.safetensors"))) == 2


def test_a_config_edit_that_keeps_the_weights_changes_the_key(tmp_path: Path, synth_root: Path) -> None:
    """The same weights under an edited config (QuickGELU → GELU) compute other features: the weights fingerprint
    cannot tell them apart, the architecture digest — part of the feature-cache key — does."""
    import shutil

    from clip_backbones import build_backbone
    from clip_backbones.tiny import TINY_BACKBONES

    folders = [tmp_path / "quick", tmp_path / "gelu"]
    for folder in folders:
        shutil.copytree(TINY_BACKBONES["tiny-clip"], folder)
        torch.save(build_backbone("tiny-clip").model.state_dict(), folder / "open_clip_pytorch_model.bin")
    cfg = json.loads((folders[1] / "open_clip_config.json").read_text())
    cfg["model_cfg"]["quick_gelu"] = False
    (folders[1] / "open_clip_config.json").write_text(json.dumps(cfg))
    shutil.copy2(folders[0] / "open_clip_pytorch_model.bin", folders[1] / "open_clip_pytorch_model.bin")
    quick, gelu = (build_backbone(f"local-dir:{f}") for f in folders)
    assert quick.architecture_digest() != gelu.architecture_digest()
    assert quick.weights_fingerprint() == gelu.weights_fingerprint()  # the weights alone cannot tell them apart
    t = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "a", "CACHE.DIR", str(tmp_path / "cache"))
    key = t.cache_key("x")
    t.backbone = gelu
    assert t.cache_key("x")["architecture"] != key["architecture"]


def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureCache(tmp_path)
    key = {"kind": "test", "n": 3}
    x = {"features": torch.randn(3, 4)}
    path = cache.put(key, x)
    assert path is not None and torch.equal(cache.get(key)["features"], x["features"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit in the tensor bytes: the checksum catches it
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert cache.get(key) is None
    assert "is damaged (its checksum does not match its contents)" in caplog.text and not path.exists()
    cache.put(key, x)
    path.write_bytes(path.read_bytes()[:50])  # truncated
    assert cache.get(key) is None and not path.exists()
    assert cache.get({"kind": "test", "n": 4}) is None  # another key: a miss, never the other entry


def test_an_unwritable_cache_warns_once_and_the_run_goes_on(synth_root: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        m = cli("ZeroshotCLIP", synth_root, tmp_path / "run", "CACHE.DIR", str(blocker / "cache"))
    assert caplog.text.count("is not writable") == 1 and m["accuracy"] > 0
    # a full disk: the write fails with ENOSPC
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cache = FeatureCache(tmp_path / "full")
    assert cache.put({"k": 1}, {"x": torch.zeros(2)}) is None and not list((tmp_path / "full").iterdir())


FILL = """
import sys, torch
from engine.cache import FeatureCache
cache = FeatureCache(sys.argv[1])
x = {"features": torch.arange(200_000, dtype=torch.float32).view(1000, 200)}
for _ in range(15):
    cache.put({"kind": "race"}, x)
    got = cache.get({"kind": "race"})
    assert got is not None and torch.equal(got["features"], x["features"])
"""


def test_two_processes_filling_the_same_entry(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", FILL, str(tmp_path / "cache")], cwd=repo,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    folder = tmp_path / "cache"
    assert len(list(folder.glob("*.safetensors"))) == 1 and not list(folder.glob(".*.tmp"))


def test_encode_batch_size_auto_and_validation(synth_root: Path, tmp_path: Path) -> None:
    coop = make_trainer("CoOp", synth_root, tmp_path / "a")
    assert coop.encode_batch_size() == AUTO_ENCODE_BATCH[False] == 4
    assert coop.encode_pass_size(text=True) == AUTO_TEXT_ENCODE_BATCH[False] == 32  # teacher sentences
    set_ = make_trainer("CoOp", synth_root, tmp_path / "d", "TRAIN.ENCODE_BATCH_SIZE", "16")
    assert set_.encode_batch_size() == set_.encode_pass_size(text=True) == 16  # a set value bounds both
    assert make_trainer("MaPLe", synth_root, tmp_path / "b").encode_batch_size() == 0  # a prompted image tower
    with pytest.raises(ValueError, match="TRAIN.ENCODE_BATCH_SIZE must be ≥ 0, or -1 for auto"):
        make_trainer("CoOp", synth_root, tmp_path / "c", "TRAIN.ENCODE_BATCH_SIZE", "-2")


def test_frozen_precision_is_validated_and_part_of_the_key(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MODEL.BACKBONE.FROZEN_PREC must be one of"):
        make_trainer("CoOp", synth_root, tmp_path / "a", "MODEL.BACKBONE.FROZEN_PREC", "int8")
    fp32 = make_trainer("CoOp", synth_root, tmp_path / "b")
    bf16 = make_trainer("CoOp", synth_root, tmp_path / "c", "MODEL.BACKBONE.FROZEN_PREC", "bf16")
    assert fp32.frozen_precision == "fp32" and bf16.frozen_precision == "bf16"  # auto on the CPU: fp32
    assert fp32.cache_key("x") != bf16.cache_key("x")
    imgs = next(iter(fp32.dm.test_loader))["img"][:8]
    g32, g16 = fp32.encode_frozen(imgs)["g"], bf16.encode_frozen(imgs)["g"]
    assert g16.dtype == torch.float32 and (g32 * g16).sum(-1).min() > 0.99  # bf16 features, close to fp32
