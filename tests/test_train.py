"""End-to-end behaviour through the real entry point (train.py) on SynthMed with tiny-biomedclip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from engine.trainer import COST_KEYS, TrainerBase

COOP = ["--trainer", "CoOp", "--dataset-config-file", "configs/datasets/synthmed.yaml",
        "--config-file", "configs/trainers/CoOp/few_shot.yaml"]
FAST = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "MODEL.BACKBONE.NAME", "tiny-biomedclip",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "VERBOSE", "False"]


def run(root: Path, out: Path, *extra: str, seed: int = 1, base: list[str] = COOP, opts: list[str] = FAST) -> int:
    return train.main(["--root", str(root), "--seed", str(seed), *base, "--output-dir", str(out), *extra, *opts])


def metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    for k in (*COST_KEYS, "git_commit"):
        m.pop(k, None)
    return m


@pytest.fixture(scope="module")
def coop_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coop")
    assert run(synth_root, out) == 0
    return out


def test_run_directory_contract(coop_run: Path) -> None:
    for name in ("config.yaml", "log.txt", "metrics.json", "fewshot_split.json"):
        assert (coop_run / name).is_file(), name
    m = json.loads((coop_run / "metrics.json").read_text())
    keys = {"split", "accuracy", "macro_f1", "ece", "num_samples", "per_class_accuracy", "trainer", "dataset",
            "backbone", "seed", "shots", "subsample", "epochs", "wall_time_s", "versions", "git_commit"}
    assert keys <= set(m)
    assert m["trainer"] == "CoOp" and m["dataset"] == "SynthMed" and m["shots"] == 2 and m["seed"] == 1
    assert m["num_samples"] == 120 and m["epochs"] == 2 and m["split"] == "test"
    assert {"python", "torch", "open_clip", "transformers"} <= set(m["versions"])
    log = (coop_run / "log.txt").read_text()
    for key in ("accuracy", "macro_f1", "ece"):
        assert f"* {key}: {m[key]:.2f}%" in log
    split = json.loads((coop_run / "fewshot_split.json").read_text())
    assert len(split["train"]) == 6 * 2 and len(split["val"]) == 6 * 2
    assert all((Path(split["train"][0][0]).suffix) for _ in [0]) and not Path(split["train"][0][0]).is_absolute()


def test_run_saves_the_figures_data_consistent_with_metrics(coop_run: Path) -> None:
    from engine.plotdata import PREDICTIONS_FILE, load_predictions

    m = json.loads((coop_run / "metrics.json").read_text())
    assert m["predictions"]["file"] == PREDICTIONS_FILE
    p = load_predictions(coop_run / PREDICTIONS_FILE, m["predictions"]["sha256"])
    n = m["num_samples"]
    assert p.label.shape == p.pred.shape == p.confidence.shape == (n,)
    assert 100 * float(np.mean(p.pred == p.label)) == pytest.approx(m["accuracy"])
    assert p.confusion_matrix.sum() == n and np.trace(p.confusion_matrix) == int(np.sum(p.pred == p.label))
    assert p.classnames == json.loads((coop_run / "fewshot_split.json").read_text())["classnames"]
    assert p.ece == pytest.approx(m["ece"]) and p.bin_count.sum() == n and len(p.bin_edges) == 16
    used = p.bin_count > 0  # each bin's accuracy and confidence are those of the images falling in it
    k = np.clip(np.searchsorted(p.bin_edges[1:], p.confidence.astype(np.float64)), 0, 14)
    for b in np.flatnonzero(used):
        assert p.bin_accuracy[b] == pytest.approx(np.mean((p.pred == p.label)[k == b]))
        assert p.bin_confidence[b] == pytest.approx(np.mean(p.confidence[k == b]), abs=1e-6)
    with np.load(coop_run / PREDICTIONS_FILE, allow_pickle=False) as z:
        assert all(z[key].dtype != object for key in z.files)


def test_log_eta_and_tensorboard_test_scalars_and_hparams(coop_run: Path) -> None:
    lines = [line for line in (coop_run / "log.txt").read_text().splitlines() if "epoch [" in line]
    assert len(lines) == 2 and all(", eta " in line for line in lines) and lines[-1].endswith("eta 0:00:00)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(coop_run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/lr", "test/accuracy", "test/macro_f1", "test/ece", "hparam/accuracy"} <= scalars
    m = json.loads((coop_run / "metrics.json").read_text())
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(m["accuracy"], abs=1e-4)
    assert events.PluginTagToContent("hparams")  # the run's hyper-parameters (HPARAMS tab)


def test_checkpoint_holds_only_the_context(coop_run: Path) -> None:
    files = sorted(p.name for p in (coop_run / "prompt_learner").iterdir())
    assert files == ["checkpoint", "model.pth.tar-2"]  # the intermediate epoch-1 checkpoint is not kept
    ckpt = torch.load(coop_run / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    assert list(ckpt["state_dict"]) == ["ctx"]
    assert ckpt["state_dict"]["ctx"].shape == (4, 32)  # "a photo of a" = 4 tokens; tiny text width 32
    assert ckpt["epoch"] == 2 and len(ckpt["classnames"]) == 6


def test_same_seed_same_metrics_and_eval_only_reproduces(coop_run: Path, synth_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert run(synth_root, again) == 0
    assert metrics(again) == metrics(coop_run)
    ckpt_a = torch.load(coop_run / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]["ctx"]
    ckpt_b = torch.load(again / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]["ctx"]
    assert torch.equal(ckpt_a, ckpt_b)
    ev = tmp_path / "eval"
    assert run(synth_root, ev, "--eval-only", "--model-dir", str(coop_run)) == 0
    assert metrics(ev) == metrics(coop_run)
    ev2 = tmp_path / "eval2"  # a config asking for 7 epochs: metrics.json says what the checkpoint was trained for
    assert run(synth_root, ev2, "--eval-only", "--model-dir", str(coop_run), "--load-epoch", "2",
               opts=[*FAST, "OPTIM.MAX_EPOCH", "7"]) == 0
    assert metrics(ev2)["accuracy"] == metrics(coop_run)["accuracy"]
    assert metrics(ev2)["epochs"] == 2
    # a different seed draws a different few-shot set and gives a different context
    other = tmp_path / "seed2"
    assert run(synth_root, other, seed=2) == 0
    assert json.loads((other / "fewshot_split.json").read_text())["train"] != json.loads(
        (coop_run / "fewshot_split.json").read_text())["train"]


def test_resume_after_interruption_matches_uninterrupted(synth_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    opts = [o if o != "2" or i != 3 else "3" for i, o in enumerate(FAST)]  # OPTIM.MAX_EPOCH 3
    assert opts[2:4] == ["OPTIM.MAX_EPOCH", "3"]
    full = tmp_path / "full"
    assert run(synth_root, full, opts=opts) == 0

    part = tmp_path / "part"
    original = TrainerBase.after_epoch

    def crash_after_epoch_2(self: TrainerBase) -> None:
        original(self)
        if self.epoch + 1 == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainerBase, "after_epoch", crash_after_epoch_2)
    assert run(synth_root, part, opts=opts) == 130  # Ctrl-C: one line, exit 130 (issue 24)
    monkeypatch.setattr(TrainerBase, "after_epoch", original)
    assert not (part / "metrics.json").exists()
    assert (part / "prompt_learner" / "model.pth.tar-2").is_file()
    assert run(synth_root, part, "--resume", str(part), opts=opts) == 0
    assert "resumed from" in (part / "log.txt").read_text()
    assert metrics(part) == metrics(full)
    # resuming under a different config is refused
    changed = [*opts, "OPTIM.LR", "0.5"]
    assert run(synth_root, part, opts=changed) == 1


def test_only_context_receives_gradients(synth_root: Path, tmp_path: Path) -> None:
    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from trainers import build_trainer

    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, "configs/trainers/CoOp/few_shot.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(synth_root), "OUTPUT_DIR", str(tmp_path), "SEED", "1",
                          "TRAINER.NAME", "CoOp", *FAST])
    trainer = build_trainer(cfg)
    batch = next(iter(trainer.dm.train_loader_x))
    before = {n: p.detach().clone() for n, p in trainer.backbone.named_parameters()}
    trainer.set_model_mode("train")
    trainer.forward_backward(batch)
    assert trainer.prompt_learner.ctx.grad is not None and trainer.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in trainer.backbone.parameters())
    assert all(torch.equal(p, before[n]) for n, p in trainer.backbone.named_parameters())
    trainable = [n for m in trainer._models.values() for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["ctx"]
    assert not trainer.backbone.training  # frozen towers stay in eval mode (no BERT dropout for CoOp)


def test_zeroshot_runs_without_training(synth_root: Path, tmp_path: Path) -> None:
    zs = ["--trainer", "ZeroshotCLIP", "--dataset-config-file", "configs/datasets/synthmed.yaml",
          "--config-file", "configs/trainers/ZeroshotCLIP/few_shot.yaml"]
    out = tmp_path / "zs"
    assert run(synth_root, out, base=zs, opts=[*FAST, "TEST.COMPUTE_CMAT", "True"]) == 0
    m = metrics(out)
    assert m["trainer"] == "ZeroshotCLIP" and m["epochs"] == 0 and m["num_samples"] == 120
    cmat = json.loads((out / "confusion_matrix.json").read_text())["rows_true_cols_pred"]
    assert sum(map(sum, cmat)) == 120 and [sum(r) for r in cmat] == [20] * 6
    assert sum(cmat[i][i] for i in range(6)) == round(m["accuracy"] * 120 / 100)
    assert not any(out.glob("*/model.pth.tar-*"))
    out2 = tmp_path / "zs_eval"
    assert run(synth_root, out2, "--eval-only", base=zs) == 0
    assert metrics(out2)["accuracy"] == m["accuracy"]


@pytest.mark.parametrize(
    "args,opts,message",
    [
        (["--trainer", "CoOpp"], FAST, "Unknown trainer 'CoOpp'. Did you mean 'CoOp'"),
        ([], [*FAST, "OPTIM.MAXEPOCH", "3"], "Did you mean 'OPTIM.MAX_EPOCH'"),
        ([], [*FAST, "DATASET.NAME", "SynthMedd"], "Unknown dataset 'SynthMedd': no catalogue row and no split file"),
        ([], [*FAST, "MODEL.BACKBONE.NAME", "tiny-biomedclp"], "tiny-biomedclip"),
    ],
)
def test_bad_input_gives_clear_error_and_no_metrics(synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   args: list[str], opts: list[str], message: str) -> None:
    out = tmp_path / "bad"
    base = COOP[2:] if args else COOP
    assert run(synth_root, out, *args, base=base, opts=opts) != 0
    assert message in caplog.text
    assert not (out / "metrics.json").exists()


def test_missing_dataset_root_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    assert run(tmp_path / "no_data", out) == 1
    assert "SynthMed: folder not found" in caplog.text and "make_synthetic_data.py --root" in caplog.text
    assert not (out / "metrics.json").exists()


def test_eval_only_without_model_dir_is_an_error(synth_root: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert run(synth_root, tmp_path / "x", "--eval-only") == 1
    assert "needs --model-dir" in caplog.text


def test_unreadable_image_stops_the_run_naming_it(synth_root: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    split = json.loads((root / "SynthMed" / "split_SynthMed.json").read_text())
    victim = root / "SynthMed" / "SynthMed" / split["test"][0][0]
    victim.write_bytes(b"garbage")
    out = tmp_path / "run"
    assert run(root, out) == 1
    assert victim.name in caplog.text
    assert not (out / "metrics.json").exists()


def test_best_val_selection_and_seed_zero(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "best"
    assert run(synth_root, out, seed=0, opts=[*FAST, "TEST.FINAL_MODEL", "best_val"]) == 0
    assert (out / "prompt_learner" / "model-best.pth.tar").is_file()
    m = metrics(out)
    assert m["seed"] == 0  # seed 0 is a real, fixed seed
    log = (out / "log.txt").read_text()
    assert "Do evaluation on val set" in log and "new best val accuracy" in log
    again = tmp_path / "best_again"
    assert run(synth_root, again, seed=0, opts=[*FAST, "TEST.FINAL_MODEL", "best_val"]) == 0
    assert metrics(again) == m
    # eval-only picks model-best for a best_val run
    ev = tmp_path / "best_eval"
    assert run(synth_root, ev, "--eval-only", "--model-dir", str(out), seed=0,
               opts=[*FAST, "TEST.FINAL_MODEL", "best_val"]) == 0
    assert metrics(ev)["accuracy"] == m["accuracy"]


def test_data_loader_workers_keep_runs_reproducible(synth_root: Path, tmp_path: Path) -> None:
    opts = [*FAST[:6], "DATALOADER.NUM_WORKERS", "2", *FAST[8:]]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(synth_root, a, opts=opts) == 0 and run(synth_root, b, opts=opts) == 0
    assert metrics(a) == metrics(b)


def test_a_refused_command_keeps_the_finished_result(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Regression: train.py used to delete metrics.json before any check, so a refused rerun lost the result."""
    import shutil

    done = tmp_path / "done"
    shutil.copytree(coop_run, done)
    before = (done / "metrics.json").read_bytes()
    assert run(synth_root, done, opts=[*FAST, "OPTIM.LR", "0.5"]) == 1  # other config into a finished run: refused
    assert "different config" in caplog.text
    assert run(synth_root, done, "--eval-only", "--model-dir", str(done), "--load-epoch", "99") == 1  # no such epoch
    assert (done / "metrics.json").read_bytes() == before
