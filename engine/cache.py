"""A disk cache for what a frozen tower computes: evaluation image features and encoded teacher prompt banks.

An entry is one safetensors file named by the SHA-256 of its key. The key is a JSON-able dict that covers
everything the tensors depend on (the caller builds it: the backbone's weights fingerprint, the preprocessing, the
exact items or sentences, the compute device type and precision, :data:`CACHE_FORMAT`), so an entry written by
another version, for another model or for other data is never used: its name differs. The file's metadata
repeats the key and records a SHA-256 of the tensor bytes; an entry whose key or checksum does not match, or
that cannot be parsed, is damaged: it is logged, removed and rebuilt.

Writes go to a unique temporary file in the cache folder and are renamed into place, so two processes filling
the same entry both succeed (the last rename wins; the contents are equal) and a reader never sees half a file.
A cache folder that cannot be created or written (read-only, full disk) gives one warning and the run goes on
uncached: the cache changes speed, never results.

The ``weights/`` sub-folder memoises the backbone's weights fingerprint per weights file identity (path, size,
modification time, inode, architecture, library versions; :meth:`FeatureCache.weights_fingerprint`), so a warm
run does not hash the weights again.

Folder: ``CACHE.DIR`` if set, else ``$OGKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ogkd-toolkit`` (default
``~/.cache/ogkd-toolkit``). ``CACHE.ENABLED False`` (``train.py --no-cache``) bypasses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what an entry holds changes meaning: every old entry then misses
CACHE_ENV = "OGKD_CACHE_DIR"
SUFFIX = ".safetensors"
SUBFOLDERS = {"weights-fingerprint": "weights"}  # entry kind -> sub-folder (not counted as feature entries)


def default_cache_dir() -> Path:
    """``$OGKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ogkd-toolkit``, else ``~/.cache/ogkd-toolkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ogkd-toolkit"


def key_digest(key: Mapping[str, Any]) -> str:
    """SHA-256 of the key's canonical JSON (sorted keys): the entry's file name."""
    return hashlib.sha256(_canonical(key).encode()).hexdigest()


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True, separators=(",", ":"), default=str)


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def folder_size(folder: Path) -> tuple[int, int]:
    """(number of entries, total bytes) of a cache folder."""
    n = size = 0
    if folder.is_dir():
        for p in folder.glob(f"*{SUFFIX}"):
            try:
                size += p.stat().st_size
                n += 1
            except OSError:  # removed meanwhile by another process
                pass
    return n, size


