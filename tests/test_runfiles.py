"""engine.runfiles: each run-directory file read back from the format written before the record existed (fixtures
written by hand from that schema), written by the owner in the same bytes, and refused in one line when bad."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import get_cfg_default
from engine.results import run_is_complete
from engine.runfiles import (
    CONFIG_FILE,
    METRICS_FILE,
    SPLIT_FILE,
    FewShotSplit,
    MetricsError,
    RunFileError,
    RunMetrics,
    read_config,
    read_metrics,
    read_split,
    write_config,
    write_metrics,
    write_split,
)

REPO = Path(__file__).resolve().parents[1]

#: a metrics.json as engine/trainer.py wrote it up to this version (a dict literal, keys in this order)
TODAY = {
    "split": "test", "accuracy": 62.5, "macro_f1": 58.25, "ece": 7.125, "num_samples": 8,
    "per_class_accuracy": {"glioma": 75.0, "meningioma": 50.0},
    "trainer": "CoOp", "dataset": "SynthMed", "backbone": "tiny-biomedclip", "seed": 1, "shots": 2,
    "shots_all": False, "train_images": 4, "subsample": "all", "epochs": 2, "wall_time_s": 3.5,
    "timings_s": {"process_start_s": 1.25, "steps_s": 0.5}, "counts": {"steps": 4, "encoded_images": 8},
    "peak_rss_mib": 812.5, "versions": {"python": "3.11.9", "torch": "2.5.1", "open_clip": "2.29.0",
                                        "transformers": None},
    "git_commit": None, "predictions": {"file": "predictions.npz", "sha256": "ab" * 32},
}


def _checksum(body: dict) -> str:
    """The checksum rule, written out: SHA-256 of the canonical JSON (sorted keys, compact, UTF-8) without it."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _old_file(folder: Path, body: dict, *, checksum: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {**body, "checksum": _checksum(body)} if checksum else dict(body)
    path = folder / METRICS_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def test_a_metrics_file_of_todays_format_reads_and_is_rewritten_byte_for_byte(tmp_path: Path) -> None:
    old = _old_file(tmp_path / "old", TODAY)
    m = read_metrics(old.parent)
    assert isinstance(m, RunMetrics) and run_is_complete(old.parent)
    assert (m.accuracy, m.macro_f1, m.ece, m.seed, m.shots, m.epochs) == (62.5, 58.25, 7.125, 1, 2, 2)
    assert m.per_class_accuracy == {"glioma": 75.0, "meningioma": 50.0} and m.counts["encoded_images"] == 8
    assert m.predictions["sha256"] == "ab" * 32 and m.peak_gpu_mib is None and m.extra == {}
    assert m["accuracy"] == 62.5 and m.get("provenance_mismatch") is None and "peak_gpu_mib" not in m
    new = tmp_path / "new" / METRICS_FILE
    new.parent.mkdir()
    write_metrics(new, RunMetrics(**TODAY))  # the trainer's path: a record, not a dict
    assert new.read_bytes() == old.read_bytes()


def test_a_metrics_file_from_before_checksums_and_cost_keys_still_reads(tmp_path: Path) -> None:
    design = {k: TODAY[k] for k in ("split", "accuracy", "macro_f1", "ece", "num_samples", "per_class_accuracy",
                                    "trainer", "dataset", "backbone", "seed", "shots", "subsample", "epochs",
                                    "wall_time_s", "versions", "git_commit")}
    m = read_metrics(_old_file(tmp_path, design, checksum=False))
    assert m.accuracy == 62.5 and m.checksum is None and m.timings_s is None and m.shots_all is None
    assert run_is_complete(tmp_path)


def test_unknown_keys_are_kept_and_stay_under_the_checksum(tmp_path: Path) -> None:
    newer = {**TODAY, "auroc": 71.0}
    m = read_metrics(_old_file(tmp_path / "a", newer))
    assert m.extra == {"auroc": 71.0} and m["auroc"] == 71.0
    written = write_metrics(tmp_path / "b.json", m)
    assert json.loads((tmp_path / "b.json").read_text())["auroc"] == 71.0
    assert read_metrics(tmp_path / "b.json").checksum == written.checksum == _checksum(newer)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("seed", "1", "seed is '1', expected an integer"),
    ("shots_all", 0, "shots_all is 0, expected a boolean"),
    ("per_class_accuracy", [75.0], "per_class_accuracy is [75.0], expected an object"),
    ("accuracy", float("nan"), "no finite accuracy (nan)"),
])
def test_a_bad_value_is_one_error_naming_the_file_and_the_key(tmp_path: Path, key: str, value: object,
                                                              says: str) -> None:
    path = _old_file(tmp_path, {**TODAY, key: value})
    with pytest.raises(MetricsError) as err:
        read_metrics(path)
    assert str(err.value) == f"{path}: {says}" and not run_is_complete(tmp_path)
    with pytest.raises(MetricsError, match="seed is 'x'"):
        write_metrics(tmp_path / "w.json", {"accuracy": 1.0, "seed": "x"})


def test_python_m_engine_results_names_the_bad_run(tmp_path: Path) -> None:
    _old_file(tmp_path / "good", TODAY)
    _old_file(tmp_path / "bad", {**TODAY, "epochs": 2.5})
    out = subprocess.run([sys.executable, "-m", "engine.results", str(tmp_path / "good"), str(tmp_path / "bad")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {tmp_path / 'bad' / METRICS_FILE}: epochs is 2.5, expected an integer"


def test_config_yaml_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = get_cfg_default()
    cfg.SEED = 7
    assert read_config(tmp_path) is None  # no config.yaml: nothing to compare against
    assert write_config(tmp_path, cfg) == tmp_path / CONFIG_FILE
    assert (tmp_path / CONFIG_FILE).read_text() == cfg.dump()  # the format is yacs's dump, as before
    back = read_config(tmp_path)
    assert back.SEED == 7 and back.dump() == cfg.dump()  # (tuples read back as lists, as yacs has always done)
    (tmp_path / CONFIG_FILE).write_text("SEED: [1\n")
    with pytest.raises(RunFileError, match=f"{tmp_path / CONFIG_FILE}: unreadable as a config"):
        read_config(tmp_path)


def test_a_split_file_of_todays_format_reads_and_is_rewritten_byte_for_byte(tmp_path: Path) -> None:
    today = {"dataset": "SynthMed", "num_shots": 1, "seed": 1, "subsample_classes": "all",
             "classnames": ["glioma", "meningioma"],
             "train": [["glioma/a.png", 0, "glioma"], ["meningioma/b.png", 1, "meningioma"]], "val": []}
    old = tmp_path / "old" / SPLIT_FILE
    old.parent.mkdir()
    old.write_text(json.dumps(today, indent=2, sort_keys=False) + "\n")
    s = read_split(old.parent)
    assert s == FewShotSplit(**today) and s.train[1] == ["meningioma/b.png", 1, "meningioma"]
    assert write_split(tmp_path, s).read_bytes() == old.read_bytes()
    del today["seed"]
    old.write_text(json.dumps({**today, "train": [["x", 0]]}))
    with pytest.raises(RunFileError, match=f"{old}: not a split file, missing seed"):
        read_split(old)
    old.write_text(json.dumps({**today, "seed": 1, "train": [["x", 0]]}))
    with pytest.raises(RunFileError, match=f"{old}: invalid train"):
        read_split(old)
