"""Download, unpack, normalise and verify the 11 benchmark datasets (SPEC §5, §7).

The archives live in the Hugging Face *dataset* repository ``HF_DATASET_REPO`` (one ``<NAME>.zip`` per dataset)
and are mirrored on Google Drive. :func:`ensure_dataset` puts one dataset under ``root`` in the layout
``root/<NAME>/split_<NAME>.json`` + ``root/<NAME>/<NAME>/<class_folder>/…``:

1. if ``root/<NAME>`` already verifies (:func:`verify_dataset`), nothing is done (no network);
2. :func:`fetch_archive`: the hub (resumable, cached by the hub itself), falling back to Google Drive; each
   library's own bounded behaviour (timeouts, its retries) is all there is: no retry loop here;
3. :func:`extract_archive` into ``root/.downloads/<NAME>.extract/`` (members with absolute paths or ``..`` make
   the whole archive refused, before anything is written);
4. :func:`locate_layout` finds the split file and the image folder whatever the archive's nesting;
5. the dataset is assembled complete in ``root/.downloads/<NAME>.staged/<NAME>/``, verified there, and only
   then renamed into ``root/<NAME>`` — a dataset that fails verification never reaches its final place;
6. the staging folders are removed, and so is the archive when it lies under ``root/.downloads`` (a file in
   the Hugging Face cache is the hub's and is never touched) unless ``keep_archive``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tqdm import tqdm

from datasets.biomed import SPLITS, read_split_file
from datasets.catalogue import BENCHMARK, CATALOGUE, HF_DATASET_REPO, DatasetInfo, get_info
from engine.data import DatasetError

logger = logging.getLogger(__name__)

Source = Literal["hf", "gdrive"]
SOURCES: tuple[str, ...] = ("hf", "gdrive")
DOWNLOADS_DIR = ".downloads"  # under the data root: Drive archives and staging folders
GDRIVE_TIMEOUT_S = 60.0  # seconds without a byte before gdown gives up (its default waits forever)
PROGRESS_MIN_FILES = 2000  # show a progress bar over file checks from this many split entries on
LAYOUT_PROBE = 3  # entries per split checked to decide which folder holds the images
REASON_MAX_CHARS = 160
_URL = re.compile(r"https?://([^/\s:]+)\S*?(?=[:;,.)]*(?:\s|$))")  # a URL in a reason is shortened to its host


class DownloadError(RuntimeError):
    """No source could deliver the archive. ``str()`` is one line naming each source's reason."""


class ArchiveError(RuntimeError):
    """The archive is corrupt, unsafe (zip-slip) or its layout cannot be normalised. The message names it."""


def resolve_dataset(name: str) -> DatasetInfo:
    """The catalogue row for a registry name (``COVID_19``) or config name (``covid``), case-insensitively.

    Unknown names raise :class:`engine.registry.RegistryError` with a "did you mean" suggestion."""
    lowered = name.lower()
    for row in CATALOGUE:
        if lowered in (row.name.lower(), row.config.lower()):
            return row
    return get_info(name)  # raises with the suggestion


def is_downloadable(info: DatasetInfo) -> bool:
    """Whether the dataset has a published archive (SynthMed is generated, not downloaded)."""
    return bool(info.hf_file or info.gdrive_id)


