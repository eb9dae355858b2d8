"""The grid runner (engine/grid.py, scripts/grid_runner.py): reuse of one process for many runs, locks, workers,
bad input, SLURM through submitit's local executor."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.grid import (
    Cell,
    GridError,
    Job,
    SlurmOptions,
    pending_jobs,
    read_cells,
    run_is_complete,
    run_job,
    submitit_executor,
)
from engine.locks import LOCK_NAME, CellLock, _pid_alive, _proc_start, claim
from engine.trainer import COST_KEYS

REPO = Path(__file__).resolve().parents[1]
FAST = ["OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", "tiny-biomedclip",
        "VERBOSE", "False", "DETERMINISTIC", "True", "USE_CUDA", "False"]


def cell_argv(data: Path, out: Path, trainer: str, shots: int, seed: int, *extra: str) -> tuple[str, ...]:
    config = f"configs/trainers/{trainer}/few_shot/synthmed.yaml"
    if not (REPO / config).is_file():
        config = f"configs/trainers/{trainer}/few_shot.yaml"
    return ("--root", str(data), "--output-dir", str(out), "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/synthmed.yaml",
            "--config-file", config, "DATASET.NUM_SHOTS", str(shots),
            *FAST, *extra)


def result(run: Path) -> dict:
    """What must be equal between two runs of one cell: metrics (without costs), config (without OUTPUT_DIR), the
    few-shot split and the checkpoint tensors."""
    m = json.loads((run / "metrics.json").read_text())
    cfg = [ln for ln in (run / "config.yaml").read_text().splitlines() if not ln.startswith("OUTPUT_DIR")]
    ckpts = {}
    for p in sorted(run.glob("*/model.pth.tar-*")):
        ckpts[p.relative_to(run).as_posix()] = torch.load(p, weights_only=True)["state_dict"]
    return {"metrics": {k: v for k, v in m.items() if k not in COST_KEYS}, "config": cfg,
            "split": (run / "fewshot_split.json").read_text(), "ckpts": ckpts}


def assert_same(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"] and a["config"] == b["config"] and a["split"] == b["split"]
    assert a["ckpts"].keys() == b["ckpts"].keys() and a["ckpts"]
    for k in a["ckpts"]:
        for name, t in a["ckpts"][k].items():
            assert torch.equal(t, b["ckpts"][k][name]), (k, name)


def test_engine_imports_none_of_its_plugins() -> None:
    code = ("import sys, engine.config, engine.data, engine.trainer, engine.cache, engine.grid, engine.cells\n"
            "print(sorted(m for m in ('trainers', 'datasets', 'clip_backbones') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_a_cell_after_other_cells_in_one_process_equals_the_cell_alone(synth_root: Path, tmp_path: Path) -> None:
    import train

    target = cell_argv(synth_root, tmp_path / "alone", "CoOp", 2, 1)
    alone = subprocess.run([sys.executable, "train.py", *target], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]

    w = tmp_path / "worker"
    cells = [  # BiomedCoOp leaves BERT dropout on while training; a failing cell; then the cell itself
        Cell("biomedcoop", str(w / "a"), cell_argv(synth_root, w / "a", "BiomedCoOp", 1, 3)),
        Cell("bad", str(w / "b"), cell_argv(synth_root, w / "b", "CoOp", 1, 2, "OPTIM.LR", "nan-ish")),
        Cell("coop", str(w / "c"), cell_argv(synth_root, w / "c", "CoOp", 2, 1)),
    ]
    cache: dict = {}
    got = [r["status"] for job in ([c] for c in cells)
           for r in run_job(Job(tuple(job)), train.main, cache, "test")]
    assert got == ["done", "failed", "done"]
    assert len(cache) == 1  # one backbone, built once
    assert "backbone tiny-biomedclip: reused" in (w / "c" / "log.txt").read_text()
    assert_same(result(w / "c"), result(tmp_path / "alone"))
    assert "Cannot apply command-line overrides" in (w / "b" / "console.log").read_text()
    assert not (w / "b" / "metrics.json").exists() and not list(w.rglob(LOCK_NAME))
    # the run's log is its own: nothing of the other cells in it
    assert "BiomedCoOp" not in (w / "c" / "log.txt").read_text()


def test_cells_file_jobs_and_completeness(tmp_path: Path) -> None:
    f = tmp_path / "cells.tsv"
    a, b = tmp_path / "a", tmp_path / "b"
    f.write_text(f"j1\tA base\t{a}\t--seed\t1\t\nj1\tA new\t{b}\t--eval-only\t\nj2\tB\t{tmp_path / 'c'}\t\n")
    jobs = read_cells(f)
    assert [[c.label for c in j.cells] for j in jobs] == [["A base", "A new"], ["B"]]
    assert jobs[0].cells[0].argv == ("--seed", "1") and jobs[1].cells[0].argv == ()
    a.mkdir()
    (a / "metrics.json").write_text(json.dumps({"accuracy": 50.0}))
    b.mkdir()
    (b / "metrics.json").write_text('{"accuracy": Na')
    assert run_is_complete(a) and not run_is_complete(b) and not run_is_complete(tmp_path / "c")
    said: list[str] = []
    todo, complete = pending_jobs(jobs, said.append)
    assert complete == 1 and [[c.label for c in j.cells] for j in todo] == [["A new"], ["B"]]
    assert said == ["redo   A new: its metrics.json was unreadable (kept as metrics.json.bad): unreadable, not valid "
                    "JSON (Expecting value: line 1 column 14 (char 13)): truncated or damaged"]
    assert (b / "metrics.json.bad").is_file() and not (b / "metrics.json").exists()
    f.write_text("j1\tno run dir\n")
    with pytest.raises(GridError, match="cells.tsv:1"):
        read_cells(f)


def _write_lock(run: Path, **fields: object) -> None:
    run.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": None, "owner": "other",
              "time": time.time(), "token": "t", **fields}
    (run / LOCK_NAME).write_text(json.dumps(record))


def test_locks_live_dead_foreign_and_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    lock = claim(run, "me")
    assert isinstance(lock, CellLock) and json.loads((run / LOCK_NAME).read_text())["owner"] == "me"
    held = claim(run, "someone else")  # our process is alive: the second claimant is refused
    assert isinstance(held, dict) and held["owner"] == "me"
    lock.release()
    assert not (run / LOCK_NAME).exists()
    # a dead process on this host: taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lock(run, pid=int(dead.stdout))
    assert isinstance(claim(run, "me"), CellLock)
    # another host: alive while its heartbeat is fresh, dead after the timeout
    _write_lock(run, host="elsewhere", pid=1)
    assert isinstance(claim(run, "me", stale_after_s=60), dict)
    old = time.time() - 120
    os.utime(run / LOCK_NAME, (old, old))
    taken = claim(run, "me", stale_after_s=60)
    assert isinstance(taken, CellLock)
    # a requeued SLURM task takes back its own lock, even from another host
    _write_lock(run, host="elsewhere", owner="slurm:42")
    assert isinstance(claim(run, "slurm:42"), CellLock)
    # releasing a lock someone else took over leaves theirs in place
    taken.release()
    assert (run / LOCK_NAME).is_file()


def runner(cells: Path, out: Path, *args: str, **env: str) -> subprocess.Popen:
    full = {**os.environ, **env}
    return subprocess.Popen([sys.executable, "scripts/grid_runner.py", "--cells", str(cells), "--output-root",
                             str(out), *args], cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_grid_commands_on_one_output_root_never_run_a_cell_twice(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lines = []
    for shots in (1, 2):
        for seed in (1, 2):
            run = out / f"shots{shots}" / f"seed{seed}"
            argv = cell_argv(synth_root, run, "CoOp", shots, seed)
            lines.append("\t".join([str(run), f"CoOp shots{shots} seed{seed}", str(run), *argv]))
    cells = tmp_path / "cells.tsv"
    cells.write_text("\n".join(lines) + "\n")
    a = runner(cells, out, WORKERS="2")
    b = runner(cells, out, WORKERS="1")
    (a_out, a_err), (b_out, b_err) = a.communicate(timeout=600), b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, a_err[-2000:] + b_err[-2000:]
    runs = sorted(out.rglob("metrics.json"))
    assert len(runs) == 4 and not list(out.rglob(LOCK_NAME))
    for m in runs:  # every run started once: one header in its log
        assert (m.parent / "log.txt").read_text().count("command:") == 1, m
    done = a_out.count("] done ") + b_out.count("] done ")
    assert done == 4, a_out + b_out
    assert "worker 0" in a_out and "worker 1" in a_out
    assert "runs: " in a_out and "ETA" in a_out + b_out


def test_bad_input_is_one_line_before_any_cell(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "out" / "r"
    cells = tmp_path / "cells.tsv"
    cells.write_text("\t".join([str(run), "r", str(run), *cell_argv(synth_root, run, "CoOp", 1, 1)]) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        ({"GPUS": "0 7"} if not torch.cuda.is_available() else {"GPUS": "99"}, "which does not exist"),
        ({"LAUNCHER": "slurm", "PATH": os.path.dirname(sys.executable)}, "LAUNCHER=slurm needs"),
        ({"WORKERS": "two"}, "WORKERS must be a whole number"),
    ]
    for env, message in cases:
        p = runner(cells, tmp_path / "out", **env)
        so, se = p.communicate(timeout=120)
        assert p.returncode == 2 and se.strip().startswith("error:") and message in se, (env, se)
        assert len(se.strip().splitlines()) == 1 and not run.exists(), se
    p = runner(cells, blocker / "out")
    so, se = p.communicate(timeout=120)
    assert p.returncode == 2 and "is not writable" in se and len(se.strip().splitlines()) == 1


def test_slurm_without_submitit_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(GridError, match="pip install submitit"):
        submitit_executor(SlurmOptions(folder=str(tmp_path)))


def test_a_foreign_lock_skips_the_cell_with_its_holder(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "out" / "r"
    _write_lock(run, owner="grid:otherhost:1", host="otherhost", pid=1)
    cells = tmp_path / "cells.tsv"
    cells.write_text("\t".join([str(run), "the cell", str(run), *cell_argv(synth_root, run, "CoOp", 1, 1)]) + "\n")
    p = runner(cells, tmp_path / "out")
    so, se = p.communicate(timeout=300)
    assert p.returncode == 0, se
    assert "skip   the cell: held by otherhost pid 1 (grid:otherhost:1)" in so
    assert "1 held by another grid command" in so and not (run / "metrics.json").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="submitit's local executor and /proc")
def test_slurm_array_through_submitit_local_requeued_mid_cell_resumes(synth_root: Path, tmp_path: Path) -> None:
    """LAUNCHER=slurm end to end on submitit's local executor: the task is pre-empted (SIGUSR2, what SLURM sends)
    in the middle of its cell, requeued, and resumes from the cell's last epoch; --wait prints the summary."""
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    env = {**os.environ, "DATA_ROOT": str(synth_root), "OUTPUT_ROOT": str(out), "BACKBONE": "tiny-biomedclip",
           "TRAINERS": "CoOp", "SHOTS": "8", "SEEDS": "1", "LAUNCHER": "slurm", "SLURM_EXECUTOR": "local",
           "EXTRA": "OPTIM.MAX_EPOCH 3 DATALOADER.NUM_WORKERS 0 TRAIN.ENCODE_BATCH_SIZE 0 USE_CUDA False"}
    proc = subprocess.Popen(["bash", "scripts/run_fewshot.sh", "--datasets", "synthmed", "--wait"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = out / "few_shot/synthmed/CoOp/shots8/seed1"
    deadline = time.time() + 300
    while not (run / "prompt_learner" / "checkpoint").is_file():  # epoch 1 is saved
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.kill(json.loads((run / LOCK_NAME).read_text())["pid"], signal.SIGUSR2)
    so, se = proc.communicate(timeout=600)
    assert proc.returncode == 0, so + se
    assert "submitted job array" in so and "logs in" in so and "runs: 1 done" in so, so
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and log.count("command:") == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
    assert not (run / LOCK_NAME).exists()


def fake_jobs(root: Path, spec: dict[str, list[str]]) -> list[Job]:
    """Jobs of fake cells: {job: [cell flags, …]} (a flag "" is a plain cell)."""
    return [Job(tuple(Cell(f"{j}/{i}", str(root / j / str(i)), ("--output-dir", str(root / j / str(i)),
                                                                  *flags.split()))
                      for i, flags in enumerate(cells))) for j, cells in spec.items()]


def test_local_workers_progress_failures_and_a_killed_worker(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engine.grid import run_local

    fn = "tests.grid_fake_cell:main"
    jobs = fake_jobs(tmp_path, {"a": ["", ""], "b": ["--fail", ""], "c": ["--sleep 0.5"], "d": ["--die", ""],
                                "e": [""]})
    status = run_local(jobs, fn_spec=fn, workers=2, keep_going=True)
    out, err = capsys.readouterr()
    assert status == 1
    assert "grid: 8 cells, 0 already complete, 8 to run on 2 worker(s)" in out
    assert "[8/8]" in out + err and "ETA" in out
    assert "FAILED b/0 (worker" in err and "    error: something went wrong" in err
    assert "skip   b/1: it needs b/0, which failed" in err
    assert "FAILED d/0" in err and "its worker died (exit code -9)" in err and "skip   d/1" in err
    assert "runs: 4 done, 0 already complete, 2 failed, 2 skipped" in out
    assert run_is_complete(tmp_path / "e" / "0") and not list(tmp_path.rglob(LOCK_NAME))
    # a job's cells ran in one process, one after the other; the worker keeps its state between cells
    assert "call 2 in process" in (tmp_path / "a" / "1" / "console.log").read_text()
    # without --keep-going no new cell starts after the first failure; rerunning finishes only what is missing
    jobs = fake_jobs(tmp_path / "again", {"a": ["--fail"], "b": [""], "c": [""]})
    assert run_local(jobs, fn_spec=fn, workers=1) == 1
    out, err = capsys.readouterr()
    assert "stopping at the first failure" in err and "b/0" not in out + err
    todo, complete = pending_jobs(fake_jobs(tmp_path / "again", {"a": [""], "b": [""], "c": [""]}), print)
    assert complete == 0 and len(todo) == 3
    assert run_local(todo, fn_spec=fn, workers=1) == 0


def test_a_cell_may_start_processes_of_its_own(tmp_path: Path) -> None:
    """Regression: the workers were daemonic processes, so every cell whose data loader starts workers
    (DATALOADER.NUM_WORKERS > 0: 8 in the paper configs) failed with "daemonic processes are not allowed to have
    children"."""
    from engine.grid import run_local

    jobs = fake_jobs(tmp_path, {"a": ["--child"], "b": ["--child"]})
    assert run_local(jobs, fn_spec="tests.grid_fake_cell:main", workers=2) == 0
    for job in "ab":
        assert run_is_complete(tmp_path / job / "0")
        assert "child process exit code 0" in (tmp_path / job / "0" / "console.log").read_text()


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            if f"\nPPid:\t{pid}\n" in status.read_text():
                out.append(int(status.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except OSError:
        return False


def test_workers_end_when_their_coordinator_is_killed(tmp_path: Path) -> None:
    """Workers are not daemonic: when the coordinator is killed (kill -9), an idle worker ends within
    WORKER_POLL_S and a busy one after its cell, instead of waiting for work forever."""
    jobs = fake_jobs(tmp_path, {"a": [""], "b": ["--sleep 4"]})
    cells = tmp_path / "cells.tsv"
    cells.write_text("".join("\t".join([j.cells[0].label, j.cells[0].label, j.cells[0].out, *j.cells[0].argv]) + "\n"
                             for j in jobs))
    code = ("import sys; from engine.grid import read_cells, run_local; "
            f"sys.exit(run_local(read_cells({str(cells)!r}), fn_spec='tests.grid_fake_cell:main', workers=2))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # a/0 is done: one worker idle, the other in b/0
        if line.startswith("[1/2]"):
            break
    workers = [pid for pid in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2, workers
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "worker processes outlived their coordinator"


def test_ctrl_c_stops_the_workers_and_loses_only_the_cell_in_flight(tmp_path: Path) -> None:
    jobs = fake_jobs(tmp_path, {"a": [""], "b": ["--sleep 60"], "c": [""]})
    cells = tmp_path / "cells.tsv"
    cells.write_text("".join("\t".join([j.cells[0].label, j.cells[0].label, j.cells[0].out, *j.cells[0].argv]) + "\n"
                             for j in jobs))
    code = ("import sys; from engine.grid import read_cells, run_local; "
            f"sys.exit(run_local(read_cells({str(cells)!r}), fn_spec='tests.grid_fake_cell:main', workers=1))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:  # wait until the long cell runs
        if line.startswith("run    b/0"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: stopping the workers" in err, out + err
    assert run_is_complete(tmp_path / "a" / "0") and not (tmp_path / "b" / "0" / "metrics.json").exists()
    assert not list(tmp_path.rglob(LOCK_NAME)) and not (tmp_path / "c" / "0").exists()


def test_a_killed_unreaped_holder_is_dead() -> None:
    """A worker SIGKILLed together with its parent stays a zombie until something reaps it: its pid still answers
    kill(pid, 0), yet it holds nothing (regression: a whole grid killed with kill -9 left its cell "held")."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = _proc_start(child.pid)
    assert _pid_alive(child.pid, start)
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, 0)  # the zombie's pid still exists
    assert not _pid_alive(child.pid, start)
    child.wait()
