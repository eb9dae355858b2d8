"""scripts/run_fewshot.sh and scripts/run_base2novel.sh end to end on SynthMed (tiny backbone, one epoch)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from engine.trainer import COST_KEYS

REPO = Path(__file__).resolve().parents[1]


def grid(script: str, data: Path, out: Path, *args: str, dataset: str = "synthmed",
         **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DATA_ROOT": str(data), "OUTPUT_ROOT": str(out), "BACKBONE": "tiny-biomedclip",
                "EXTRA": "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0", **env}
    return subprocess.run(["bash", f"scripts/{script}", "--datasets", dataset, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("metrics.json")}


def test_fewshot_grid_then_nothing_to_redo(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = grid("run_fewshot.sh", synth_root, out, SHOTS="1 2", SEEDS="1 2", TRAINERS="CoOp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("metrics.json"))
    assert runs == [f"few_shot/synthmed/CoOp/shots{k}/seed{s}" for k in (1, 2) for s in (1, 2)]
    m = json.loads((out / "few_shot/synthmed/CoOp/shots2/seed2/metrics.json").read_text())
    assert (m["shots"], m["seed"], m["epochs"], m["backbone"]) == (2, 2, 1, "tiny-biomedclip")
    assert "4 done, 0 already complete, 0 failed" in proc.stdout
    assert (out / "few_shot" / "summary.md").is_file() and "SynthMed" in proc.stdout
    before = _mtimes(out)
    again = grid("run_fewshot.sh", synth_root, out, SHOTS="1 2", SEEDS="1 2", TRAINERS="CoOp")
    assert again.returncode == 0, again.stderr
    assert "0 done, 4 already complete" in again.stdout and "\nrun " not in again.stdout
    assert _mtimes(out) == before
    # regression: a truncated metrics.json used to count as complete forever; now that run alone is redone
    broken = out / "few_shot/synthmed/CoOp/shots1/seed2/metrics.json"
    good = json.loads(broken.read_text())
    broken.write_text(broken.read_text()[:40])
    third = grid("run_fewshot.sh", synth_root, out, SHOTS="1 2", SEEDS="1 2", TRAINERS="CoOp")
    assert third.returncode == 0, third.stderr
    assert "redo   synthmed CoOp shots1 seed2: its metrics.json was unreadable" in third.stdout
    assert "1 done, 3 already complete" in third.stdout
    redone = json.loads(broken.read_text())
    assert {k: v for k, v in redone.items() if k not in COST_KEYS} == {
        k: v for k, v in good.items() if k not in COST_KEYS}
    assert (broken.parent / "metrics.json.bad").is_file()


def test_a_grid_over_two_backbones_puts_each_in_its_folder_and_the_tables_apart(synth_root: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = grid("run_fewshot.sh", synth_root, out, SHOTS="1", SEEDS="1", TRAINERS="CoOp",
                BACKBONE="tiny-biomedclip tiny-clip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("metrics.json"))
    assert runs == [f"few_shot/synthmed/CoOp/{b}/shots1/seed1" for b in ("tiny-biomedclip", "tiny-clip")]
    for b in ("tiny-biomedclip", "tiny-clip"):
        assert json.loads((out / f"few_shot/synthmed/CoOp/{b}/shots1/seed1/metrics.json").read_text())["backbone"] == b
    assert "synthmed CoOp tiny-clip shots1 seed1" in proc.stdout and "2 done, 0 already complete" in proc.stdout
    summary = (out / "few_shot" / "summary.md").read_text()
    assert "CoOp (tiny-biomedclip)" in summary and "CoOp (tiny-clip)" in summary


def test_the_paper_grid_on_a_dataset_in_the_released_layout(btmri_root: Path, tmp_path: Path) -> None:
    """run_fewshot.sh as the paper grid runs it: BTMRI in the released layout with its released OGKD config as is
    (DATALOADER.NUM_WORKERS 8, batch size, optimiser); only the backbone (tiny), the epochs (1) and the prompt bank
    (the real one is downloaded) are overridden."""
    from datasets.catalogue import get_info

    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps({c: [f"an mri of the brain showing {c}, view {i}" for i in range(50)]
                                for c in get_info("BTMRI").classnames}))
    out = tmp_path / "out"
    proc = grid("run_fewshot.sh", btmri_root, out, dataset="btmri", SHOTS="1", SEEDS="1", TRAINERS="OGKD",
                EXTRA=f"OPTIM.MAX_EPOCH 1 TRAINER.OGKD.PROMPT_BANK {bank}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = out / "few_shot/btmri/OGKD/shots1/seed1"
    m = json.loads((run / "metrics.json").read_text())
    assert (m["dataset"], m["num_samples"], m["shots"]) == ("BTMRI", 48, 1)
    config = (run / "config.yaml").read_text()
    assert "NUM_WORKERS: 8" in config and "1 done, 0 already complete, 0 failed" in proc.stdout
    assert "BTMRI" in (out / "few_shot" / "summary.md").read_text()


def test_base2novel_grid_then_nothing_to_redo(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # with a data-loader worker, as the paper configs (8): regression, grid workers were daemonic and could not
    # start the loader's processes
    proc = grid("run_base2novel.sh", synth_root, out, SEEDS="1", TRAINERS="CoOp",
                EXTRA="OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = out / "base_to_novel/synthmed/CoOp/shots16/seed1"
    base, new = (json.loads((run / h / "metrics.json").read_text()) for h in ("base", "new"))
    assert (base["subsample"], new["subsample"]) == ("base", "new")
    assert list(base["per_class_accuracy"]) == ["round cyst lesion", "spiculated mass lesion", "striped fibrous tissue"]
    assert list(new["per_class_accuracy"]) == ["dotted granular tissue", "bright calcified nodule",
                                               "normal background tissue"]
    assert "loaded prompt_learner from" in (run / "new" / "log.txt").read_text()  # the base checkpoint
    assert not any((run / "new").glob("prompt_learner/*"))
    before = _mtimes(out)
    again = grid("run_base2novel.sh", synth_root, out, SEEDS="1", TRAINERS="CoOp")
    assert again.returncode == 0 and "0 done, 2 already complete" in again.stdout
    assert _mtimes(out) == before


def test_first_failure_stops_with_log_tail_unless_keep_going(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = {"SHOTS": "1", "SEEDS": "1 2", "TRAINERS": "CoOp", "EXTRA": "OPTIM.MAX_EPOCHS 1"}
    proc = grid("run_fewshot.sh", synth_root, out, **bad)
    assert proc.returncode == 1
    assert "FAILED synthmed CoOp shots1 seed1" in proc.stderr and "Did you mean 'OPTIM.MAX_EPOCH'" in proc.stderr
    assert "seed2" not in proc.stdout + proc.stderr and not list(out.rglob("metrics.json"))
    proc = grid("run_fewshot.sh", synth_root, out, "--keep-going", **bad)
    assert proc.returncode == 1 and proc.stderr.count("FAILED") == 2


def test_unknown_dataset_or_trainer_fails_fast(synth_root: Path, tmp_path: Path) -> None:
    proc = grid("run_fewshot.sh", synth_root, tmp_path, TRAINERS="NoSuchTrainer")
    assert proc.returncode == 2 and "no config for trainer 'NoSuchTrainer'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "trainers: BiomedCoOp" in proc.stderr
    proc = subprocess.run(["bash", "scripts/run_base2novel.sh", "--datasets", "covidd"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no configs/datasets/covidd.yaml; known: btmri" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run(["bash", "scripts/run_fewshot.sh", "--datasets", "btmri", "--bogus"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == "error: unrecognized arguments: --bogus (see --help)\n"
    proc = subprocess.run(["bash", "scripts/run_base2novel.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("Base-to-novel grid:") and "--keep-going" in proc.stdout