def short_reason(err: BaseException) -> str:
    """``ErrorType: first line of the message`` of the root cause (the innermost exception of the chain with a
    message, e.g. ``gaierror: [Errno -2] Name or service not known``), trimmed: one line for a summary."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    root = next((e for e in reversed(chain) if str(e).strip()), err)
    lines = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
    text = f"{type(root).__name__}: {_URL.sub(lambda m: m.group(1), lines[0])}" if lines else type(root).__name__
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


# --------------------------------------------------------------------------------------------------- verification


def _empty_report(info: DatasetInfo, folder: Path) -> dict[str, Any]:
    return {"name": info.name, "path": str(folder), "ok": False, "error": None, "counts": None,
            "classnames": None, "num_classes": 0, "warnings": []}


def _progress_pass(split_path: Path, image_dir: Path, name: str, progress: bool) -> None:
    """Stat every listed image under a progress bar (large datasets only; ``read_split_file`` is the judge)."""
    try:
        raw = json.loads(split_path.read_text(encoding="utf-8"))
        entries = [e for s in SPLITS for e in raw.get(s, [])] if isinstance(raw, dict) else []
    except (OSError, ValueError):
        return  # read_split_file reports it
    if not progress or len(entries) < PROGRESS_MIN_FILES:
        return
    for entry in tqdm(entries, desc=f"{name}: checking files", unit="file", leave=False):
        if isinstance(entry, list) and entry and isinstance(entry[0], str):
            os.path.isfile(image_dir / entry[0])


def verify_dataset(root: str | Path, info: DatasetInfo, *, progress: bool = True) -> dict[str, Any]:
    """Check ``root/<NAME>``: split file present and valid, every listed image present.

    Returns ``{"name", "path", "ok", "error", "counts": {"train"|"val"|"test": n}, "classnames", "num_classes",
    "warnings"}``. ``error`` (when not ok) names the missing folder / file or up to 5 missing images with their
    split entries. Differences from the catalogue's sizes or class names are ``warnings`` (released files may
    differ slightly), not failures. Never touches the network."""
    folder = Path(root).expanduser() / info.name
    split_path = folder / info.split_file
    image_dir = folder / info.name
    report = _empty_report(info, folder)
    if not split_path.is_file():
        what = "folder" if not folder.is_dir() else "split file"
        report["error"] = f"{what} not found: expected {split_path} and images under {image_dir}/"
        return report
    _progress_pass(split_path, image_dir, info.name, progress)
    try:
        splits = read_split_file(split_path, image_dir)
    except (DatasetError, OSError, UnicodeDecodeError) as err:
        report["error"] = str(err)
        return report
    counts = {s: len(splits[s]) for s in SPLITS}
    lab2cname: dict[int, str] = {}
    for s in SPLITS:
        for d in splits[s]:
            lab2cname.setdefault(d.label, d.classname)
    classnames = [lab2cname[i] for i in sorted(lab2cname)]
    report.update(ok=True, counts=counts, classnames=classnames, num_classes=len(classnames))
    if info.sizes is not None and tuple(counts[s] for s in SPLITS) != tuple(info.sizes):
        report["warnings"].append(
            "split sizes {} differ from the catalogue's {} (released files may differ slightly)".format(
                " / ".join(str(counts[s]) for s in SPLITS), " / ".join(map(str, info.sizes))))
    if info.classnames and tuple(classnames) != tuple(info.classnames):
        report["warnings"].append(f"classes {classnames} differ from the catalogue's {list(info.classnames)}")
    return report


# ------------------------------------------------------------------------------------------------------ download


def _fetch_hub(info: DatasetInfo) -> Path:
    import huggingface_hub

    path = huggingface_hub.hf_hub_download(repo_id=HF_DATASET_REPO, repo_type="dataset", filename=info.hf_file)
    return Path(path)


def _fetch_drive(info: DatasetInfo, downloads: Path) -> Path:
    try:
        import gdown
    except ImportError:
        raise DownloadError("gdown is not installed (pip install gdown)") from None
    downloads.mkdir(parents=True, exist_ok=True)
    output = downloads / f"{info.name}.zip"
    path = gdown.download(id=info.gdrive_id, output=str(output), quiet=False, resume=True, timeout=GDRIVE_TIMEOUT_S)
    if not path or not Path(path).is_file():
        raise DownloadError(f"gdown returned no file for id {info.gdrive_id}")
    return Path(path)


_UNREACHABLE: dict[str, str] = {}  # source → reason, once a connection-level failure showed it is unreachable
PROBE_TIMEOUT_S = 3.0  # the reachability probe's TCP connect timeout
DRIVE_HOST = "drive.google.com"
OFFLINE_VALUES = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value (the hub client would not go online)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def hub_host() -> str:
    """The hub's host: that of ``HF_ENDPOINT`` when set, else huggingface.co."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    match = re.match(r"^[a-z]+://([^/:]+)", endpoint)
    return match.group(1) if match else "huggingface.co"


