"""The grid's rules, once: protocols, the cell list, run directories, trainer configs, fail-fast checks, and the
``train.py`` arguments of each cell.

A grid is backbones × datasets × trainers × shots × seeds (:class:`GridSpec`). Each combination is one job
(:class:`engine.grid_jobs.Job`): one cell for few-shot, two for base-to-novel (train on the base classes, then
evaluate that checkpoint on the new ones). Run directories (:func:`run_dir`)::

    OUTPUT_ROOT/few_shot/<dataset>/<trainer>/shots<K>/seed<S>/                 one backbone
    OUTPUT_ROOT/few_shot/<dataset>/<trainer>/<backbone>/shots<K>/seed<S>/      several backbones
    OUTPUT_ROOT/base_to_novel/<dataset>/<trainer>[/<backbone>]/shots<K>/seed<S>/{base,new}/

where ``<backbone>`` is :func:`backbone_folder` of the backbone's name (percent-encoding of every character outside
``A-Z a-z 0-9 _ . - ~``, and of a name that is only dots: ``ViT-B/16`` → ``ViT-B%2F16``). The paths are built as
strings (``OUTPUT_ROOT`` as given, then ``/``-joined parts), as the grid scripts always wrote them.

Trainer config: ``configs/trainers/<T>/<protocol>/<dataset>.yaml``, else ``configs/trainers/<T>/<protocol>.yaml``
(:func:`trainer_config`). Unknown datasets or trainers and missing configs are one :class:`GridError` line naming
what exists (:func:`check`), before any cell starts.

Command line (what ``scripts/run_fewshot.sh``, ``scripts/run_base2novel.sh`` and ``scripts/demo.sh`` call)::

    python -m engine.cells few_shot|base_to_novel [--datasets a b …] [--keep-going] [--wait] [--cells-file F]
    python -m engine.cells demo [--trainers "…"] [--b2n-trainers "…"] [--cells-file F]
    python -m engine.cells ablation [--datasets a b …] [--variants "…"] [--sweeps "…"] [--keep-going] [--wait]
                                    [--cells-file F]     (OGKD's ablation study: engine/ablation.py)

knobs from the environment (:func:`spec_from_env`, :func:`demo_jobs`, :mod:`engine.grid_launch`); ``--cells-file``
writes the cells file (``scripts/grid_runner.py --cells``) instead of running. The engine imports none of its
plugins: the default dataset list is read from ``datasets.catalogue`` only when the command line needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from engine.grid_jobs import Cell, GridError, Job, write_cells
from engine.grid_launch import launch

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: what summarises a protocol folder after a grid (run from the repository root)
SUMMARIZE = "scripts/summarize.py"
#: the longest folder name most file systems take (bytes)
MAX_FOLDER_BYTES = 255


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A protocol: its folder name, its default shots, and the halves of each run (base-to-novel) or none."""

    name: str
    default_shots: tuple[int, ...]
    halves: tuple[str, ...] = ()


PROTOCOLS: dict[str, Protocol] = {
    "few_shot": Protocol("few_shot", (1, 2, 4, 8, 16)),
    "base_to_novel": Protocol("base_to_novel", (16,), ("base", "new")),
}
DEFAULTS = {"DATA_ROOT": "data", "OUTPUT_ROOT": "output", "TRAINERS": "OGKD", "SEEDS": "1 2 3",
            "BACKBONE": "BiomedCLIP", "EXTRA": ""}


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """One grid: the cross product of its lists, and what every cell shares."""

    protocol: str
    datasets: tuple[str, ...]
    trainers: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    backbones: tuple[str, ...]
    data_root: str = "data"
    output_root: str = "output"
    extra: tuple[str, ...] = ()  # KEY VALUE config pairs appended to every cell


# ----------------------------------------------------------------------------------------------------------------
# Names and paths
# ----------------------------------------------------------------------------------------------------------------
def backbone_folder(name: str) -> str:
    """The run-path folder of a backbone name: percent-encoding (UTF-8, ``%XX`` upper case) of every character but
    ``A-Z a-z 0-9 _ . - ~``, so ``/`` and ``:`` never make folders and two names never share a folder; a name of
    dots only is encoded whole (never ``.`` or ``..``). :class:`GridError` for an empty name or one whose folder
    would exceed 255 bytes."""
    if not name:
        raise GridError("an empty backbone name: BACKBONE lists backbone names separated by spaces")
    folder = quote(name, safe="")
    if set(folder) == {"."}:
        folder = "%2E" * len(folder)
    if len(folder.encode()) > MAX_FOLDER_BYTES:
        raise GridError(f"backbone {name!r} makes a folder name of {len(folder.encode())} bytes (the limit is "
                        f"{MAX_FOLDER_BYTES}): give it a shorter name (e.g. a symbolic link to its folder)")
    return folder


