"""OGKD's ablation study: variants and sweeps → cells and paths, the override files, the coop variant's loss, bad
input, and the ablation layout of summarize.py on hand-made runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import ablation
from engine.cells import GridSpec
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from engine.grid import GridError
from engine.results import write_metrics

REPO = Path(__file__).resolve().parents[1]
DS = "synthlesion_clinical"
CONFIG = f"configs/trainers/OGKD/few_shot/{DS}.yaml"


def spec(**kw: object) -> GridSpec:
    base = {"protocol": "few_shot", "datasets": (DS,), "trainers": ("OGKD",), "shots": (1, 4), "seeds": (1, 2),
            "backbones": ("synthlesion-clinical-clip",), "data_root": "D", "output_root": "O"}
    return GridSpec(**{**base, **kw})


def argv_pairs(argv: tuple[str, ...]) -> dict[str, str]:
    """The KEY VALUE pairs after the config file (the last value of a key wins, as in the config merge)."""
    i = argv.index("--config-file") + 2
    rest = argv[i:]
    return dict(zip(rest[0::2], rest[1::2]))


def test_variants_expand_into_cells_paths_and_overrides() -> None:
    jobs = ablation.ablation_jobs(spec(), ablation.known_variants(), [])
    assert ablation.known_variants() == ["coop", "+sccm", "+kd", "+gad", "+lgd", "full"]
    assert len(jobs) == 6 * 2 * 2
    outs = [j.cells[0].out for j in jobs]
    assert outs[0] == f"O/ablation/{DS}/OGKD/coop/shots1/seed1"
    assert outs[-1] == f"O/ablation/{DS}/OGKD/full/shots4/seed2"
    assert len(set(outs)) == len(outs)
    by_point = {j.cells[0].out.split("/")[4]: j.cells[0].argv for j in jobs}
    coop, kd, full = (argv_pairs(by_point[p]) for p in ("coop", "+kd", "full"))
    assert CONFIG in by_point["coop"]
    assert coop["TRAINER.OGKD.LAMBDA_SCCM"] == coop["TRAINER.OGKD.LAMBDA_GAD"] == "0.0"
    assert coop["TRAINER.OGKD.LAMBDA_LGD"] == "0.0" and coop["ABLATION.NAME"] == "'coop'"
    assert kd["TRAINER.OGKD.GAMMA"] == "0.0" and kd["TRAINER.OGKD.LAMBDA_GAD"] == "1.0"
    assert not any(k.startswith("TRAINER.OGKD") for k in full) and full["ABLATION.NAME"] == "'full'"


def test_sweeps_add_full_once_and_reuse_it_for_the_default_value(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "configs/ablations/OGKD/sweeps/gamma.yaml").write_text(
        "KEY: TRAINER.OGKD.GAMMA\nVALUES: [0.1, 0.3, 1]\n")  # 0.3 is the config's own value; 1 fits a float key
    jobs = ablation.ablation_jobs(spec(shots=(4,), seeds=(1,), extra=("OPTIM.MAX_EPOCH", "2")), ["coop"], ["gamma"],
                                  repo=tmp_path)
    points = [j.cells[0].out.split("/")[4] for j in jobs]
    assert points == ["coop", "full", "gamma=0.1", "gamma=1"]
    pairs = argv_pairs(jobs[3].cells[0].argv)
    assert pairs["TRAINER.OGKD.GAMMA"] == "1.0" and pairs["ABLATION.NAME"] == "'gamma=1'"
    assert pairs["OPTIM.MAX_EPOCH"] == "2"  # EXTRA after the variant's pairs


def test_several_backbones_put_the_backbone_before_the_point() -> None:
    jobs = ablation.ablation_jobs(spec(backbones=("a", "b/c"), shots=(1,), seeds=(1,)), ["full"], [])
    assert [j.cells[0].out for j in jobs] == [f"O/ablation/{DS}/OGKD/a/full/shots1/seed1",
                                              f"O/ablation/{DS}/OGKD/b%2Fc/full/shots1/seed1"]


@pytest.mark.parametrize("variant", ["coop", "+sccm", "+kd", "+gad", "+lgd", "full"])
def test_each_override_file_loads_strictly_into_a_valid_config(variant: str) -> None:
    cfg = get_cfg_default()
    merge_from_file(cfg, f"configs/datasets/{DS}.yaml")
    merge_from_file(cfg, CONFIG)
    merge_from_list(cfg, [*ablation.pairs(ablation.load_variant(variant)), "ABLATION.NAME", repr(variant)])
    c = cfg.TRAINER.OGKD
    weights = (c.LAMBDA_SCCM, c.LAMBDA_GAD, c.LAMBDA_LGD, c.GAMMA)
    assert cfg.ABLATION.NAME == variant
    assert weights == {"coop": (0.0, 0.0, 0.0, 0.3), "+sccm": (1.0, 0.0, 0.0, 0.3), "+kd": (1.0, 1.0, 0.0, 0.0),
                       "+gad": (1.0, 1.0, 0.0, 0.3), "+lgd": (1.0, 0.0, 0.5, 0.3),
                       "full": (1.0, 1.0, 0.5, 0.3)}[variant]


def test_every_sweep_file_is_well_formed_and_skips_no_value() -> None:
    cfg = ablation.base_config(DS)
    for name in ablation.known_sweeps():
        key, values = ablation.load_sweep(name)
        assert key == f"TRAINER.OGKD.{name.upper()}"  # reporting finds the default under this key
        assert len(values) >= 2 and ablation.get_key(cfg, key) not in values


def test_the_coop_variant_loss_is_the_cross_entropy(synth_root: Path, tmp_path: Path) -> None:
    """With every SCCM / distillation weight 0, one step's loss is CE(s·g·tᵀ, y), recomputed by hand."""
    from torch.nn import functional as F

    from trainers import build_trainer

    cfg = get_cfg_default()
    merge_from_file(cfg, "configs/datasets/synthmed.yaml")
    merge_from_file(cfg, "configs/trainers/OGKD/few_shot/synthmed.yaml")
    merge_from_list(cfg, ["DATASET.ROOT", str(synth_root), "OUTPUT_DIR", str(tmp_path), "SEED", "1",
                          "TRAINER.NAME", "OGKD", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
                          "MODEL.BACKBONE.NAME", "tiny-biomedclip", "DATALOADER.NUM_WORKERS", "0", "VERBOSE", "False",
                          "TRAINER.OGKD.TEXT_DROPOUT", "False", *ablation.pairs(ablation.load_variant("coop"))])
    trainer = build_trainer(cfg)
    assert not trainer.needs_patches  # LGD off: the patch tokens are not even computed
    trainer.before_train()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.dm.train_loader_x))
    images, labels = trainer.parse_batch(batch)
    with torch.no_grad():
        g = F.normalize(trainer.backbone.encode_image(images)[0], dim=-1)
        pl = trainer.prompt_learner
        t = F.normalize(trainer.backbone.encode_text_from_embeddings(pl(), pl.tokenized_prompts), dim=-1)
        logits = trainer.backbone.logit_scale * g @ t.t()
        ce = -torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).mean()  # CE written out
    out = trainer.forward_backward(batch)
    assert out["sccm"] == 0 and out["gad"] == 0 and "lgd" not in out
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["loss"], ce)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cells", "ablation", *args], cwd=REPO, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=120)


