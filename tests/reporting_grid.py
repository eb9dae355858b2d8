"""A saved grid for the reporting package: a fixed run tree and every output the command lines write for it.

``build(root)`` writes the same metrics.json / predictions.npz files every time (few-shot and base-to-novel, a
training-free trainer, a 0-epoch trainer whose runs differ, missing seeds, a missing dataset, a base run without its
new half, a name that LaTeX must escape). ``outputs(root)`` runs scripts/summarize.py (every layout and format,
``--order``, ``--seeds``, ``--plots``) and scripts/plot.py on it and returns every file they wrote (the root path
replaced by ``<ROOT>``; figures as their SHA-256, listed in ``figures.sha256``).

The expected outputs live in tests/data/reporting_golden/ and were recorded from the scripts as they were before
the table and figure code moved into ``reporting/`` (commit 2b261b3):

    python tests/reporting_grid.py tests/data/reporting_golden      # (re)record
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.plotdata import PREDICTIONS_FILE, load_predictions, save_predictions  # noqa: E402

CLASSES = ["benign lesion", "malignant lesion", "normal tissue"]
FIGURES = "figures.sha256"


def _run(root: Path, dataset: str, trainer: str, shots: int, seed: int, *, subsample: str = "all",
         epochs: int = 5, constant: bool = False, backbone: str = "tiny-clip") -> None:
    d = root / subsample / dataset / trainer / f"shots{shots}" / f"seed{seed}"
    d.mkdir(parents=True)
    rng = np.random.default_rng([shots + 10, seed, *map(ord, dataset + trainer + subsample)])
    label = rng.integers(0, 3, 60)
    skill = 0.35 + 0.03 * max(shots, 1) + 0.05 * len(trainer) % 3
    pred = np.where(rng.random(60) < min(skill, 0.95), label, rng.integers(0, 3, 60))
    conf = rng.uniform(0.34, 1.0, 60)
    if constant:  # the same predictions whatever the K and seed
        label, pred, conf = np.arange(60) % 3, np.where(np.arange(60) < 24, np.arange(60) % 3, 0), np.full(60, 0.5)
    sha = save_predictions(d / PREDICTIONS_FILE, label=label, pred=pred, confidence=conf, classnames=CLASSES,
                           n_bins=15)
    acc = 100 * float(np.mean(pred == label))
    m = {"split": "test", "dataset": dataset, "trainer": trainer, "backbone": backbone, "seed": seed,
         "shots": shots, "subsample": subsample, "epochs": epochs, "num_samples": 60, "accuracy": acc,
         "macro_f1": acc * 0.9 - (0 if constant else seed), "ece": load_predictions(d / PREDICTIONS_FILE).ece,
         "predictions": {"file": PREDICTIONS_FILE, "sha256": sha}}
    (d / "metrics.json").write_text(json.dumps(m), encoding="utf-8")


def build(root: Path) -> Path:
    """The saved grid under ``root`` (returned)."""
    datasets = ("Alpha", "Beta", "Gam_ma")
    for dataset in datasets:
        for trainer in ("CoOp", "OGKD", "BiomedCoOp"):
            for shots in (1, 4, 16):
                for seed in (1, 2, 3):
                    if (dataset, trainer, shots, seed) == ("Beta", "CoOp", 4, 3):
                        continue  # a missing seed
                    if (dataset, trainer) == ("Gam_ma", "BiomedCoOp") and shots == 1:
                        continue  # no run at all
                    _run(root, dataset, trainer, shots, seed)
        for shots in (1, 16):
            for seed in (1, 2, 3):
                _run(root, dataset, "ZeroshotCLIP", shots, seed, epochs=0, constant=True)  # training-free
                _run(root, dataset, "LinearProbe", shots, seed, epochs=0)  # 0 epochs, runs differ
        _run(root, dataset, "CoOp", -1, 1)  # K=all
        if dataset != "Gam_ma":
            for trainer in ("CoOp", "OGKD", "BiomedCoOp"):
                for seed in (1, 2, 3):
                    _run(root, dataset, trainer, 16, seed, subsample="base")
                    if (dataset, trainer, seed) != ("Alpha", "OGKD", 2):
                        _run(root, dataset, trainer, 16, seed, subsample="new")
    return root


def _summarize(root: Path, *args: str) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "summarize.py"), str(root), *args],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return proc.stdout, proc.stderr


CASES: dict[str, list[str]] = {
    "datasets": ["--format", "md,csv,latex,json"],
    "trainers": ["--layout", "trainers", "--order", "OGKD", "ZeroshotCLIP", "--format", "md,latex"],
    "paper": ["--layout", "paper", "--order", "OGKD", "CoOp", "--format", "md,latex,json"],
    "seeds": ["--seeds", "1", "2", "--metrics", "accuracy", "ece", "--format", "md,csv,latex"],
    "plots": ["--metrics", "accuracy", "--order", "OGKD", "--plots"],
}


def outputs(root: Path) -> dict[str, bytes]:
    """Every output of the command lines on the grid at ``root`` (built by ``build``), by relative name."""
    out: dict[str, bytes] = {}
    text = str(root)
    written = {"summary.md", "summary.csv", "summary.tex", "summary.json", "report.md"}
    for case, args in CASES.items():
        stdout, stderr = _summarize(root, *args)
        out[f"{case}/stdout.txt"] = stdout.replace(text, "<ROOT>").encode()
        out[f"{case}/stderr.txt"] = stderr.replace(text, "<ROOT>").encode()
        for path in sorted(root.iterdir()):
            if path.is_file() and (path.name in written or path.suffix == ".csv"):
                out[f"{case}/{path.name}"] = path.read_bytes().replace(text.encode(), b"<ROOT>")
                path.unlink()
        figures = root / "figures"
        if figures.is_dir():
            lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(figures.iterdir())]
            out[f"{case}/{FIGURES}"] = ("\n".join(lines) + "\n").encode()
            for p in figures.iterdir():
                p.unlink()
            figures.rmdir()
    figs = root.parent / f"{root.name}_figs"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot.py"), str(root), "--out", str(figs),
                           "--order", "BiomedCoOp", "Nobody", "--metric", "macro_f1", "--dataset", "Beta",
                           "--shots", "16", "--formats", "png"], capture_output=True, text=True, cwd=REPO, check=True)
    out["plot/stdout.txt"] = proc.stdout.replace(str(figs), "<FIGS>").encode()
    out["plot/stderr.txt"] = proc.stderr.replace(str(figs), "<FIGS>").replace(text, "<ROOT>").encode()
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(figs.iterdir())]
    out[f"plot/{FIGURES}"] = ("\n".join(lines) + "\n").encode()
    return out


def main(argv: list[str]) -> int:
    dest = Path(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        files = outputs(build(Path(tmp) / "grid"))
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    print(f"wrote {len(files)} files to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
