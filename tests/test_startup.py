"""Warm start: a run's process imports only what the run uses (docs/speed.md, "Warm start").

Plotting (matplotlib), tensorboard (opened with the first training scalars), SLURM (submitit) and, for an
open_clip-only backbone, transformers' model code stay out of a process that builds a trainer. open_clip itself
imports the top-level ``transformers`` package (its ``hf_model`` module, upstream), so the check is on the model code
(``transformers.modeling_utils``, ~2 s of a slow CPU's start), which an HF text tower such as tiny-biomedclip does need.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "torch.utils.tensorboard", "tensorboard", "submitit", "transformers.modeling_utils",
         "sklearn", "scipy")

PROBE = """
import json, sys
import train
def run(backbone, out):
    rc = train.main(["--root", ROOT, "--seed", "1", "--trainer", "CoOp",
                     "--dataset-config-file", "configs/datasets/synthmed.yaml",
                     "--config-file", "configs/trainers/CoOp/few_shot.yaml", "--output-dir", out, "--no-train",
                     "DATASET.NUM_SHOTS", "1", "MODEL.BACKBONE.NAME", backbone, "DATALOADER.NUM_WORKERS", "0",
                     "VERBOSE", "False"])
    return rc, sorted(m for m in HEAVY if m in sys.modules)
first = run("tiny-clip", OUT + "/clip")
second = run("tiny-biomedclip", OUT + "/biomedclip")
print(json.dumps({"tiny-clip": first, "then tiny-biomedclip": second}))
"""


def test_open_clip_run_imports_no_plotting_tensorboard_slurm_or_hf_model_code(synth_root: Path,
                                                                              tmp_path: Path) -> None:
    code = f"ROOT = {str(synth_root)!r}\nOUT = {str(tmp_path)!r}\nHEAVY = {HEAVY!r}\n{PROBE}"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["tiny-clip"] == [0, []]
    # the control: the same probe sees the HF model code once a backbone with an HF text tower is built
    rc, loaded = got["then tiny-biomedclip"]
    assert rc == 0 and "transformers.modeling_utils" in loaded
    assert not {"matplotlib", "torch.utils.tensorboard", "submitit"} & set(loaded)