def test_an_unknown_variant_is_one_line_listing_the_variants(tmp_path: Path) -> None:
    r = cli("--datasets", DS, "--variants", "coop nope", OUTPUT_ROOT=str(tmp_path / "o"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: unknown ablation variant 'nope'; variants: coop +sccm +kd +gad +lgd full\n"
    assert not (tmp_path / "o").exists()  # before any run
    r = cli("--datasets", DS, "--sweeps", "beta", OUTPUT_ROOT=str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown ablation sweep 'beta'; sweeps: alpha gamma")
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("values, what", [("[0.1, high]", "'high' (str)"), ("[true]", "True (bool)")])
def test_a_sweep_value_of_the_wrong_type_is_one_line_naming_the_key(tmp_path: Path, values: str, what: str,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from engine import cells

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "configs/ablations/OGKD/sweeps/gamma.yaml").write_text(f"KEY: TRAINER.OGKD.GAMMA\nVALUES: {values}\n")
    monkeypatch.setattr(ablation, "REPO", tmp_path)
    monkeypatch.setattr(cells, "REPO", tmp_path)
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "o"))
    assert cells.main(["ablation", "--datasets", DS, "--sweeps", "gamma"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: sweep 'gamma': TRAINER.OGKD.GAMMA takes a float like 0.3, got {what} in "
                   f"configs/ablations/OGKD/sweeps/gamma.yaml\n")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------- the layout
ACC = {  # point → K → seed → accuracy
    "coop": {1: {1: 50.0, 2: 52.0}, 4: {1: 60.0, 2: 62.0}},
    "+kd": {1: {1: 55.0, 2: 55.0}, 4: {1: 63.0, 2: 65.0}},
    "full": {1: {1: 54.0, 2: 58.0}, 4: {1: 66.0, 2: 66.0}},
    "gamma=0.1": {1: {1: 56.0, 2: 56.0}, 4: {1: 61.0, 2: 63.0}},
}


def make_runs(root: Path) -> None:
    for point, by_k in ACC.items():
        for k, by_seed in by_k.items():
            for seed, acc in by_seed.items():
                d = root / "ablation" / DS / "OGKD" / point / f"shots{k}" / f"seed{seed}"
                d.mkdir(parents=True)
                write_metrics(d, {"split": "test", "accuracy": acc, "trainer": "OGKD", "dataset": "SynthLesionClinical",
                                  "backbone": "b", "seed": seed, "shots": k, "subsample": "all", "epochs": 5,
                                  "ablation": point})
                (d / "config.yaml").write_text("TRAINER:\n  OGKD:\n    GAMMA: 0.3\n")


def test_the_ablation_layout_shows_mean_std_and_the_difference_to_full(tmp_path: Path) -> None:
    make_runs(tmp_path)
    r = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path / "ablation"), "--layout", "ablation",
                        "--metrics", "accuracy", "--format", "md,json,latex"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines if ln.startswith("| ")}
    assert row["coop"] == ["51.00 ± 1.00 (Δ -5.00)", "61.00 ± 1.00 (Δ -5.00)"]
    assert row["+kd"] == ["55.00 ± 0.00 (Δ -1.00)", "64.00 ± 1.00 (Δ -2.00)"]
    assert row["full"] == ["56.00 ± 2.00", "66.00 ± 0.00"]
    assert row["gamma=0.1"] == ["56.00 ± 0.00 (Δ +0.00)", "62.00 ± 1.00 (Δ -4.00)"]
    assert row["gamma=0.3 (full)"] == ["56.00 ± 2.00", "66.00 ± 0.00"]
    order = [ln.split("|")[1].strip() for ln in lines if ln.startswith("| ") and "K=1" not in ln]
    assert order == ["coop", "+kd", "full", "gamma=0.1", "gamma=0.3 (full)"]
    records = json.loads((tmp_path / "ablation" / "summary.json").read_text())
    got = {(x["ablation"], x["shots"]): x["difference_to_full"] for x in records if x["dataset"] != "Average"}
    assert got[("coop", 4)] == -5.0 and got[("full", 4)] is None and got[("gamma=0.1", 1)] == 0.0
    assert {x["trainer"] for x in records} == {"OGKD"}
    assert "$\\Delta$ -5.00" in (tmp_path / "ablation" / "summary.tex").read_text()


def test_plot_draws_one_figure_per_sweep(tmp_path: Path) -> None:
    make_runs(tmp_path)
    r = subprocess.run([sys.executable, "scripts/plot.py", str(tmp_path / "ablation"), "--ablation", "--formats",
                        "png"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "ablation" / "figures" / "ablation_gamma_accuracy.png")]


def test_unknown_names_in_the_engine_api_raise_grid_errors() -> None:
    with pytest.raises(GridError, match="variants: coop"):
        ablation.load_variant("nope")
    with pytest.raises(GridError, match="nothing to run"):
        ablation.ablation_jobs(spec(), [], [])
