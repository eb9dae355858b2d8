"""The 11-dataset catalogue: consistency with configs and SPEC §5, and reading a tree in the released layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from datasets.catalogue import BENCHMARK, CATALOGUE, get_info
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.data import build_dataset
from engine.registry import DATASET_REGISTRY

# SPEC §5: NAME → (config, number of classes, base classes, new classes, train/val/test)
SPEC = {
    "BTMRI": ("btmri", 4, ["glioma tumor", "meningioma tumor"], ["pituitary tumor", "normal brain"],
              (2854, 1141, 1717)),
    "BUSI": ("busi", 3, ["benign tumor", "malignant tumor"], ["normal scan"], (389, 155, 236)),
    "CHMNIST": ("chmnist", 8, ["adipose tissue", "complex stroma", "debris", "empty background"],
                ["immune cells", "normal mucosal glands", "simple stroma", "tumour epithelium"], (2496, 1000, 1504)),
    "COVID_19": ("covid", 4, ["covid lungs", "lung opacity lungs"], ["viral pneumonia lungs", "normal lungs"],
                 (10582, 4232, 6351)),
    "CTKidney": ("ctkidney", 4, ["cyst kidney", "kidney stone"], ["kidney tumor", "normal kidney"],
                 (6221, 2487, 3738)),
    "DermaMNIST": ("dermamnist", 7, ["actinic keratosis", "basal cell carcinoma", "benign keratosis",
                                     "dermatofibroma"], ["melanoma", "melanocytic nevus", "vascular lesion"],
                   (7006, 1003, 2005)),
    "KneeXray": ("kneexray", 5, ["healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis"],
                 ["moderate osteoarthritis", "severe osteoarthritis"], (5778, 826, 1656)),
    "Kvasir": ("kvasir", 8, ["dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum"],
               ["normal pylorus", "normal z line", "polyps", "ulcerative colitis"], (2000, 800, 1200)),
    "LungColon": ("lungcolon", 5, ["colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma"],
                  ["lung benign tissue", "lung squamous cell carcinoma"], (12500, 5000, 7500)),
    "OCTMNIST": ("octmnist", 4, ["choroidal neovascularization", "diabetic macular edema"],
                 ["drusen", "normal OCT scan"], (97477, 10832, 1000)),
    "RETINA": ("retina", 4, ["diabetic retinopathy", "glaucoma"], ["cataract", "normal retina"], (2108, 841, 1268)),
}


def test_catalogue_matches_spec_and_configs() -> None:
    assert [r.name for r in BENCHMARK] == list(SPEC)
    for row in BENCHMARK:
        config, n, base, new, sizes = SPEC[row.name]
        assert (row.config, row.num_classes, list(row.base_classes), list(row.new_classes), row.sizes) == (
            config, n, base, new, sizes), row.name
        assert row.hf_file == f"{row.name}.zip" and len(row.gdrive_id) == 33
        assert row.base_to_novel == (row.name != "BUSI")
        ds_cfg = yaml.safe_load(Path(f"configs/datasets/{row.config}.yaml").read_text())
        assert ds_cfg == {"DATASET": {"NAME": row.name}}
        assert row.name in DATASET_REGISTRY and get_info(row.config) is row
        for trainer in ("OGKD", "BiomedCoOp"):
            assert Path(f"configs/trainers/{trainer}/few_shot/{row.config}.yaml").is_file()
            assert Path(f"configs/trainers/{trainer}/base_to_novel/{row.config}.yaml").is_file() == row.base_to_novel
    # every class of the benchmark is distinct within its dataset and the registry knows every row
    for row in CATALOGUE:
        assert len(set(row.classnames)) == row.num_classes and row.name in DATASET_REGISTRY


def test_released_ogkd_values_in_configs() -> None:
    """Spot checks of SPEC §2.7 / §1.13 values in the shipped per-dataset configs."""
    def load(path: str) -> object:
        cfg = get_cfg_default()
        merge_from_file(cfg, path)
        return cfg

    c = load("configs/trainers/OGKD/few_shot/dermamnist.yaml")
    assert (c.TRAINER.OGKD.LAMBDA_GAD, c.TRAINER.OGKD.LAMBDA_LGD, c.TRAINER.OGKD.GAMMA, c.TRAINER.OGKD.TOP_K_RATIO,
            c.TRAINER.OGKD.ALPHA, c.OPTIM.MAX_EPOCH, c.OPTIM.LR, c.DATALOADER.TRAIN_X.BATCH_SIZE) == (
        24.0, 4.0, 0.6, 0.1, 4.0, 100, 0.0025, 4)
    c = load("configs/trainers/OGKD/base_to_novel/kvasir.yaml")
    assert (c.TRAINER.OGKD.TAU, c.TRAINER.OGKD.LAMBDA_LGD, c.TRAINER.OGKD.TOP_K_RATIO, c.TRAINER.OGKD.ALPHA,
            c.OPTIM.MAX_EPOCH) == (1.25, 22.0, 0.03, 1.0, 50)
    c = load("configs/trainers/BiomedCoOp/few_shot/kneexray.yaml")
    assert (c.TRAINER.BIOMEDCOOP.SCCM_LAMBDA, c.TRAINER.BIOMEDCOOP.KDSP_LAMBDA, c.TRAINER.BIOMEDCOOP.TAU) == (
        5.0, 20.0, 1.75)
    c = load("configs/trainers/BiomedCoOp/base_to_novel/covid.yaml")
    assert (c.TRAINER.BIOMEDCOOP.SCCM_LAMBDA, c.TRAINER.BIOMEDCOOP.KDSP_LAMBDA, c.TRAINER.BIOMEDCOOP.TAU) == (
        20.0, 1.0, 1.25)


def _cfg(root: Path, shots: int = -1, seed: int = 1, subsample: str = "all"):
    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/btmri.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(root), "DATASET.NUM_SHOTS", str(shots), "SEED", str(seed),
                          "DATASET.SUBSAMPLE_CLASSES", subsample])
    return cfg


def test_real_layout_counts_fewshot_and_base_new(btmri_root: Path) -> None:
    full = build_dataset(_cfg(btmri_root))
    assert (len(full.train_x), len(full.val), len(full.test)) == (120, 40, 48)
    assert full.classnames == list(get_info("BTMRI").classnames)  # names from the split file, label-id order
    assert all(Path(d.impath).is_file() for d in full.train_x + full.val + full.test)
    for k in (1, 2, 4, 8, 16):
        fs = build_dataset(_cfg(btmri_root, shots=k, seed=2))
        for label in range(4):
            assert sum(d.label == label for d in fs.train_x) == k
            assert sum(d.label == label for d in fs.val) == min(k, 4)
        assert len(fs.test) == 48
        again = build_dataset(_cfg(btmri_root, shots=k, seed=2))
        assert [d.impath for d in again.train_x] == [d.impath for d in fs.train_x]
        other = build_dataset(_cfg(btmri_root, shots=k, seed=3))
        assert [d.impath for d in other.train_x] != [d.impath for d in fs.train_x]
    base = build_dataset(_cfg(btmri_root, shots=16, subsample="base"))
    new = build_dataset(_cfg(btmri_root, shots=16, subsample="new"))
    assert base.classnames == ["glioma tumor", "meningioma tumor"] and new.classnames == ["pituitary tumor",
                                                                                          "normal brain"]
    assert {d.label for d in new.test} == {0, 1} and len(new.test) == 24 and len(base.train_x) == 32
    assert all(d.classname == new.classnames[d.label] for d in new.test + new.train_x + new.val)
    assert base.classnames_all == full.classnames and new.label_ids_in_all == [2, 3]


def test_missing_image_is_named_with_its_split_entry(btmri_root: Path, tmp_path: Path) -> None:
    import shutil

    from engine.data import DatasetError

    root = tmp_path / "copy"
    shutil.copytree(btmri_root, root)
    split = json.loads((root / "BTMRI" / "split_BTMRI.json").read_text())
    entry = split["val"][3]
    (root / "BTMRI" / "BTMRI" / entry[0]).unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 image\(s\).*val\[3\]") as err:
        build_dataset(_cfg(root))
    assert entry[0] in str(err.value)


def test_missing_split_file_names_path_and_download_command(tmp_path: Path) -> None:
    from engine.data import DatasetError

    (tmp_path / "BTMRI").mkdir()
    with pytest.raises(DatasetError, match=r"split file not found: expected .*split_BTMRI\.json.*"
                                           r"download_data\.py --root .* --datasets btmri"):
        build_dataset(_cfg(tmp_path))


def _class_folders(root: Path, name: str) -> None:
    for cname in ("normal_chest", "pleural_effusion", "lung_nodule"):
        folder = root / name / name / cname
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("L", (9, 9), color=i).save(folder / f"scan {i} (1).png")


def test_custom_dataset_with_generated_split_needs_no_code_edit(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A folder per class + scripts/make_split.py → a dataset the engine reads without a catalogue row (generic
    class, class names from the split file, logged); the printed catalogue row is complete Python."""
    import ast
    import logging
    import subprocess
    import sys

    from datasets.catalogue import DatasetInfo

    _class_folders(tmp_path, "MyScans")
    proc = subprocess.run([sys.executable, "scripts/make_split.py", "--root", str(tmp_path), "--name", "MyScans",
                           "--modality", "chest X-ray"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("DatasetInfo("))
    text = "\n".join(line.strip() for line in lines[start:start + 3])
    assert text.endswith("),")
    row = eval(compile(ast.parse(text.rstrip(","), mode="eval"), "<row>", "eval"), {"DatasetInfo": DatasetInfo})
    assert row == DatasetInfo(name="MyScans", config="myscans", modality="chest X-ray",
                              classnames=("lung nodule", "normal chest", "pleural effusion"),
                              get_command="python scripts/make_split.py --root {root} --name MyScans")
    assert "DATASET.NAME MyScans" in proc.stdout and "No code edit is needed" in proc.stdout

    assert "MyScans" not in DATASET_REGISTRY  # no row: the generic class serves it
    cfg = get_cfg_default()
    merge_from_list(cfg, ["DATASET.NAME", "MyScans", "DATASET.ROOT", str(tmp_path), "DATASET.NUM_SHOTS", "2"])
    with caplog.at_level(logging.INFO):
        ds = build_dataset(cfg)
    assert ds.classnames == ["lung nodule", "normal chest", "pleural effusion"]
    assert len(ds.train_x) == 6 and len(ds.test) == 6
    assert any("MyScans has no catalogue row" in r.message and "generic dataset class" in r.message
               and "split file" in r.message for r in caplog.records)


def test_unknown_dataset_names_both_ways_before_the_backbone(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import clip_backbones
    import train

    def no_backbone(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was built before the dataset was checked")

    monkeypatch.setattr(clip_backbones, "build_backbone", no_backbone)
    (tmp_path / "MyXray2").mkdir()  # a folder, but no split file
    rc = train.main(["--root", str(tmp_path), "--trainer", "ZeroshotCLIP", "--output-dir", str(tmp_path / "out"),
                     "DATASET.NAME", "KneeXray2", "MODEL.BACKBONE.NAME", "tiny-clip"])
    assert rc == 1 and not (tmp_path / "out" / "metrics.json").exists()
    # the console's ERROR lines (the traceback record goes to log.txt only)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and not getattr(r, "file_only", False)]
    assert len(errors) == 1 and "\n" not in errors[0]
    msg = errors[0]
    assert "Unknown dataset 'KneeXray2'" in msg and str(tmp_path / "KneeXray2" / "split_KneeXray2.json") in msg
    assert f"scripts/make_split.py --root {tmp_path} --name KneeXray2" in msg and "datasets/catalogue.py" in msg
    assert "Did you mean 'KneeXray'" in msg
