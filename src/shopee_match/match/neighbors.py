"""Nearest neighbours by cosine similarity: exact search and approximate FAISS indexes.

Every search returns ``(sims, idx)``: ``(n_queries, k)`` float32 similarities
and gallery row indices, nearest first (``-1`` pads lists an approximate
index could not fill; see :func:`real_neighbors`). Indices are int32 while the
gallery has fewer than 2**31 rows (:func:`index_dtype`: a third less memory than
int64 lists), so cast to int64 before multiplying them (pair keys such as
``i * n + j``). Similarities stay float32: float16 would move accept decisions
near a threshold (``bench_memory.py match-70k`` counts them). Vectors are expected to be
L2-normalised (inner product = cosine); zero rows (missing image, empty title)
score 0 against everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)

MEMORY_PER_CHUNK = 256 * 2**20  # bytes of similarity scores held at once
INDEX_KINDS = ("flat", "ivf", "hnsw", "ivfpq")


def index_dtype(n_rows: int) -> np.dtype:
    """The dtype of row indices into a gallery of ``n_rows``: int32 while they fit, else int64."""
    return np.dtype(np.int32 if n_rows < 2**31 else np.int64)


def real_neighbors(idx: np.ndarray) -> np.ndarray:
    """Mask of the entries of self-search lists that are other rows: not padding, not the query."""
    return (idx >= 0) & (idx != np.arange(len(idx))[:, None])


def query_rows(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The query row of every entry ``mask`` selects, in the order ``idx[mask]`` lists them
    (in ``idx``'s dtype: int32 for lists of fewer than 2**31 rows)."""
    return np.repeat(np.arange(len(idx), dtype=idx.dtype), mask.sum(axis=1))


def exact_knn(queries, gallery=None, k: int = 50, exclude_self: bool = False,
              chunk_rows: int | None = None, progress: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours of each query row among ``gallery`` rows.

    ``gallery=None`` searches the queries against themselves; then each row
    finds itself first (similarity 1) unless ``exclude_self``. Dense arrays go
    through FAISS's exact ``IndexFlatIP`` (blocked BLAS products with a running
    top-k: the fastest exact search measured here, see ``make bench``); scipy
    sparse matrices (TF-IDF) through chunked sparse products + ``torch.topk``,
    each chunk's scores kept under 256 MB. Within a row, equal similarities are
    ordered by gallery index.
    """
    from scipy import sparse

    from shopee_match.progress import progress_bar

    self_search = gallery is None
    gallery = queries if self_search else gallery
    if exclude_self and not self_search:
        raise ValueError("exclude_self only applies when searching queries against themselves")
    n_q, n_g = queries.shape[0], gallery.shape[0]
    k = min(k, n_g - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError(f"not enough gallery rows ({n_g}) for k >= 1")
    if sparse.issparse(gallery):
        search, state = _sparse_chunk_search, gallery.T.tocsr()
    else:
        search, state = search_index, build_index(gallery, "flat")
    chunk_rows = chunk_rows or max(1, MEMORY_PER_CHUNK // (4 * n_g))
    sims = np.empty((n_q, k), dtype=np.float32)
    idx = np.empty((n_q, k), dtype=index_dtype(n_g))
    starts = range(0, n_q, chunk_rows)
    for start in progress_bar(starts, desc="exact kNN", disable=not progress, leave=False):
        stop = min(start + chunk_rows, n_q)
        s, i = search(state, queries[start:stop], k + (1 if exclude_self else 0))
        if exclude_self:
            s, i = _drop_self(s, i, np.arange(start, stop), k)
        sims[start:stop], idx[start:stop] = s, i
    order_ties(sims, idx)
    return sims, idx


def _sparse_chunk_search(gallery_t, queries, k: int):
    import torch

    block = torch.from_numpy(np.asarray((queries @ gallery_t).toarray(), dtype=np.float32))
    top_s, top_i = torch.topk(block, k, dim=1, sorted=False)
    return top_s.numpy(), top_i.numpy()


def _drop_self(sims, idx, rows, k: int):
    """Remove each row's own index (or, if absent, its last neighbour) to keep k columns."""
    is_self = idx == rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return (sims[keep].reshape(len(rows), k), idx[keep].reshape(len(rows), k))


