"""Fusion of modalities into one searched vector, neighbourhood blending, and the fused
self-search lists every decision starts from."""

from __future__ import annotations

import collections

import numpy as np

from shopee_match.match.ivf import RECALL_TARGET


def fused_vectors(vectors: dict, weights: dict):
    """The vectors :func:`fused_neighbors` searches: a single modality as it is (so sparse
    TF-IDF works alone), else the weighted fusion of the modalities with weight > 0."""
    from shopee_match.match.neighbors import fuse

    used = [m for m, w in weights.items() if w > 0]
    missing = [m for m in used if m not in vectors]
    if missing:
        raise ValueError(f"no vectors for modality {missing}; have {sorted(vectors)}")
    return vectors[used[0]] if len(used) == 1 else fuse({m: vectors[m] for m in used}, weights)


def blend(vectors: np.ndarray, sims: np.ndarray, idx: np.ndarray, top_n: int = 3
          ) -> np.ndarray:
    """Neighbourhood blending (query expansion): each vector becomes the similarity-weighted
    sum of its ``top_n`` nearest vectors (itself included, as column 0 usually is), renormalised.
    """
    take = idx[:, :top_n]
    weights = np.where(take >= 0, np.maximum(sims[:, :top_n], 0), 0).astype(np.float32)
    mixed = np.einsum("nk,nkd->nd", weights, vectors[np.where(take >= 0, take, 0)])
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.maximum(norms, 1e-12)).astype(np.float32)


def search_lists(vectors, k: int, recall: float = RECALL_TARGET, sources=None,
                 executor=None) -> tuple[np.ndarray, np.ndarray]:
    """``k``-column lists of every row: the self-search (:func:`~shopee_match.match.ivf.self_knn`,
    on ``executor``'s cluster when there is one) or, with ``sources``, each row and its
    nearest rows of other sources (:func:`~shopee_match.match.sources.source_lists`: exact
    up to 200,000 rows of the others, above by the IVF search for ``recall``; on this
    machine)."""
    from shopee_match.match.ivf import self_knn

    if sources is None and executor is not None:
        return executor.self_knn(vectors, k, recall)
    if sources is None:
        return self_knn(vectors, k=k, recall=recall)
    from shopee_match.match.sources import source_lists

    return source_lists(vectors, sources, k, recall)


def blending_rounds(fused: np.ndarray, k: int, rounds: int, top_n: int = 3,
                    recall: float = RECALL_TARGET, sources=None, executor=None):
    """Yield the fused vectors of round 0 (``fused`` as it is) and after each of ``rounds``
    rounds of neighbourhood blending: a round mixes every vector with its ``top_n`` nearest in
    the previous round's ``k``-column lists (:func:`search_lists`)."""
    yield fused
    for _ in range(rounds):
        fused = blend(fused, *search_lists(fused, k, recall, sources, executor), top_n)
        yield fused


def fused_neighbors(vectors: dict, weights: dict, k: int, blend_rounds: int = 0,
                    blend_top_n: int = 3, cache: dict | None = None,
                    recall: float = RECALL_TARGET, sources=None, executor=None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Self-search lists ``(sims, idx)`` of the weighted fusion of ``vectors`` (``k`` columns,
    the query usually first), after ``blend_rounds`` of neighbourhood blending; with
    ``sources`` (one code per row) each row's nearest rows of *other* sources after itself.

    A single modality is searched as it is (so sparse TF-IDF works alone); galleries above
    200,000 rows through the IVF search that finds ``recall`` of the exact neighbours
    (:func:`~shopee_match.match.ivf.self_knn`). Results are kept in ``cache`` (a dict per
    gallery) under the weights, ``k``, blending, recall and whether sources are linked;
    ``executor`` runs the search on a cluster (:func:`search_lists`).
    """
    cache = {} if cache is None else cache
    key = ("fused", tuple(sorted(weights.items())), k, blend_rounds, blend_top_n, recall,
           sources is not None)
    if key not in cache:
        rounds = blending_rounds(fused_vectors(vectors, weights), k, blend_rounds, blend_top_n,
                                 recall, sources, executor)
        last = collections.deque(rounds, maxlen=1)[0]  # each round made from the one before
        cache[key] = search_lists(last, k, recall, sources, executor)
    return cache[key]
