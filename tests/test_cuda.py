"""The CUDA paths (skipped without a GPU; ``scripts/gpu_check.sh`` runs them on a CUDA machine).

On the GPU: runs end to end for each trainer family, no host synchronisation inside a training step (checked by
CUDA's own sync debug mode), bf16 frozen features within tolerance of fp32, pinned-memory loaders, and cache
entries that never mix devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_frozen_paths
import torch
from test_frozen_paths import config_file

import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY = ["MODEL.BACKBONE.NAME", "tiny-biomedclip", "DATALOADER.NUM_WORKERS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2", "VERBOSE", "False", "USE_CUDA", "True"]
SYNC_FREE = test_frozen_paths.BATCHED


def make_trainer(name: str, root: Path, out: Path, *opts: str):
    """The CPU tests' trainer (synthmed, tiny-biomedclip, seed 1), on CUDA with two loader workers."""
    return test_frozen_paths.make_trainer(name, root, out, *TINY, *opts)


@pytest.mark.parametrize("name", ["ZeroshotCLIP", "CoOp", "CoCoOp", "OGKD", "MaPLe", "LinearProbe", "TipAdapter"])
def test_runs_on_cuda_and_matches_the_cpu(name: str, synth_root: Path, tmp_path: Path) -> None:
    metrics = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        argv = ["--root", str(synth_root), "--seed", "1", "--trainer", name, "--output-dir", str(out),
                "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", config_file(name), *TINY,
                "USE_CUDA", str(device == "cuda"), "MODEL.BACKBONE.FROZEN_PREC", "fp32"]
        assert train.main(argv) == 0
        metrics[device] = json.loads((out / "metrics.json").read_text())
    assert "peak_gpu_mib" in metrics["cuda"]
    assert abs(metrics["cuda"]["accuracy"] - metrics["cpu"]["accuracy"]) <= 2.5  # float rounding, 120 test images


@pytest.mark.parametrize("name", SYNC_FREE)
def test_a_cuda_training_step_never_waits_for_the_device(name: str, synth_root: Path, tmp_path: Path) -> None:
    trainer = make_trainer(name, synth_root, tmp_path)
    assert trainer.device.type == "cuda" and trainer.dm.train_loader_x.pin_memory
    trainer.set_model_mode("train")
    trainer.before_train()
    trainer._seed_epoch()
    batches = list(trainer.train_batches(trainer.dm.train_loader_x))
    trainer.forward_backward(batches[0])  # warm-up (lazy CUDA initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:3]:
            trainer.forward_backward(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bf16_frozen_features_stay_within_tolerance(synth_root: Path, tmp_path: Path) -> None:
    fp32 = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "a", "MODEL.BACKBONE.FROZEN_PREC", "fp32")
    bf16 = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "b")  # auto: bf16 on CUDA
    assert bf16.frozen_precision == "bf16" and fp32.cache_key("x") != bf16.cache_key("x")
    f32, _ = fp32.split_features("test")
    f16, _ = bf16.split_features("test")
    assert (f32 * f16).sum(-1).min() > 0.99
    a, b = fp32.test()["accuracy"], bf16.test()["accuracy"]
    assert abs(a - b) <= 2.5


def test_cache_entries_never_mix_devices(synth_root: Path, tmp_path: Path) -> None:
    cache = ("CACHE.DIR", str(tmp_path / "cache"))
    gpu = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "a", *cache)
    cpu = make_trainer("ZeroshotCLIP", synth_root, tmp_path / "b", *cache, "USE_CUDA", "False")
    gpu.split_features("test")
    cpu.split_features("test")
    assert gpu.cache.misses == 1 and cpu.cache.misses == 1
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