def run_dir(output_root: str, protocol: str, dataset: str, trainer: str, shots: int, seed: int,
            backbone: str | None = None) -> str:
    """A run's directory (base-to-novel: the folder of its ``base`` and ``new`` halves). ``backbone``: the
    backbone's name when the grid has several (its :func:`backbone_folder` is inserted after the trainer), else
    None."""
    parts = [protocol, dataset, trainer]
    if backbone is not None:
        parts.append(backbone_folder(backbone))
    return "/".join([output_root, *parts, f"shots{shots}", f"seed{seed}"])


def trainer_config(trainer: str, protocol: str, dataset: str, repo: str | Path = REPO) -> str:
    """The trainer's YAML for this protocol and dataset, relative to the repository: the per-dataset file, else
    the protocol's. :class:`GridError` naming what exists when neither does."""
    root = Path(repo)
    for rel in (f"configs/trainers/{trainer}/{protocol}/{dataset}.yaml", f"configs/trainers/{trainer}/{protocol}.yaml"):
        if (root / rel).is_file():
            return rel
    folder = root / "configs" / "trainers" / trainer
    if not folder.is_dir():
        raise GridError(f"no config for trainer '{trainer}': there is no configs/trainers/{trainer}/; trainers: "
                        f"{' '.join(known_trainers(root))}")
    has = sorted(p.stem for p in (folder / protocol).glob("*.yaml"))
    raise GridError(f"no config for trainer '{trainer}' ({protocol}, {dataset}): expected configs/trainers/{trainer}/"
                    f"{protocol}/{dataset}.yaml or configs/trainers/{trainer}/{protocol}.yaml; its {protocol} configs: "
                    f"{' '.join(has) or 'none'}")


def known_datasets(repo: str | Path = REPO) -> list[str]:
    """The lower-case dataset names with a ``configs/datasets/<name>.yaml``."""
    return sorted(p.stem for p in (Path(repo) / "configs" / "datasets").glob("*.yaml"))


def known_trainers(repo: str | Path = REPO) -> list[str]:
    """The trainers with a folder under ``configs/trainers``."""
    return sorted(p.name for p in (Path(repo) / "configs" / "trainers").iterdir() if p.is_dir())


def check(spec: GridSpec, repo: str | Path = REPO) -> None:
    """Fail fast, before hours of runs: :class:`GridError` (one line naming what exists) for an unknown protocol,
    an unknown dataset, a trainer without a config for a dataset, an empty list or a bad backbone name."""
    if spec.protocol not in PROTOCOLS:
        raise GridError(f"unknown protocol {spec.protocol!r}; protocols: {' '.join(PROTOCOLS)}")
    for what, values in (("datasets", spec.datasets), ("TRAINERS", spec.trainers), ("SHOTS", spec.shots),
                         ("SEEDS", spec.seeds), ("BACKBONE", spec.backbones)):
        if not values:
            raise GridError(f"{what} is empty: name at least one")
    for ds in spec.datasets:
        if not (Path(repo) / "configs" / "datasets" / f"{ds}.yaml").is_file():
            raise GridError(f"no configs/datasets/{ds}.yaml; known: {' '.join(known_datasets(repo))}")
    for ds in spec.datasets:
        for t in spec.trainers:
            trainer_config(t, spec.protocol, ds, repo)
    for b in spec.backbones:
        backbone_folder(b)