def find_neighbors(vectors, k: int = 50, method: str = "exact", **params
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Self-search with one call for every method: ``exact`` or a FAISS index kind.

    ``(sims, idx)`` nearest first, each row's own index included (it is its own
    best match). Extra ``params`` go to :func:`build_index`.
    """
    if method == "exact":
        return exact_knn(vectors, k=k)
    if method not in INDEX_KINDS:
        raise ValueError(f"Unknown method {method!r}; use 'exact' or one of {INDEX_KINDS}")
    sims, idx, _ = ann_knn(vectors, k=k, kind=method, **params)
    return sims, idx


def order_ties(sims: np.ndarray, idx: np.ndarray) -> None:
    """Sort each row by similarity descending, then index ascending (in place)."""
    if sims.size:
        order = np.lexsort((idx, -sims), axis=1)
        sims[:] = np.take_along_axis(sims, order, axis=1)
        idx[:] = np.take_along_axis(idx, order, axis=1)


def build_index(vectors: np.ndarray, kind: str = "hnsw", **params):
    """A FAISS inner-product index over ``vectors``.

    ``flat`` exact; ``ivf`` IVF-Flat (``nlist``, ``nprobe``); ``hnsw`` (``M``,
    ``ef_construction``, ``ef_search``); ``ivfpq`` for very large galleries
    (``nlist``, ``nprobe``, ``m`` sub-quantizers dividing the dimension, 8 bits each,
    fewer below 10k rows).
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    nlist = params.get("nlist") or max(1, min(int(4 * np.sqrt(n)), n // 39))
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.get("M", 32), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.get("ef_construction", 80)
        index.hnsw.efSearch = params.get("ef_search", 128)
    elif kind == "ivfpq":
        m = params.get("m") or next(m for m in (64, 32, 16, 8, 4, 2, 1) if d % m == 0)
        bits = int(np.clip(np.log2(max(n // 39, 2)), 1, 8))  # k-means wants 39 rows a centroid
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, bits,
                                 faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"Unknown index kind {kind!r}; use one of {INDEX_KINDS}")
    if not index.is_trained:  # k-means on at most 64 rows a list (all of them at 34k rows)
        sample = (np.random.default_rng(0).choice(n, 64 * nlist, replace=False)
                  if n > 64 * nlist else slice(None))
        index.train(x[sample])
    if hasattr(index, "nprobe"):
        index.nprobe = params.get("nprobe", max(1, nlist // 8))
    index.add(x)
    return index


def search_index(index, queries: np.ndarray, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(sims, idx)`` from a FAISS index; ``-1`` marks missing neighbours (ANN may find fewer)."""
    sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return sims.astype(np.float32), idx.astype(index_dtype(index.ntotal))


def ann_knn(vectors: np.ndarray, k: int = 50, kind: str = "hnsw", **params
            ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Self-search through a FAISS index: ``(sims, idx, {"build_s", "query_s"})``."""
    start = time.perf_counter()
    index = build_index(vectors, kind, **params)
    built = time.perf_counter()
    sims, idx = search_index(index, vectors, min(k, len(vectors)))
    return sims, idx, {"build_s": built - start, "query_s": time.perf_counter() - built}


def neighbor_recall(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Share of the exact top-k found by an approximate search (mean over queries)."""
    approx_idx, exact_idx = np.asarray(approx_idx), np.asarray(exact_idx)
    k = exact_idx.shape[1]
    width = int(max(approx_idx.max(initial=0), exact_idx.max(initial=0))) + 2
    rows = np.arange(len(exact_idx))[:, None] * width
    approx = rows + np.where(approx_idx[:, :k] >= 0, approx_idx[:, :k], width - 1)
    hits = np.isin(rows + exact_idx, approx) & (exact_idx >= 0)
    return float(hits.sum(axis=1).mean() / k)


#: rows per block in :func:`fuse` (its float64 working copy of them: ~150 MB at 1,664-d)
FUSE_CHUNK = 16_384


def fuse(vectors: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
         ) -> np.ndarray:
    """Weighted concatenation of normalised modality vectors, renormalised per row.

    With unit rows, the fused inner product is the weighted mean of the
    modalities' cosines. A row missing a modality (zero vector) is renormalised
    onto the others: against a complete row it scores that modality's cosine
    times ``sqrt(w_present / w_total)``, so it needs a looser threshold to match.
    """
    names = list(vectors)
    weights = weights or {name: 1.0 for name in names}
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"weights for unknown modalities {sorted(unknown)}; have {names}")
    used = {name: np.asarray(vectors[name]) for name in names if weights.get(name, 0.0) > 0}
    if not used:
        raise ValueError("all fusion weights are zero")
    n = len(next(iter(used.values())))
    fused = np.empty((n, sum(v.shape[1] for v in used.values())), dtype=np.float32)
    for lo in range(0, n, FUSE_CHUNK):  # a block of rows at a time: no full temporary copies
        block = np.concatenate([np.sqrt(weights[name])
                                * v[lo:lo + FUSE_CHUNK].astype(np.float32, copy=False)
                                for name, v in used.items()], axis=1)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        fused[lo:lo + FUSE_CHUNK] = block / np.maximum(norms, 1e-12)
    return fused


#: pairs per chunk in :func:`pair_cosine` (two gathered blocks of rows at a time, not all)
PAIR_CHUNK = 32_768


def pair_cosine(vectors, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Inner product of rows ``i[t]`` and ``j[t]`` for every t (dense or sparse vectors).

    Pairs go in chunks of :data:`PAIR_CHUNK`: gathering the rows of 3.5 million pairs (70,000
    listings x 50 neighbours) at once would hold 7 GB per side for 512-d vectors.
    """
    from scipy import sparse

    i, j = np.asarray(i), np.asarray(j)
    out = np.empty(len(i), dtype=np.float32)
    if sparse.issparse(vectors):
        vectors = vectors.tocsr()
    for lo in range(0, len(i), PAIR_CHUNK):
        a, b = i[lo:lo + PAIR_CHUNK], j[lo:lo + PAIR_CHUNK]
        if sparse.issparse(vectors):
            out[lo:lo + len(a)] = np.asarray(vectors[a].multiply(vectors[b]).sum(axis=1)).ravel()
        else:
            out[lo:lo + len(a)] = np.einsum("nd,nd->n", vectors[a], vectors[b])
    return out
