"""Linking across sources (shops, feeds): which pairs are in scope, and the search that
finds each listing's neighbours among the *other* sources' listings.

A gallery that links across sources carries one source code per row (``sources``); ``None``
means every pair counts (one catalog, or pairs within a source wanted too). In scope, a
listing's true matches are itself and the members of its label group from other sources,
and its neighbour lists hold itself first and then its nearest listings of other sources,
so every decision, threshold and second stage works on cross-source pairs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shopee_match.match.ivf import EXACT_MAX_ROWS, RECALL_TARGET, gallery_knn

LINK_MODES = ("auto", "across", "all")


def link_sources(sources: Sequence | None, link: str = "auto") -> np.ndarray | None:
    """The source code of each row when pairs are linked across sources only, else None.

    ``link``: ``"across"`` (pairs between sources only), ``"all"`` (every pair, the sources
    ignored) or ``"auto"`` (across when there are exactly two sources: the usual "their
    listings against mine" case; with three or more, within-source duplicates count too).
    """
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {LINK_MODES}, not {link!r}")
    if sources is None or link == "all":
        return None
    names, codes = np.unique(np.asarray(sources, dtype=str), return_inverse=True)
    if len(names) < 2:
        if link == "across":
            raise ValueError(f"linking across sources needs two or more; every listing has "
                             f"the source {names[0] if len(names) else None!r}")
        return None
    if link == "auto" and len(names) > 2:
        return None
    return codes.astype(np.int32)


def scope_sizes(labels: Sequence, sources: np.ndarray | None = None) -> np.ndarray:
    """Each row's true match count in scope, itself included: its label group's size, or with
    ``sources`` 1 + the members of its group from other sources."""
    labels = np.asarray(labels)
    _, group, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts[group.ravel()]
    if sources is None:
        return sizes
    both = group.ravel().astype(np.int64) * (int(np.max(sources)) + 1) + np.asarray(sources)
    _, cell, cell_counts = np.unique(both, return_inverse=True, return_counts=True)
    return sizes - cell_counts[cell.ravel()] + 1


def in_scope(i: np.ndarray, j: np.ndarray, sources: np.ndarray | None) -> np.ndarray:
    """Mask of the pairs ``(i[p], j[p])`` that count: different rows, and with ``sources``
    from different sources."""
    i, j = np.asarray(i), np.asarray(j)
    keep = i != j
    if sources is not None:
        keep &= np.asarray(sources)[i] != np.asarray(sources)[j]
    return keep


def drop_within_source(matches, sources: np.ndarray | None):
    """A match matrix without its pairs inside one source (each row keeps itself): what a
    listing matches in scope, e.g. after connected components joined two of one shop's."""
    from scipy import sparse

    matches = sparse.csr_matrix(matches)
    if sources is None:
        return matches
    coo = matches.tocoo()
    keep = (coo.row == coo.col) | in_scope(coo.row, coo.col, sources)
    return sparse.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])),
                             shape=matches.shape)


def cross_source_knn(vectors, sources: np.ndarray, k: int, search,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lists ``(sims, idx)`` of ``k`` columns: each row itself first, then its ``k - 1``
    nearest rows of other sources (``-1`` pads when those are fewer).

    ``search(queries, gallery, k)`` is the exact or approximate search of query rows against
    gallery rows (both dense arrays or both sparse), returning ``(sims, idx)`` into gallery.
    ``rows`` lists only some rows (a sample), one list each in that order (default: all).
    """
    from shopee_match.match.neighbors import index_dtype

    sources = np.asarray(sources)
    n = vectors.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    sims = np.full((len(rows), k), -1.0, dtype=np.float32)
    idx = np.full((len(rows), k), -1, dtype=index_dtype(n))
    idx[:, 0] = rows
    sims[:, 0] = _self_similarity(vectors[rows])
    for code in np.unique(sources[rows]):
        at = np.flatnonzero(sources[rows] == code)
        others = np.flatnonzero(sources != code)
        width = min(k - 1, len(others))
        if width < 1:
            continue
        s, i = search(vectors[rows[at]], vectors[others], width)
        found = i >= 0
        sims[at, 1:width + 1] = np.where(found, s, -1.0)
        idx[at, 1:width + 1] = np.where(found, others[np.where(found, i, 0)], -1)
    return sims, idx


def source_lists(vectors, sources: np.ndarray, k: int, recall: float = RECALL_TARGET,
                 exact_max_rows: int = EXACT_MAX_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k``-column list among the other sources' rows
    (:func:`cross_source_knn`), each source's rows searched among the others' as a
    self-search is: exactly up to ``exact_max_rows`` of them, above by the IVF search planned
    for ``recall`` of the exact neighbours (:func:`~shopee_match.match.ivf.gallery_knn`)."""
    return cross_source_knn(vectors, sources, k, lambda queries, gallery, width: gallery_knn(
        queries, gallery, width, exact_max_rows, recall))


def exact_lists(vectors, rows: np.ndarray | None, k: int, sources: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k``-column lists of ``rows`` (default all; each usually first in its own)
    among all rows, or with ``sources`` among the other sources' rows
    (:func:`cross_source_knn`)."""
    from shopee_match.match.neighbors import exact_knn

    if sources is None:
        return exact_knn(vectors if rows is None else vectors[rows], vectors, k=k)
    return cross_source_knn(vectors, sources, k, lambda q, g, w: exact_knn(q, g, w), rows)


def _self_similarity(vectors) -> np.ndarray:
    from scipy import sparse

    if sparse.issparse(vectors):
        return np.asarray(vectors.multiply(vectors).sum(axis=1), dtype=np.float32).ravel()
    x = np.asarray(vectors, dtype=np.float32)
    return np.einsum("nd,nd->n", x, x)