# ----------------------------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------------------------
def cell_argv(*, data_root: str, out: str, seed: int, trainer: str, dataset: str, config: str, shots: int,
              backbone: str, extra: Sequence[str] = (), half: str = "", model_dir: str = "") -> tuple[str, ...]:
    """One cell's ``train.py`` arguments. ``half``: ``base`` / ``new`` (base-to-novel); ``model_dir``: evaluate
    that run's final checkpoint (``--eval-only``), as the ``new`` half does with its ``base`` run."""
    argv = ["--root", data_root, "--output-dir", out, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", f"configs/datasets/{dataset}.yaml", "--config-file", config]
    if model_dir:
        argv += ["--eval-only", "--model-dir", model_dir]
    argv += ["DATASET.NUM_SHOTS", str(shots)]
    if half:
        argv += ["DATASET.SUBSAMPLE_CLASSES", half]
    return (*argv, "MODEL.BACKBONE.NAME", backbone, "VERBOSE", "False", *extra)


def run_jobs(protocol: str, *, dataset: str, trainer: str, shots: int, seed: int, backbone: str, run: str,
             config: str, label: str, data_root: str, extra: Sequence[str] = ()) -> Job:
    """The job of one grid point: its cell (few-shot) or its ``base`` then ``new`` cells (base-to-novel, labels
    ``<label> base`` / ``<label> new``) in ``run``."""
    common = {"data_root": data_root, "seed": seed, "trainer": trainer, "dataset": dataset, "config": config,
              "shots": shots, "backbone": backbone, "extra": extra}
    halves = PROTOCOLS[protocol].halves
    if not halves:
        return Job((Cell(label, run, cell_argv(out=run, **common)),))
    base, new = (f"{run}/{h}" for h in halves)
    return Job((Cell(f"{label} {halves[0]}", base, cell_argv(out=base, half=halves[0], **common)),
                Cell(f"{label} {halves[1]}", new, cell_argv(out=new, half=halves[1], model_dir=base, **common))))


def grid_jobs(spec: GridSpec, repo: str | Path = REPO) -> list[Job]:
    """Every job of the grid, checked first (:func:`check`), in the order backbones, datasets, trainers, shots,
    seeds (a worker keeps one backbone built at a time, so it switches backbones as rarely as it can). With one
    backbone the run paths and labels carry no backbone; with several, both do."""
    check(spec, repo)
    several = len(spec.backbones) > 1
    jobs = []
    for b in spec.backbones:  # outermost: a worker holds one backbone at a time (train.main's cache)
        for ds in spec.datasets:
            for t in spec.trainers:
                config = trainer_config(t, spec.protocol, ds, repo)
                for k in spec.shots:
                    for s in spec.seeds:
                        label = f"{ds} {t} {b} shots{k} seed{s}" if several else f"{ds} {t} shots{k} seed{s}"
                        run = run_dir(spec.output_root, spec.protocol, ds, t, k, s, b if several else None)
                        jobs.append(run_jobs(spec.protocol, dataset=ds, trainer=t, shots=k, seed=s, backbone=b,
                                             run=run, config=config, label=label, data_root=spec.data_root,
                                             extra=spec.extra))
    return jobs


# ----------------------------------------------------------------------------------------------------------------
# Environment knobs
# ----------------------------------------------------------------------------------------------------------------
def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def int_list(name: str, raw: str) -> tuple[int, ...]:
    """A space-separated list of whole numbers (duplicates dropped); :class:`GridError` naming the knob."""
    out = []
    for item in raw.split():
        if not re.fullmatch(r"-?\d+", item):
            raise GridError(f"{name} lists whole numbers separated by spaces, got {item!r} in {raw!r}")
        out.append(int(item))
    return tuple(dict.fromkeys(out))


def default_datasets(protocol: str) -> list[str]:
    """The benchmark's datasets for ``protocol`` (few-shot: all 11; base-to-novel: those with a base-to-novel
    split), from ``datasets.catalogue`` (imported here only: the engine does not import its plugins)."""
    catalogue = importlib.import_module("datasets.catalogue")
    return [r.config for r in catalogue.BENCHMARK if protocol == "few_shot" or r.base_to_novel]


def spec_from_env(protocol: str, datasets: Sequence[str], env: Mapping[str, str] | None = None) -> GridSpec:
    """The grid the knobs describe: DATA_ROOT (data), OUTPUT_ROOT (output), TRAINERS (OGKD), SHOTS (the protocol's),
    SEEDS ("1 2 3"), BACKBONE (BiomedCLIP; several separated by spaces), EXTRA (KEY VALUE pairs). An unset or
    empty knob takes its default."""
    env = os.environ if env is None else env
    if protocol not in PROTOCOLS:
        raise GridError(f"unknown protocol {protocol!r}; protocols: {' '.join(PROTOCOLS)}")

    def knob(name: str) -> str:
        return env.get(name) or DEFAULTS.get(name, "")

    shots = env.get("SHOTS") or " ".join(map(str, PROTOCOLS[protocol].default_shots))
    return GridSpec(protocol=protocol, datasets=_unique(datasets) or tuple(default_datasets(protocol)),
                    trainers=_unique(knob("TRAINERS").split()), shots=int_list("SHOTS", shots),
                    seeds=int_list("SEEDS", knob("SEEDS")), backbones=_unique(knob("BACKBONE").split()),
                    data_root=knob("DATA_ROOT"), output_root=knob("OUTPUT_ROOT"), extra=tuple(knob("EXTRA").split()))


DEMO_BACKBONES = {"synthlesion_clinical": "synthlesion-clinical-clip", "synthlesion": "synthlesion-clip",
                  "synthmed": "tiny-biomedclip"}
DEMO_DATASET = "synthlesion_clinical"  # the regime where learning shows most clearly (docs/synthlesion-clinical.md)
DEMO_B2N_SHOTS = 16


def demo_jobs(trainers: Sequence[str], b2n_trainers: Sequence[str], env: Mapping[str, str] | None = None,
              repo: str | Path = REPO) -> list[Job]:
    """The demo's cells (``scripts/demo.sh``): ``trainers`` × SEEDS few-shot at SHOTS (4) on DATASET (one of
    :data:`DEMO_BACKBONES`, default :data:`DEMO_DATASET`), then ``b2n_trainers`` base-to-novel at K=16 with the first
    seed; CPU, quiet; EPOCHS and LOADER_WORKERS override the configs' epochs and data-loader workers. Knobs:
    DATA_ROOT (data), OUTPUT_ROOT (output/demo), BACKBONE (the dataset's in :data:`DEMO_BACKBONES`), SHOTS, SEEDS
    ("1 2")."""
    env = os.environ if env is None else env
    dataset = env.get("DATASET") or DEMO_DATASET
    if dataset not in DEMO_BACKBONES:
        raise GridError(f"DATASET must be one of {', '.join(DEMO_BACKBONES)}, got {dataset!r}")
    backbone = env.get("BACKBONE") or DEMO_BACKBONES[dataset]
    shots = int_list("SHOTS", env.get("SHOTS") or "4")
    seeds = int_list("SEEDS", env.get("SEEDS") or "1 2")
    if len(shots) != 1 or not seeds:
        raise GridError(f"the demo takes one SHOTS value and at least one seed, got SHOTS={shots} SEEDS={seeds}")
    extra = ["USE_CUDA", "False"]
    if env.get("EPOCHS"):
        extra += ["OPTIM.MAX_EPOCH", env["EPOCHS"]]
    if env.get("LOADER_WORKERS"):
        extra += ["DATALOADER.NUM_WORKERS", env["LOADER_WORKERS"]]
    root, data_root = env.get("OUTPUT_ROOT") or "output/demo", env.get("DATA_ROOT") or "data"
    few = GridSpec("few_shot", (dataset,), _unique(trainers), shots, seeds, (backbone,), data_root, root)
    b2n = GridSpec("base_to_novel", (dataset,), _unique(b2n_trainers), (DEMO_B2N_SHOTS,), seeds[:1], (backbone,),
                   data_root, root)
    jobs = []
    for spec, (k,), name in ((few, shots, "few-shot"), (b2n, (DEMO_B2N_SHOTS,), "base-to-novel")):
        if not spec.trainers:
            continue
        check(spec, repo)
        for t in spec.trainers:
            for s in spec.seeds:
                job = run_jobs(spec.protocol, dataset=dataset, trainer=t, shots=k, seed=s, backbone=backbone,
                               run=run_dir(root, spec.protocol, dataset, t, k, s),
                               config=trainer_config(t, spec.protocol, dataset, repo),
                               label=f"{t} {name} K={k} seed {s}", data_root=data_root, extra=extra)
                if spec.protocol == "base_to_novel":  # the demo's words: "…: base", "…: novel"
                    job = Job(tuple(dataclasses.replace(c, label=c.label.rsplit(" ", 1)[0] + ": " + h)
                                    for c, h in zip(job.cells, ("base", "novel"), strict=True)))
                jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see --help)\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m engine.cells", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in PROTOCOLS:
        g = sub.add_parser(name, help=f"the {name} grid (knobs from the environment)")
        g.add_argument("--datasets", nargs="+", default=[], metavar="NAME", help="lower-case dataset names")
        g.add_argument("--keep-going", action="store_true", help="continue past failed cells")
        g.add_argument("--wait", action="store_true", help="LAUNCHER=slurm: follow the job array, then summarise")
        g.add_argument("--cells-file", help="write the cells file and stop (nothing runs)")
    a = sub.add_parser("ablation", help="OGKD's ablation study (scripts/run_ablation.sh; knobs as few_shot, plus "
                                        "VARIANTS and SWEEPS)")
    a.add_argument("--datasets", nargs="+", default=[], metavar="NAME", help="lower-case dataset names")
    a.add_argument("--variants", default=None, help='variants (VARIANTS; default "all": configs/ablations/OGKD/*.yaml)')
    a.add_argument("--sweeps", default=None, help='sweeps (SWEEPS; default "none"; "all": configs/ablations/OGKD/'
                                                  'sweeps/*.yaml)')
    a.add_argument("--keep-going", action="store_true", help="continue past failed cells")
    a.add_argument("--wait", action="store_true", help="LAUNCHER=slurm: follow the job array, then summarise")
    a.add_argument("--cells-file", help="write the cells file and stop (nothing runs)")
    d = sub.add_parser("demo", help="the demo's cells (scripts/demo.sh)")
    d.add_argument("--trainers", default=None, help='few-shot trainers (TRAINERS, "ZeroshotCLIP CoOp BiomedCoOp OGKD")')
    d.add_argument("--b2n-trainers", default=None, help='base-to-novel trainers (B2N_TRAINERS, "ZeroshotCLIP OGKD")')
    d.add_argument("--cells-file", help="write the cells file and stop (nothing runs)")
    return p


