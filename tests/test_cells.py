"""The grid's rules (engine/cells.py): run paths, trainer-config fallback, backbone folder names, the cross product
over backbones, the fail-fast checks, and that summarize.py and the feature cache tell backbones apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from engine.cells import (
    GridSpec,
    backbone_folder,
    demo_jobs,
    grid_jobs,
    run_dir,
    spec_from_env,
    trainer_config,
)
from engine.grid import GridError, read_cells
from engine.results import write_metrics

REPO = Path(__file__).resolve().parents[1]


def spec(**kw: object) -> GridSpec:
    base = {"protocol": "few_shot", "datasets": ("btmri",), "trainers": ("CoOp",), "shots": (4,), "seeds": (1,),
            "backbones": ("BiomedCLIP",), "data_root": "data", "output_root": "output"}
    return GridSpec(**{**base, **kw})


def test_one_backbone_keeps_the_grid_scripts_paths_and_arguments() -> None:
    """The cell that run_fewshot.sh wrote before engine/cells.py, argument for argument (OUTPUT_ROOT as given:
    a trailing slash stays, as the shell's "$OUTPUT_ROOT/few_shot/…" kept it)."""
    (job,) = grid_jobs(spec(output_root="out/", extra=("OPTIM.MAX_EPOCH", "3")))
    (cell,) = job.cells
    assert cell.out == "out//few_shot/btmri/CoOp/shots4/seed1" and cell.label == "btmri CoOp shots4 seed1"
    assert cell.argv == ("--root", "data", "--output-dir", "out//few_shot/btmri/CoOp/shots4/seed1", "--seed", "1",
                         "--trainer", "CoOp", "--dataset-config-file", "configs/datasets/btmri.yaml",
                         "--config-file", "configs/trainers/CoOp/few_shot.yaml", "DATASET.NUM_SHOTS", "4",
                         "MODEL.BACKBONE.NAME", "BiomedCLIP", "VERBOSE", "False", "OPTIM.MAX_EPOCH", "3")
    (job,) = grid_jobs(spec(protocol="base_to_novel", trainers=("OGKD",), shots=(16,), seeds=(2,)))
    base, new = job.cells
    run = "output/base_to_novel/btmri/OGKD/shots16/seed2"
    assert (base.out, new.out) == (f"{run}/base", f"{run}/new")
    assert (base.label, new.label) == ("btmri OGKD shots16 seed2 base", "btmri OGKD shots16 seed2 new")
    common = ("--seed", "2", "--trainer", "OGKD", "--dataset-config-file", "configs/datasets/btmri.yaml",
              "--config-file", "configs/trainers/OGKD/base_to_novel/btmri.yaml")
    assert base.argv == ("--root", "data", "--output-dir", f"{run}/base", *common, "DATASET.NUM_SHOTS", "16",
                         "DATASET.SUBSAMPLE_CLASSES", "base", "MODEL.BACKBONE.NAME", "BiomedCLIP", "VERBOSE", "False")
    assert new.argv == ("--root", "data", "--output-dir", f"{run}/new", *common, "--eval-only", "--model-dir",
                        f"{run}/base", "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "new",
                        "MODEL.BACKBONE.NAME", "BiomedCLIP", "VERBOSE", "False")


def test_trainer_config_falls_back_from_the_dataset_file_to_the_protocol_file(tmp_path: Path) -> None:
    (tmp_path / "configs/trainers/T/few_shot").mkdir(parents=True)
    (tmp_path / "configs/trainers/T/few_shot/btmri.yaml").write_text("")
    (tmp_path / "configs/trainers/U").mkdir(parents=True)
    (tmp_path / "configs/trainers/T/base_to_novel.yaml").write_text("")
    assert trainer_config("T", "few_shot", "btmri", tmp_path) == "configs/trainers/T/few_shot/btmri.yaml"
    assert trainer_config("T", "base_to_novel", "covid", tmp_path) == "configs/trainers/T/base_to_novel.yaml"
    with pytest.raises(GridError) as e:
        trainer_config("T", "few_shot", "covid", tmp_path)
    assert str(e.value) == ("no config for trainer 'T' (few_shot, covid): expected configs/trainers/T/few_shot/"
                            "covid.yaml or configs/trainers/T/few_shot.yaml; its few_shot configs: btmri")
    with pytest.raises(GridError, match="^no config for trainer 'V': there is no configs/trainers/V/; trainers: T U$"):
        trainer_config("V", "few_shot", "btmri", tmp_path)
    # the real tree: OGKD has per-dataset files, CoOp one per protocol, BUSI has no base-to-novel split
    assert trainer_config("OGKD", "few_shot", "busi") == "configs/trainers/OGKD/few_shot/busi.yaml"
    assert trainer_config("CoOp", "few_shot", "busi") == "configs/trainers/CoOp/few_shot.yaml"
    with pytest.raises(GridError, match="its base_to_novel configs: btmri chmnist"):
        trainer_config("OGKD", "base_to_novel", "busi")


def test_backbone_folder_names_are_one_safe_folder_each_and_reversible() -> None:
    names = ["BiomedCLIP", "PMC-CLIP", "ViT-B/16", "ViT-B_16", "ViT-B%2F16", "local-dir:/x/y", "hf-hub:org/m@v1",
             "..", ".", "ü"]
    folders = [backbone_folder(n) for n in names]
    assert folders[:6] == ["BiomedCLIP", "PMC-CLIP", "ViT-B%2F16", "ViT-B_16", "ViT-B%252F16",
                           "local-dir%3A%2Fx%2Fy"]
    assert folders[7:] == ["%2E%2E", "%2E", "%C3%BC"]
    assert len(set(folders)) == len(names)  # no two names share a folder
    for name, folder in zip(names, folders, strict=True):
        assert "/" not in folder and ":" not in folder and folder not in (".", "..") and unquote(folder) == name
    with pytest.raises(GridError, match="folder name of 300 bytes"):
        backbone_folder("x" * 300)
    with pytest.raises(GridError, match="empty backbone name"):
        backbone_folder("")


def test_several_backbones_are_a_cross_product_with_the_backbone_in_the_path() -> None:
    env = {"BACKBONE": "BiomedCLIP PubMedCLIP PMC-CLIP CLIP ViT-B/16", "TRAINERS": "CoOp OGKD", "SHOTS": "1 4",
           "SEEDS": "1 2", "OUTPUT_ROOT": "o"}
    jobs = grid_jobs(spec_from_env("few_shot", ["btmri", "covid"], env))
    assert len(jobs) == 2 * 2 * 5 * 2 * 2
    outs = [j.cells[0].out for j in jobs]
    assert len(set(outs)) == len(outs)
    head = "o/few_shot/btmri"
    assert outs[:5] == [f"{head}/CoOp/BiomedCLIP/shots1/seed1", f"{head}/CoOp/BiomedCLIP/shots1/seed2",
                        f"{head}/CoOp/BiomedCLIP/shots4/seed1", f"{head}/CoOp/BiomedCLIP/shots4/seed2",
                        f"{head}/OGKD/BiomedCLIP/shots1/seed1"]
    # backbone first: a worker (one backbone built at a time) meets each backbone in one stretch
    backbones = [j.cells[0].out.split("/")[4] for j in jobs]
    assert backbones == [b for b in ("BiomedCLIP", "PubMedCLIP", "PMC-CLIP", "CLIP", "ViT-B%2F16") for _ in range(16)]
    vit = next(j.cells[0] for j in jobs if "ViT" in j.cells[0].out)
    assert vit.out == f"{head}/CoOp/ViT-B%2F16/shots1/seed1" and vit.label == "btmri CoOp ViT-B/16 shots1 seed1"
    assert vit.argv[vit.argv.index("MODEL.BACKBONE.NAME") + 1] == "ViT-B/16"
    for job in jobs:  # each cell's backbone argument is the one its path names
        argv = job.cells[0].argv
        assert backbone_folder(argv[argv.index("MODEL.BACKBONE.NAME") + 1]) == job.cells[0].out.split("/")[4]
    b2n_env = {**env, "BACKBONE": "CLIP local-dir:/m/x", "TRAINERS": "OGKD", "SEEDS": "3", "SHOTS": ""}
    clip, b2n = grid_jobs(spec_from_env("base_to_novel", ["btmri"], b2n_env))
    assert clip.cells[0].out == "o/base_to_novel/btmri/OGKD/CLIP/shots16/seed3/base"
    base, new = b2n.cells
    assert base.out == "o/base_to_novel/btmri/OGKD/local-dir%3A%2Fm%2Fx/shots16/seed3/base"
    assert new.argv[new.argv.index("--model-dir") + 1] == base.out
    # a list with a repeat runs each cell once
    assert len(grid_jobs(spec_from_env("few_shot", ["btmri"], {"BACKBONE": "CLIP CLIP", "SHOTS": "1 1"}))) == 3


def test_demo_cells_keep_the_demo_paths_labels_and_knobs() -> None:
    env = {"OUTPUT_ROOT": "out/demo", "SHOTS": "4", "SEEDS": "1 2", "EPOCHS": "3", "LOADER_WORKERS": "0"}
    jobs = demo_jobs(["ZeroshotCLIP", "CoOp"], ["OGKD"], env)
    labels = [c.label for j in jobs for c in j.cells]
    assert labels == ["ZeroshotCLIP few-shot K=4 seed 1", "ZeroshotCLIP few-shot K=4 seed 2",
                      "CoOp few-shot K=4 seed 1", "CoOp few-shot K=4 seed 2", "OGKD base-to-novel K=16 seed 1: base",
                      "OGKD base-to-novel K=16 seed 1: novel"]
    assert jobs[0].cells[0].out == "out/demo/few_shot/synthlesion_clinical/ZeroshotCLIP/shots4/seed1"
    assert jobs[-1].cells[1].out == "out/demo/base_to_novel/synthlesion_clinical/OGKD/shots16/seed1/new"
    argv = jobs[2].cells[0].argv
    assert list(argv[argv.index("MODEL.BACKBONE.NAME"):]) == [
        "MODEL.BACKBONE.NAME", "synthlesion-clinical-clip", "VERBOSE", "False", "USE_CUDA", "False",
        "OPTIM.MAX_EPOCH", "3", "DATALOADER.NUM_WORKERS", "0"]
    other = demo_jobs(["CoOp"], [], {"DATASET": "synthlesion", "SEEDS": "1"})[0].cells[0]
    assert other.out == "output/demo/few_shot/synthlesion/CoOp/shots4/seed1" and "synthlesion-clip" in other.argv
    with pytest.raises(GridError, match="DATASET must be one of synthlesion_clinical, synthlesion, synthmed"):
        demo_jobs(["CoOp"], [], {"DATASET": "btmri"})


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cells", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize(("args", "env", "message"), [
    (["few_shot", "--datasets", "covidd"], {}, "error: no configs/datasets/covidd.yaml; known: btmri busi "),
    (["few_shot", "--datasets", "btmri"], {"TRAINERS": "CoOp Nope"},
     "error: no config for trainer 'Nope': there is no configs/trainers/Nope/; trainers: BiomedCoOp "),
    (["base_to_novel", "--datasets", "busi"], {}, "error: no config for trainer 'OGKD' (base_to_novel, busi)"),
    (["few_shot", "--datasets", "btmri"], {"SEEDS": "1 two"}, "error: SEEDS lists whole numbers"),
    (["few_shot", "--datasets", "btmri", "--bogus"], {}, "error: unrecognized arguments: --bogus (see --help)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str],
                                          message: str) -> None:
    proc = cli(*args, "--cells-file", str(tmp_path / "cells.tsv"), OUTPUT_ROOT=str(tmp_path / "out"), **env)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "cells.tsv").exists()
    assert not (tmp_path / "out").exists()


