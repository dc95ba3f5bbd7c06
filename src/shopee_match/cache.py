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
Writes go to a temporary file renamed into place (atomic), and long runs save
finished chunks under ``<key>.parts/`` so an interrupted run resumes. A cache
folder that cannot be written (read-only) only costs the saving, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.files import atomic_write

CACHE_VERSION = 1


def dataset_fingerprint(postings: pd.DataFrame) -> str:
    """Hash of posting ids, titles and image file names + sizes (not contents, for speed)."""
    h = hashlib.sha256()
    h.update("\x1f".join(postings["posting_id"].astype(str)).encode())
    h.update(b"\x1e")
    h.update("\x1f".join(postings["title"].fillna("").astype(str)).encode())
    if "image_path" in postings:
        sizes = [os.stat(p).st_size if p and os.path.isfile(p) else -1
                 for p in postings["image_path"]]
        names = [os.path.basename(p) for p in postings["image_path"]]
        h.update(b"\x1e")
        h.update("\x1f".join(f"{n}:{s}" for n, s in zip(names, sizes)).encode())
    return h.hexdigest()[:20]


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

        Each finished chunk is saved under ``<key>.parts/``, so after an
        interruption only the chunks not yet saved are computed again.
        """
        ids = [str(i) for i in ids]
        parts = self.root / f"{cache_key(meta)}.parts"
        chunks = []
        for start in range(0, len(ids), chunk_rows):
            rows = slice(start, min(start + chunk_rows, len(ids)))
            part = parts / f"{start:09d}.npz"
            chunk = _read_checked(part, meta, ids[rows])
            if chunk is None:
                chunk = compute(rows)
                _write_atomic(part, meta, ids[rows], *chunk, self.root)
            chunks.append(chunk)
        vectors = (np.concatenate([c[0] for c in chunks]) if chunks
                   else np.zeros((0, 0), np.float32))
        ok = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, bool)
        self.save(meta, ids, vectors, ok)
        shutil.rmtree(parts, ignore_errors=True)
        return vectors, ok


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


def _unsound(vectors: np.ndarray, ok: np.ndarray) -> str:
    """What breaks the encoders' contract in stored vectors, or "" if nothing does."""
    if vectors.ndim != 2 or ok.shape != (len(vectors),):
        return f"holds vectors of shape {vectors.shape} with {ok.shape} flags"
    if not np.isfinite(vectors).all():
        return "holds NaN or infinite values"
    norms = np.linalg.norm(vectors, axis=1)
    if not (np.isclose(norms, 1.0, atol=1e-3) | (norms == 0)).all() or (norms[ok] == 0).any():
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
