"""Match sets as sparse boolean ``n x n`` matrices: row ``r`` holds the rows that listing ``r``
matches, itself included (a local view of a gallery may have fewer rows than columns)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from shopee_match.match.neighbors import index_dtype, query_rows, real_neighbors


def to_matrix(idx: np.ndarray, accepted: np.ndarray, n_cols: int | None = None
              ) -> sparse.csr_matrix:
    """Boolean matrix of predicted matches of the lists' query rows (``len(idx)`` rows,
    ``n_cols`` columns, default as many), the diagonal (self) included."""
    return pairs_to_matrix(query_rows(idx, accepted), idx[accepted], len(idx), n_cols)


def pairs_to_matrix(i: np.ndarray, j: np.ndarray, n: int, n_cols: int | None = None
                    ) -> sparse.csr_matrix:
    """Boolean ``n x n_cols`` match matrix (``n_cols`` default ``n``) holding the pairs
    ``(i, j)`` and the diagonal."""
    n_cols = n if n_cols is None else n_cols
    diagonal = np.arange(min(n, n_cols), dtype=index_dtype(max(n, n_cols)))  # int32 < 2**31
    rows = np.concatenate([np.asarray(i, dtype=diagonal.dtype), diagonal])
    cols = np.concatenate([np.asarray(j, dtype=diagonal.dtype), diagonal])
    m = sparse.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n_cols))
    m.sum_duplicates()
    return m


def union(*matrices: sparse.csr_matrix) -> sparse.csr_matrix:
    """Union of predicted match matrices (e.g. image ∪ text ∪ fused)."""
    out = matrices[0].astype(bool)
    for m in matrices[1:]:
        out = out + m.astype(bool)
    return out.tocsr()


def cluster_matrix(clusters: np.ndarray) -> sparse.csr_matrix:
    """Boolean match matrix in which every row matches its whole cluster."""
    one_hot = sparse.csr_matrix((np.ones(len(clusters), dtype=bool),
                                 (np.arange(len(clusters)), clusters)))
    return (one_hot @ one_hot.T).astype(bool).tocsr()


def similarity_matrix(sims: np.ndarray, idx: np.ndarray) -> sparse.csr_matrix:
    """Sparse ``n x n`` similarities of every listed neighbour pair (edge strengths)."""
    mask = real_neighbors(idx)
    return sparse.csr_matrix((sims[mask].astype(np.float32), (query_rows(idx, mask), idx[mask])),
                             shape=(len(idx), len(idx)))


def matrix_to_sets(matches: sparse.csr_matrix, ids: Sequence[str]) -> pd.Series:
    """``posting_id -> set of posting_ids`` from a match matrix."""
    ids = np.asarray(ids, dtype=object)
    matches = matches.tocsr()
    return pd.Series([set(ids[matches.indices[a:b]]) for a, b in
                      zip(matches.indptr[:-1], matches.indptr[1:])], index=ids, dtype=object)
