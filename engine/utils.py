"""Small shared utilities: logging set-up, seeding, devices, atomic writes, provenance."""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.StreamHandler):
    """Console handler that writes through ``tqdm.write`` so log lines do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class _ConsoleFilter(logging.Filter):
    """Keep records marked ``extra={"file_only": True}`` (e.g. the traceback of an expected error) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


class _QuietFileHandler(logging.FileHandler):
    """``log.txt``: a failed write (full disk, file-size limit) is not printed as a "--- Logging error ---"
    traceback on the console; the run's own writes fail too and end with one ``error:`` line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.write_failed = True


class _OpenClipInfoFilter(logging.Filter):
    """open_clip logs its loading steps at INFO on the root logger; keep only its warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and "open_clip" in record.pathname and record.levelno < logging.WARNING)


def setup_logger(output_dir: str | None = None, *, verbose: bool = True) -> None:
    """Log to the console (via tqdm) and, if ``output_dir`` is given, append to ``output_dir/log.txt``."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_ogkd", False):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    quiet = _OpenClipInfoFilter()
    console = TqdmHandler()
    console.addFilter(quiet)
    console.addFilter(_ConsoleFilter())
    console.setFormatter(logging.Formatter("%(message)s"))
    console._ogkd = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fh = _QuietFileHandler(Path(output_dir) / "log.txt", mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter(LOG_FORMAT))
        fh.addFilter(quiet)
        fh._ogkd = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def track(iterable: Iterable[T], *, total: int, desc: str, unit: str = "images", bar: bool = True,
          size: Callable[[T], int] = lambda _: 1, log_every_s: float = 30.0, summary: bool = True) -> Iterator[T]:
    """Iterate with progress: a tqdm bar on the console (``bar``; it disappears when done) and, whatever ``bar``
    says, a log line (so in ``log.txt``) every ``log_every_s`` seconds with the count, the rate and the ETA, and
    (``summary``) one at the end. ``size(item)``: how many ``unit`` an item counts for (e.g. a batch's images)."""
    from tqdm import tqdm

    start = last = time.perf_counter()
    done = 0
    with tqdm(total=total, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit, leave=False,
              dynamic_ncols=True, disable=not bar) as progress:
        for item in iterable:
            yield item
            n = size(item)
            done += n
            progress.update(n)
            now = time.perf_counter()
            if now - last >= log_every_s and done < total:
                last = now
                rate = done / (now - start)
                eta = datetime.timedelta(seconds=round((total - done) / rate)) if rate > 0 else "?"
                logger.info("%s: %d/%d %s (%.0f%%), %.1f %s/s, eta %s", desc, done, total, unit,
                            100 * done / max(total, 1), rate, unit, eta)
    took = time.perf_counter() - start
    if summary:
        logger.info("%s: %d %s in %.1f s (%.1f %s/s)", desc, done, unit, took, done / took if took > 0 else 0.0,
                    unit)


def resolve_seed(seed: int) -> int:
    """A negative seed means "random": draw one (and let the caller record it). 0 is a valid seed."""
    if seed >= 0:
        return int(seed)
    drawn = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    logger.info("SEED < 0: drew random seed %d (recorded in config.yaml)", drawn)
    return drawn


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (e.g. (seed, "epoch", 3)); independent of PYTHONHASHSEED."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def set_random_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms (cuDNN, cuBLAS workspace) when ``enabled``; torch's defaults otherwise (so a process
    that runs several runs, the grid runner, does not carry one run's setting into the next)."""
    torch.backends.cudnn.deterministic = bool(enabled)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(bool(enabled), warn_only=bool(enabled))
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    logger.info("deterministic mode: torch deterministic algorithms on, cuDNN benchmark off")


def select_device(use_cuda: bool, *, announce: bool = True) -> torch.device:
    """CUDA when asked for and available; otherwise CPU, announced in the log (unless ``announce`` is False)."""
    if use_cuda and torch.cuda.is_available():
        device = torch.device("cuda")
        if announce:
            logger.info("device: %s (%s)", device, torch.cuda.get_device_name(0))
        return device
    if announce and use_cuda:
        logger.warning("CUDA is not available: running on the CPU (set USE_CUDA False to silence this)")
    elif announce:
        logger.info("device: cpu (USE_CUDA False)")
    return torch.device("cpu")


def _umask_mode() -> int:
    """0o666 minus the process umask: what a plain ``open(..., "w")`` would give (mkstemp makes 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file (``mode`` "w" text / "wb" bytes) that appears at ``path`` only when the block ends without error:
    written to a temp file in the same folder, synced, then renamed; on error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name (a failed write to the temp file names the file the user knows)."""
    return e if e.filename else type(e)(e.errno, e.strerror, str(path))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_open`, so an interrupted save never leaves a truncated checkpoint."""
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as e:  # torch.save reports a failed write as RuntimeError ("... file write failed")
        raise OSError(errno.EIO, f"cannot write the checkpoint ({e})", str(path)) from e


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("open_clip", "transformers", "timm", "torchvision"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - provenance only
            out[mod] = "not installed"
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit (with ``-dirty`` if the tree has changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def process_age_s() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included); None where unknown."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def peak_memory_mib(device: torch.device | None = None) -> dict[str, float]:
    """{"peak_rss_mib": the process's peak resident memory} (+ "peak_gpu_mib" on CUDA), for ``metrics.json``."""
    out: dict[str, float] = {}
    try:
        import resource

        out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        pass
    if device is not None and device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
