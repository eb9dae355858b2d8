"""Fault matrix (issue 12): bad inputs and faults driven through train.py and the grid script.

Every expected failure must end with exactly one console line ``error: …`` naming the thing, a non-zero exit, no
traceback on the console (it goes to log.txt) and no ``metrics.json`` marked complete; interrupted work must end,
once rerun, with the uninterrupted numbers. Tiny backbone, SynthMed, 1–2 epochs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from engine.results import MetricsError, read_metrics, run_is_complete, write_metrics
from engine.trainer import COST_KEYS

REPO = Path(__file__).resolve().parents[1]
COOP = ["--trainer", "CoOp", "--dataset-config-file", "configs/datasets/synthmed.yaml",
        "--config-file", "configs/trainers/CoOp/few_shot.yaml"]
FAST = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "MODEL.BACKBONE.NAME", "tiny-biomedclip",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "VERBOSE", "False"]


def trainer_args(name: str) -> list[str]:
    config = REPO / f"configs/trainers/{name}/few_shot/synthmed.yaml"
    if not config.is_file():
        config = REPO / f"configs/trainers/{name}/few_shot.yaml"
    return ["--trainer", name, "--dataset-config-file", "configs/datasets/synthmed.yaml", "--config-file", str(config)]


def cli(root: Path, out: Path, *extra: str, base: list[str] = COOP, opts: list[str] = FAST) -> list[str]:
    return ["--root", str(root), "--seed", "1", *base, "--output-dir", str(out), *extra, *opts]


def results(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in (*COST_KEYS, "git_commit")}


def fails(capsys: pytest.CaptureFixture, args: list[str], fragment: str, *, status: int | None = None) -> str:
    """Run train.main(args): non-zero exit, exactly one ``error:`` line holding ``fragment``, no traceback."""
    rc = train.main(args)
    err = capsys.readouterr().err
    assert rc != 0 and (status is None or rc == status), (rc, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in err, err
    return errors[0]


def no_result(out: Path) -> None:
    assert not (out / "metrics.json").exists() or not run_is_complete(out)


@pytest.fixture(scope="module")
def coop_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "coop"
    assert train.main(cli(synth_root, out)) == 0
    return out


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def split_of(root: Path) -> dict:
    return json.loads((root / "SynthMed/split_SynthMed.json").read_text())


# ------------------------------------------------------------------------------------------- bad inputs (CLI)
@pytest.mark.parametrize(("args", "fragment", "status"), [
    (["--root", "/nonexistent/data"], "SynthMed: folder not found", 1),
    (["FOO.BAR", "1"], "Unknown config key 'FOO.BAR'", 2),
    (["--trainer", "CoOpp"], "CoOpp", 2),
    (["--dataset-config-file", "configs/datasets/nope.yaml"], "Config file not found", 2),
    (["MODEL.BACKBONE.NAME", "tiny-nothing"], "tiny-nothing", 1),
    (["TRAINER.CLIP_ADAPTER.EPOCHS", "3"], "is now 'OPTIM.MAX_EPOCH'", 2),
])
def test_bad_command_lines_give_one_error_line(args: list[str], fragment: str, status: int, synth_root: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    flags = [a for a in args if a.startswith("--")]
    if flags:  # a flag given twice: argparse keeps the last one
        full = [*cli(synth_root, out)[: -len(FAST)], *args, *FAST]
    else:
        full = [*cli(synth_root, out), *args]
    fails(capsys, full, fragment, status=status)
    no_result(out)


def test_a_flag_after_the_config_pairs_says_flags_come_first(synth_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Regression (item 7): the message was only "odd number of items"."""
    fails(capsys, [*cli(synth_root, tmp_path / "run"), "--eval-only"], "put every --flag before them", status=2)


