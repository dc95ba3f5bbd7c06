"""Embedding cache keyed by what produced the vectors.

A cache entry is ``<root>/<key>.npz`` holding the vectors, the ``ok`` mask,
the posting ids (in row order) and a JSON ``meta`` of everything the key was
made from: model id (with weights hash), dataset fingerprint, preprocessing
parameters and :data:`CACHE_VERSION`. Loading checks the stored meta and ids
against what the caller expects and recomputes on any difference, so a cache
built from other data or another model is never returned, nor misaligned
vectors, nor vectors that break the encoders' contract (NaN/inf, rows that are
neither unit-length nor zero, zero rows marked ok: a truncated width shows as rows
that are no longer unit-length).
Writes go to a temporary file renamed into place (atomic), and long runs write
finished chunks into memory-mapped arrays under ``<key>.parts/`` so an interrupted run
resumes (and a million rows are never held twice). A cache
folder that cannot be written (read-only) only costs the saving, with a warning.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shopee_match.files import atomic_write

CACHE_VERSION = 1


def cache_meta(model_id: str, data_fingerprint: str, params: dict) -> dict:
    """Everything a cache entry depends on, as a JSON-able dict."""
    return {"model_id": model_id, "data": data_fingerprint, "params": params,
            "version": CACHE_VERSION}


def cache_key(meta: dict) -> str:
    """Short hash of a :func:`cache_meta` dict (its file name)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]


class EmbeddingCache:
    """Folder of embedding files; see the module docstring for the guarantees."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, meta: dict) -> Path:
        return self.root / f"{cache_key(meta)}.npz"

    def load(self, meta: dict, ids: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Stored ``(vectors, ok)`` if the entry matches ``meta`` and ``ids`` exactly and its
        vectors are sound, else None."""
        return _read_checked(self.path(meta), meta, ids)

    def save(self, meta: dict, ids: list[str], vectors: np.ndarray, ok: np.ndarray) -> None:
        """Write an entry atomically (a folder that cannot be written: a warning)."""
        _write_atomic(self.path(meta), meta, ids, vectors, ok, self.root)

    def get_or_compute(
        self,
        meta: dict,
        ids: list[str],
        compute: Callable[[slice], tuple[np.ndarray, np.ndarray]],
        chunk_rows: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(vectors, ok, from_cache)``: the stored entry, else :meth:`compute_chunked`."""
        found = self.load(meta, [str(i) for i in ids])
        if found is not None:
            return (*found, True)
        return (*self.compute_chunked(meta, ids, compute, chunk_rows), False)

    def compute_chunked(
        self,
        meta: dict,
        ids: list[str],
        compute: Callable[[slice], tuple[np.ndarray, np.ndarray]],
        chunk_rows: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compute an entry chunk by chunk with ``compute(rows)``, then save it.

        Chunks are written straight into memory-mapped arrays under ``<key>.parts/``
        (``vectors.npy``, ``ok.npy``), so a million rows never sit in memory twice; each
        finished chunk is marked done there, and after an interruption only the chunks not
        marked (or no longer sound) are computed again.
        """
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, 0), np.float32), np.zeros(0, bool)
        parts = self.root / f"{cache_key(meta)}.parts"
        store = _open_parts(parts, ids)
        for start in range(0, len(ids), chunk_rows):
            rows = slice(start, min(start + chunk_rows, len(ids)))
            done = parts / f"{rows.start:09d}-{rows.stop:09d}.done"
            if store is not None and done.is_file() and not _unsound(*store, rows):
                continue
            vectors, ok = compute(rows)
            if store is None:
                store = _create_parts(parts, ids, vectors.shape[1], self.root)
            store[0][rows], store[1][rows] = vectors, ok
            if isinstance(store[0], np.memmap):  # on disk: flush, then mark the chunk done
                store[0].flush()
                store[1].flush()
                done.touch()
        self.save(meta, ids, *store)  # streamed from the memory map
        if not isinstance(store[0], np.memmap):
            return store
        del store  # close the maps, then read the finished arrays into memory once
        vectors, ok = np.load(parts / "vectors.npy"), np.load(parts / "ok.npy")
        shutil.rmtree(parts, ignore_errors=True)
        return vectors, ok