class FeatureCache:
    """Get / put dicts of tensors under a key; ``enabled False`` makes every ``get`` miss and ``put`` a no-op."""

    def __init__(self, folder: str | Path | None = None, *, enabled: bool = True) -> None:
        self.folder = Path(folder).expanduser() if folder else default_cache_dir()
        self.enabled = enabled
        self._warned = False
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.folder)!r}, enabled={self.enabled})"

    def describe(self) -> str:
        """One log line: where, how many entries, how big."""
        if not self.enabled:
            return "feature cache: off (--no-cache / CACHE.ENABLED False)"
        n, size = folder_size(self.folder)
        return f"feature cache: {self.folder} ({n} entries, {size / 2**20:.1f} MiB)"

    def path(self, key: Mapping[str, Any]) -> Path:
        """The entry's file; the weights-fingerprint memos live in a sub-folder, apart from the features."""
        folder = self.folder / SUBFOLDERS[key["kind"]] if key.get("kind") in SUBFOLDERS else self.folder
        return folder / f"{key_digest(key)}{SUFFIX}"

    def get(self, key: Mapping[str, Any], device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | None:
        """The tensors stored under ``key`` (on ``device``), or None (miss, disabled, or a damaged entry)."""
        if not self.enabled:
            return None
        out = self._read(key, device)
        if out is None:
            self.misses += 1
        else:
            self.hits += 1
        return out

    def _read(self, key: Mapping[str, Any], device: torch.device | str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no iter
            problem = None
            if meta.get("key") != _canonical(key):
                problem = "its key differs"
            elif meta.get("sha256") != tensors_digest(tensors):
                problem = "its checksum does not match its contents"
        except Exception as e:  # noqa: BLE001 - any parse failure means a damaged entry
            problem = f"it cannot be read ({type(e).__name__}: {e})"
        if problem:
            logger.warning("feature cache entry %s is damaged (%s): removing it and recomputing", path, problem)
            path.unlink(missing_ok=True)
            return None
        return {k: v.to(device) for k, v in tensors.items()}

    def put(self, key: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path | None:
        """Store ``tensors`` under ``key`` atomically; returns the entry's path, or None if not written."""
        if not self.enabled:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {"key": _canonical(key), "sha256": tensors_digest(cpu)}
        path = self.path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
            os.close(fd)
            save_file(cpu, tmp, metadata=meta)
            os.replace(tmp, path)
            tmp = None
        except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error, not OSError
            self._warn_unwritable(e)
            return None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return path

    def weights_fingerprint(self, backbone: Any) -> str:
        """``backbone.weights_fingerprint()``, memoised in the ``weights/`` sub-folder under the identity of the
        file its weights were loaded from (``backbone.weights_file``: resolved path, size, modification time,
        inode), the model's architecture digest and the library versions that shape the loaded tensors. A later run
        from the same unchanged file adopts the memo instead of hashing every tensor — 0.3 s for BiomedCLIP, and,
        with memory-mapped weights, no read of pages the run never uses. Any change to the file changes its
        identity, so the memo is never stale; without a weights file (random tiny models) or with the cache off,
        the weights are hashed."""
        source = getattr(backbone, "weights_file", None)
        if not self.enabled or source is None or backbone.has_weights_fingerprint:
            return str(backbone.weights_fingerprint())
        try:
            st = Path(source).stat()
        except OSError:  # the file is gone (the weights are in memory): hash them
            return str(backbone.weights_fingerprint())
        from engine.utils import package_versions

        key = {"kind": "weights-fingerprint", "file": str(Path(source).resolve()), "size": st.st_size,
               "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "filesystem": st.st_dev,
               "architecture": backbone.architecture_digest(), "versions": package_versions()}
        hit = self._read(key, "cpu")  # not a feature hit / miss
        if hit is not None and hit.get("sha256") is not None and hit["sha256"].numel() == 32:
            backbone.adopt_weights_fingerprint(bytes(hit["sha256"].tolist()).hex())
            return str(backbone.weights_fingerprint())
        fingerprint = str(backbone.weights_fingerprint())
        self.put(key, {"sha256": torch.tensor(list(bytes.fromhex(fingerprint)), dtype=torch.uint8)})
        return fingerprint

    def _warn_unwritable(self, e: Exception) -> None:
        if not self._warned:
            why = getattr(e, "strerror", None) or " ".join(str(e).split())
            logger.warning("feature cache %s is not writable (%s): continuing without caching (set CACHE.DIR or "
                           "%s to a writable folder with free space, or pass --no-cache)", self.folder, why, CACHE_ENV)
            self._warned = True


def fingerprint_module(module: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and SHA-256 digests of the bytes of every parameter and buffer of
    ``module``.

    The tensors are hashed in parallel threads (hashlib releases the GIL): ~1.3 GB/s per core, about 0.3 s for
    BiomedCLIP on 2 cores; callers memoise it per backbone."""
    tensors = [(name, t.detach()) for name, t in [*module.named_parameters(), *module.named_buffers()]]

    def digest(t: torch.Tensor) -> str:
        if not t.numel():
            return ""
        return hashlib.sha256(memoryview(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy())).hexdigest()

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        digests = list(pool.map(digest, [t for _, t in tensors]))
    h = hashlib.sha256()
    for (name, t), d in zip(tensors, digests, strict=True):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{d}|".encode())
    return h.hexdigest()