# ------------------------------------------------------------------------------------------- bad data
def test_missing_image_names_it(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = copy_data(synth_root, tmp_path / "data")
    rel = split_of(root)["train"][0][0]
    (root / "SynthMed/SynthMed" / rel).unlink()
    fails(capsys, cli(root, tmp_path / "run"), Path(rel).name)
    no_result(tmp_path / "run")


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_test_image_stops_the_run_before_training(workers: int, synth_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """Regression (item 5, and item 4's worker-wrapped message): a truncated test image was found only after the
    last epoch, and inside a data-loader worker its message was buried in "Caught ImageReadError …"."""
    root = copy_data(synth_root, tmp_path / "data")
    path = root / "SynthMed/SynthMed" / split_of(root)["test"][3][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "run"
    line = fails(capsys, cli(root, out, opts=[*FAST, "DATALOADER.NUM_WORKERS", str(workers), "CACHE.ENABLED",
                                              "False"]), f"Cannot read image {path}")
    assert "DataLoader worker" not in line
    log = (out / "log.txt").read_text()
    assert "epoch [" not in log and "Traceback" in log  # before any epoch; the traceback is in the log
    no_result(out)


def test_empty_training_split_is_named(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Regression (item 7): "SUBSAMPLE_CLASSES=all: no all classes among 0 classes"."""
    root = copy_data(synth_root, tmp_path / "data")
    split = split_of(root)
    split["train"] = []
    (root / "SynthMed/split_SynthMed.json").write_text(json.dumps(split))
    fails(capsys, cli(root, tmp_path / "run"), 'the "train" split is empty')


def test_bank_of_empty_sentences_is_refused(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Regression (item 7): a prompt bank whose sentences were all "" was accepted."""
    bank = json.loads((synth_root / "SynthMed/prompt_bank.json").read_text())
    empty = {c: [""] * len(s) for c, s in bank.items()}
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(empty))
    fails(capsys, cli(synth_root, tmp_path / "run", base=trainer_args("OGKD"),
                      opts=[*FAST, "TRAINER.OGKD.PROMPT_BANK", str(path)]), "is empty")


def test_nonfinite_pixels_in_a_float_image_are_warned_not_black(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Regression (item 7): one NaN pixel in a float TIFF turned the whole image black, silently."""
    from engine.data import read_image

    arr = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    arr[0, 0] = np.nan
    arr[1, 1] = np.inf
    path = tmp_path / "img.tif"
    Image.fromarray(arr, mode="F").save(path)
    rgb = np.asarray(read_image(str(path)))
    assert rgb.max() == 255 and rgb[0, 0, 0] == 0 and rgb[7, 7, 0] == 255
    assert "2 of 64 pixels are NaN or infinite" in caplog.text and str(path) in caplog.text


def test_num_shots_zero_is_the_whole_split_and_says_so(synth_root: Path, tmp_path: Path) -> None:
    """Regression (item 7): NUM_SHOTS ≤ 0 silently meant the whole training split."""
    out = tmp_path / "run"
    opts = [*FAST, "DATASET.NUM_SHOTS", "0", "OPTIM.MAX_EPOCH", "1"]
    assert train.main(cli(synth_root, out, base=trainer_args("ZeroshotCLIP"), opts=opts)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["shots_all"] is True and m["train_images"] == len(split_of(synth_root)["train"])
    assert "the whole training split is used" in (out / "log.txt").read_text()


# ------------------------------------------------------------------------------------------- item 2: OPTIM keys
def test_clip_adapter_honours_optim_epochs_and_lr(synth_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Regression (item 2): OPTIM.LR 1e30 OPTIM.MAX_EPOCH 3 ran 20 epochs at 1e-2 and wrote normal metrics."""
    base, opts = trainer_args("CLIP_Adapter"), [*FAST, "OPTIM.MAX_EPOCH", "3"]
    out = tmp_path / "run"
    assert train.main(cli(synth_root, out, base=base, opts=opts)) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
    assert "epoch [3/3]" in (out / "log.txt").read_text()
    fails(capsys, cli(synth_root, tmp_path / "lr", base=base, opts=[*opts, "OPTIM.LR", "1e30"]), "diverged")
    no_result(tmp_path / "lr")


@pytest.mark.parametrize(("name", "opts", "fragment"), [
    ("LPPlusPlus", ["OPTIM.LR", "0.5"], "OPTIM.LR 0.5 has no effect on LPPlusPlus"),
    ("TipAdapter", ["OPTIM.NAME", "sgd"], "needs OPTIM.NAME 'adamw'"),
])
def test_optim_keys_a_method_cannot_honour_are_errors(name: str, opts: list[str], fragment: str, synth_root: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(capsys, cli(synth_root, tmp_path / "run", base=trainer_args(name), opts=[*FAST, *opts]), fragment)


def test_tip_adapter_and_lpp_epochs_come_from_optim(synth_root: Path, tmp_path: Path) -> None:
    for name, epochs in (("TipAdapter", 2), ("LPPlusPlus", 7)):
        out = tmp_path / name
        opts = [*FAST, "OPTIM.MAX_EPOCH", str(epochs), "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "1"]
        assert train.main(cli(synth_root, out, base=trainer_args(name), opts=opts)) == 0
        assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs, name


# ------------------------------------------------------------------------------------------- item 1 and 3
def test_refused_commands_keep_the_finished_result(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Regression (item 1): a refused command deleted the finished run's metrics.json."""
    done = tmp_path / "done"
    shutil.copytree(coop_run, done)
    before = (done / "metrics.json").read_bytes()
    fails(capsys, cli(synth_root, done, opts=[*FAST, "OPTIM.LR", "0.5"]), "different config")
    fails(capsys, cli(synth_root, done, "--eval-only", "--model-dir", str(done), "--load-epoch", "99"),
          "checkpoint not found")
    fails(capsys, cli(synth_root, done, "--eval-only", "--model-dir", str(done),
                      opts=[*FAST, "MODEL.BACKBONE.NAME", "tiny-clip"]), "backbone")
    assert (done / "metrics.json").read_bytes() == before


def test_eval_only_refuses_another_backbone_or_trainer(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Regression (item 3): a context trained on one backbone was evaluated on another and recorded as valid; an
    OGKD evaluation of a CoOp run was labelled OGKD."""
    ckpt = coop_run / "prompt_learner/model.pth.tar-2"
    line = fails(capsys, cli(synth_root, tmp_path / "a", "--eval-only", "--model-dir", str(coop_run),
                             opts=[*FAST, "MODEL.BACKBONE.NAME", "tiny-clip"]), str(ckpt))
    assert "checkpoint 'tiny-biomedclip', this run 'tiny-clip'" in line and "--allow-mismatch" in line
    no_result(tmp_path / "a")
    line = fails(capsys, cli(synth_root, tmp_path / "b", "--eval-only", "--model-dir", str(coop_run),
                             "--allow-mismatch", base=trainer_args("OGKD")), "as OGKD")
    assert "checkpoint 'CoOp', this run 'OGKD'" in line
    no_result(tmp_path / "b")


def test_allow_mismatch_evaluates_and_records_it(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    opts = [*FAST, "TRAINER.COOP.CLASS_TOKEN_POSITION", "front"]
    fails(capsys, cli(synth_root, tmp_path / "a", "--eval-only", "--model-dir", str(coop_run), opts=opts),
          "TRAINER.COOP.CLASS_TOKEN_POSITION: checkpoint 'end', this run 'front'")
    out = tmp_path / "b"
    assert train.main(cli(synth_root, out, "--eval-only", "--model-dir", str(coop_run), "--allow-mismatch",
                          opts=opts)) == 0
    m = read_metrics(out)
    assert m["provenance_mismatch"] == {"TRAINER.COOP.CLASS_TOKEN_POSITION": {"checkpoint": "end", "run": "front"}}


def test_resume_refuses_a_checkpoint_of_other_weights(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(coop_run, run)
    (run / "metrics.json").unlink()
    path = run / "prompt_learner/model.pth.tar-2"
    ckpt = torch.load(path, weights_only=True)
    ckpt["provenance"]["weights"] = "0" * 64
    torch.save(ckpt, path)
    line = fails(capsys, cli(synth_root, run), "cannot resume from")
    assert "weights: checkpoint '0000" in line
    no_result(run)


# ------------------------------------------------------------------------------------------- writing the run
def test_a_file_in_the_output_path(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "blocker").write_text("")
    fails(capsys, cli(synth_root, tmp_path / "blocker/run"), "a file is in the way")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        fails(capsys, cli(synth_root, ro / "run"), "not writable")
    finally:
        ro.chmod(0o755)


def test_nan_loss_is_one_line_and_no_result(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    fails(capsys, cli(synth_root, out, opts=[*FAST, "OPTIM.LR", "1e30"]), "training diverged; lower OPTIM.LR")
    assert "FloatingPointError" in (out / "log.txt").read_text()
    no_result(out)


def _train_py(root: Path, out: Path, *opts: str, limit_kib: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    prefix = ["bash", "-c", f'ulimit -f {limit_kib}; exec "$@"', "_"] if limit_kib else []
    return subprocess.Popen([*prefix, sys.executable, "train.py", *cli(root, out, opts=[*FAST, *opts])], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_disk_full_then_rerun(synth_root: Path, coop_run: Path, tmp_path: Path) -> None:
    """``ulimit -f``: writing the run fails → one line naming the file; rerun with room → the same numbers."""
    out = tmp_path / "run"
    proc = _train_py(synth_root, out, limit_kib=1)  # config.yaml (~4 kB) does not fit
    _, err = proc.communicate(timeout=300)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert f"File too large: {out / 'config.yaml'}" in errors[0], errors[0]
    assert "the disk is full or a file-size limit was reached" in errors[0]
    no_result(out)
    assert train.main(cli(synth_root, out)) == 0
    assert results(out) == results(coop_run)


def _train_py_until_first_checkpoint(synth_root: Path, out: Path) -> subprocess.Popen:
    """A ``train.py`` process on its way, returned once its first checkpoint is written (or it ended, or 5 min)."""
    proc = _train_py(synth_root, out)
    pointer = out / "prompt_learner/checkpoint"
    deadline = time.monotonic() + 300
    while not pointer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_kill_9_mid_run_then_rerun_gives_the_same_numbers(synth_root: Path, coop_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _train_py_until_first_checkpoint(synth_root, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (out / "metrics.json").exists()
    assert train.main(cli(synth_root, out)) == 0
    assert results(out) == results(coop_run)


# ------------------------------------------------------------------------------------------- item 6: integrity
def test_metrics_checksum_detects_edits_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_metrics(path, {"accuracy": 50.0, "dataset": "X"})
    assert read_metrics(path)["accuracy"] == 50.0 and run_is_complete(tmp_path)
    m = json.loads(path.read_text())
    m["accuracy"] = 99.0
    path.write_text(json.dumps(m))
    with pytest.raises(MetricsError, match="checksum mismatch"):
        read_metrics(path)
    assert not run_is_complete(tmp_path)
    path.write_text('{"accuracy": 5')
    with pytest.raises(MetricsError, match="not valid JSON"):
        read_metrics(path)


def test_grid_redoes_a_run_whose_metrics_were_edited(synth_root: Path, tmp_path: Path) -> None:
    """Regression (item 6): any existing metrics.json counted as complete; now the checksum is checked too."""
    env = {**os.environ, "DATA_ROOT": str(synth_root), "OUTPUT_ROOT": str(tmp_path), "BACKBONE": "tiny-biomedclip",
           "EXTRA": "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0", "SHOTS": "1", "SEEDS": "1", "TRAINERS": "CoOp"}
    cmd = ["bash", "scripts/run_fewshot.sh", "--datasets", "synthmed"]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    path = tmp_path / "few_shot/synthmed/CoOp/shots1/seed1/metrics.json"
    good = results(path.parent)
    m = json.loads(path.read_text())
    m["accuracy"] = 100.0
    path.write_text(json.dumps(m))
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "redo   synthmed CoOp shots1 seed1: its metrics.json was unreadable" in again.stdout
    assert "checksum mismatch" in again.stdout
    assert results(path.parent) == good and (path.parent / "metrics.json.bad").is_file()


def test_kill_9_mid_grid_then_rerun_gives_the_same_runs_and_tables(synth_root: Path, tmp_path: Path) -> None:
    """The whole grid command (script, runner, worker) killed with SIGKILL while its second cell trains: the same
    command finishes only what is missing (the dead worker's lock taken over at once), and every run and the tables
    equal those of an uninterrupted grid."""
    def env(root: Path) -> dict[str, str]:
        return {**os.environ, "DATA_ROOT": str(synth_root), "OUTPUT_ROOT": str(root), "BACKBONE": "tiny-biomedclip",
                "EXTRA": "OPTIM.MAX_EPOCH 3 DATALOADER.NUM_WORKERS 0", "SHOTS": "2", "SEEDS": "1 2",
                "TRAINERS": "CoOp"}
    cmd = ["bash", "scripts/run_fewshot.sh", "--datasets", "synthmed"]
    ref = subprocess.run(cmd, cwd=REPO, env=env(tmp_path / "ref"), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    out = tmp_path / "out"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    second = out / "few_shot/synthmed/CoOp/shots2/seed2"
    deadline = time.monotonic() + 300
    while not (second / "prompt_learner/checkpoint").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the script, the runner and its worker at once
    proc.wait(timeout=60)
    assert (out / "few_shot/synthmed/CoOp/shots2/seed1/metrics.json").is_file()
    assert not (second / "metrics.json").exists()

    again = subprocess.run(cmd, cwd=REPO, env=env(out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 done, 1 already complete, 0 failed" in again.stdout, again.stdout
    assert "resumed from" in (second / "log.txt").read_text()
    for seed in (1, 2):
        run = f"few_shot/synthmed/CoOp/shots2/seed{seed}"
        assert results(out / run) == results(tmp_path / "ref" / run)
    assert (out / "few_shot/summary.md").read_text() == (tmp_path / "ref/few_shot/summary.md").read_text()


# ------------------------------------------------------------------------------------------- issue 24: second pass
def test_corrupt_last_checkpoint_never_destroys_a_finished_run(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """Bad 1: a truncated last checkpoint and the same command again: one line naming it; the finished files
    (metrics.json, predictions.npz, config.yaml, fewshot_split.json) untouched — also when the run is re-evaluated on
    purpose (--force-eval), resumed after a lost metrics.json, or evaluated with --eval-only."""
    done = tmp_path / "done"
    shutil.copytree(coop_run, done)
    ckpt = done / "prompt_learner/model.pth.tar-2"
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    kept = ("metrics.json", "predictions.npz", "config.yaml", "fewshot_split.json")
    before = {name: (done / name).read_bytes() for name in kept}
    for extra in ([], ["--force-eval"], ["--eval-only", "--model-dir", str(done)]):
        line = fails(capsys, cli(synth_root, done, *extra), str(ckpt), status=1)
        assert "unreadable" in line, line
        assert {name: (done / name).read_bytes() for name in kept} == before, extra
    assert "error: " in (done / "log.txt").read_text()
    (done / "metrics.json").unlink()  # a run that lost its result: the resume reads the checkpoint first
    fails(capsys, cli(synth_root, done), str(ckpt), status=1)
    assert (done / "predictions.npz").read_bytes() == before["predictions.npz"]


# one training step (6 images, batch 8): the loss is checked finite, the step that follows blows the prompt up
ONE_STEP = [*FAST, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
            "OPTIM.LR", "1e30", "OPTIM.WARMUP_EPOCH", "-1"]


def test_divergence_after_the_last_checked_step_is_not_a_result(synth_root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Bad 2: OPTIM.LR 1e30 with a single step: the loss was finite, the evaluation is NaN. "training diverged" (the
    loss check's message), and no metrics.json nor predictions.npz."""
    out = tmp_path / "run"
    fails(capsys, cli(synth_root, out, opts=ONE_STEP), "training diverged; lower OPTIM.LR", status=1)
    assert not (out / "metrics.json").exists() and not (out / "predictions.npz").exists()


def test_non_finite_metrics_are_never_written_nor_read_as_complete(tmp_path: Path) -> None:
    """Bad 2, at the file layer: every trainer writes through write_metrics, every reader through read_metrics."""
    from engine.runfiles import NonFiniteResultError

    good = {"accuracy": 50.0, "macro_f1": 40.0, "ece": 3.0, "per_class_accuracy": {"a": 50.0}}
    for key, value in (("ece", float("nan")), ("macro_f1", float("inf")), ("per_class_accuracy", {"a": float("nan")})):
        with pytest.raises(NonFiniteResultError, match=f"{key}.*diverged"):
            write_metrics(tmp_path, {**good, key: value})
        assert not (tmp_path / "metrics.json").exists()
        body = {**good, key: value}
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(body))  # a file from before this check (json writes NaN / Infinity)
        with pytest.raises(MetricsError, match=f"non-finite {key}"):
            read_metrics(path)
        assert not run_is_complete(tmp_path)
        from engine.results import main as results_main
        assert results_main([str(tmp_path)]) == 1
        path.unlink()


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("OPTIM.MAX_EPOCH", "-1", "≥ 0"),
    ("DATALOADER.TRAIN_X.BATCH_SIZE", "0", "≥ 1"),
    ("DATALOADER.TEST.BATCH_SIZE", "-4", "≥ 1"),
    ("DATALOADER.NUM_WORKERS", "-1", "≥ 0"),
    ("TRAIN.PRINT_FREQ", "0", "≥ 1"),
    ("TRAIN.CHECKPOINT_FREQ", "-2", "≥ 0"),
    ("TRAINER.COOP.N_CTX", "0", "≥ 1"),
    ("TRAINER.OGKD.N_PROMPTS", "-3", "≥ 1"),
    ("OPTIM.LR", "-0.002", "a finite number > 0"),
    ("OPTIM.LR", "0.0", "a finite number > 0"),
])
def test_count_keys_out_of_range_exit_2_naming_the_key(key: str, value: str, allowed: str, synth_root: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Bad 3 (and Weak: BATCH_SIZE 0): one line naming the key, its value and the allowed range; exit 2, nothing
    written (checked once, after every config source is merged)."""
    out = tmp_path / "run"
    line = fails(capsys, cli(synth_root, out, opts=[*FAST, key, value]), f"{key} {value}", status=2)
    assert f"allowed: {allowed}" in line, line
    assert not out.exists()


def test_zero_epochs_for_a_trainer_that_learns_is_refused(synth_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """OPTIM.MAX_EPOCH 0 is a documented value only for a trainer that learns nothing (ZeroshotCLIP, LinearProbe's
    closed-form fit): CoOp with 0 epochs would record its initial prompt as a trained result."""
    fails(capsys, cli(synth_root, tmp_path / "run", opts=[*FAST, "OPTIM.MAX_EPOCH", "0"]),
          "OPTIM.MAX_EPOCH 0", status=2)
    no_result(tmp_path / "run")
    out = tmp_path / "zs"
    assert train.main(cli(synth_root, out, base=trainer_args("ZeroshotCLIP"),
                          opts=[*FAST, "OPTIM.MAX_EPOCH", "0"])) == 0
    assert run_is_complete(out)


def test_a_class_without_training_images_is_named(synth_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Bad 4: a class missing from "train" was silently tested (and would shift the base / new halves)."""
    root = copy_data(synth_root, tmp_path / "data")
    split = split_of(root)
    gone = split["train"][0][2]
    split["train"] = [e for e in split["train"] if e[2] != gone]
    (root / "SynthMed/split_SynthMed.json").write_text(json.dumps(split))
    line = fails(capsys, cli(root, tmp_path / "run"), f"class {gone!r}")
    assert 'no images in the "train" split' in line
    no_result(tmp_path / "run")


def test_truncated_local_dir_weights_are_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               synth_root: Path) -> None:
    """Weak: a truncated weights file of a local-dir backbone gave a traceback (or "does not fit the
    architecture")."""
    from safetensors.torch import save_file

    from clip_backbones import BackboneError, build_backbone
    from clip_backbones.factory import TINY_BACKBONES

    for f in TINY_BACKBONES["tiny-biomedclip"].iterdir():
        shutil.copy(f, tmp_path / f.name)
    state = {k: v.contiguous() for k, v in build_backbone("tiny-biomedclip").model.state_dict().items()}
    for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
        path = tmp_path / name
        torch.save(state, path) if name.endswith(".bin") else save_file(state, path)
        path.write_bytes(path.read_bytes()[:4000])
        with pytest.raises(BackboneError, match="unreadable") as err:
            build_backbone(f"local-dir:{tmp_path}")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    fails(capsys, cli(synth_root, tmp_path / "run", opts=[*FAST, "MODEL.BACKBONE.NAME", f"local-dir:{tmp_path}"]),
          str(tmp_path / "open_clip_model.safetensors"), status=1)


def test_rerunning_a_finished_run_says_already_complete(coop_run: Path, synth_root: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Weak: the same command again re-evaluated and rewrote metrics.json, losing its cost record. Now it says
    "already complete" and leaves every file as it is; --force-eval re-evaluates on purpose (same results)."""
    done = tmp_path / "done"
    shutil.copytree(coop_run, done)
    before = (done / "metrics.json").read_bytes()
    assert train.main(cli(synth_root, done)) == 0
    assert "already complete" in caplog.text and "--force-eval" in caplog.text
    assert (done / "metrics.json").read_bytes() == before
    assert train.main(cli(synth_root, done, "--force-eval")) == 0
    assert (done / "metrics.json").read_bytes() != before and results(done) == results(coop_run)
    # an evaluation into its own folder (the base-to-novel "new" evaluation): the same command again is complete too
    ev = tmp_path / "eval"
    command = cli(synth_root, ev, "--eval-only", "--model-dir", str(coop_run))
    assert train.main(command) == 0
    first = (ev / "metrics.json").read_bytes()
    caplog.clear()
    assert train.main(command) == 0
    assert "already complete" in caplog.text and (ev / "metrics.json").read_bytes() == first


def test_resume_from_a_missing_folder_is_refused(synth_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Weak: --resume DIR where DIR does not exist trained from scratch without a word."""
    fails(capsys, cli(synth_root, tmp_path / "run", "--resume", str(tmp_path / "nowhere")),
          f"nothing to resume in {tmp_path / 'nowhere'}", status=2)
    (tmp_path / "empty").mkdir()
    fails(capsys, cli(synth_root, tmp_path / "run", "--resume", str(tmp_path / "empty")),
          f"nothing to resume in {tmp_path / 'empty'}", status=2)


def test_ctrl_c_in_a_single_run_is_one_line_and_resumes(synth_root: Path, coop_run: Path, tmp_path: Path) -> None:
    """Weak: Ctrl-C printed a 58-line traceback (exit 1) and log.txt said nothing; now exit 130, one line, logged."""
    out = tmp_path / "run"
    proc = _train_py_until_first_checkpoint(synth_root, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len([x for x in err.splitlines() if "interrupted" in x]) == 1, err
    assert "rerun the same command to resume" in err
    assert "interrupted" in (out / "log.txt").read_text()
    assert train.main(cli(synth_root, out)) == 0
    assert results(out) == results(coop_run)


@pytest.mark.parametrize("how", ["OSError", "SafetensorError"])
def test_a_full_cache_disk_is_one_warning_and_an_uncached_run(how: str, synth_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Weak: CACHE.DIR on a full disk gave a traceback (safetensors raises its own SafetensorError, not OSError)."""
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    def full(*_a: object, **_k: object) -> None:
        if how == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "run"
    assert train.main(cli(synth_root, out, base=trainer_args("ZeroshotCLIP"),
                          opts=[*FAST, "CACHE.DIR", str(tmp_path / "cache")])) == 0
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert run_is_complete(out)


def test_a_real_full_tmpfs_cache(synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same on a real full file system: a 4 KiB tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = tmp_path / "run"
        assert train.main(cli(synth_root, out, base=trainer_args("ZeroshotCLIP"),
                              opts=[*FAST, "CACHE.DIR", str(mnt)])) == 0
        assert len([r for r in caplog.records if "not writable" in r.getMessage()]) == 1
        assert run_is_complete(out)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_summarize_skips_a_diverged_run_in_every_table(tmp_path: Path) -> None:
    """Bad 2, the reader's side: a metrics.json with a finite accuracy but a NaN ece (written before this check) was
    averaged into the accuracy table; now it is skipped, with a warning naming the file."""
    from reporting.runs import load_runs

    common = {"dataset": "SynthMed", "trainer": "CoOp", "shots": 2, "subsample": "all", "macro_f1": 50.0}
    for seed, ece in ((1, 3.0), (2, float("nan"))):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({**common, "seed": seed, "accuracy": 60.0, "ece": ece}))
    runs, warnings, n = load_runs(tmp_path)
    assert n == 2 and [r.seed for r in runs] == [1]
    assert len(warnings) == 1 and "seed2" in warnings[0] and "non-finite ece" in warnings[0], warnings