def _probe_host(host: str, port: int = 443) -> str | None:
    """None if a TCP connection to ``host:port`` opens within ``PROBE_TIMEOUT_S``; else the reason."""
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        return None
    except OSError as err:
        return f"{host} unreachable ({short_reason(err)})"


def probe_sources(source: Source = "hf") -> dict[str, str | None]:
    """One reachability check per source the run may use, before any download: ``{"hf" | "gdrive": None if
    reachable, else the reason}``. The hub counts as unreachable when ``HF_HUB_OFFLINE`` is set (not probed).
    An unreachable source is remembered, so no download waits through its client's timeouts and retries."""
    result: dict[str, str | None] = {}
    for name in (("hf", "gdrive") if source == "hf" else ("gdrive",)):
        if name in _UNREACHABLE:
            result[name] = _UNREACHABLE[name]
            continue
        if name == "hf" and hub_offline():
            reason: str | None = "HF_HUB_OFFLINE is set"
        else:
            reason = _probe_host(hub_host() if name == "hf" else DRIVE_HOST)
        if reason is not None:
            _UNREACHABLE[name] = reason
        result[name] = reason
    return result


def _is_connection_error(err: BaseException) -> bool:
    """A failure to reach the host at all (DNS, refused, unreachable) anywhere in the exception chain."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (socket.gaierror, ConnectionError)) or "ConnectError" in type(cur).__name__ \
                or "ConnectionError" in type(cur).__name__:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _attempt(source: str, fetch: Callable[[], Path]) -> Path:
    """Run ``fetch`` unless ``source`` proved unreachable earlier in this process (then fail at once)."""
    if source in _UNREACHABLE:
        raise DownloadError(f"{_UNREACHABLE[source]} (not tried)")
    try:
        return fetch()
    except Exception as err:
        if _is_connection_error(err):
            _UNREACHABLE[source] = short_reason(err)
        raise


def fetch_archive(info: DatasetInfo, root: str | Path, *, source: Source = "hf") -> Path:
    """Download ``info``'s archive and return its path.

    ``source="hf"``: ``huggingface_hub.hf_hub_download`` (the file stays in the hub cache); on any hub or network
    error, fall back to Google Drive (logged). ``source="gdrive"``: Drive only, via ``gdown`` into
    ``root/.downloads/<NAME>.zip`` (resumable). One attempt per source; raises :class:`DownloadError` naming
    each source's reason."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not is_downloadable(info):
        raise DownloadError(f"{info.name} has no published archive; get it with: {info.how_to_get(str(root))}")
    downloads = Path(root).expanduser() / DOWNLOADS_DIR
    reasons: list[str] = []
    if source == "hf" and info.hf_file:
        if "hf" not in _UNREACHABLE:
            logger.info("%s: downloading %s from the Hugging Face hub (%s)", info.name, info.hf_file,
                        HF_DATASET_REPO)
        try:
            return _attempt("hf", lambda: _fetch_hub(info))
        except Exception as err:  # noqa: BLE001 - any hub / network failure means "try the mirror"
            reasons.append(f"hub: {err if isinstance(err, DownloadError) else short_reason(err)}")
            if info.gdrive_id and not isinstance(err, DownloadError):  # known unreachable: said once already
                logger.warning("%s: Hugging Face hub unavailable (%s); falling back to Google Drive", info.name,
                               short_reason(err))
    if info.gdrive_id:
        try:
            return _attempt("gdrive", lambda: _fetch_drive(info, downloads))
        except DownloadError as err:
            reasons.append(f"drive: {err}")
        except Exception as err:  # noqa: BLE001 - gdown raises requests / its own / OS errors
            reasons.append(f"drive: {short_reason(err)}")
    else:
        reasons.append("drive: no Google Drive id in the catalogue")
    raise DownloadError("; ".join(reasons) or "no source available")


# -------------------------------------------------------------------------------------------- extraction + layout


def _unsafe_member(name: str) -> bool:
    """A member that would land outside the extraction folder: absolute, drive-qualified or with ``..``."""
    normalised = name.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    return normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":") or ".." in parts


