"""Download, normalise and verify the benchmark datasets.

Usage: ``python scripts/download_data.py --root DIR [--datasets a b …] [--source hf|gdrive] [--check]
[--keep-archives]``, or ``--root DIR --archive FILE --datasets NAME`` to install an archive fetched by hand.

Each dataset ends up as ``DIR/<NAME>/split_<NAME>.json`` + ``DIR/<NAME>/<NAME>/<class_folder>/…`` (SPEC §5). A
dataset that already verifies is skipped without touching the network. Archives come from the Hugging Face
dataset repository (default; falls back to the Google Drive mirror) or from Drive directly (``--source gdrive``).
``--check`` only verifies what is on disk.

Before the first download, one reachability probe per source (a TCP connect, 3 s; the hub counts as unreachable
when ``HF_HUB_OFFLINE`` is set) decides what is tried, so an offline machine does not wait through the hub client's
retries; the result is one line. A failing dataset gets one line (on stderr) naming what to do: on a machine with
network, run the same command and copy the dataset's folder (``<there>/<NAME>/``) to the exact folder printed here,
or fetch ``<NAME>.zip`` by hand and install it with ``--archive``, which unpacks, normalises and verifies it
exactly like a download (the file itself is left where it is). The others carry on; the exit code is 1 if any
failed, 2 on bad arguments. The logic lives in ``datasets/download.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Run as `python scripts/download_data.py` from anywhere: make the repo root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.catalogue import BENCHMARK, HF_DATASET_REPO, DatasetInfo  # noqa: E402
from datasets.download import (  # noqa: E402
    SOURCES,
    ArchiveError,
    DownloadError,
    ensure_dataset,
    format_counts,
    install_archive,
    is_downloadable,
    probe_sources,
    resolve_datasets,
    verify_dataset,
)
from engine.data import DatasetError  # noqa: E402
from engine.registry import RegistryError  # noqa: E402
from engine.utils import setup_logger  # noqa: E402


def _print_report(info: DatasetInfo, report: dict, status: str) -> None:
    print(f"{info.name}: {status} ({format_counts(report)}) at {report['path']}")
    for warning in report["warnings"]:
        print(f"{info.name}: warning: {warning}")


def _check(root: str, info: DatasetInfo) -> bool:
    report = verify_dataset(root, info)
    if report["ok"]:
        _print_report(info, report, "ok")
        return True
    print(f"{info.name}: FAILED: {report['error']}", file=sys.stderr)
    print(f"{info.name}: get it with: {info.how_to_get(root)}", file=sys.stderr)
    return False


def _by_hand(root: str, info: DatasetInfo) -> str:
    """What to do for a dataset that could not be downloaded here: the folder to copy, or the archive to install."""
    here = Path(root).expanduser().resolve() / info.name
    how = (f"on a machine with network run: python scripts/download_data.py --root data --datasets {info.config}, "
           f"then copy its folder data/{info.name}/ to {here}/")
    if info.hf_file:
        url = f"https://huggingface.co/datasets/{HF_DATASET_REPO}/resolve/main/{info.hf_file}"
        how += (f"; or fetch {url} and run: python scripts/download_data.py --root {root} --archive {info.hf_file} "
                f"--datasets {info.config}")
    return how


def _probe_once(args: argparse.Namespace, state: dict) -> None:
    """The reachability probe, before the first download of this run; one line if a source is unreachable."""
    if state.get("probed"):
        return
    state["probed"] = True
    result = probe_sources(args.source)
    names = {"hf": "Hugging Face hub", "gdrive": "Google Drive"}
    if any(result.values()):
        print("network: " + "; ".join(f"{names[s]}: {reason or 'reachable'}" for s, reason in result.items()),
              file=sys.stderr)


def _install(root: str, info: DatasetInfo, archive: str) -> bool:
    path = Path(archive).expanduser()
    if not path.is_file():
        print(f"{info.name}: archive not found: {path}", file=sys.stderr)
        return False
    try:
        report = install_archive(path, root, info)
    except (ArchiveError, DatasetError, OSError) as err:
        print(f"{info.name}: install failed: {' '.join(str(err).split())}", file=sys.stderr)
        return False
    _print_report(info, report, f"installed from {path}, verified")
    return True


def _download(root: str, info: DatasetInfo, args: argparse.Namespace, state: dict | None = None) -> bool:
    if not is_downloadable(info):
        report = verify_dataset(root, info)
        if report["ok"]:
            _print_report(info, report, "verified, skipping")
            return True
        print(f"{info.name}: not downloadable (it is generated); run: {info.how_to_get(root)}", file=sys.stderr)
        return False
    state = state if state is not None else {}
    try:
        report = ensure_dataset(root, info, source=args.source, keep_archive=args.keep_archives,
                                before_fetch=lambda: _probe_once(args, state))
    except DownloadError as err:
        print(f"{info.name}: download failed ({err}); {_by_hand(root, info)}", file=sys.stderr)
        return False
    except (ArchiveError, DatasetError, OSError) as err:
        reason = " ".join(str(err).split())
        print(f"{info.name}: install failed: {reason}", file=sys.stderr)
        return False
    _print_report(info, report, "verified, skipping" if report["action"] == "verified" else "downloaded, verified")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download, normalise and verify the benchmark datasets.")
    parser.add_argument("--root", required=True, help="data root: each dataset goes to ROOT/<NAME>/")
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help="config or registry names (default: the 11 benchmark datasets: "
                             f"{' '.join(r.config for r in BENCHMARK)})")
    parser.add_argument("--source", choices=SOURCES, default="hf",
                        help="hf: Hugging Face hub, falling back to Google Drive (default); gdrive: Drive only")
    parser.add_argument("--check", action="store_true", help="only verify what is on disk (no network)")
    parser.add_argument("--archive", metavar="FILE",
                        help="install this archive (e.g. BTMRI.zip fetched by hand) for the one dataset given by "
                             "--datasets: unpacked, normalised and verified like a download; no network")
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep archives downloaded to ROOT/.downloads (hub files stay in the hub cache anyway)")
    args = parser.parse_args(argv)
    setup_logger(None)
    logging.getLogger("huggingface_hub").propagate = False  # it has its own console handler: print once

    try:
        rows = resolve_datasets(args.datasets)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.archive is not None and (not args.datasets or len(rows) != 1 or args.check):
        print("error: --archive FILE installs one dataset: give exactly one --datasets NAME (and no --check)",
              file=sys.stderr)
        return 2
    ok: list[str] = []
    failed: list[str] = []
    state: dict = {}
    for info in rows:
        if args.archive is not None:
            success = _install(args.root, info, args.archive)
        else:
            success = _check(args.root, info) if args.check else _download(args.root, info, args, state)
        (ok if success else failed).append(info.name)

    verb = "verified" if args.check else "ready"
    line = f"{len(ok)} {verb}, {len(failed)} failed"
    print(line + (f": {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