def _ablation(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[GridSpec, list[Job]]:
    """The ablation study's grid (:mod:`engine.ablation`): the few-shot knobs (SHOTS default "1 4 16") plus VARIANTS
    (default all) and SWEEPS (default none); the flags win over the knobs."""
    from engine import ablation

    knobs = dict(env)
    knobs["SHOTS"] = env.get("SHOTS") or " ".join(map(str, ablation.DEFAULT_SHOTS))
    spec = spec_from_env("few_shot", args.datasets, knobs)
    repo = ablation.REPO
    variants = ablation.parse_names(args.variants if args.variants is not None else env.get("VARIANTS") or "all",
                                    ablation.known_variants(repo=repo))
    sweeps = ablation.parse_names(args.sweeps if args.sweeps is not None else env.get("SWEEPS") or "none",
                                  ablation.known_sweeps(repo=repo))
    return spec, ablation.ablation_jobs(spec, variants, sweeps, repo=repo)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.cells``: build the cells, then write them (``--cells-file``) or run them
    (:func:`engine.grid_launch.launch`) and, for a grid, summarise its protocol folder. Exit status: 0, 1 when a
    cell failed, 2 on bad input (one ``error:`` line)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    env = dict(os.environ)
    try:
        if args.command == "demo":
            trainers = (args.trainers or env.get("TRAINERS") or "ZeroshotCLIP CoOp BiomedCoOp OGKD").split()
            b2n = (args.b2n_trainers if args.b2n_trainers is not None
                   else env.get("B2N_TRAINERS", "ZeroshotCLIP OGKD")).split()
            jobs = demo_jobs(trainers, b2n, env)
            output_root, wait, keep_going = env.get("OUTPUT_ROOT") or "output/demo", False, False
            env.update(LAUNCHER="local", GPUS="")  # a CPU demo: always here, never pinned
        elif args.command == "ablation":
            spec, jobs = _ablation(args, env)
            output_root, wait, keep_going = spec.output_root, args.wait, args.keep_going
        else:
            spec = spec_from_env(args.command, args.datasets, env)
            jobs = grid_jobs(spec)
            output_root, wait, keep_going = spec.output_root, args.wait, args.keep_going
        if args.cells_file:
            write_cells(jobs, args.cells_file)
            return 0
        status = launch(jobs, output_root, repo=str(REPO), keep_going=keep_going, wait=wait, env=env)
    except GridError as e:
        sys.stderr.write(f"error: {e}\n")  # the command line's one error line (exit 2)
        return 2
    if args.command == "demo" or (env.get("LAUNCHER") == "slurm" and not wait):
        return status
    folder = f"{output_root}/{args.command}"
    if Path(folder).is_dir():
        sys.stdout.flush()  # the progress lines before the tables the summary prints
        layout = ["--layout", "ablation"] if args.command == "ablation" else []
        subprocess.run([sys.executable, str(REPO / SUMMARIZE), folder, "--seeds", *map(str, spec.seeds), *layout],
                       check=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