def test_the_cells_file_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "cells.tsv"
    proc = cli("base_to_novel", "--datasets", "btmri", "covid", "--cells-file", str(f), TRAINERS="CoOp", SEEDS="1 2",
               BACKBONE="CLIP ViT-B/16", OUTPUT_ROOT="o")
    assert proc.returncode == 0, proc.stderr
    env = {"TRAINERS": "CoOp", "SEEDS": "1 2", "BACKBONE": "CLIP ViT-B/16", "OUTPUT_ROOT": "o"}
    want = grid_jobs(spec_from_env("base_to_novel", ["btmri", "covid"], env))
    assert read_cells(f) == want and len(want) == 8 and all(len(j.cells) == 2 for j in want)


def test_summarize_reads_a_tree_with_several_backbones(tmp_path: Path) -> None:
    """scripts/summarize.py finds runs by walking for metrics.json and tells backbones apart by the metrics' own
    "backbone" field, so a tree with backbone folders (escaped names included) gives one column per backbone."""
    root = tmp_path / "few_shot"
    for backbone, acc in (("CLIP", 50.0), ("ViT-B/16", 70.0)):
        for seed in (1, 2):
            run = Path(run_dir(str(tmp_path), "few_shot", "btmri", "CoOp", 4, seed, backbone))
            run.mkdir(parents=True)
            write_metrics(run / "metrics.json", {"dataset": "BTMRI", "trainer": "CoOp", "backbone": backbone,
                                                 "seed": seed, "shots": 4, "subsample": "all",
                                                 "accuracy": acc + seed})
    assert (root / "btmri/CoOp/ViT-B%2F16/shots4/seed2/metrics.json").is_file()
    proc = subprocess.run([sys.executable, "scripts/summarize.py", str(root), "--format", "json"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads((root / "summary.json").read_text()) if r["dataset"] == "BTMRI"]
    assert {r["backbone"]: (r["mean"], r["n_seeds"]) for r in rows} == {"CLIP": (51.5, 2), "ViT-B/16": (71.5, 2)}


def test_the_feature_cache_key_covers_the_backbone(synth_root: Path, tmp_path: Path) -> None:
    from engine.cache import key_digest
    from tests.test_frozen_paths import make_trainer

    keys = {}
    for name in ("tiny-biomedclip", "tiny-clip"):
        t = make_trainer("ZeroshotCLIP", synth_root, tmp_path / name, "MODEL.BACKBONE.NAME", name,
                         "CACHE.DIR", str(tmp_path / "cache"))
        keys[name] = t.cache_key("image-features", split="test")
        assert keys[name]["backbone"] == name
    a, b = keys.values()
    assert a["weights"] != b["weights"] and key_digest(a) != key_digest(b)