def extract_archive(archive: str | Path, dest: str | Path, *, desc: str = "extracting") -> Path:
    """Extract the zip ``archive`` into ``dest`` (created; must be empty or absent), with a bar over members.

    Every member is checked first: an absolute path or a ``..`` component refuses the whole archive
    (:class:`ArchiveError`) before anything is written. A corrupt zip is an :class:`ArchiveError` too."""
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            unsafe = [m.filename for m in members if _unsafe_member(m.filename)]
            if unsafe:
                raise ArchiveError(f"{archive} refused: {len(unsafe)} member(s) would be written outside the "
                                   f"extraction folder (zip-slip), e.g. {unsafe[0]!r}")
            dest.mkdir(parents=True, exist_ok=True)
            base = dest.resolve()
            for m in tqdm(members, desc=desc, unit="file", leave=False):
                target = (base / m.filename).resolve()
                if target != base and base not in target.parents:  # belt and braces (e.g. odd separators)
                    raise ArchiveError(f"{archive} refused: member {m.filename!r} resolves outside {dest}")
                zf.extract(m, base)
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{archive} is not a valid zip archive ({err})") from None
    return dest


def _probe_entries(split_path: Path) -> list[str]:
    """The first few relative image paths of each split (to decide which folder they are relative to)."""
    try:
        raw = json.loads(split_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArchiveError(f"{split_path.name} in the archive is not readable JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ArchiveError(f"{split_path.name} in the archive is not a {{split: entries}} object")
    rels: list[str] = []
    for s in SPLITS:
        entries = raw.get(s) or []
        rels += [e[0] for e in entries[:LAYOUT_PROBE] if isinstance(e, list) and e and isinstance(e[0], str)]
    if not rels:
        raise ArchiveError(f"{split_path.name} in the archive lists no images")
    return rels


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _image_dir_candidates(split_path: Path, name: str) -> Iterable[Path]:
    parent = split_path.parent
    yield parent / name  # released layout: <NAME>/split_<NAME>.json beside <NAME>/<class>/…
    yield parent  # entries relative to the split file's own folder
    subdirs = _subdirs(parent)
    if len(subdirs) == 1:
        yield subdirs[0]  # a single, differently named image folder beside the split file


def locate_layout(extracted: str | Path, info: DatasetInfo) -> tuple[Path, Path]:
    """Find ``(split file, image folder)`` in an extracted archive, whatever its nesting.

    The split file is ``split_<NAME>.json`` anywhere in the tree (shallowest first; ``__MACOSX`` ignored). Its
    image folder is the first of: the ``<NAME>/`` folder beside it, the split file's own folder, its single
    sub-folder — that resolves the first few entries of every split. Raises :class:`ArchiveError` otherwise."""
    extracted = Path(extracted)
    found = sorted((p for p in extracted.rglob(info.split_file) if p.is_file() and "__MACOSX" not in p.parts),
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise ArchiveError(f"the archive holds no {info.split_file}")
    tried: list[str] = []
    for split_path in found:
        rels = _probe_entries(split_path)
        for candidate in _image_dir_candidates(split_path, info.name):
            if candidate.is_dir() and all((candidate / rel).is_file() for rel in rels):
                logger.info("%s: split file %s, images under %s/", info.name, split_path.relative_to(extracted),
                            candidate.relative_to(extracted))
                return split_path, candidate
            if candidate.is_dir():
                tried.append(str(candidate.relative_to(extracted)) or ".")
    raise ArchiveError(f"no folder in the archive resolves the entries of {info.split_file} (e.g. {rels[0]!r}); "
                       f"tried: {', '.join(dict.fromkeys(tried)) or 'none'}")


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def install_archive(archive: str | Path, root: str | Path, info: DatasetInfo, *,
                    progress: bool = True) -> dict[str, Any]:
    """Extract ``archive``, normalise it to ``root/<NAME>/split_<NAME>.json`` + ``root/<NAME>/<NAME>/…``, verify
    it and move it into place. Returns the :func:`verify_dataset` report.

    The dataset is assembled complete and verified in ``root/.downloads/<NAME>.staged/`` and only then renamed
    into ``root/<NAME>`` (an existing, unverified ``root/<NAME>`` is replaced). On any error nothing is left in
    ``root/<NAME>``'s place beyond what was there before; staging folders are always removed."""
    root = Path(root).expanduser()
    downloads = root / DOWNLOADS_DIR
    extract_dir = downloads / f"{info.name}.extract"
    staged_root = downloads / f"{info.name}.staged"
    old = downloads / f"{info.name}.replaced"
    final = root / info.name
    for leftover in (extract_dir, staged_root, old):  # from an interrupted earlier run
        _rmtree(leftover)
    try:
        extract_archive(archive, extract_dir, desc=f"{info.name}: extracting")
        split_src, image_src = locate_layout(extract_dir, info)
        staged = staged_root / info.name
        staged.mkdir(parents=True)
        shutil.copyfile(split_src, staged / info.split_file)
        os.replace(image_src, staged / info.name)  # same file system: a rename, however many images
        stray = staged / info.name / info.split_file  # the split file sat inside the image folder
        if image_src == split_src.parent and stray.is_file():
            stray.unlink()
        report = verify_dataset(staged_root, info, progress=progress)
        if not report["ok"]:
            raise ArchiveError(f"the unpacked archive does not verify: {report['error']}")
        if final.exists() or final.is_symlink():
            logger.info("%s: replacing the incomplete %s", info.name, final)
            os.replace(final, old)
        try:
            os.replace(staged, final)
        except OSError:
            if old.exists() and not final.exists():
                os.replace(old, final)  # put the previous folder back rather than lose it
            raise
        report["path"] = str(final)
        return report
    finally:
        for tmp in (extract_dir, staged_root, old):
            _rmtree(tmp)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or holds kept archives / partial downloads for resuming


def ensure_dataset(root: str | Path, info: DatasetInfo, *, source: Source = "hf", keep_archive: bool = False,
                   progress: bool = True, before_fetch: Callable[[], None] | None = None) -> dict[str, Any]:
    """Make ``root/<NAME>`` a verified dataset; returns the :func:`verify_dataset` report plus ``"action"``
    (``"verified"``: already there, nothing downloaded; ``"downloaded"``). ``before_fetch`` is called just before
    the network is needed (e.g. :func:`probe_sources`, once per run).

    Raises :class:`DownloadError` (no source delivered the archive), :class:`ArchiveError` (bad archive) or
    :class:`DatasetError` (not downloadable: generated datasets such as SynthMed) — each one line."""
    root = Path(root).expanduser()
    report = verify_dataset(root, info, progress=progress)
    if report["ok"]:
        report["action"] = "verified"
        return report
    if not is_downloadable(info):
        raise DatasetError(f"{info.name} is not downloadable (it is generated); run: {info.how_to_get(str(root))}")
    if (root / info.name).exists():
        logger.warning("%s: existing folder does not verify (%s); downloading it again", info.name,
                       report["error"].splitlines()[0])
    downloads = root / DOWNLOADS_DIR
    if before_fetch is not None:
        before_fetch()
    try:
        archive = fetch_archive(info, root, source=source)
    except DownloadError:
        _remove_if_empty(downloads)  # keeps a partial Drive download for resuming
        raise
    ours = downloads.resolve() in archive.resolve().parents  # a hub file lives in (and belongs to) the hub cache
    try:
        report = install_archive(archive, root, info, progress=progress)
    except ArchiveError:
        if ours:
            archive.unlink(missing_ok=True)  # a resumed Drive download would otherwise reuse the bad file
        raise
    else:
        if ours and not keep_archive:
            archive.unlink(missing_ok=True)
    finally:
        _remove_if_empty(downloads)
    report["action"] = "downloaded"
    return report


def format_counts(report: dict[str, Any]) -> str:
    """``train 2854 / val 1141 / test 1717, 4 classes`` for a verified report."""
    counts = report.get("counts") or {}
    return " / ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS) + f", {report.get('num_classes', 0)} classes"


def resolve_datasets(names: Sequence[str] | None) -> list[DatasetInfo]:
    """Rows for ``names`` (registry or config names, de-duplicated, in order); all benchmark rows for None."""
    if not names:
        return list(BENCHMARK)
    rows = [resolve_dataset(n) for n in names]
    return list({r.name: r for r in rows}.values())