def _open_parts(parts: Path, ids: list[str]):
    """``(vectors, ok)`` memory maps of an interrupted run on the same ids, else None
    (and any leftover of another run removed)."""
    try:
        stored = np.load(parts / "ids.npy", allow_pickle=False).tolist()
        vectors = np.load(parts / "vectors.npy", mmap_mode="r+")
        ok = np.load(parts / "ok.npy", mmap_mode="r+")
    except Exception:  # missing, empty (a full disk), truncated or not an array: start over
        shutil.rmtree(parts, ignore_errors=True)
        return None
    if stored != ids or len(vectors) != len(ids) or ok.shape != (len(ids),):
        shutil.rmtree(parts, ignore_errors=True)
        return None
    return vectors, ok


def _create_parts(parts: Path, ids: list[str], dim: int, root: Path):
    """Fresh memory-mapped ``(vectors, ok)`` under ``parts``; arrays in memory where the
    folder cannot be written (with a warning)."""
    try:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        np.save(parts / "ids.npy", np.asarray(ids, dtype=str))
        vectors = _reserved_memmap(parts / "vectors.npy", np.float32, (len(ids), dim))
        ok = _reserved_memmap(parts / "ok.npy", bool, (len(ids),))
        return vectors, ok
    except OSError as err:  # nothing half-written is left to be read back by a later run
        shutil.rmtree(parts, ignore_errors=True)
        _warn_unwritable(root, err.strerror or str(err))
        return np.empty((len(ids), dim), np.float32), np.zeros(len(ids), bool)


def _reserved_memmap(path: Path, dtype, shape: tuple) -> np.memmap:
    """A new memory-mapped array whose disk blocks are reserved now: on a full disk this
    raises ``OSError`` here, instead of killing the process (SIGBUS) when a page is written."""
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no such support: go on
                    raise
    return array


def _read_checked(path: Path, meta: dict, ids: list[str]):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored_meta = json.loads(str(f["meta"]))
            stored_ids = f["ids"].tolist()
            vectors, ok = f["vectors"], f["ok"]
    except Exception as err:  # unreadable or truncated: recompute
        warnings.warn(f"Ignoring unreadable cache file {path} ({err}); recomputing.",
                      stacklevel=3)
        return None
    if stored_meta != meta:
        warnings.warn(f"Cache file {path} was built with {stored_meta}, not {meta}; recomputing.",
                      stacklevel=3)
        return None
    if stored_ids != list(ids) or len(vectors) != len(ids):
        warnings.warn(f"Cache file {path} holds other posting ids (or another order); "
                      "recomputing.", stacklevel=3)
        return None
    problem = _unsound(vectors, ok)
    if problem:
        warnings.warn(f"Cache file {path} {problem}; recomputing.", stacklevel=3)
        return None
    return vectors, ok


def _unsound(vectors: np.ndarray, ok: np.ndarray, rows: slice = slice(None)) -> str:
    """What breaks the encoders' contract in stored vectors (or in their ``rows``), or "" if
    nothing does. Checked in blocks, so a memory map is not read into memory at once."""
    if vectors.ndim != 2 or ok.shape != (len(vectors),):
        return f"holds vectors of shape {vectors.shape} with {ok.shape} flags"
    start, stop, _ = rows.indices(len(vectors))
    for lo in range(start, stop, 65_536):
        block, flags = vectors[lo:min(lo + 65_536, stop)], ok[lo:min(lo + 65_536, stop)]
        if not np.isfinite(block).all():
            return "holds NaN or infinite values"
        norms = np.linalg.norm(block, axis=1)
        if (not (np.isclose(norms, 1.0, atol=1e-3) | (norms == 0)).all()
                or (norms[flags] == 0).any()):
            return "holds rows that are neither unit vectors nor zero rows of missing inputs"
    return ""


def _write_atomic(path: Path, meta: dict, ids: list[str], vectors: np.ndarray,
                  ok: np.ndarray, root: Path) -> None:
    try:
        with atomic_write(path) as f:
            np.savez(f, vectors=np.asarray(vectors, dtype=np.float32), ok=np.asarray(ok, bool),
                     ids=np.asarray(ids, dtype=str), meta=np.asarray(json.dumps(meta)))
    except OSError as err:  # read-only or full: the result is still returned, only not kept
        _warn_unwritable(root, err.strerror or str(err))


@functools.cache  # once per cache folder and reason, not once per entry or chunk
def _warn_unwritable(folder: Path, reason: str) -> None:
    warnings.warn(f"Cannot write the embedding cache in {folder} ({reason}); computing "
                  "without saving. Point SHOPEE_MATCH_ARTIFACTS at a writable folder to keep "
                  "the vectors.", stacklevel=4)
